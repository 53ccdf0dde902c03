"""fwup's ``--framing`` input undone as fwup reads it (core/fwup_framing.InputDeframer).

fwup reads a frame's length, then the frame in reads of at most 16 KiB; the archive
reader sees one piece per read. With ``runs`` the deframer joins a frame's reads for a
reader that cuts them again: cut into 16 KiB reads, the pieces must be the same.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core.fwup_framing import InputDeframer

READ = 16384


def framed(frames: list[bytes], end: bool = True) -> bytes:
    out = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    return out + (b"\0\0\0\0" if end else b"")


def cut(pieces: list[bytes], size: int = READ) -> list[bytes]:
    """What a reader does with each piece: reads of ``size`` (and the rest)."""
    return [p[i : i + size] for p in pieces for i in range(0, len(p), size)]


def feed_in(deframer: InputDeframer, stream: bytes, splits: list[int]) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    for n in splits:
        out += deframer.feed(memoryview(stream)[at : at + n])
        at += n
    out += deframer.feed(stream[at:])
    return out


def expected(frames: list[bytes]) -> list[bytes]:
    """fwup's reads: every frame in reads of min(rest of the frame, 16 KiB)."""
    return [f[i : i + READ] for f in frames for i in range(0, len(f), READ)]


frames_st = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=64),
        st.integers(1, 3 * READ + 100).map(lambda n: bytes(i % 251 for i in range(n))),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(frames=frames_st, splits=st.lists(st.integers(0, 40000), max_size=8))
def test_pieces_are_fwups_reads_however_stdin_arrives(
    frames: list[bytes], splits: list[int]
) -> None:
    stream = framed(frames)
    plain = InputDeframer(READ)
    assert feed_in(plain, stream, splits) == expected(frames)
    assert plain.ended
    runs = InputDeframer(READ, runs=True)
    pieces = feed_in(runs, stream, splits)
    assert cut(pieces) == expected(frames)
    assert runs.ended
    # A run never crosses a frame, so its reads start where fwup's do.
    ends = {sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))}
    at = 0
    for piece in pieces:
        assert not any(at < end < at + len(piece) for end in ends)
        at += len(piece)


@settings(max_examples=200, deadline=None)
@given(frames=frames_st.filter(bool), data=st.data())
def test_input_that_stops_anywhere(frames: list[bytes], data: st.DataObject) -> None:
    stream = framed(frames, end=False)
    cut_at = data.draw(st.integers(0, len(stream)))
    # What fwup reads of the stream up to the cut: whole frames, then a frame's reads and
    # the short read the end of input gives.
    lengths: list[int] = []
    at = 0
    while at + 4 <= cut_at:
        (length,) = struct.unpack_from(">I", stream, at)
        lengths.append(min(length, cut_at - at - 4))
        at += 4 + length
    in_frame = bool(lengths) and at > cut_at
    payload = expected([f[:n] for f, n in zip(frames, lengths, strict=False)])
    for runs in (False, True):
        deframer = InputDeframer(READ, runs=runs)
        pieces = deframer.feed(stream[:cut_at])
        assert deframer.in_frame == in_frame
        assert deframer.mid_frame == (in_frame or at < cut_at)
        pieces += deframer.finish()
        assert cut(pieces) == payload
        assert not deframer.ended


def test_a_whole_frame_is_one_run_and_a_partial_frame_whole_reads() -> None:
    frame = bytes(range(256)) * 1024  # 256 KiB
    stream = framed([frame])
    runs = InputDeframer(READ, runs=True)
    part = 4 + 5 * READ + 100  # the length, five reads and part of a sixth
    assert runs.feed(stream[:part]) == [frame[: 5 * READ]]
    assert runs.feed(stream[part:]) == [frame[5 * READ :]]
    assert runs.ended


def test_input_cut_inside_a_frame() -> None:
    frame = b"x" * (2 * READ + 10)
    stream = framed([frame], end=False)[: 4 + READ + 5]
    for runs in (False, True):
        deframer = InputDeframer(READ, runs=runs)
        assert cut(deframer.feed(stream)) == [frame[:READ]]
        assert deframer.in_frame and not deframer.ended
        assert deframer.finish() == [frame[READ : READ + 5]]


def test_nothing_after_the_end_frame() -> None:
    deframer = InputDeframer(READ, runs=True)
    assert deframer.feed(framed([b"abc"]) + b"\0\0\0\5hello") == [b"abc"]
    assert deframer.ended
    assert deframer.feed(b"more") == []

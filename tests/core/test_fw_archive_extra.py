"""core.fw_archive: a local header's extra field is checked as libarchive checks it,
before anything reads it. Found by fuzzing (atheris): a Zip64 record claiming more
bytes than the field holds made the reader raise ``struct.error``; the reader now
reports it as libarchive does, a failed header with libarchive's text."""

from __future__ import annotations

import struct

import pytest

from nhlink_dbus.core.fw_archive import EntryStart, HeaderFailed, ZipStreamReader

FOUND = bytes.fromhex(  # as atheris wrote it (57 bytes)
    "504b03040a0008000000000021000000"
    "0000ffffffffffffffff000011000000"
    "000000000000000000000100005b56fd"
    "4b4a96002542006100"
)


def _header(extra: bytes, usize: int = 0xFFFFFFFF, name: bytes = b"a") -> bytes:
    return (
        struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0, 0, 0, usize, len(name), len(extra)
        )
        + name
        + extra
    )


def _read(data: bytes) -> list[object]:
    reader = ZipStreamReader()
    events = reader.feed(data)
    return [*events, *reader.finish()]


def _failure(data: bytes) -> str:
    events = _read(data)
    assert isinstance(events[-1], HeaderFailed), events
    assert not any(isinstance(e, EntryStart) for e in events)
    return events[-1].text or ""


def test_the_input_fuzzing_found_is_a_failed_header() -> None:
    assert _failure(FOUND).startswith("Extra data overflow")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            struct.pack("<HH", 1, 16) + bytes(4),
            "Extra data overflow: Need 16 bytes but only found 4 bytes",
        ),
        (b"\x01\x00", "Too-small extra data: Need at least 4 bytes, but only found 2 bytes"),
        (struct.pack("<HH", 0x5455, 9) + b"\x01abc", "Extra data overflow: Need 9 bytes"),
    ],
)
def test_an_extra_field_that_runs_past_its_end_is_refused(extra: bytes, message: str) -> None:
    assert _failure(_header(extra)).startswith(message)


def test_a_whole_zip64_record_still_gives_the_size() -> None:
    extra = struct.pack("<HHQ", 1, 8, 123_456)
    events = list(ZipStreamReader().feed(_header(extra)))
    assert events[0] == EntryStart("a", None, 123_456)

"""Checking a download against size, checksum and partials_checksums (core/partials.py):
any chunking gives the same bytes to the applier, a bad part is named with its offset
and never handed on, the third failure of one part is fatal."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core.partials import PartMismatch, PartVerifier, VerifyError

PART = 1024  # small parts keep the tests fast; the rules are the same for 1 MiB


def sums(data: bytes, part: int = PART) -> tuple[str, list[str]]:
    parts = [
        hashlib.sha256(data[i : i + part]).hexdigest().upper() for i in range(0, len(data), part)
    ]
    return hashlib.sha256(data).hexdigest().upper(), parts


def feed_all(v: PartVerifier, data: bytes, cuts: list[int]) -> bytes:
    out: list[bytes] = []
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        out += v.feed(data[pos:cut])
        pos = cut
    out += v.finish()
    return b"".join(out)


@given(st.binary(min_size=1, max_size=5 * PART), st.lists(st.integers(0, 5 * PART), max_size=6))
def test_any_chunking_hands_on_the_file_whole(data: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(data)]
    checksum, parts = sums(data)
    assert feed_all(PartVerifier(len(data), checksum, parts, part_size=PART), data, cuts) == data
    # size unknown: the last part is sealed at the end of the body
    assert feed_all(PartVerifier(None, checksum, parts, part_size=PART), data, cuts) == data
    # no part checksums: bytes pass at once, the whole file is checked at the end
    v = PartVerifier(len(data), checksum, (), part_size=PART)
    assert feed_all(v, data, cuts) == data and not v.checks_parts


def test_nothing_reaches_the_applier_before_its_part_is_verified() -> None:
    data = bytes(range(256)) * 10  # 2.5 parts
    checksum, parts = sums(data)
    v = PartVerifier(len(data), checksum, parts, part_size=PART)
    assert v.feed(data[:1000]) == []
    assert v.feed(data[1000:1100]) == [data[:1000], data[1000:PART]]  # as received
    assert v.received == 1100 and v.verified == PART


def test_a_bad_part_is_fetched_again_from_its_offset() -> None:
    data = bytes(i % 251 for i in range(3 * PART))
    checksum, parts = sums(data)
    v = PartVerifier(len(data), checksum, parts, part_size=PART)
    assert v.feed(data[:PART]) == [data[:PART]]
    bad = bytearray(data[PART : 2 * PART])
    bad[100] ^= 0xFF
    with pytest.raises(PartMismatch) as caught:
        v.feed(bytes(bad) + data[2 * PART : 2 * PART + 10])
    assert (caught.value.index, caught.value.offset, caught.value.attempt) == (1, PART, 1)
    assert v.received == PART  # the bad part is gone; the first stays verified
    assert v.feed(data[PART:]) == [data[PART : 2 * PART], data[2 * PART :]]
    assert v.finish() == [] and v.refetched == 1


def test_the_third_failure_of_a_part_is_fatal() -> None:
    data = bytes(2 * PART)
    checksum, parts = sums(data)
    v = PartVerifier(len(data), checksum, parts, part_size=PART)
    bad = b"\x01" * PART
    for attempt in (1, 2):
        with pytest.raises(PartMismatch):
            v.feed(bad)
        assert v.failures == {0: attempt}
    with pytest.raises(VerifyError, match="part 1 of 2 failed its checksum 3 times"):
        v.feed(bad)


def test_size_and_checksum_mismatches() -> None:
    data = b"x" * 3000
    checksum, parts = sums(data)
    with pytest.raises(VerifyError, match="longer than"):
        PartVerifier(2000, None, ()).feed(data)
    v = PartVerifier(3000, checksum, parts, part_size=PART)
    v.feed(data[:2500])
    with pytest.raises(VerifyError, match="short"):
        v.finish()
    v = PartVerifier(None, "00" * 32, (), part_size=PART)
    v.feed(data)
    with pytest.raises(VerifyError, match="checksum"):
        v.finish()
    # checksums for another number of parts are not used (whole-file check only)
    assert not PartVerifier(3000, checksum, parts[:1], part_size=PART).checks_parts


def test_restart_starts_over() -> None:
    data = b"y" * 1500
    checksum, parts = sums(data)
    v = PartVerifier(len(data), checksum, parts, part_size=PART)
    v.feed(data[:1200])
    v.restart()
    assert feed_all(v, data, [700]) == data


@pytest.mark.parametrize(
    ("checksum", "with_parts", "hashed"),
    [(True, True, 1), (True, False, 1), (False, False, 0)],
)
def test_each_byte_is_hashed_once_and_only_for_a_check(
    monkeypatch: pytest.MonkeyPatch, checksum: bool, with_parts: bool, hashed: int
) -> None:
    """Part checksums cover every byte (no whole-file pass on top); the whole-file hash
    is made only when there is a checksum to compare it with."""
    data = bytes(range(256)) * 13
    whole, parts = sums(data)
    fed = []
    sha256 = hashlib.sha256

    class Counting:
        def __init__(self) -> None:
            self.inner = sha256()

        def update(self, chunk: bytes) -> None:
            fed.append(len(chunk))
            self.inner.update(chunk)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr("nhlink_dbus.core.partials.hashlib.sha256", Counting)
    v = PartVerifier(
        len(data), whole if checksum else None, parts if with_parts else [], part_size=PART
    )
    assert feed_all(v, data, [100, 2000]) == data
    assert sum(fed) == hashed * len(data)

"""fwup's meta-nickname, checked against real fwup 1.16.0 output (fixtures/fwup)."""

from __future__ import annotations

import hashlib
import uuid
import zipfile
from pathlib import Path

import pytest

from nhlink_dbus.core.fwup_nickname import WORDS, nickname

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fwup"

# The prefix fwup hashes in front of meta.conf (EXPECT.md, "The .fw file").
UUID_PREFIX = bytes.fromhex("2053dffbd51e4310b93b956da89f9f34")

# (fixture, meta-uuid, meta-nickname) as printed by `fwup -m` (the *.expect.md records).
RECORDED = [
    ("simple.fw", "9a259ae2-e15c-596e-48a2-a31a8aae8a10", "network-cabin"),
    ("fat.fw", "253d71a4-de9e-5321-7a5e-454f887fc4f9", "cabin-fall"),
    ("ab.fw", "bb2fee49-58a0-5cce-0e76-15d7a5a130b6", "shock-civil"),
]


def _meta_uuid_hash(fw: Path) -> bytes:
    with zipfile.ZipFile(fw) as archive:
        meta_conf = archive.read("meta.conf")
    h = bytearray(hashlib.blake2b(UUID_PREFIX + meta_conf, digest_size=32).digest())
    h[6] = (h[6] & 0x0F) | 0x50
    return bytes(h)


@pytest.mark.parametrize(("fixture", "expected_uuid", "expected_nickname"), RECORDED)
def test_fixture_nicknames(fixture: str, expected_uuid: str, expected_nickname: str) -> None:
    fw = FIXTURES / fixture
    h = _meta_uuid_hash(fw)
    assert str(uuid.UUID(bytes=h[:16])) == expected_uuid
    assert nickname(h) == expected_nickname
    assert nickname(h[:16]) == expected_nickname


@pytest.mark.parametrize(
    ("meta_uuid", "expected"),
    [
        # fwup's own unit-test pairs, as quoted by nerves_motd's tests.
        ("b3c560af-d052-58c1-228d-5fa869817cda", "present-snack"),
        ("53233641-82a4-5576-b75d-d227a234c626", "energy-bid"),
        ("ecb37e6e-6a7b-5f22-2077-7ccad0e40d85", "visa-present"),
    ],
)
def test_uuid_bytes(meta_uuid: str, expected: str) -> None:
    assert nickname(uuid.UUID(meta_uuid).bytes) == expected


def test_version_nibble_does_not_matter() -> None:
    raw = bytes(range(32))
    tweaked = bytearray(raw)
    tweaked[6] = (tweaked[6] & 0x0F) | 0x50
    assert nickname(raw) == nickname(bytes(tweaked)) == "act-able"


def test_word_table_shape() -> None:
    assert len(WORDS) == 256
    assert len(set(WORDS)) == 256
    # fwup's packing: each row of five has words of 3, 4, 5, 6, 7 letters.
    assert all(len(w) == i % 5 + 3 for i, w in enumerate(WORDS))
    assert (WORDS[0], WORDS[108], WORDS[194], WORDS[255]) == ("act", "garlic", "raccoon", "zoo")
    assert all(w.isascii() and w.isalpha() and w.islower() for w in WORDS)


def test_too_short() -> None:
    with pytest.raises(ValueError):
        nickname(b"\x00")

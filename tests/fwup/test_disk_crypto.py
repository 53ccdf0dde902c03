"""fwup's ``disk_crypto`` (``raw_write(offset, "cipher=...", "secret=...")``): the
sectors the real fwup 1.16 writes, recorded, and its errors.

The recorded cases (``tests/fixtures/fwup/crypto/``) hold archives and what the real
fwup did with them: framed output and the image. Re-record with
``python -m tests.fwup.test_disk_crypto --record PATH/TO/fwup``.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.errors import FirmwareError
from nhlink_dbus.fwup.disk_crypto import (
    SECTOR,
    AesCbcPlain,
    AesXtsPlain64,
    open_cipher,
    parse_options,
)
from tests.fwup.expect_records import FIXTURES
from tests.fwup.test_sparse import _frames, _sha, blake, make_fw, meta_conf

CRYPTO = FIXTURES / "crypto"
CBC_KEY = "00112233445566778899aabbccddeeff" * 2
XTS_KEY = "0123456789abcdef" * 4 + "fedcba9876543210" * 4
SAME_HALVES = "5a" * 64


@dataclass(frozen=True)
class Case:
    name: str
    options: str  # raw_write's arguments after the offset, as meta.conf spells them
    data: int  # resource bytes
    offset: int = 0
    base: int = 64 << 10


CASES = [
    Case("cbc", f'"cipher=aes-cbc-plain","secret={CBC_KEY}"', 8192),
    Case("cbc-one-arg-offset", f'"cipher=aes-cbc-plain,secret={CBC_KEY}"', 5000, offset=7),
    Case(
        "cbc-base64",
        '"cipher=aes-cbc-plain","secret=ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8="',
        3000,
    ),
    Case("xts", f'"cipher=aes-xts-plain64","secret={XTS_KEY}"', 10000, offset=3),
    Case("xts-equal-halves", f'"cipher=aes-xts-plain64","secret={SAME_HALVES}"', 2048),
    Case("unknown-cipher", f'"cipher=aes-ctr","secret={CBC_KEY}"', 1024),
    Case("short-key", '"cipher=aes-cbc-plain","secret=0011"', 1024),
    Case("xts-short-key", f'"cipher=aes-xts-plain64","secret={CBC_KEY}"', 1024),
    Case("cipher-only", '"cipher=aes-cbc-plain"', 1024),
    Case("bad-parameter", '"cipher=aes-cbc-plain","key=00"', 1024),
    Case("no-equals", '"cipher"', 1024),
]


def _fw(case: Case) -> bytes:
    data = random.Random(case.name).randbytes(case.data)
    count = 2 + case.options.count('","') + 1
    funlist = f'{{"{count}","raw_write","{case.offset}",{case.options}}}'
    return make_fw(meta_conf(str(case.data), blake(data), funlist), data)


def _run(argv: list[str], case: Case, fw: Path, work: Path) -> dict[str, object]:
    image = work / "img"
    image.write_bytes(b"\xa5" * case.base)
    args = [*argv, "-a", "--framing", "-d", str(image), "-i", str(fw), "-t", "t"]
    proc = subprocess.run(args, cwd=work, capture_output=True, timeout=120, check=False)
    return {"exit": proc.returncode, "frames": _frames(proc.stdout), "image": _sha(image)}


def _recorded() -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((CRYPTO / "expect.json").read_text())
    return data


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_recorded_case(case: Case, tmp_path: Path) -> None:
    got = _run(
        [sys.executable, "-m", "nhlink_dbus.fwup.cli"], case, CRYPTO / f"{case.name}.fw", tmp_path
    )
    assert got == _recorded()[case.name]


def test_recordings_cover_success_and_errors() -> None:
    recorded = _recorded()
    assert {c.name for c in CASES} == set(recorded)
    assert sum(1 for r in recorded.values() if r["exit"] == 0) == 5
    assert all(r["frames"][-1].startswith("ER") for r in recorded.values() if r["exit"])


# -- the ciphers -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        [
            f"cipher=aes-cbc-plain,secret={CBC_KEY}",
            f"cipher=aes-xts-plain64,secret={XTS_KEY}",
            f"cipher=aes-xts-plain64,secret={SAME_HALVES}",
        ]
    ),
    st.integers(0, 6),
    st.integers(0, (1 << 40)),
    st.binary(min_size=16, max_size=16),
)
def test_sectors_decrypt_back_and_each_is_independent(
    opts: str, n: int, lba: int, seed: bytes
) -> None:
    cipher = open_cipher([opts])
    data = (seed * (SECTOR * n // 16 + 1))[: SECTOR * n]
    whole = cipher.encrypt(data, lba)
    assert cipher.decrypt(whole, lba) == data
    # One sector at a time gives the same bytes: the IV/tweak is the sector number only.
    parts = b"".join(
        cipher.encrypt(data[i : i + SECTOR], lba + i // SECTOR) for i in range(0, len(data), SECTOR)
    )
    assert parts == whole
    if n:
        assert cipher.encrypt(data[:SECTOR], lba + 1) != whole[:SECTOR]


def test_xts_equal_halves_matches_the_xts_construction() -> None:
    # The ECB-built XTS (used when OpenSSL refuses equal halves) against OpenSSL's XTS.
    distinct = AesXtsPlain64(bytes.fromhex(XTS_KEY))
    built = AesXtsPlain64.__new__(AesXtsPlain64)
    key = bytes.fromhex(XTS_KEY)
    built._aes = algorithms.AES(key)
    built._fallback = (algorithms.AES(key[:32]), algorithms.AES(key[32:]))
    data = random.Random(1).randbytes(4 * SECTOR)
    for lba in (0, 1, 255, 1 << 33):
        assert built.encrypt(data, lba) == distinct.encrypt(data, lba)


def test_options_as_fwup_parses_them() -> None:
    assert parse_options(["cipher=aes-cbc-plain", "secret=ab"]) == ("aes-cbc-plain", "ab")
    assert parse_options(["cipher=aes-cbc-plain,secret=ab"]) == ("aes-cbc-plain", "ab")
    # strncpy into the same buffer: a later shorter value replaces only the start.
    assert parse_options(["secret=abcdef", "secret=XY", "cipher=c"]) == ("c", "XYcdef")
    with pytest.raises(FirmwareError, match="Unexpected parameter: key=1"):
        parse_options(["key=1"])
    with pytest.raises(FirmwareError, match="Both a cipher and secret are required"):
        parse_options(["secret=00"])
    with pytest.raises(FirmwareError, match="Unsupported disk encryption: rot13"):
        open_cipher(["cipher=rot13,secret=00"])
    with pytest.raises(FirmwareError, match="requires a hex-encoded 256-bit key"):
        open_cipher(["cipher=aes-cbc-plain,secret=zz"])
    assert isinstance(open_cipher([f"cipher=aes-cbc-plain,secret={CBC_KEY}"]), AesCbcPlain)


def _record(fwup: str) -> None:
    CRYPTO.mkdir(parents=True, exist_ok=True)
    work = CRYPTO / "work"
    work.mkdir(exist_ok=True)
    expect = {}
    for case in CASES:
        fw = CRYPTO / f"{case.name}.fw"
        fw.write_bytes(_fw(case))
        expect[case.name] = _run([fwup], case, fw, work)
        print(case.name, expect[case.name]["frames"])
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    (CRYPTO / "expect.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit("usage: python -m tests.fwup.test_disk_crypto --record PATH/TO/fwup")
    _record(sys.argv[2])

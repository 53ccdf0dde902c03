"""U-Boot environments, redundant ones especially, against what real fwup 1.16.0 writes.

The fixture (tests/fixtures/fwup/uboot-redund/, made by its make.py with the
real fwup) has one ``.fw`` whose tasks act on a redundant environment ``e``
(copies at blocks 0 and 1) and a plain one ``n`` (block 2), and for every case
below the exit code, error text and exact bytes real fwup left. The cases
prepare the image from a spec, apply with ``nhlink-fwup`` and compare.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.kv_format import (
    KVError,
    kv_spec_redundant_offset,
    parse_kv_spec,
    parse_uboot_redundant,
)
from nhlink_dbus.errors import ConfigError, FirmwareError
from nhlink_dbus.fwup import cli
from nhlink_dbus.kv_store import read_kv

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "fwup" / "uboot-redund"
BLOCK = 512

# A block spec: (kind, flags, data). kind "ok": data (entries, final NUL) then
# 0xff fill, CRC right; "bad": the same with the CRC off by one; "zero" / "ff":
# the whole block that byte. flags is None for the plain environment "n".
Block = tuple[str, int | None, bytes]
Spec = tuple[Block, Block, Block]  # e primary, e secondary, n

ZERO: Block = ("zero", None, b"")
FF: Block = ("ff", None, b"")


def ok(flags: int | None, data: bytes) -> Block:
    return ("ok", flags, data)


def bad(flags: int | None, data: bytes) -> Block:
    return ("bad", flags, data)


P = b"who=p\0a=1\0z=9\0\0"
S = b"who=s\0a=2\0\0"


def _block(spec: Block) -> bytes:
    kind, flags, data = spec
    if kind in ("zero", "ff"):
        return (b"\0" if kind == "zero" else b"\xff") * BLOCK
    header = 4 if flags is None else 5
    body = data + b"\xff" * (BLOCK - header - len(data))
    crc = zlib.crc32(body) + (1 if kind == "bad" else 0)
    flag_byte = b"" if flags is None else bytes([flags])
    return struct.pack("<I", crc & 0xFFFFFFFF) + flag_byte + body


def prepare(spec: Spec) -> bytes:
    """The 4-block image a case starts from."""
    return b"".join(_block(b) for b in spec) + b"\0" * BLOCK


def encode_region(data: bytes) -> list[str]:
    """Each block as hex without its trailing run of fill, then '+' and the fill byte."""
    out = []
    for i in range(0, len(data), BLOCK):
        block = data[i : i + BLOCK]
        fill = block[-1:]
        head = block.rstrip(fill)
        out.append(f"{head.hex()}+{fill.hex()}")
    return out


def decode_region(blocks: list[str]) -> bytes:
    out = b""
    for text in blocks:
        head, _, fill = text.partition("+")
        out += bytes.fromhex(head).ljust(BLOCK, bytes.fromhex(fill))
    return out


BLANK: Spec = (ZERO, ZERO, ZERO)
BOTH_OK: Spec = (ok(5, P), ok(5, S), ZERO)
DUP: Spec = (ok(7, b"a=1\0b=0\0a=2\0a=3\0\0"), ok(6, S), ok(None, b"a=1\0a=2\0x=0\0a=3\0\0"))

# name -> (starting image, task)
CASES: dict[str, tuple[Spec, str]] = {
    "blank.set": (BLANK, "set"),
    "blank.unset": (BLANK, "unset"),
    "blank.recover": (BLANK, "recover"),
    "blank.recover-set": (BLANK, "recover-set"),
    "ff.recover-set": ((FF, FF, ZERO), "recover-set"),
    "blank.clear": (BLANK, "clear"),
    "blank.req": (BLANK, "req"),
    "equal.set": (BOTH_OK, "set"),
    "equal.unset": (BOTH_OK, "unset"),
    "equal.req": (BOTH_OK, "req"),
    "equal.clear": (BOTH_OK, "clear"),
    "equal.recover": (BOTH_OK, "recover"),
    "s-newer.set": ((ok(1, P), ok(2, S), ZERO), "set"),
    "s-newer.req": ((ok(1, P), ok(2, S), ZERO), "req"),
    "wrap-s-newer.set": ((ok(255, P), ok(0, S), ZERO), "set"),
    "wrap-s-newer.req": ((ok(255, P), ok(0, S), ZERO), "req"),
    "wrap-p-newer.set": ((ok(0, P), ok(255, S), ZERO), "set"),
    "wrap-p-newer.req": ((ok(0, P), ok(255, S), ZERO), "req"),
    "p255-s254.set": ((ok(255, P), ok(254, S), ZERO), "set"),
    "delta127.req": ((ok(0, P), ok(127, S), ZERO), "req"),
    "delta128.req": ((ok(0, P), ok(128, S), ZERO), "req"),
    "delta129.req": ((ok(127, P), ok(0, S), ZERO), "req"),
    "s-newer-bad.set": ((ok(1, P), bad(2, S), ZERO), "set"),
    "s-newer-bad.req": ((ok(1, P), bad(2, S), ZERO), "req"),
    "p-newer-bad.set": ((bad(3, P), ok(2, S), ZERO), "set"),
    "p-newer-bad.req": ((bad(3, P), ok(2, S), ZERO), "req"),
    "equal-p-bad.unset": ((bad(4, P), ok(4, S), ZERO), "unset"),
    "equal-p-bad.recover": ((bad(4, P), ok(4, S), ZERO), "recover"),
    "both-bad.set": ((bad(1, P), bad(2, S), ZERO), "set"),
    "both-bad-p-first.set": ((bad(2, P), bad(2, S), ZERO), "set"),
    "both-bad.recover": ((bad(1, P), bad(2, S), ZERO), "recover"),
    "both-bad.req": ((bad(1, P), bad(2, S), ZERO), "req"),
    "p-invalid.set": ((ok(3, b"who=p\0junk\0\0"), ok(2, S), ZERO), "set"),
    "p-leading-eq.set": ((ok(3, b"=x=1\0\0"), ok(2, S), ZERO), "set"),
    "dup.set": (DUP, "set"),
    "dup.unset": (DUP, "unset"),
    "dup.set-n": (DUP, "set-n"),
    "dup.unset-n": (DUP, "unset-n"),
    "n-bad.set-n": ((ZERO, ZERO, bad(None, b"a=1\0\0")), "set-n"),
    "n-invalid.set-n": ((ZERO, ZERO, ok(None, b"a\0\0")), "set-n"),
    "n-nonutf8.set-n": ((ZERO, ZERO, ok(None, b"a=\xff\xfe\x80\0b\xc3=2\0\0")), "set-n"),
    "fit-e": (BLANK, "fit-e"),
    "overflow-e": (BLANK, "overflow-e"),
    "fit-n": (BLANK, "fit-n"),
    "overflow-n": (BLANK, "overflow-n"),
}


def _expected() -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((FIXTURE / "cases.json").read_text())
    return data


def test_fixture_covers_every_case() -> None:
    assert sorted(_expected()) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_apply_matches_real_fwup(
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec, task = CASES[name]
    want = _expected()[name]
    image = tmp_path / "i.img"
    image.write_bytes(prepare(spec))
    fw = str(FIXTURE / "uboot-redund.fw")
    rc = cli.main(["-a", "-q", "-d", str(image), "-i", fw, "-t", task])
    captured = capfd.readouterr()
    after = image.read_bytes()[: 3 * BLOCK]
    assert (rc, captured.out, captured.err) == (want["rc"], want["stdout"], want["stderr"])
    assert encode_region(after) == want["after"]


# -- the codec on its own ----------------------------------------------------------------


def test_redundant_layout() -> None:
    block = uboot_env.encode({"b": "2", "a": "1"}, BLOCK, flags=256 + 7)
    assert block[4] == 7
    assert block[5:14] == b"a=1\0b=2\0\0"
    assert block[14:] == b"\xff" * (BLOCK - 14)
    assert struct.unpack_from("<I", block)[0] == zlib.crc32(block[5:])
    assert uboot_env.decode(block, redundant=True) == {"a": "1", "b": "2"}
    # the flags byte is not covered by the CRC
    assert uboot_env.decode(block[:4] + b"\x99" + block[5:], redundant=True) == {"a": "1", "b": "2"}
    assert uboot_env.decode(uboot_env.as_single_copy(block)) == {"a": "1", "b": "2"}


def test_crc_error_text() -> None:
    block = bytearray(uboot_env.encode({}, BLOCK))
    block[10] = 0
    with pytest.raises(uboot_env.UbootEnvError) as exc:
        uboot_env.decode(bytes(block), block_offset=32)
    expected = struct.unpack_from("<I", block)[0]
    got = zlib.crc32(bytes(block[4:]))
    assert str(exc.value) == (
        f"U-boot environment (block 32) CRC32 mismatch (expected 0x{expected:08x}; got 0x{got:08x})"
    )


@pytest.mark.parametrize(("flags", "size"), [(None, 501), (0, 500)])
def test_room_boundary(flags: int | None, size: int) -> None:
    # fwup keeps the last byte of the block unused
    uboot_env.encode({"big": "x" * size}, BLOCK, flags=flags)
    with pytest.raises(FirmwareError, match=r"^Not enough room in U-boot environment$"):
        uboot_env.encode({"big": "x" * (size + 1)}, BLOCK, flags=flags)


@pytest.mark.parametrize(
    ("f1", "f2", "picked", "write_primary"),
    [
        (0, 0, "p", False),
        (1, 2, "s", True),
        (2, 1, "p", False),
        (255, 0, "s", True),
        (0, 255, "p", False),
        (0, 127, "s", True),
        (0, 128, "p", False),
    ],
)
def test_newer_copy(f1: int, f2: int, picked: str, write_primary: bool) -> None:
    read = uboot_env.read_redundant(_block(ok(f1, P)), _block(ok(f2, S)))
    assert read.values["who"] == picked
    assert read.flags == (f1 if picked == "p" else f2)
    assert (read.write_primary, read.write_secondary) == (write_primary, not write_primary)


def test_corrupt_newer_copy_falls_back() -> None:
    read = uboot_env.read_redundant(_block(ok(1, P)), _block(bad(2, S)))
    assert (read.values["who"], read.flags, read.write_primary, read.write_secondary) == (
        "p",
        1,
        False,
        True,
    )
    read = uboot_env.read_redundant(_block(bad(2, P)), _block(ok(1, S)))
    assert (read.values["who"], read.flags, read.write_primary, read.write_secondary) == (
        "s",
        1,
        True,
        False,
    )
    with pytest.raises(uboot_env.UbootEnvError, match="CRC32 mismatch"):
        uboot_env.read_redundant(_block(bad(1, P)), _block(bad(2, S)))


def test_duplicates_as_fwup() -> None:
    pairs = uboot_env.decode_pairs(_block(ok(None, b"a=1\0a=2\0\0")))
    assert pairs == [("a", "2"), ("a", "1")]
    assert uboot_env.decode(_block(ok(None, b"a=1\0a=2\0\0"))) == {"a": "2"}
    uboot_env.unsetenv(pairs, "a")
    assert pairs == [("a", "1")]
    uboot_env.setenv(pairs, "b", "x")
    uboot_env.setenv(pairs, "a", "y")
    assert pairs == [("b", "x"), ("a", "y")]


# -- the device side ---------------------------------------------------------------------


def test_kv_spec_with_redundant_copy() -> None:
    spec = "uboot-env:/dev/mmcblk0:0x100000,0x102000:0x2000"
    assert parse_kv_spec(spec) == ("uboot-env", "/dev/mmcblk0", 0x100000, 0x2000)
    assert kv_spec_redundant_offset(spec) == 0x102000
    assert kv_spec_redundant_offset("uboot-env:/dev/x:0:8192") is None
    for wrong in (
        "uboot-env:/dev/x:0,0x1000:0x2000",  # overlapping copies
        "uboot-env:/dev/x:0,1,2:512",
        "uboot-env:/dev/x:0,:512",
        "uboot-env:/dev/x:0,-1024:512",
    ):
        with pytest.raises(ConfigError):
            parse_kv_spec(wrong)


@pytest.mark.parametrize(
    "name", [n for n in sorted(CASES) if n.endswith(".req") and not n.startswith("blank")]
)
def test_device_reads_the_copy_fwup_reads(name: str, tmp_path: Path) -> None:
    """The daemon's reader picks the copy real fwup's require-uboot-variable picked."""
    spec, _task = CASES[name]
    after = decode_region(_expected()[name]["after"])  # type: ignore[arg-type]
    picked = uboot_env.decode(after[2 * BLOCK : 3 * BLOCK])["picked"]
    image = tmp_path / "dev.img"
    image.write_bytes(prepare(spec))
    if picked == "none":
        with pytest.raises(KVError, match="CRC32 mismatch"):
            read_kv(f"uboot-env:{image}:0,512:512")
    else:
        assert read_kv(f"uboot-env:{image}:0,512:512")["who"] == picked


def test_device_after_real_fwup_writes(tmp_path: Path) -> None:
    after = decode_region(_expected()["wrap-s-newer.set"]["after"])  # type: ignore[arg-type]
    assert after[4] == 1 and after[BLOCK + 4] == 0  # real fwup wrote the primary with 0 + 1
    assert parse_uboot_redundant(after[:BLOCK], after[BLOCK : 2 * BLOCK]) == {
        "who": "s",
        "a": "2",
        "x": "new",
    }
    image = tmp_path / "dev.img"
    image.write_bytes(after)
    assert read_kv(f"uboot-env:{image}:512,0:512")["x"] == "new"

"""Delta resources: an on-resource with ``delta-source-*`` options whose archive
entry is an xdelta3 patch (its ZIP local header gives a size other than the
resource's length), applied and verified as fwup 1.16 does (src/fwup_apply.c,
src/fwup_verify.c ``check_xdelta3_resource``).

The patches are the committed ones of tests/core/test_vcdiff.py; fwup's own suite
(172-175, 192, 193, 201, 212, 213, 216, 224) covers the same with the real tools.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, cast

import pytest

from nhlink_dbus.core.block_cache import BlockCache
from nhlink_dbus.core.fwup_apply import ApplyEngine, ApplyOptions, FatOps, _strtoul
from nhlink_dbus.core.fwup_conf import DeltaSource, load_meta_conf
from nhlink_dbus.core.fwup_meta import ArchiveInspector
from nhlink_dbus.core.vcdiff import OUTPUT_CHUNK
from nhlink_dbus.errors import FirmwareError, NhlinkError
from tests.core.test_vcdiff import SOURCE, TARGET, patch
from tests.fwup.test_sparse import blake
from tests.fwup.test_stream_chunking import Listener, MemoryDevice

SRC_BLOCK = 1024  # where the source (the "running slot") is, in blocks
DST_BLOCK = 4096


def meta(options: str, action: str = f"{{2,raw_write,{DST_BLOCK}}}") -> str:
    return (
        f'file-resource "r" {{\nlength={len(TARGET)}\nblake2b-256={blake(TARGET)}\n}}\n'
        f'task "upgrade" {{\non-resource "r" {{\n{options}\nfunlist={action}\n}}\n}}\n'
    )


RAW = f"delta-source-raw-offset={SRC_BLOCK}\ndelta-source-raw-count={len(SOURCE) // 512 + 1}"


def make_fw(meta_text: str, data: bytes) -> bytes:
    """As ``zip`` adds a file to an archive: its sizes in the local header."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("meta.conf", (1980, 1, 1, 0, 0, 0)), meta_text.encode())
        zf.writestr(zipfile.ZipInfo("data/r", (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_STORED)
    return buf.getvalue()


def base_image() -> bytearray:
    image = bytearray(DST_BLOCK * 512)
    image[SRC_BLOCK * 512 : SRC_BLOCK * 512 + len(SOURCE)] = SOURCE
    return image


def apply(
    fw: bytes, image: bytes, fat: Any = None, step: int = 4096
) -> tuple[str, bytes, list[int]]:
    dev = MemoryDevice(image)
    listener = Listener()
    engine = ApplyEngine(
        ApplyOptions(task="upgrade"),
        BlockCache(dev),
        listener,
        lambda *_: True,
        fat=cast(FatOps, fat),
    )
    outcome = "ok"
    try:
        for pos in range(0, len(fw), step):
            engine.feed(fw[pos : pos + step])
        engine.finish()
    except NhlinkError as exc:
        outcome = str(exc)
    return outcome, bytes(dev.data), listener.percents


def verify(fw: bytes) -> str:
    inspector = ArchiveInspector((), lambda *_: True, verify=True)
    try:
        inspector.feed(fw)
        inspector.finish()
    except FirmwareError as exc:
        return str(exc)
    return inspector.verify_text()


# -- meta.conf -----------------------------------------------------------------------------


def test_delta_options_parsed() -> None:
    conf = load_meta_conf(meta(RAW + '\ndelta-source-raw-options="cipher=x,secret=y"').encode())
    assert conf.tasks[0].deltas["r"] == DeltaSource(
        raw_offset=str(SRC_BLOCK), raw_count=len(SOURCE) // 512 + 1, raw_options="cipher=x,secret=y"
    )
    conf = load_meta_conf(
        meta(
            'delta-source-fat-offset=63\ndelta-source-fat-path="a/b"', '{3,fat_write,63,"x"}'
        ).encode()
    )
    delta = conf.tasks[0].deltas["r"]
    assert (delta.fat_offset, delta.fat_path, delta.raw_count) == ("63", "a/b", 0x7FFFFFFF)
    assert load_meta_conf(meta("").encode()).tasks[0].deltas == {}


def test_strtoul() -> None:
    assert [_strtoul(t) for t in ("1024", "0x400", "010", " 12abc", "abc", "")] == [
        1024,
        1024,
        8,
        12,
        0,
        0,
    ]


# -- raw sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["source", "small-windows", "appheader"])
def test_raw_delta_upgrade(name: str) -> None:
    image = base_image()
    outcome, out, percents = apply(make_fw(meta(RAW), patch(name)), bytes(image))
    assert outcome == "ok"
    assert out[DST_BLOCK * 512 : DST_BLOCK * 512 + len(TARGET)] == TARGET
    assert out[: DST_BLOCK * 512] == image  # the source is only read
    # progress: the resource's length in units, reported per output piece of <= 128 KiB
    total = len(TARGET)
    done, expected = 0, []
    for _ in range(-(-total // OUTPUT_CHUNK)):
        done = min(done + OUTPUT_CHUNK, total)
        p = min(done * 100 // total, 99)
        if p > (expected[-1] if expected else 0):
            expected.append(p)
    if name != "small-windows":
        assert percents == expected


def test_streamed_entry_is_not_a_delta() -> None:
    # Without a size in the local header (fwup -c's entries) nothing says "delta": the
    # patch is taken as the data and fails the length check.
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.conf", meta(RAW).encode())
        zf.writestr("data/r", patch("source"))
    outcome, _, _ = apply(buf.getvalue(), bytes(base_image()))
    assert outcome.startswith("raw_write wrote ")


def test_no_delta_options() -> None:
    outcome, _, _ = apply(make_fw(meta(""), patch("source")), bytes(base_image()))
    assert outcome == (
        f"File 'r' isn't expected size ({len(patch('source'))} vs {len(TARGET)}) and xdelta3"
        " patch support not enabled on it. (Add delta-source-raw-offset /"
        " delta-source-raw-count or delta-source-fat-offset / delta-source-fat-path)"
    )


def test_source_count_too_small() -> None:
    options = f"delta-source-raw-offset={SRC_BLOCK}\ndelta-source-raw-count=256"
    outcome, _, _ = apply(make_fw(meta(options), patch("source")), bytes(base_image()))
    assert outcome == "xdelta3 error: source file too short"


def test_source_count_missing_overflows_as_in_fwup() -> None:
    # fwup computes INT32_MAX blocks * 512 in a C int: -512, and every read is refused.
    outcome, _, _ = apply(
        make_fw(meta(f"delta-source-raw-offset={SRC_BLOCK}"), patch("source")), bytes(base_image())
    )
    assert outcome == (
        "xdelta tried to load outside of allowed byte range (0--512): offset: 0, count: 131072"
    )


def test_wrong_source() -> None:
    image = base_image()
    image[SRC_BLOCK * 512] ^= 1
    outcome, _, _ = apply(make_fw(meta(RAW), patch("source")), bytes(image))
    assert outcome == "xdelta3 error: target window checksum mismatch"


def test_bad_patches() -> None:
    outcome, _, _ = apply(make_fw(meta(RAW), b"\0" * 512), bytes(base_image()))
    assert outcome == "xdelta3 error: not a VCDIFF input"
    outcome, _, _ = apply(make_fw(meta(RAW), patch("fgk-head")), bytes(base_image()))
    assert outcome == "xdelta3 error: unavailable secondary compressor: FGK Adaptive Huffman"
    # cut short: the output just ends, and the length check reports it
    data = patch("small-windows")
    outcome, _, _ = apply(make_fw(meta(RAW), data[:-100]), bytes(base_image()))
    assert outcome.startswith("raw_write wrote ") and outcome.endswith(
        f"for 'r', but should have written {len(TARGET)}"
    )


def test_second_consumer_gets_nothing() -> None:
    outcome, _, _ = apply(
        make_fw(
            meta(RAW, f"{{2,raw_write,{DST_BLOCK},2,raw_write,{DST_BLOCK * 2}}}"), patch("source")
        ),
        bytes(base_image()),
    )
    assert outcome.startswith("raw_write didn't write anything")


# -- FAT sources ---------------------------------------------------------------------------


class FakeFat:
    through_cache = True

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.reads: list[tuple[int, str]] = []

    def read(self, block_offset: int, path: str) -> bytes | None:
        self.reads.append((block_offset, path))
        return self.files.get(path)

    def open_write(self, block_offset: int, path: str) -> Any:
        fat = self
        parts: list[bytes] = []

        class Writer:
            def write(self, data: bytes) -> None:
                parts.append(bytes(data))

            def commit(self) -> None:
                fat.files[path] = b"".join(parts)

            def abort(self) -> None:
                pass

        return Writer()


def test_fat_delta_upgrade() -> None:
    fat = FakeFat({"cur.bin": SOURCE})
    options = 'delta-source-fat-offset=63\ndelta-source-fat-path="cur.bin"'
    fw = make_fw(meta(options, '{3,fat_write,63,"new.bin"}'), patch("source"))
    outcome, _, _ = apply(fw, bytes(512 * 64), fat)
    assert outcome == "ok"
    assert fat.files["new.bin"] == TARGET
    assert fat.reads == [(63, "cur.bin")]  # read once


def test_fat_source_missing() -> None:
    options = 'delta-source-fat-offset=63\ndelta-source-fat-path="cur.bin"'
    fw = make_fw(meta(options, '{3,fat_write,63,"new.bin"}'), patch("source"))
    outcome, _, _ = apply(fw, bytes(512 * 64), FakeFat({}))
    assert outcome == "fat_pread can't open file(cur.bin): FATFS: Could not find the file"


# -- verify (-V) ---------------------------------------------------------------------------


def test_verify_checks_the_header_only() -> None:
    assert verify(make_fw(meta(RAW), patch("source"))) == "Valid archive without a signature\n"
    # a wrong source can't be seen without the source; a patch with no delta options
    # in any task still gets the header check, as in fwup
    assert verify(make_fw(meta(""), patch("small-windows"))).startswith("Valid archive")
    assert verify(make_fw(meta(RAW), b"\0" * 512)) == "xdelta3 error: not a VCDIFF input"
    assert verify(make_fw(meta(RAW), patch("fgk-head"))) == (
        "xdelta3 error: unavailable secondary compressor: FGK Adaptive Huffman"
    )
    bad_digest = meta(RAW).replace(blake(TARGET), "00")
    assert verify(make_fw(bad_digest, patch("source"))) == "invalid blake2b-256 hash for 'r'"

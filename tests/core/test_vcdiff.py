"""The VCDIFF decoder (nhlink_dbus/core/vcdiff.py) against patches made by xdelta3.

``tests/fixtures/vcdiff/`` holds patches Debian's xdelta3 3.0 made of the pair
:func:`fixture_pair` builds (``xdelta3 -A -S -f -s SOURCE TARGET PATCH``, as fwup's
tests do; ``small-windows`` adds ``-W 16384``, ``appheader`` leaves out ``-A``;
``no-source`` is of :data:`NO_SOURCE_TARGET` alone; the ``-head`` files are the
first 64 bytes of patches with secondary compression: ``-S fgk`` and the default).
When xdelta3 is installed, more patches are made at test time.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from nhlink_dbus.core import vcdiff
from nhlink_dbus.core.vcdiff import VcdiffDecoder, VcdiffError, decode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vcdiff"
NO_SOURCE_TARGET = (
    b"The quick brown fox jumps over the lazy dog. " * 300 + bytes(3000) + b"xyz" * 1000
)
XDELTA3 = shutil.which("xdelta3")
needs_xdelta3 = pytest.mark.skipif(XDELTA3 is None, reason="xdelta3 is not installed")


def fixture_pair() -> tuple[bytes, bytes]:
    """The source and target the committed patches were made of."""
    r = random.Random(20240601)
    src = bytearray(r.randbytes(300_000))
    tgt = bytearray(src)
    for i in range(0, len(tgt), 4096):
        if r.random() < 0.04:
            tgt[i : i + 4096] = r.randbytes(4096)
    tgt[1000:1000] = b"\0" * 5000  # a RUN
    tgt[50_000:50_000] = b"abc" * 2000  # an overlapping target copy
    tgt += src[:70_000]  # a source copy far back
    return bytes(src), bytes(tgt)


SOURCE, TARGET = fixture_pair()


def patch(name: str) -> bytes:
    return (FIXTURES / f"{name}.vcdiff").read_bytes()


def reader(source: bytes, log: list[tuple[int, int]] | None = None) -> vcdiff.ReadSource:
    def read(offset: int, size: int) -> bytes:
        if log is not None:
            log.append((offset, size))
        return source[offset : offset + size]

    return read


def run(data: bytes, source: bytes = SOURCE, cuts: list[int] | None = None, **kw: int) -> bytes:
    dec = VcdiffDecoder(reader(source), **kw)  # type: ignore[arg-type]
    out: list[bytes] = []
    pos = 0
    for cut in [*(cuts or []), len(data)]:
        out += dec.feed(data[pos:cut])
        pos = cut
    dec.finish(strict=True)
    return b"".join(out)


# -- hand-made patches -------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def window(
    target_len: int,
    data: bytes,
    inst: bytes,
    addr: bytes = b"",
    *,
    source: tuple[int, int] | None = None,
    indicator: int | None = None,
    adler: int | None = -1,
    enclen_delta: int = 0,
) -> bytes:
    """One window; ``adler=-1``: none; None: computed by the caller's target."""
    win_ind = 0 if source is None else vcdiff.VCD_SOURCE
    if adler != -1:
        win_ind |= vcdiff.VCD_ADLER32
    if indicator is not None:
        win_ind = indicator
    head = bytes([win_ind])
    if source is not None:
        head += varint(source[0]) + varint(source[1])
    body = varint(target_len) + b"\0" + varint(len(data)) + varint(len(inst)) + varint(len(addr))
    if adler != -1:
        assert adler is not None
        body += adler.to_bytes(4, "big")
    body += data + inst + addr
    return head + varint(len(body) + enclen_delta) + body


HEADER = b"\xd6\xc3\xc4\x00\x00"


def test_code_table_is_rfc3284s() -> None:
    t = vcdiff._TABLE
    assert t[0] == (0, vcdiff._RUN, 0, 0, 0)
    assert t[1] == (0, vcdiff._ADD, 0, 0, 0)
    assert t[18] == (0, vcdiff._ADD, 17, 0, 0)
    assert t[19] == (0, vcdiff._COPY, 0, 0, 0)
    assert t[20] == (0, vcdiff._COPY, 4, 0, 0)
    assert t[162] == (0, vcdiff._COPY, 18, 8, 0)
    assert t[163] == (1, vcdiff._COPY, 4, 0, 0)
    assert t[234] == (4, vcdiff._COPY, 6, 5, 0)
    assert t[235] == (1, vcdiff._COPY, 4, 6, 0)
    assert t[246] == (4, vcdiff._COPY, 4, 8, 0)
    assert t[247] == (0, vcdiff._COPY, 4, 0, 1)
    assert t[255] == (0, vcdiff._COPY, 4, 8, 1)


def test_hand_made_add_run_and_overlapping_copy() -> None:
    # ADD "ab" (opcode 3 = ADD size 2), RUN 5 x "z" (opcode 0 + size), COPY 7 from
    # target address 0 in VCD_SELF mode (opcode 19 + size; overlaps what it writes).
    target = b"abzzzzzabzzzzza"
    inst = bytes([3, 0]) + varint(5) + bytes([19]) + varint(8)
    w = window(len(target), b"abz", inst, varint(0), adler=zlib.adler32(target))
    assert decode(HEADER + w) == target


def test_hand_made_source_copy_modes_and_cache() -> None:
    source = bytes(range(256)) * 4
    # COPY 10 from source 100 (SELF), COPY 4 HERE-relative, COPY 4 NEAR, COPY 4 SAME.
    inst = bytes([19]) + varint(10) + bytes([20 + 16 * 1, 20 + 16 * 2, 20 + 16 * 6])
    # HERE: 1034 (source length + 10) minus 834 is 200; NEAR: the first address + 5;
    # SAME: the cached address whose low byte is 100.
    addr = varint(100) + varint(1034 - 200) + varint(5) + bytes([100 % 256])
    expected = source[100:110] + source[200:204] + source[105:109] + source[100:104]
    w = window(len(expected), b"", inst, addr, source=(len(source), 0))
    assert decode(HEADER + w, source) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04junk", "not a VCDIFF input"),
        (b"\xd6\xc3\xc4\x01\x00", "VCDIFF input version > 0 is not supported"),
        (b"\xd6\xc3\xc4\x00\x08", "unrecognized header indicator bits set"),
        (b"\xd6\xc3\xc4\x00\x01\x10", "unavailable secondary compressor: FGK Adaptive Huffman"),
        (b"\xd6\xc3\xc4\x00\x01\x01", "unavailable secondary compressor: DJW Static Huffman"),
        (b"\xd6\xc3\xc4\x00\x01\x07", "unknown secondary compressor ID"),
        (b"\xd6\xc3\xc4\x00\x02\x09\x04\x03", "VCD_CODETABLE support was removed"),
        (b"\xd6\xc3\xc4\x00\x02\x02", "invalid code table size"),
        (HEADER + b"\x08", "unrecognized window indicator bits set"),
        (HEADER + b"\x00\x07\x05\x08", "unrecognized delta indicator bits set"),
        (HEADER + b"\x00\x07\x05\x01", "invalid delta indicator bits set"),
        (HEADER + window(1, b"a", b"\x02", enclen_delta=1), "incorrect encoding length"),
        (HEADER + window(2, b"a", b"\x02"), "wrong window length"),
        (HEADER + window(1, b"ab", b"\x02"), "extra data section"),
        (HEADER + window(2, b"a", b"\x03"), "data underflow"),
        (HEADER + window(1, b"a", b"\x02\x14", b"\x00"), "size too large"),
        (HEADER + window(5, b"a", b"\x02\x14", b"\x01"), "address too large"),
        (HEADER + window(5, b"a", b"\x02\x14"), "end-of-input in read_integer"),
        (HEADER + window(5, b"a", b"\x02\x14", b"\x00\x00"), "extra address section"),
        (HEADER + window(1, b"a", b"\x02", adler=1), "target window checksum mismatch"),
        (HEADER + window(1, b"a", b"\x02", indicator=2), "VCD_TARGET window out of bounds"),
        (HEADER + b"\x00" + varint(9) + varint(1 << 27), "hard window size exceeded"),
        (HEADER + window(1, b"a", b"\x02", source=(4, 0)), "source input required"),
    ],
)
def test_refused(data: bytes, message: str) -> None:
    dec = VcdiffDecoder(None)
    with pytest.raises(VcdiffError, match=message):
        list(dec.feed(data))


def test_vcd_target_window_refused() -> None:
    first = window(2, b"ab", b"\x03")
    second = window(1, b"a", b"\x02", indicator=vcdiff.VCD_TARGET, source=(2, 0))
    with pytest.raises(VcdiffError, match="VCD_TARGET not implemented"):
        decode(HEADER + first + second)


def test_secondary_compression_fixtures_refused() -> None:
    with pytest.raises(VcdiffError, match="unavailable secondary compressor: FGK"):
        list(VcdiffDecoder(reader(SOURCE)).feed(patch("fgk-head")))
    with pytest.raises(VcdiffError, match="unavailable secondary compressor: LZMA"):
        list(VcdiffDecoder(reader(SOURCE)).feed(patch("default-secondary-head")))


# -- xdelta3's patches ---------------------------------------------------------------------


def test_fixture_pair_is_what_the_patches_were_made_of() -> None:
    assert hashlib.sha256(SOURCE).hexdigest().startswith("f10769b64589531c")
    assert hashlib.sha256(TARGET).hexdigest().startswith("9e5e3c376453ecae")


@pytest.mark.parametrize("name", ["source", "small-windows", "appheader"])
def test_fixtures_decode(name: str) -> None:
    assert run(patch(name)) == TARGET


def test_no_source_fixture() -> None:
    assert decode(patch("no-source")) == NO_SOURCE_TARGET


def test_any_slicing_gives_the_same_output() -> None:
    data = patch("small-windows")
    r = random.Random(4)
    for _ in range(5):
        cuts = sorted(r.sample(range(len(data)), 40))
        assert run(data, cuts=cuts) == TARGET
    assert run(data, cuts=list(range(0, 2000))) == TARGET  # byte by byte through headers


def test_output_comes_in_chunks_and_windows_whole() -> None:
    dec = VcdiffDecoder(reader(SOURCE), chunk_size=10_000)
    pieces = list(dec.feed(patch("source")))
    assert max(map(len, pieces)) == 10_000
    assert b"".join(pieces) == TARGET
    dec.finish(strict=True)
    dec = VcdiffDecoder(reader(SOURCE))
    assert max(map(len, dec.feed(patch("source")))) == vcdiff.OUTPUT_CHUNK
    # small windows: nothing of a window comes out before all of it is in
    data = patch("small-windows")
    dec = VcdiffDecoder(reader(SOURCE))
    out = b"".join(dec.feed(data[: len(data) // 2]))
    assert out and len(out) % 16384 == 0 and TARGET.startswith(out)


def test_source_reads_are_whole_aligned_blocks() -> None:
    log: list[tuple[int, int]] = []
    dec = VcdiffDecoder(reader(SOURCE, log), block_size=65536)
    assert b"".join(dec.feed(patch("source"))) == TARGET
    assert log[0] == (0, 65536)  # fwup reads block 0 at the header
    assert all(off % 65536 == 0 and size == 65536 for off, size in log)


def test_source_too_short() -> None:
    with pytest.raises(VcdiffError, match="source file too short"):
        run(patch("source"), source=SOURCE[:200_000])


def test_wrong_source_fails_the_checksum() -> None:
    with pytest.raises(VcdiffError, match="target window checksum mismatch"):
        run(patch("source"), source=SOURCE[1:] + b"\0")


def test_truncated_patch() -> None:
    data = patch("small-windows")
    dec = VcdiffDecoder(reader(SOURCE))
    out = b"".join(dec.feed(data[:-10]))
    assert len(out) < len(TARGET) and TARGET.startswith(out)
    assert not dec.complete
    dec.finish()  # as xdelta3: the output just ends
    dec = VcdiffDecoder(reader(SOURCE))
    list(dec.feed(data[:-10]))
    with pytest.raises(VcdiffError, match="unexpected end"):
        dec.finish(strict=True)


def test_header_only() -> None:
    log: list[tuple[int, int]] = []
    dec = VcdiffDecoder(reader(SOURCE, log), header_only=True)
    data = patch("source")
    assert list(dec.feed(data[:3])) == []
    assert not dec.header_seen
    assert list(dec.feed(data[3:])) == []
    assert dec.header_seen and log == []
    assert list(dec.feed(b"garbage after the header is not looked at")) == []
    with pytest.raises(VcdiffError, match="not a VCDIFF input"):
        list(VcdiffDecoder(header_only=True).feed(b"\x00" * 512))


@needs_xdelta3
@pytest.mark.parametrize(
    "options",
    [["-A", "-S"], ["-A", "-S", "-W", "16384"], ["-A", "-S", "-B", "524288"], ["-S"]],
)
def test_xdelta3_patches(tmp_path: Path, options: list[str]) -> None:
    assert XDELTA3 is not None
    r = random.Random(len(options))
    for case in range(3):
        src = bytearray(r.randbytes(r.randint(1, 600_000)))
        tgt = bytearray(src)
        for _ in range(r.randint(0, 200)):
            at = r.randrange(len(tgt) + 1)
            kind = r.random()
            if kind < 0.3:
                tgt[at:at] = r.randbytes(r.randint(1, 100))
            elif kind < 0.6:
                del tgt[at : at + r.randint(1, 100)]
            elif kind < 0.8:
                tgt[at:at] = bytes([r.randrange(256)]) * r.randint(1, 3000)
            else:
                a = r.randrange(len(src))
                tgt[at:at] = src[a : a + r.randint(1, 20_000)]
        (tmp_path / "s").write_bytes(src)
        (tmp_path / "t").write_bytes(tgt)
        subprocess.run(
            [XDELTA3, *options, "-f", "-s", tmp_path / "s", tmp_path / "t", tmp_path / "p"],
            check=True,
        )
        data = (tmp_path / "p").read_bytes()
        cuts = sorted(r.sample(range(len(data)), min(len(data), 7)))
        assert run(data, source=bytes(src), cuts=cuts) == bytes(tgt), case

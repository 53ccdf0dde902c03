"""A streaming VCDIFF (RFC 3284) decoder for the patches xdelta3 makes, sans-I/O.

fwup applies delta resources with a bundled xdelta3; this module decodes the same
patches the same way (src/3rdparty/xdelta3/xdelta3-decode.h), in pure Python:

* patch bytes are fed in any slicing (:meth:`VcdiffDecoder.feed`); each target
  window is decoded once all of its bytes are in, its Adler-32 (xdelta3's
  ``VCD_ADLER32`` extension) is checked, and its output is handed out in pieces
  of at most 128 KiB (fwup's ``MAX_READ_RETURN_SIZE``, which its progress follows);
* the source (``VCD_SOURCE`` windows) is read through an injected
  ``read_source(offset, size) -> bytes`` in xdelta3's blocks of 128 KiB (fwup's
  ``READ_SIZE``) at block-aligned offsets; a read that returns fewer bytes marks the
  end of the source, and a copy past it fails (``source file too short``). The
  callable may raise its own error (fwup's range check does);
* only the default code table is known; secondary compression, an explicit code
  table and ``VCD_TARGET`` windows are refused with xdelta3's messages, as fwup's
  build does: nothing is decoded half-understood;
* an application header (xdelta3 without ``-A``) is skipped;
* a patch that ends early is not an error here (xdelta3 just stops producing
  output; fwup then reports the short length): see :attr:`VcdiffDecoder.complete`.

Errors raise :class:`VcdiffError` whose text is xdelta3's ``stream->msg``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError

ReadSource = Callable[[int, int], bytes]

SOURCE_BLOCK = 128 * 1024  # fwup_xdelta3.c READ_SIZE: xdelta3's source block size
OUTPUT_CHUNK = 128 * 1024  # fwup_xdelta3.c MAX_READ_RETURN_SIZE
HARD_MAX_WINDOW = 1 << 26  # XD3_HARDMAXWINSIZE

MAGIC = b"\xd6\xc3\xc4"  # 'V' 'C' 'D' with the high bit set; a version byte follows

# Header indicator
VCD_SECONDARY = 0x01
VCD_CODETABLE = 0x02
VCD_APPHEADER = 0x04
# Window indicator
VCD_SOURCE = 0x01
VCD_TARGET = 0x02
VCD_ADLER32 = 0x04

_SECONDARY_NAMES = {16: "FGK Adaptive Huffman", 1: "DJW Static Huffman", 2: "LZMA"}
_M64 = (1 << 64) - 1
_OFLOW = 0xFE00000000000000  # UINT64_OFLOW_MASK: one more 7-bit group would overflow

# Instruction types in the code table
_NOOP, _ADD, _RUN, _COPY = 0, 1, 2, 3
_NEAR = 4  # s_near of the default table
_SAME = 3  # s_same


class VcdiffError(FirmwareError):
    """A patch xdelta3 would refuse; the text is xdelta3's message."""


def _code_table() -> tuple[tuple[int, int, int, int, int], ...]:
    """RFC 3284's default code table (xdelta3's xd3_build_code_table with its
    __rfc3284_code_table_desc), per opcode as ``(pre, type, size, mode, post)``: the
    instruction ``type`` of ``size`` (0: the size follows in the instruction section)
    and address ``mode``, with an ADD of ``pre`` bytes before it (ADD+COPY opcodes)
    or ``post`` bytes after it (COPY+ADD), 0 when there is none."""
    t = [(0, _RUN, 0, 0, 0), (0, _ADD, 0, 0, 0)]
    t += [(0, _ADD, size, 0, 0) for size in range(1, 18)]
    for mode in range(9):
        t.append((0, _COPY, 0, mode, 0))
        t += [(0, _COPY, size, mode, 0) for size in range(4, 19)]
    for mode in range(9):
        copy_max = 6 if mode < 2 + _NEAR else 4
        for add in range(1, 5):
            t += [(add, _COPY, size, mode, 0) for size in range(4, copy_max + 1)]
    t += [(0, _COPY, 4, mode, 1) for mode in range(9)]
    assert len(t) == 256
    return tuple(t)


_TABLE = _code_table()


class _Short(Exception):
    """More input is needed to parse the current header (internal)."""


def _integer(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """A VCDIFF integer from the input stream (xdelta3's DECODE_INTEGER_TYPE)."""
    val = 0
    while pos < end:
        if val & _OFLOW:
            raise VcdiffError("overflow in decode_integer")
        byte = buf[pos]
        pos += 1
        val = (val << 7) | (byte & 0x7F)
        if byte < 0x80:
            return val, pos
    raise _Short


def _read_integer(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A VCDIFF integer inside a window section (xdelta3's READ_INTEGER_TYPE)."""
    val = 0
    while True:
        if pos >= end:
            raise VcdiffError("end-of-input in read_integer")
        if val & _OFLOW:
            raise VcdiffError("overflow in read_intger")  # sic, xdelta3's text
        byte = buf[pos]
        pos += 1
        val = (val << 7) | (byte & 0x7F)
        if byte < 0x80:
            return val, pos


def _sizeof(value: int) -> int:
    """Bytes of ``value`` as a VCDIFF integer."""
    return max(1, -(-value.bit_length() // 7))


@dataclass(frozen=True, slots=True)
class _Window:
    indicator: int
    cpylen: int  # source segment length (0 without VCD_SOURCE)
    cpyoff: int  # source segment position
    tgtlen: int
    data_len: int
    inst_len: int
    addr_len: int
    adler32: int | None

    @property
    def body_len(self) -> int:
        return self.data_len + self.inst_len + self.addr_len


class VcdiffDecoder:
    """Decode one VCDIFF patch fed incrementally.

    ``read_source``: reads the source (None: no source; a ``VCD_SOURCE`` window
    then fails with ``source input required``). ``header_only``: stop after the
    file header and the first window's header (fwup ``-V``'s check); nothing is
    output. Iterate what :meth:`feed` returns before feeding again.
    """

    def __init__(
        self,
        read_source: ReadSource | None = None,
        *,
        header_only: bool = False,
        block_size: int = SOURCE_BLOCK,
        chunk_size: int = OUTPUT_CHUNK,
        cached_blocks: int = 16,
    ) -> None:
        if block_size <= 0 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two")
        self._read_source = read_source
        self.header_only = header_only
        self._bs = block_size
        self._shift = block_size.bit_length() - 1
        self._chunk = chunk_size
        self._max_blocks = max(1, cached_blocks)
        self._blocks: dict[int, memoryview] = {}  # source blocks read (FIFO)
        self._buf = bytearray()
        self._header_done = False
        self._window: _Window | None = None
        self.header_seen = False  # file header and first window header parsed (GOTHEADER)
        self.windows = 0  # windows decoded
        self.total_out = 0  # bytes output
        self.ended = False

    @property
    def complete(self) -> bool:
        """True when the input seen so far ends on a window boundary (after the
        file header): a patch cut there still decodes to whole windows."""
        return self._header_done and self._window is None and not self._buf

    # -- driving ------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Take more patch bytes (buffered at once); the iterator returned decodes
        and yields the output pieces they complete, in order. Exhaust it before the
        next call."""
        if self.ended:
            raise ValueError("feed after finish")
        if not (self.header_only and self.header_seen):
            self._buf += data
        return self._drain()

    def _drain(self) -> Iterator[bytes]:
        while not (self.header_only and self.header_seen):
            if not self._header_done and not self._parse_file_header():
                return
            if self._window is None:
                if not self._buf:
                    return
                if not self._parse_window_header():
                    return
                if self.header_only:
                    self._buf.clear()
                    self._window = None
                    return
            window = self._window
            assert window is not None
            if len(self._buf) < window.body_len:
                return
            body = bytes(self._buf[: window.body_len])
            del self._buf[: window.body_len]
            self._window = None
            out = self._decode_window(window, body)
            self.windows += 1
            self.total_out += len(out)
            chunk = self._chunk
            if len(out) <= chunk:
                if out:
                    yield bytes(out)
                continue
            view = memoryview(out)
            for start in range(0, len(out), chunk):
                yield bytes(view[start : start + chunk])
            view.release()

    def finish(self, strict: bool = False) -> None:
        """The patch ended. As xdelta3, a cut in a header or window is not an error
        (the missing output shows as a short result) unless ``strict``."""
        self.ended = True
        if strict and not self.header_only and not self.complete:
            raise VcdiffError("unexpected end of VCDIFF input")

    # -- headers --------------------------------------------------------------------------

    def _parse_file_header(self) -> bool:
        buf = self._buf
        end = len(buf)
        if end < 4:
            return False
        if bytes(buf[:3]) != MAGIC:
            raise VcdiffError("not a VCDIFF input")
        if buf[3] != 0:
            raise VcdiffError("VCDIFF input version > 0 is not supported")
        if end < 5:
            return False
        indicator = buf[4]
        if indicator & ~(VCD_SECONDARY | VCD_CODETABLE | VCD_APPHEADER):
            raise VcdiffError("unrecognized header indicator bits set")
        pos = 5
        try:
            if indicator & VCD_SECONDARY:
                if pos >= end:
                    return False
                ident = buf[pos]
                pos += 1
                name = _SECONDARY_NAMES.get(ident)
                if name is None:
                    raise VcdiffError("unknown secondary compressor ID")
                raise VcdiffError(f"unavailable secondary compressor: {name}")
            if indicator & VCD_CODETABLE:
                size, pos = _integer(buf, pos, end)
                if size <= 2:
                    raise VcdiffError("invalid code table size")
                if pos + 2 > end:  # the near and same mode counts
                    return False
                raise VcdiffError("VCD_CODETABLE support was removed")
            if indicator & VCD_APPHEADER:
                size, pos = _integer(buf, pos, end)
                if pos + size > end:
                    return False
                pos += size
        except _Short:
            return False
        del buf[:pos]
        self._header_done = True
        return True

    def _parse_window_header(self) -> bool:
        buf = self._buf
        end = len(buf)
        indicator = buf[0]
        if indicator & ~(VCD_SOURCE | VCD_TARGET | VCD_ADLER32):
            raise VcdiffError("unrecognized window indicator bits set")
        pos = 1
        cpylen = cpyoff = 0
        try:
            if (indicator & (VCD_SOURCE | VCD_TARGET)) in (VCD_SOURCE, VCD_TARGET):
                cpylen, pos = _integer(buf, pos, end)
                cpyoff, pos = _integer(buf, pos, end)
                if cpyoff + cpylen > _M64:
                    raise VcdiffError("decoder copy window overflows a file offset")
                if indicator & VCD_TARGET and cpyoff + cpylen > self.total_out:
                    raise VcdiffError("VCD_TARGET window out of bounds")
            enclen, pos = _integer(buf, pos, end)
            tgtlen, pos = _integer(buf, pos, end)
            if cpylen + tgtlen > _M64:
                raise VcdiffError("decoder target window overflows a usize_t")
            if tgtlen > HARD_MAX_WINDOW:
                raise VcdiffError("hard window size exceeded")
            if pos >= end:
                return False
            delta_indicator = buf[pos]
            pos += 1
            if delta_indicator & ~0x07:
                raise VcdiffError("unrecognized delta indicator bits set")
            if delta_indicator:
                raise VcdiffError("invalid delta indicator bits set")  # no secondary compressor
            data_len, pos = _integer(buf, pos, end)
            inst_len, pos = _integer(buf, pos, end)
            addr_len, pos = _integer(buf, pos, end)
        except _Short:
            return False
        adler: int | None = None
        if indicator & VCD_ADLER32:
            if pos + 4 > end:
                return False
            adler = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        expected = (
            1
            + _sizeof(tgtlen)
            + _sizeof(data_len)
            + _sizeof(inst_len)
            + _sizeof(addr_len)
            + data_len
            + inst_len
            + addr_len
            + (4 if adler is not None else 0)
        )
        if enclen != expected:
            raise VcdiffError("incorrect encoding length (redundent)")  # sic
        del buf[:pos]
        self._window = _Window(
            indicator, cpylen, cpyoff, tgtlen, data_len, inst_len, addr_len, adler
        )
        if not self.header_seen:
            self.header_seen = True
            # fwup loads source block 0 when xdelta3 reports the header (XD3_GOTHEADER).
            if self._read_source is not None and not self.header_only:
                self._block(0)
        return True

    # -- the source -----------------------------------------------------------------------

    def _block(self, blkno: int) -> memoryview:
        """Source block ``blkno``; shorter than a block at the end of the source."""
        blocks = self._blocks
        data = blocks.get(blkno)
        if data is None:
            assert self._read_source is not None
            data = memoryview(bytes(self._read_source(blkno << self._shift, self._bs)))
            if len(data) > self._bs:
                data = data[: self._bs]
            if len(blocks) >= self._max_blocks:
                del blocks[next(iter(blocks))]
            blocks[blkno] = data
        return data

    def _copy_source(self, out: bytearray, offset: int, size: int) -> None:
        bs = self._bs
        mask = bs - 1
        shift = self._shift
        while size > 0:
            blkoff = offset & mask
            data = self._block(offset >> shift)
            have = len(data)
            if have != bs and blkoff + size > have:
                raise VcdiffError("source file too short")
            take = min(size, bs - blkoff)
            out += data[blkoff : blkoff + take]
            size -= take
            offset += take

    # -- windows --------------------------------------------------------------------------

    def _decode_window(self, w: _Window, body: bytes) -> bytearray:
        """One target window (xdelta3's xd3_decode_emit): each opcode's sizes and
        addresses are parsed and checked, then its instructions output."""
        if w.indicator & VCD_TARGET:
            raise VcdiffError("VCD_TARGET not implemented")
        if w.indicator & VCD_SOURCE and self._read_source is None:
            raise VcdiffError("source input required")
        cpylen = w.cpylen
        cpyoff = w.cpyoff
        maxpos = cpylen + w.tgtlen
        data_end = w.data_len
        inst_end = data_end + w.inst_len
        addr_end = inst_end + w.addr_len
        mv = memoryview(body)
        out = bytearray()
        near = [0] * _NEAR
        slot = 0
        same = [0] * (_SAME * 256)
        table = _TABLE
        blocks = self._blocks
        mask = self._bs - 1
        shift = self._shift
        pos = cpylen  # xdelta3's dec_position: source segment, then target so far
        dp = 0  # data section
        ip = data_end  # instruction section
        ap = inst_end  # address section
        while ip < inst_end:
            pre, kind, size, mode, post = table[body[ip]]
            ip += 1
            # -- parse (xd3_decode_instruction) --
            if pre:
                if pos + pre > maxpos:
                    raise VcdiffError("size too large")
                pos += pre
            if size == 0:
                if ip < inst_end and body[ip] < 0x80:
                    size = body[ip]
                    ip += 1
                else:
                    size, ip = _read_integer(body, ip, inst_end)
            addr = 0
            if kind == _COPY:
                if mode < 6:
                    if ap < addr_end and body[ap] < 0x80:
                        addr = body[ap]
                        ap += 1
                    else:
                        addr, ap = _read_integer(body, ap, addr_end)
                    if mode == 1:  # VCD_HERE
                        addr = (pos - addr) & _M64
                    elif mode:  # near
                        addr = (near[mode - 2] + addr) & _M64
                else:  # same
                    if ap >= addr_end:
                        raise VcdiffError("address underflow")
                    addr = same[(mode - 6) * 256 + body[ap]]
                    ap += 1
                near[slot] = addr
                slot = (slot + 1) & 3
                same[addr % 768] = addr
                if addr >= pos:
                    raise VcdiffError("address too large")
                if addr < cpylen < addr + size:
                    raise VcdiffError("size too large")
            if pos + size > maxpos:
                raise VcdiffError("size too large")
            pos += size
            if post:
                if pos + post > maxpos:
                    raise VcdiffError("size too large")
                pos += post
            # -- output (xd3_decode_output_halfinst) --
            if pre:
                if dp + pre > data_end:
                    raise VcdiffError("data underflow")
                out += mv[dp : dp + pre]
                dp += pre
            if kind == _COPY:
                if addr < cpylen:
                    offset = cpyoff + addr
                    blkoff = offset & mask
                    block = blocks.get(offset >> shift)
                    if block is not None and blkoff + size <= len(block):
                        out += block[blkoff : blkoff + size]
                    else:
                        self._copy_source(out, offset, size)
                else:
                    start = addr - cpylen
                    cur = len(out)
                    if start + size <= cur:
                        out += out[start : start + size]
                    else:  # overlaps what it writes: the pattern repeats
                        pattern = out[start:cur]
                        out += (pattern * -(-size // len(pattern)))[:size]
            elif kind == _ADD:
                if dp + size > data_end:
                    raise VcdiffError("data underflow")
                out += mv[dp : dp + size]
                dp += size
            else:  # RUN
                if dp >= data_end:
                    raise VcdiffError("data underflow")
                out += bytes((body[dp],)) * size
                dp += 1
            if post:
                if dp + post > data_end:
                    raise VcdiffError("data underflow")
                out += mv[dp : dp + post]
                dp += post
        mv.release()
        if len(out) != w.tgtlen:
            raise VcdiffError("wrong window length")
        if dp != data_end:
            raise VcdiffError("extra data section")
        if ap != addr_end:
            raise VcdiffError("extra address section")
        if w.adler32 is not None and zlib.adler32(out) != w.adler32:
            raise VcdiffError("target window checksum mismatch")
        return out


def decode(patch: bytes, source: bytes = b"") -> bytes:
    """Decode a whole patch against an in-memory source (for tests and tools)."""

    def read(offset: int, size: int) -> bytes:
        return source[offset : offset + size]

    dec = VcdiffDecoder(read)
    out = b"".join(dec.feed(patch))
    dec.finish(strict=True)
    return out


__all__ = [
    "OUTPUT_CHUNK",
    "SOURCE_BLOCK",
    "ReadSource",
    "VcdiffDecoder",
    "VcdiffError",
    "decode",
]

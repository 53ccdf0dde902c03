"""A streaming reader for the ZIP container of a ``.fw`` archive, as fwup reads it.

fwup reads its archive with libarchive's streaming ZIP reader (it never seeks), in the
pieces its read callback returns: 16 KiB reads of a file, or the frames of ``--framing``
stdin. What fwup sees — the data pieces (and so its progress packets), which damage it
notices and when, and every error text — follows from libarchive 3.6's algorithm, so this
module follows it step by step (``archive_read.c``: the read-ahead and copy buffer;
``archive_read_support_format_zip.c``: the streamable reader), for what fwup's archives use:
stored and deflated entries, with or without data descriptors (flag bit 3; fwup sets it on
every entry: sizes follow the data), Zip64 and the extra fields' checks. Other compression
methods and encryption are refused with libarchive's texts; libarchive would try bzip2,
LZMA, XZ, zstd and PPMd decoders and passphrases there (a damaged local header), which fwup
never writes.

The reader is sans-I/O and pull-driven from the outside: :meth:`ZipStreamReader.feed`
takes one input piece (one read callback result) and returns an iterator of the events it
completes, produced lazily. Between events the caller decides, as fwup does, whether it
reads the current entry's data (the default) or moves on (:meth:`ZipStreamReader.skip`):
a piece the caller has not asked for is not read, so its checks (a stored entry's CRC,
after its last byte) do not happen either.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Generator, Iterator

from nhlink_dbus.core.digest import Digest, DigestFactory, new_digest
from nhlink_dbus.core.records import dataclass

_LOCAL = struct.Struct("<4sBBHHIIIIHH")  # 30 bytes: sig, version, system, flags, method, ...

FLAG_ENCRYPTED = 1 << 0
FLAG_LENGTH_AT_END = 1 << 3
FLAG_STRONG_ENCRYPTED = 1 << 6
FLAG_UTF8_NAME = 1 << 11
FLAG_CENTRAL_DIRECTORY_ENCRYPTED = 1 << 13

METHOD_STORED = 0
METHOD_DEFLATE = 8
INFLATE_OUTPUT = 256 * 1024  # libarchive's uncompressed_buffer_size
BULK_OUTPUT = 512 << 10  # at most this much output in one event of several reads

# libarchive's compression_methods table (for "Unsupported ZIP compression method").
_METHOD_NAMES = {
    0: "uncompressed", 1: "shrinking", 2: "reduced-1", 3: "reduced-2", 4: "reduced-3",
    5: "reduced-4", 6: "imploded", 7: "reserved", 8: "deflation", 9: "deflation-64-bit",
    10: "ibm-terse", 11: "reserved", 12: "bzip", 13: "reserved", 14: "lzma", 15: "reserved",
    16: "reserved", 17: "reserved", 18: "ibm-terse-new", 19: "ibm-lz777", 93: "zstd",
    95: "xz", 96: "jpeg", 97: "wav-pack", 98: "ppmd-1", 99: "aes",
}  # fmt: skip

_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class EntryStart:
    name: str
    mtime: int | None  # from the UT extra field, when present: seconds since 1970 (UTC)
    # The uncompressed size the local header gives, None when it gives none (flag bit 3
    # with a 0 size, as in fwup's own archives): libarchive's archive_entry_size_is_set.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class EntryData:
    """Entry data: the output of one read of libarchive's, or of several in a row
    (:attr:`ZipStreamReader.bulk_limit`); then ``tail`` is the size of the last
    read's output, at the end of ``data`` (0: ``data`` is one read's)."""

    name: str
    data: bytes
    tail: int = 0


@dataclass(frozen=True, slots=True)
class EntryEnd:
    """The entry's data ended (libarchive's ARCHIVE_EOF), its checks passed."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class ArchiveEnd:
    """The next header is the central directory: no more entries (ARCHIVE_EOF)."""


@dataclass(frozen=True, slots=True)
class HeaderFailed:
    """Opening the archive or reading the next header failed (not ARCHIVE_OK).

    ``text`` is libarchive's error string, None where it sets none (fwup prints
    "(null)"). Nothing more is read after it.
    """

    text: str | None
    opening: bool = False  # True: archive_read_open failed (no format recognised)


@dataclass(frozen=True, slots=True)
class DataFailed:
    """Reading the current entry's data failed: the piece of that read is not given."""

    name: str
    text: str


Event = EntryStart | EntryData | EntryEnd | ArchiveEnd | HeaderFailed | DataFailed

# Internal result codes, as libarchive's.
_OK, _EOF, _WARN, _FAILED, _FATAL = 0, 1, -20, -25, -30


class _Need:
    """Yielded by the machine when it needs the next input piece."""


_NEED = _Need()
_Steps = Generator[_Need, None, object]


class _Error(Exception):
    def __init__(self, code: int, text: str | None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _ReadError(Exception):
    """The read callback failed (its text is in ``_Filter.error``)."""


def _truncated(wanted: int, got: int) -> str:
    return f"Truncated input file (needed {wanted} bytes, only {got} available)"


class _Filter:
    """libarchive's read filter "none" over the pieces fwup's read callback returns
    (archive_read.c ``__archive_read_filter_ahead``, ``advance_file_pointer``)."""

    def __init__(self) -> None:
        self.pending: deque[bytes | memoryview] = deque()
        self.input_ended = False  # the read callback returns 0 once the queue is empty
        self.read_error: str | None = None  # ... or fails with this text (framed stdin)
        self.end_of_file = False
        self.fatal = False
        self.error: str | None = None  # the archive's error text set by a failed read
        self.copy = bytearray()  # the copy buffer's available bytes
        self.client: memoryview | None = None
        self.cnext = 0
        self.cavail = 0
        self.ctotal = 0
        # A large buffer handed in whole (ZipStreamReader.stream): the read callback
        # returns it ``read_size`` bytes at a time, after any pending piece.
        self.bulk = memoryview(b"")
        self.bulk_pos = 0
        self.read_size = 0
        self.taken = 0  # bytes the read callback returned from bulk buffers

    def peek_bulk(self) -> memoryview | None:
        """The read callback's next piece from the bulk buffer, not taken yet."""
        if self.pending or self.bulk_pos >= len(self.bulk):
            return None
        return self.bulk[self.bulk_pos : self.bulk_pos + self.read_size]

    def take_bulk(self, size: int) -> None:
        self.bulk_pos += size
        self.taken += size

    def _read(self) -> Generator[_Need, None, memoryview | None]:
        """The read callback: a piece, or None at the end (raises on a read error)."""
        while not self.pending:
            piece = self.peek_bulk()
            if piece is not None:
                self.take_bulk(len(piece))
                return piece
            if self.input_ended:
                if self.read_error is not None:
                    self.client, self.cnext, self.cavail, self.ctotal = None, 0, 0, 0
                    self.fatal = True
                    self.error = self.read_error
                    raise _ReadError
                return None
            yield _NEED
        return memoryview(self.pending.popleft())

    def ahead(self, minimum: int) -> Generator[_Need, None, tuple[bytes | memoryview | None, int]]:
        """``__archive_read_ahead``: at least ``minimum`` bytes, or (None, what there is)."""
        if self.fatal:
            return None, _FATAL
        while True:
            avail = len(self.copy)
            if avail >= minimum and avail > 0:
                return bytes(self.copy), avail
            if self.ctotal >= self.cavail + avail and self.cavail + avail >= minimum:
                # Everything in the copy buffer is still in the client buffer: use that.
                self.cavail += avail
                self.cnext -= avail
                self.copy.clear()
                if self.client is None:
                    return None, self.cavail
                return self.client[self.cnext : self.cnext + self.cavail], self.cavail
            if self.cavail <= 0:
                if self.end_of_file:
                    return None, 0
                try:
                    block = yield from self._read()
                except _ReadError:
                    return None, _FATAL
                if block is None:
                    self.client, self.cnext, self.cavail, self.ctotal = None, 0, 0, 0
                    self.end_of_file = True
                    return None, len(self.copy)
                self.client, self.cnext, self.cavail, self.ctotal = block, 0, len(block), len(block)
            else:
                assert self.client is not None
                take = min(minimum - avail, self.cavail)
                self.copy += self.client[self.cnext : self.cnext + take]
                self.cnext += take
                self.cavail -= take

    def consume(self, request: int) -> Generator[_Need, None, int]:
        """``__archive_read_consume``; raises FATAL when the input ends first, or for a
        negative request (a stored entry read past its header's size: no error text)."""
        if request < 0:
            raise _Error(_FATAL, None)
        if request == 0:
            return 0
        wanted, skipped = request, 0
        if self.fatal:
            raise _Error(_FATAL, _truncated(wanted, 0))
        if self.copy:
            n = min(request, len(self.copy))
            del self.copy[:n]
            request -= n
            skipped += n
        if self.cavail > 0:
            n = min(request, self.cavail)
            self.cnext += n
            self.cavail -= n
            request -= n
            skipped += n
        while request > 0:
            try:
                block = yield from self._read()
            except _ReadError:
                raise _Error(_FATAL, _truncated(wanted, 0)) from None
            if block is None:
                self.client = None
                self.end_of_file = True
                raise _Error(_FATAL, _truncated(wanted, skipped))
            if len(block) >= request:
                self.client, self.cnext = block, request
                self.cavail, self.ctotal = len(block) - request, len(block)
                return wanted
            skipped += len(block)
            request -= len(block)
        return wanted


@dataclass
class _Entry:
    name: str
    flags: int
    method: int
    crc32: int
    compressed_size: int
    uncompressed_size: int
    zip64: bool
    regular: bool


def _ut_mtime(extra: bytes) -> int | None:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            (mtime,) = struct.unpack_from("<I", body, 1)
            return int(mtime)
        pos += 4 + size
    return None


def _process_extra(extra: bytes, entry: _Entry) -> None:
    """libarchive ``process_extra``: its checks, and the Zip64 sizes."""
    if not extra:
        return
    if len(extra) < 4:
        if any(extra):
            raise _Error(
                _FAILED,
                f"Too-small extra data: Need at least 4 bytes, but only found {len(extra)} bytes",
            )
        return
    offset = 0
    while offset <= len(extra) - 4:
        tag, size = struct.unpack_from("<HH", extra, offset)
        offset += 4
        if offset + size > len(extra):
            raise _Error(
                _FAILED,
                f"Extra data overflow: Need {size} bytes but only found {len(extra) - offset}"
                " bytes",
            )
        body = extra[offset : offset + size]
        if tag == 0x0001:
            entry.zip64 = True
            at = 0
            for field, what in (
                ("uncompressed_size", "uncompressed size"),
                ("compressed_size", "compressed size"),
            ):
                if getattr(entry, field) == 0xFFFFFFFF:
                    value = int.from_bytes(body[at : at + 8], "little")
                    if len(body) - at < 8 or value > _INT64_MAX:
                        raise _Error(_FAILED, f"Malformed 64-bit {what}")
                    setattr(entry, field, value)
                    at += 8
        elif tag == 0x5455 and size == 0:
            raise _Error(_FAILED, "Incomplete extended time field")
        elif tag == 0x9901 and size < 6:
            raise _Error(_FAILED, "Incomplete AES field")
        offset += size


def _crc_result(digest: Digest) -> int:
    return int.from_bytes(digest.result(), "big")


class ZipStreamReader:
    """Feed ``.fw`` bytes in the pieces fwup would read them; collect entry events."""

    def __init__(self, digests: DigestFactory = new_digest) -> None:
        self._digests = digests
        self._f = _Filter()
        self._skip = False
        self._out: deque[Event] = deque()
        self._machine = self._run()
        self.finished = False  # no more events will come (end, or a failure)
        self._fed = 0  # input bytes fed piece by piece
        # Output bytes one EntryData may hold when several reads in a row are
        # plain (see _extend); 0: one read per event, always. The consumer sets it.
        self.bulk_limit = 0
        self._tail = 0
        # per entry (libarchive's struct zip)
        self._entry: _Entry | None = None
        self._unconsumed = 0
        self._end_of_entry = False
        self._remaining = 0  # entry_bytes_remaining
        self._read_compressed = 0
        self._read_uncompressed = 0
        self._crc = digests("crc32")
        self._stored_crc = 0
        self._inflater: zlib._Decompress | None = None
        self._mtime: int | None = None
        self._size: int | None = None

    # -- public -----------------------------------------------------------------

    @property
    def consumed(self) -> int:
        """Input bytes read so far (fwup's count of bytes in)."""
        return self._fed + self._f.taken

    def feed(self, chunk: bytes | memoryview) -> Iterator[Event]:
        """One piece of input (one read of fwup's); the events it completes, lazily."""
        if len(chunk):
            self._fed += len(chunk)
            self._f.pending.append(chunk)
        return self._pump()

    def stream(self, chunk: bytes | memoryview, read_size: int) -> Iterator[Event]:
        """The events of ``chunk`` read ``read_size`` bytes at a time, as they come: the
        same as :meth:`feed` called once per read (one call per large buffer instead)."""
        f = self._f
        f.bulk, f.bulk_pos, f.read_size = memoryview(chunk), 0, read_size
        try:
            yield from self._pump()
        finally:
            f.bulk, f.bulk_pos = memoryview(b""), 0

    def finish(self, read_error: str | None = None) -> Iterator[Event]:
        """The input ended: fwup's read callback returns 0 from now on, or fails with
        ``read_error`` (framed stdin that stops without its zero-length frame)."""
        self._f.input_ended = True
        self._f.read_error = read_error
        return self._pump()

    def skip(self) -> None:
        """Read no more of the current entry's data: the next header comes next."""
        self._skip = True

    # -- driving ------------------------------------------------------------------

    def _pump(self) -> Iterator[Event]:
        while not self.finished:
            if self._out:
                yield self._out.popleft()
                continue
            try:
                next(self._machine)
            except StopIteration:
                self.finished = True
                break
            if not self._out:
                return  # the machine waits for more input
        while self._out:
            yield self._out.popleft()

    def _emit(self, event: Event) -> Generator[_Need, None, None]:
        """Hand an event out; the caller reacts to it before the machine goes on."""
        self._out.append(event)
        yield _NEED  # not a request for input: _pump yields the event first

    def _run(self) -> _Steps:
        f = self._f
        # archive_read_open1: choose_filters reads ahead 1 byte, then the ZIP bid 4.
        _p, avail = yield from f.ahead(1)
        if avail < 0:
            yield from self._emit(HeaderFailed(f.error, opening=True))
            return None
        p, _avail = yield from f.ahead(4)
        if p is None or not _bid(bytes(p[:4])):
            yield from self._emit(HeaderFailed("Unrecognized archive format", opening=True))
            return None
        reading = False  # archive state DATA: a header was returned
        while True:
            f.error = None  # archive_clear_error: each next_header starts without one
            try:
                if reading:
                    self.skip()
                    yield from self._skip_rest()
                entry, warn = yield from self._read_header()
            except _Error as exc:
                yield from self._emit(HeaderFailed(exc.text))
                return None
            if entry is None:
                yield from self._emit(ArchiveEnd())
                return None
            if warn is not None:
                yield from self._emit(HeaderFailed(warn))
                return None
            reading = True
            self._skip = False
            yield from self._emit(EntryStart(entry.name, self._mtime, self._size))
            while not self._skip:
                code, data, text = yield from self._read_data_block()
                if code == _EOF:
                    yield from self._emit(EntryEnd(entry.name, self._read_uncompressed))
                    break
                if code != _OK:
                    yield from self._emit(DataFailed(entry.name, text or ""))
                    break
                yield from self._emit(EntryData(entry.name, data, self._tail))

    # -- libarchive's streamable ZIP format -------------------------------------------

    def _read_header(self) -> Generator[_Need, None, tuple[_Entry | None, str | None]]:
        """archive_read_format_zip_streamable_read_header: (entry, warning) or (None, None)
        at the central directory; raises _Error."""
        f = self._f
        yield from f.consume(self._unconsumed)
        self._unconsumed = 0
        while True:
            p, avail = yield from f.ahead(4)
            if p is None:
                raise _Error(_FATAL, f.error)
            view = bytes(p[:avail])
            skipped = 0
            pos = 0
            while pos + 4 <= len(view):
                if view[pos] == 0x50 and view[pos + 1] == 0x4B:
                    sig = view[pos + 2 : pos + 4]
                    if sig == b"\x03\x04":
                        yield from f.consume(skipped)
                        result = yield from self._local_header()
                        return result
                    if sig in (b"\x01\x02", b"\x05\x06", b"\x06\x06"):
                        return None, None
                pos += 1
                skipped += 1
            yield from f.consume(skipped)

    def _local_header(self) -> Generator[_Need, None, tuple[_Entry | None, str | None]]:
        f = self._f
        self._end_of_entry = False
        self._read_uncompressed = 0
        self._read_compressed = 0
        self._crc = self._digests("crc32")
        self._stored_crc = 0
        self._inflater = None
        p, _ = yield from f.ahead(30)
        if p is None:
            raise _Error(_FATAL, "Truncated ZIP file header")
        head = bytes(p[:30])
        (_sig, _version, _system, flags, method, _mtime, crc, csize, usize, nlen, elen) = (
            _LOCAL.unpack(head)
        )
        if (
            flags & FLAG_CENTRAL_DIRECTORY_ENCRYPTED
            and flags & FLAG_ENCRYPTED
            and flags & FLAG_STRONG_ENCRYPTED
        ):
            raise _Error(_FATAL, None)
        method = method & 0xFF
        if method >= 0x80:
            method -= 0x100  # libarchive keeps it in a (signed) char
        yield from f.consume(30)
        p, _ = yield from f.ahead(nlen)
        if p is None:
            raise _Error(_FATAL, "Truncated ZIP file header")
        raw_name = bytes(p[:nlen])
        warn = None
        if flags & FLAG_UTF8_NAME:
            try:
                raw_name.decode("ascii")  # fwup runs in the C locale: UTF-8 converts to ASCII
            except UnicodeDecodeError:
                warn = "Pathname cannot be converted from UTF-8 to current locale."
        name = raw_name.decode("utf-8", "surrogateescape")
        yield from f.consume(nlen)
        p, _ = yield from f.ahead(elen)
        if p is None:
            raise _Error(_FATAL, "Truncated ZIP file header")
        extra = bytes(p[:elen])
        entry = _Entry(name, flags, method, crc, csize, usize, False, True)
        try:
            _process_extra(extra, entry)
        except _Error as exc:
            raise _Error(_FATAL, exc.text) from None
        yield from f.consume(elen)
        if name.endswith("/"):
            entry.regular = False  # a directory: its data reads as ended at once
        self._mtime = _ut_mtime(extra)
        size_known = not flags & FLAG_LENGTH_AT_END or entry.uncompressed_size > 0
        self._size = entry.uncompressed_size if size_known else None
        self._remaining = entry.compressed_size
        if not flags & FLAG_LENGTH_AT_END and self._remaining < 1:
            self._end_of_entry = True
        self._entry = entry
        return entry, warn

    def _read_data_block(self) -> Generator[_Need, None, tuple[int, bytes, str | None]]:
        """archive_read_data_block until it gives bytes, the end, or an error (fwup loops
        over empty OK reads)."""
        while True:
            try:
                code, data = yield from self._read_data()
            except _Error as exc:
                return exc.code, b"", exc.text
            if code != _OK or data:
                return code, data, None

    def _read_data(self) -> Generator[_Need, None, tuple[int, bytes]]:
        """archive_read_format_zip_read_data."""
        entry = self._entry
        assert entry is not None
        self._tail = 0
        if self._end_of_entry or not entry.regular:
            return _EOF, b""
        yield from self._f.consume(self._unconsumed)
        self._unconsumed = 0
        if entry.flags & FLAG_ENCRYPTED:
            yield from self._encryption_header()
        if entry.method == METHOD_STORED:
            data = yield from self._data_none()
        elif entry.method == METHOD_DEFLATE:
            data = yield from self._data_deflate()
        else:
            name = _METHOD_NAMES.get(entry.method, "??")
            raise _Error(_FAILED, f"Unsupported ZIP compression method ({entry.method}: {name})")
        if data:
            self._crc.update(data)
        if self._end_of_entry:
            if entry.compressed_size != self._read_compressed:
                raise _Error(
                    _WARN,
                    f"ZIP compressed data is wrong size (read {self._read_compressed},"
                    f" expected {entry.compressed_size})",
                )
            if entry.uncompressed_size & 0xFFFFFFFF != self._read_uncompressed & 0xFFFFFFFF:
                raise _Error(
                    _WARN,
                    f"ZIP uncompressed data is wrong size (read {self._read_uncompressed},"
                    f" expected {entry.uncompressed_size})\n",
                )
            actual = _crc_result(self._crc)
            if actual != entry.crc32:
                raise _Error(_WARN, f"ZIP bad CRC: 0x{actual:x} should be 0x{entry.crc32:x}")
        return _OK, data

    def _encryption_header(self) -> _Steps:
        """init_traditional_PKWARE_decryption without a passphrase (fwup gives none)."""
        entry = self._entry
        assert entry is not None
        if entry.flags & FLAG_STRONG_ENCRYPTED:
            raise _Error(_FAILED, "Encrypted ZIP entries are not supported")
        if not entry.flags & FLAG_LENGTH_AT_END and self._remaining < 12:
            raise _Error(
                _FATAL,
                f"Truncated Zip encrypted body: only {self._remaining} bytes available",
            )
        p, _ = yield from self._f.ahead(12)
        if p is None:
            raise _Error(_FATAL, "Truncated ZIP file data")
        raise _Error(_FAILED, "Passphrase required for this entry")

    def _data_none(self) -> Generator[_Need, None, bytes]:
        """zip_read_data_none."""
        entry = self._entry
        assert entry is not None
        f = self._f
        if entry.flags & FLAG_LENGTH_AT_END:
            buff, avail = yield from f.ahead(24)
            if avail < 24 or buff is None:
                raise _Error(_FATAL, "Truncated ZIP file data")
            view = bytes(buff[:avail])
            crc_so_far = self._stored_crc
            if view[:4] == b"PK\x07\x08" and int.from_bytes(view[4:8], "little") == crc_so_far:
                entry.crc32 = crc_so_far
                if entry.zip64:
                    compressed = int.from_bytes(view[8:16], "little")
                    uncompressed = int.from_bytes(view[16:24], "little")
                    if compressed > _INT64_MAX or uncompressed > _INT64_MAX:
                        raise _Error(_FAILED, "Overflow of 64-bit file sizes")
                    entry.compressed_size, entry.uncompressed_size = compressed, uncompressed
                    self._unconsumed = 24
                else:
                    entry.compressed_size = int.from_bytes(view[8:12], "little")
                    entry.uncompressed_size = int.from_bytes(view[12:16], "little")
                    self._unconsumed = 16
                self._end_of_entry = True
                return b""
            # Return the bytes up to where a data descriptor might start.
            count, _found = _scan_descriptor(view, 1, avail - 4)
            data = view[:count]
        else:
            if self._remaining == 0:
                self._end_of_entry = True
                return b""
            buff, avail = yield from f.ahead(1)
            if avail <= 0 or buff is None:
                raise _Error(_FATAL, "Truncated ZIP file data")
            count = min(avail, self._remaining)
            data = bytes(buff[:count])
        self._remaining -= count
        self._read_uncompressed += count
        self._read_compressed += count
        self._unconsumed += count
        if entry.flags & FLAG_LENGTH_AT_END:
            # The descriptor is recognised by the CRC of the data so far.
            self._stored_crc = zlib.crc32(data, self._stored_crc)
        return data

    def _data_deflate(self) -> Generator[_Need, None, bytes]:
        """zip_read_data_deflate (one inflate call: at most 256 KiB out)."""
        entry = self._entry
        assert entry is not None
        f = self._f
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-15)
        buff, avail = yield from f.ahead(1)
        if not entry.flags & FLAG_LENGTH_AT_END and avail > self._remaining:
            avail = self._remaining
        if avail < 0:
            raise _Error(_FATAL, "Truncated ZIP file body")
        source = memoryview(buff)[:avail] if buff is not None and avail > 0 else b""
        inflater = self._inflater
        try:
            out = inflater.decompress(source, INFLATE_OUTPUT)
        except zlib.error as exc:
            import re  # noqa: PLC0415  (only on this error: re is not loaded at start)

            m = re.search(r"Error (-?\d+)", str(exc))
            code = m.group(1) if m else "-3"
            raise _Error(_FATAL, f"ZIP decompression failed ({code})") from None
        if not out and not inflater.eof and not len(source):
            raise _Error(_FATAL, "ZIP decompression failed (-5)")  # Z_BUF_ERROR: no input
        # What inflate consumed (total_in): at the stream's end the rest is unused_data
        # (unconsumed_tail may still hold a stale copy of it then).
        left = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        used = len(source) - len(left)
        yield from f.consume(used)
        self._remaining -= used
        self._read_compressed += used
        self._read_uncompressed += len(out)
        if inflater.eof:
            self._end_of_entry = True
            self._inflater = None
            yield from self._optional_marker()
        elif self.bulk_limit and not left and not f.copy and f.cavail == 0:
            return self._extend(inflater, out, not entry.flags & FLAG_LENGTH_AT_END)
        return out

    def _extend(self, inflater: zlib._Decompress, first: bytes, sized: bool) -> bytes:
        """The next reads of a deflated entry at once, while each is plain: a whole
        piece from the bulk buffer, wholly consumed, short of the entry's end, its
        output under the read limit, no error. For those, the calls to inflate are
        the ones libarchive makes, one per read, and joining their outputs changes
        nothing a consumer sees but the number of events (``tail`` keeps the last
        read's output apart: fwup's pad-to-block writer holds back a block by the
        size of the last write). The first read that is not plain is undone and left
        to :meth:`_data_deflate`, which makes it as libarchive does."""
        f = self._f
        # Each read gives at most INFLATE_OUTPUT: stop before the limit could be passed.
        cap = min(self.bulk_limit - INFLATE_OUTPUT, BULK_OUTPUT)
        total = len(first)
        outs = [first] if first else []
        taken: list[memoryview] = []
        last = len(first)
        snapshot: zlib._Decompress | None = None
        while total < cap:
            piece = f.peek_bulk()
            if piece is None or (sized and len(piece) >= self._remaining):
                break  # (an entry whose size comes after it ends where its stream does)
            if snapshot is None:
                snapshot = inflater.copy()
            try:
                out = inflater.decompress(piece, INFLATE_OUTPUT)
            except zlib.error:
                out = None
            if out is None or inflater.unconsumed_tail or inflater.eof:
                # Undo it: replay the plain reads on the state before them.
                inflater = snapshot
                for done in taken:
                    inflater.decompress(done, INFLATE_OUTPUT)
                self._inflater = inflater
                break
            f.take_bulk(len(piece))
            taken.append(piece)
            self._remaining -= len(piece)
            self._read_compressed += len(piece)
            self._read_uncompressed += len(out)
            if out:
                outs.append(out)
                last = len(out)
                total += len(out)
        if not taken:
            return first
        # The filter as after the last of them: its piece read and wholly consumed.
        piece = taken[-1]
        f.client, f.cnext, f.cavail, f.ctotal = piece, len(piece), 0, len(piece)
        self._tail = last
        return b"".join(outs)

    def _optional_marker(self) -> _Steps:
        """consume_optional_marker: the data descriptor after a deflated entry."""
        entry = self._entry
        assert entry is not None
        if not (self._end_of_entry and entry.flags & FLAG_LENGTH_AT_END):
            return None
        p, _ = yield from self._f.ahead(24)
        if p is None:
            raise _Error(_FATAL, "Truncated ZIP end-of-file record")
        view = bytes(p[:24])
        at = 0
        if view[:4] == b"PK\x07\x08":
            at = 4
            self._unconsumed = 4
        entry.crc32 = int.from_bytes(view[at : at + 4], "little")
        if entry.zip64:
            compressed = int.from_bytes(view[at + 4 : at + 12], "little")
            uncompressed = int.from_bytes(view[at + 12 : at + 20], "little")
            if compressed > _INT64_MAX or uncompressed > _INT64_MAX:
                raise _Error(_FAILED, "Overflow of 64-bit file sizes")
            entry.compressed_size, entry.uncompressed_size = compressed, uncompressed
            self._unconsumed += 20
        else:
            entry.compressed_size = int.from_bytes(view[at + 4 : at + 8], "little")
            entry.uncompressed_size = int.from_bytes(view[at + 8 : at + 12], "little")
            self._unconsumed += 12
        return None

    def _skip_rest(self) -> _Steps:
        """archive_read_format_zip_read_data_skip_streamable (raises _Error)."""
        entry = self._entry
        assert entry is not None
        f = self._f
        yield from f.consume(self._unconsumed)
        self._unconsumed = 0
        if self._end_of_entry:
            return None
        if not entry.flags & FLAG_LENGTH_AT_END or entry.compressed_size > 0:
            yield from f.consume(self._remaining)
            return None
        if entry.flags & FLAG_ENCRYPTED:
            yield from self._encryption_header()
        if entry.method == METHOD_DEFLATE:
            while not self._end_of_entry:
                yield from self._data_deflate()
            return None
        # Stored or unknown: scan for a PK\007\010 signature.
        while True:
            buff, avail = yield from f.ahead(16)
            if avail < 16 or buff is None:
                raise _Error(_FATAL, "Truncated ZIP file data")
            view = bytes(buff[:avail])
            p, found = _scan_descriptor(view, 0, avail - 15)
            if found:
                yield from f.consume(p + (24 if entry.zip64 else 16))
                return None
            yield from f.consume(p)


def _scan_descriptor(view: bytes, p: int, end: int) -> tuple[int, bool]:
    """libarchive's search for a ``PK\\007\\010`` signature from ``p`` while ``p < end``:
    (its position, True) or (where the search stopped, False)."""
    while p < end:
        c = view[p + 3]
        if c == 0x50:
            p += 3
        elif c == 0x4B:
            p += 2
        elif c == 0x07:
            p += 1
        elif c == 0x08 and view[p : p + 3] == b"PK\x07":
            return p, True
        else:
            p += 4
    return p, False


def _bid(head: bytes) -> bool:
    """archive_read_format_zip_streamable_bid: a ZIP signature first."""
    return head[:2] == b"PK" and head[2:4] in (
        b"\x01\x02",
        b"\x03\x04",
        b"\x05\x06",
        b"\x06\x06",
        b"\x07\x08",
        b"00",
    )

"""A streaming reader for the ZIP container of a ``.fw`` archive.

fwup streams its archive (it never seeks), so ``meta.conf.ed25519`` and
``meta.conf`` come first and resources follow in the order of their
``file-resource`` blocks. Every entry has general-purpose flag bit 3: the local
header carries CRC 0 and compressed size 0 and the real values follow the data
in a data descriptor; ``meta.conf.ed25519`` is stored (its uncompressed size is
in the local header), everything else is raw deflate (fixtures/fwup/EXPECT.md).

The reader is sans-I/O: :meth:`ZipStreamReader.feed` takes one input chunk and
returns the events it completes. For each input chunk an entry yields at most
one :class:`EntryData`, as libarchive hands fwup the inflated bytes of one
read-ahead buffer at a time; fwup's progress packets follow those pieces, and
so do ours. :meth:`ZipStreamReader.stream` does the same lazily for a large
buffer cut into reads of ``read_size`` bytes (one Python call per megabyte
instead of one per read, and never more than one read's inflated bytes held).
Errors raise :class:`~nhlink_dbus.errors.FirmwareError` with the text fwup
(libarchive) reports.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from nhlink_dbus.core.digest import Digest, DigestFactory, new_digest
from nhlink_dbus.errors import FirmwareError

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
END_SIG = b"PK\x05\x06"
DESC_SIG = b"PK\x07\x08"
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes

METHOD_STORED = 0
METHOD_DEFLATE = 8


@dataclass(frozen=True, slots=True)
class EntryStart:
    name: str
    mtime: datetime | None  # from the UT extra field, when present
    # The uncompressed size the local header gives, None when it gives none (flag bit 3
    # with a 0 size, as in fwup's own archives): libarchive's archive_entry_size_is_set.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class EntryData:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class EntryEnd:
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class ArchiveEnd:
    """The central directory was reached: no more entries."""


Event = EntryStart | EntryData | EntryEnd | ArchiveEnd


def _ut_mtime(extra: bytes) -> datetime | None:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x5455 and len(body) >= 5 and body[0] & 1:
            (mtime,) = struct.unpack_from("<I", body, 1)
            return datetime.fromtimestamp(mtime, UTC)
        pos += 4 + size
    return None


def _check_extra(extra: bytes) -> None:
    """The extra field as libarchive checks it (``process_extra``): a list of
    (id, size, data) records, none running past the field's end."""
    if 0 < len(extra) < 4:
        raise FirmwareError(
            f"Too-small extra data: Need at least 4 bytes, but only found {len(extra)} bytes"
        )
    pos = 0
    while pos + 4 <= len(extra):
        _tag, size = struct.unpack_from("<HH", extra, pos)
        pos += 4
        if pos + size > len(extra):
            raise FirmwareError(
                f"Extra data overflow: Need {size} bytes but only found {len(extra) - pos} bytes"
            )
        pos += size


def _zip64_size(extra: bytes, usize: int) -> int:
    """The uncompressed size, from the Zip64 extra field when the header defers to it."""
    if usize != 0xFFFFFFFF:
        return usize
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == 0x0001 and size >= 8:
            return int(struct.unpack_from("<Q", extra, pos + 4)[0])
        pos += 4 + size
    return usize


class ZipStreamReader:
    """Feed ``.fw`` bytes in any chunks; collect entry events."""

    def __init__(self, digests: DigestFactory = new_digest) -> None:
        self._digests = digests
        self._buf = bytearray()  # header / descriptor bytes not yet complete
        self._state = "header"
        self._first = True
        self._name = ""
        self._method = 0
        self._flags = 0
        self._crc_expected = 0
        self._stored_left = 0
        self._size = 0
        self._crc: Digest = digests("crc32")
        self._inflater: zlib._Decompress | None = None
        self.finished = False
        self.consumed = 0  # input bytes read so far (fwup's count of bytes in)

    # -- public -----------------------------------------------------------------

    def feed(self, chunk: bytes | memoryview) -> list[Event]:
        """Consume one input chunk; return the events it completes."""
        events: list[Event] = []
        self.consumed += len(chunk)
        self._read(memoryview(chunk), events)
        return events

    def stream(self, chunk: bytes | memoryview, read_size: int) -> Iterator[Event]:
        """The events of ``chunk`` read ``read_size`` bytes at a time, as they come.

        The same events as :meth:`feed` called once per read; an error is raised
        after the events of the reads before it were taken.
        """
        view = memoryview(chunk)
        events: list[Event] = []
        for start in range(0, len(view), read_size):
            if self.finished:
                return
            piece = view[start : start + read_size]
            self.consumed += len(piece)
            if self._state == "data" and self._inflater is not None:
                # The body of a deflated entry: most reads are this and nothing else.
                inflater = self._inflater
                try:
                    out = inflater.decompress(piece)
                except zlib.error as exc:
                    raise FirmwareError(f"ZIP decompression failed for '{self._name}'") from exc
                if not inflater.eof:
                    if out:
                        self._size += len(out)
                        self._crc.update(out)
                        yield EntryData(self._name, out)
                    continue
                self._data_out(out, True, events)
                self._read(memoryview(inflater.unused_data), events)
            else:
                self._read(piece, events)
            yield from events
            events.clear()

    def _read(self, view: memoryview, events: list[Event]) -> None:
        while view and not self.finished:
            if self._state == "data":
                view = self._data(view, events)
            elif self._state == "header":
                view = self._header(view, events)
            else:  # "descriptor"
                view = self._descriptor(view, events)

    def finish(self) -> list[Event]:
        """End of input: raise if the archive stopped early."""
        if self.finished:
            return []
        if self._first and not self._buf:
            raise FirmwareError("Unrecognized archive format")
        if self._state == "header" and not self._buf:
            # Input ended on an entry boundary without a central directory.
            raise FirmwareError("Truncated ZIP file header")
        raise FirmwareError("Truncated ZIP file body")

    # -- states -----------------------------------------------------------------

    def _take(self, view: memoryview, need: int) -> tuple[bytes | None, memoryview]:
        """Accumulate ``need`` bytes in the header buffer."""
        missing = need - len(self._buf)
        if missing > 0:
            self._buf += view[:missing]
            view = view[missing:]
        if len(self._buf) < need:
            return None, view
        return bytes(self._buf[:need]), view

    def _header(self, view: memoryview, events: list[Event]) -> memoryview:
        if len(self._buf) < 4:
            got, view = self._take(view, 4)
            if got is None:
                return view
        sig = bytes(self._buf[:4])
        if sig in (CENTRAL_SIG, END_SIG) and not self._first:
            self.finished = True
            self._buf.clear()
            events.append(ArchiveEnd())
            return view
        if sig != LOCAL_SIG:
            raise FirmwareError(
                "Unrecognized archive format" if self._first else "Damaged ZIP archive"
            )
        got, view = self._take(view, _LOCAL.size)
        if got is None:
            return view
        (_sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, elen) = _LOCAL.unpack(got)
        got, view = self._take(view, _LOCAL.size + nlen + elen)
        if got is None:
            return view
        name_bytes = got[_LOCAL.size : _LOCAL.size + nlen]
        extra = got[_LOCAL.size + nlen :]
        self._buf.clear()
        self._first = False
        _check_extra(extra)  # before anything reads it (found by fuzzing: a short Zip64 record)
        try:
            self._name = name_bytes.decode()
        except UnicodeDecodeError as exc:
            raise FirmwareError("Damaged ZIP archive: bad entry name") from exc
        if flags & 0x1:
            raise FirmwareError(f"Encrypted ZIP entry '{self._name}' is not supported")
        self._flags = flags
        self._method = method
        self._crc_expected = crc
        self._size = 0
        self._crc = self._digests("crc32")
        if method == METHOD_DEFLATE:
            self._inflater = zlib.decompressobj(-15)
        elif method == METHOD_STORED:
            size = usize if (flags & 0x8 and usize) else csize
            if flags & 0x8 and not usize:
                raise FirmwareError(f"Stored ZIP entry '{self._name}' has no size")
            self._stored_left = size
            self._inflater = None
        else:
            raise FirmwareError(f"Unsupported ZIP compression method {method} for '{self._name}'")
        known = None if flags & 0x8 and not usize else _zip64_size(extra, usize)
        events.append(EntryStart(self._name, _ut_mtime(extra), known))
        self._state = "data"
        if method == METHOD_STORED and self._stored_left == 0:
            self._end_data(events)
        return view

    def _data(self, view: memoryview, events: list[Event]) -> memoryview:
        if self._inflater is None:
            n = min(self._stored_left, len(view))
            out = bytes(view[:n])
            view = view[n:]
            self._stored_left -= n
            done = self._stored_left == 0
        else:
            try:
                out = self._inflater.decompress(view)
            except zlib.error as exc:
                raise FirmwareError(f"ZIP decompression failed for '{self._name}'") from exc
            done = self._inflater.eof
            view = memoryview(self._inflater.unused_data) if done else view[len(view) :]
        self._data_out(out, done, events)
        return view

    def _data_out(self, out: bytes, done: bool, events: list[Event]) -> None:
        if out:
            self._size += len(out)
            self._crc.update(out)
            events.append(EntryData(self._name, out))
        if done:
            self._end_data(events)

    def _end_data(self, events: list[Event]) -> None:
        self._inflater = None
        if self._flags & 0x8:
            self._state = "descriptor"
        else:
            self._check_crc(self._crc_expected)
            events.append(EntryEnd(self._name, self._size))
            self._state = "header"

    def _descriptor(self, view: memoryview, events: list[Event]) -> memoryview:
        got, view = self._take(view, 4)
        if got is None:
            return view
        need = 16 if got == DESC_SIG else 12
        got, view = self._take(view, need)
        if got is None:
            return view
        (crc,) = struct.unpack_from("<I", got, need - 12)
        self._buf.clear()
        self._check_crc(crc)
        events.append(EntryEnd(self._name, self._size))
        self._state = "header"
        return view

    def _check_crc(self, expected: int) -> None:
        actual = int.from_bytes(self._crc.result(), "big")
        if actual != expected:
            raise FirmwareError(f"ZIP bad CRC: 0x{actual:x} should be 0x{expected:x}")

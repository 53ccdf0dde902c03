"""Firmware and archive files over HTTP, with Range and injectable faults.

What the download side of nerves_hub_link meets in the field (protocol.md
§6.4), on 127.0.0.1:

* ``GET``/``HEAD`` of a registered path; ``Accept-Ranges: bytes`` and
  ``Content-Length`` on every answer, ``Connection: close``.
* ``Range: bytes=N-``, ``bytes=N-M`` and ``bytes=-S`` → ``206`` with
  ``Content-Range``. An end past the last byte is clamped (nerves_hub_link
  2.5.2 sends ``bytes=<received>-<total length>``). A start at or past the end
  → ``416`` with ``Content-Range: bytes */<size>``. Multiple ranges or a
  malformed header are ignored (``200``, full body), as RFC 9110 allows.
* Pre-signed URLs: every URL the simulator hands out carries
  ``?X-Amz-…&X-Amz-Signature=<token>``; with ``require_token`` a request
  without the right token gets ``403`` (what S3 answers).
* Every request is appended to :attr:`FileServer.log` (:class:`HttpLogEntry`).
* Faults (:class:`Fault`), matched per path and per attempt (the 0-based
  count of earlier requests for that path):

  ========== ===========================================================
  kind       effect
  ========== ===========================================================
  ``cut``    normal headers, ``after`` body bytes, then the connection closes
  ``stall``  ``after`` body bytes, then nothing for ``seconds`` (``None``:
             until the client gives up), then the rest
  ``status`` answer ``status`` (default 503) with a short body
  ``416``    answer 416 whatever the Range
  ``redirect`` answer ``status`` (default 302) with ``Location: location``
             (a relative location is made absolute; the request's query string
             is appended when the location has none, as S3 keeps signatures)
  ``200``    ignore the Range header: 200 with the full body
  ``slow``   ``after`` body bytes at full speed, then ``rate`` bytes per second
             (a slow link; sent in tenths of a second's worth)
  ``corrupt`` serve ``length`` bytes (default 1) from file offset ``after``
             inverted, the rest as stored (what a flaky proxy or disk does)
  ========== ===========================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urljoin

from nhlink_dbus.core.confuse import ConfuseError
from nhlink_dbus.core.fwup_meta import firmware_metadata
from nhlink_dbus.errors import ConfigError
from nhlink_devtools.hubsim._http import HttpRequest, response_head, send_simple

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
FAULT_KINDS: Final = ("cut", "stall", "status", "416", "redirect", "200", "corrupt", "slow")
PART_SIZE: Final = 1024 * 1024  # nerves_hub_web @firmware_partial_chunk_size
SLOW_TICK_S: Final = 0.1
TOKEN_PARAM: Final = "X-Amz-Signature"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range within a file of known size."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable:
    """Marker: the Range cannot be served (answer 416)."""


UNSATISFIABLE: Final = Unsatisfiable()


def parse_range(value: str | None, size: int) -> ByteRange | Unsatisfiable | None:
    """Interpret a ``Range`` header for a ``size``-byte file; None = serve it all."""
    if value is None:
        return None
    unit, sep, spec = value.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if last != "" and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return ByteRange(start, min(end, size - 1))


@dataclass
class Fault:
    """One injected fault; see the table in the module docstring.

    ``path`` None matches every file. ``attempts`` restricts it to those
    per-path attempt numbers; ``times`` (None: unlimited) counts down on use.
    """

    kind: str
    path: str | None = None
    after: int = 0
    seconds: float | None = None
    status: int | None = None
    location: str | None = None
    attempts: frozenset[int] | None = None
    times: int | None = None
    rate: int | None = None  # slow: bytes per second
    length: int = 1  # corrupt: how many bytes

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if self.kind == "redirect" and not self.location:
            raise ConfigError("a redirect fault needs a location")
        if self.after < 0:
            raise ConfigError("fault 'after' must be >= 0")
        if self.kind == "slow" and (self.rate is None or self.rate < 1):
            raise ConfigError("a slow fault needs a rate >= 1 byte per second")
        if self.length < 1:
            raise ConfigError("fault 'length' must be >= 1")

    def matches(self, path: str, attempt: int) -> bool:
        return (
            (self.path is None or self.path == path)
            and (self.attempts is None or attempt in self.attempts)
            and (self.times is None or self.times > 0)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "after": self.after,
            "seconds": self.seconds,
            "status": self.status,
            "location": self.location,
            "attempts": sorted(self.attempts) if self.attempts is not None else None,
            "times": self.times,
            "rate": self.rate,
            "length": self.length,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from the control API's JSON; raise ConfigError on bad fields."""
        try:
            attempts = data.get("attempts")
            return cls(
                kind=str(data["kind"]),
                path=data.get("path"),
                after=int(data.get("after") or 0),
                seconds=None if data.get("seconds") is None else float(data["seconds"]),
                status=None if data.get("status") is None else int(data["status"]),
                location=data.get("location"),
                attempts=None if attempts is None else frozenset(int(a) for a in attempts),
                times=None if data.get("times") is None else int(data["times"]),
                rate=None if data.get("rate") is None else int(data["rate"]),
                length=int(data.get("length") or 1),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad fault description: {exc}") from exc


@dataclass
class HttpLogEntry:
    """One request to the file server (the query string is not kept: it is a credential)."""

    method: str
    path: str
    range: str | None
    retry_number: str | None
    user_agent: str | None
    headers: dict[str, str]
    attempt: int
    token_ok: bool
    time: float
    status: int = 0
    fault: str | None = None
    bytes_sent: int = 0
    stalled: bool = False  # a stall fault holds the body now (after bytes_sent bytes)
    completed: bool = False
    # time.monotonic() when the first body byte was handed to the socket (benchmarks).
    first_byte_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "range": self.range,
            "retry_number": self.retry_number,
            "user_agent": self.user_agent,
            "headers": self.headers,
            "attempt": self.attempt,
            "token_ok": self.token_ok,
            "time": self.time,
            "status": self.status,
            "fault": self.fault,
            "bytes_sent": self.bytes_sent,
            "stalled": self.stalled,
            "completed": self.completed,
        }


_CHECKSUMS: dict[tuple[str, int, int, int], tuple[int, str, list[str]]] = {}


def file_checksums(path: Path) -> tuple[int, str, list[str]]:
    """``size``, ``checksum`` and ``partials_checksums`` as nerves_hub_web computes them
    (``firmwares.ex``: SHA-256 of the file and of every 1 MiB part, upper-case hex).

    Kept per file (path, inode, size, modification time), as the server computes them
    once, at upload: offering a large file again does not read it again (a benchmark's
    clock would otherwise count the hub's hashing as the device's time)."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _CHECKSUMS.get(key)
    if cached is None:
        cached = _CHECKSUMS[key] = _compute_checksums(path)
    size, checksum, parts = cached
    return size, checksum, list(parts)


def _compute_checksums(path: Path) -> tuple[int, str, list[str]]:
    whole = hashlib.sha256()
    parts: list[str] = []
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(PART_SIZE):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).hexdigest().upper())
            size += len(chunk)
    return size, whole.hexdigest().upper(), parts


def firmware_meta(path: Path) -> dict[str, str | None]:
    """FirmwareMetadata (protocol.md §4.1) read from a ``.fw`` file's meta.conf.

    A file that is not a ``.fw`` archive gets a UUID derived from its bytes and
    no other fields.
    """
    meta: dict[str, str | None] = dict.fromkeys(
        ("architecture", "author", "description", "misc", "platform", "product"), None
    )
    meta |= {"uuid": None, "vcs_identifier": None, "version": None}
    try:
        with zipfile.ZipFile(path) as archive:
            conf = archive.read("meta.conf")
        meta |= firmware_metadata(conf)
    except (zipfile.BadZipFile, KeyError, OSError, ConfuseError, UnicodeDecodeError):
        digest = hashlib.sha256(path.read_bytes()).digest()
        meta["uuid"] = str(uuid.UUID(bytes=digest[:16], version=5))
    return meta


@dataclass
class FileServer:
    """The registry of served files, the faults, the request log, and the handler."""

    token: str
    require_token: bool = True
    fw_dir: Path | None = None
    files: dict[str, Path | bytes] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[HttpLogEntry] = field(default_factory=list)
    base_url: str = ""
    on_change: Callable[[], None] = lambda: None
    _attempts: dict[str, int] = field(default_factory=dict)

    def add(self, source: Path | bytes, url_path: str) -> str:
        """Serve ``source`` (a file, read at request time, or bytes) at ``url_path``."""
        if not url_path.startswith("/"):
            raise ConfigError("url_path must start with '/'")
        self.files[url_path] = source
        return self.url_for(url_path)

    def url_for(self, url_path: str) -> str:
        """The pre-signed URL of a served path."""
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=86400"
            f"&X-Amz-SignedHeaders=host&{TOKEN_PARAM}={self.token}"
        )
        return f"{self.base_url}{url_path}?{query}"

    def lookup(self, url_path: str) -> Path | bytes | None:
        source = self.files.get(url_path)
        if source is None and self.fw_dir is not None and url_path.startswith("/firmware/"):
            name = url_path.removeprefix("/firmware/")
            candidate = self.fw_dir / name
            if name and "/" not in name and not name.startswith(".") and candidate.is_file():
                source = candidate
        return source

    def _take_fault(self, path: str, attempt: int) -> Fault | None:
        for fault in self.faults:
            if fault.matches(path, attempt):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def handle(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one request (the :class:`HttpServer` handler)."""
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            await send_simple(
                writer, 405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")]
            )
            return
        source = self.lookup(request.path)
        token_ok = parse_qs(request.query).get(TOKEN_PARAM, [None])[0] == self.token
        attempt = self._attempts.get(request.path, 0)
        self._attempts[request.path] = attempt + 1
        entry = HttpLogEntry(
            method=request.method,
            path=request.path,
            range=request.headers.get("range"),
            retry_number=request.headers.get("x-retry-number"),
            user_agent=request.headers.get("user-agent"),
            headers=dict(request.headers),
            attempt=attempt,
            token_ok=token_ok,
            time=time.time(),
        )
        self.log.append(entry)
        self.on_change()
        logger.info(
            "%s %s range=%s retry=%s attempt=%d",
            request.method,
            request.path,
            entry.range,
            entry.retry_number,
            attempt,
        )
        try:
            await self._answer(
                request, reader, writer, source=source, entry=entry, head_only=head_only
            )
        finally:
            self.on_change()

    async def _answer(
        self,
        request: HttpRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        source: Path | bytes | None,
        entry: HttpLogEntry,
        head_only: bool,
    ) -> None:
        if source is None:
            entry.status = 404
            await send_simple(writer, 404, b"not found\n", head_only=head_only)
            return
        if self.require_token and not entry.token_ok:
            entry.status = 403
            await send_simple(
                writer,
                403,
                b"<Error><Code>AccessDenied</Code></Error>",
                "application/xml",
                head_only=head_only,
            )
            return
        try:
            size = len(source) if isinstance(source, bytes) else source.stat().st_size
        except OSError:
            entry.status = 404
            await send_simple(writer, 404, b"not found\n", head_only=head_only)
            return
        fault = self._take_fault(request.path, entry.attempt)
        entry.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "status":
            entry.status = fault.status or 503
            await send_simple(writer, entry.status, b"injected failure\n", head_only=head_only)
            return
        if fault is not None and fault.kind == "redirect":
            assert fault.location is not None
            location = urljoin(self.base_url + request.path, fault.location)
            if "?" not in location and request.query:
                location = f"{location}?{request.query}"
            entry.status = fault.status or 302
            await send_simple(
                writer, entry.status, b"", headers=[("Location", location)], head_only=head_only
            )
            return
        byte_range = parse_range(request.headers.get("range"), size)
        if fault is not None and fault.kind == "200":
            byte_range = None
        if isinstance(byte_range, Unsatisfiable) or (fault is not None and fault.kind == "416"):
            entry.status = 416
            await send_simple(
                writer,
                416,
                b"",
                headers=[("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")],
                head_only=head_only,
            )
            return
        span = ByteRange(0, size - 1) if byte_range is None else byte_range
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(span.length if size else 0)),
            ("Accept-Ranges", "bytes"),
        ]
        if byte_range is not None:
            headers.append(("Content-Range", f"bytes {span.start}-{span.end}/{size}"))
        entry.status = 200 if byte_range is None else 206
        writer.write(response_head(entry.status, headers))
        await writer.drain()
        if head_only or size == 0:
            entry.completed = True
            return
        await self._send_body(reader, writer, source=source, span=span, fault=fault, entry=entry)

    async def _send_body(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        source: Path | bytes,
        span: ByteRange,
        fault: Fault | None,
        entry: HttpLogEntry,
    ) -> None:
        position = span.start
        stop = span.end + 1
        stall_pending = fault is not None and fault.kind == "stall"
        handle = None if isinstance(source, bytes) else source.open("rb")
        try:
            entry.first_byte_at = time.monotonic()
            if handle is not None and fault is None and writer.get_extra_info("sslcontext") is None:
                # A whole file over plain TCP: sendfile(2), so that serving a large firmware
                # costs the simulator (and a benchmark sharing its machine) next to nothing.
                loop = asyncio.get_running_loop()
                sent = await loop.sendfile(writer.transport, handle, position, stop - position)
                entry.bytes_sent += sent
                position += sent
            elif handle is not None:
                handle.seek(position)
            while position < stop:
                limit = stop
                if fault is not None and (fault.kind == "cut" or stall_pending):
                    limit = min(stop, span.start + fault.after)
                size = min(CHUNK, limit - position)
                if (
                    fault is not None
                    and fault.kind == "slow"
                    and position >= span.start + fault.after
                ):
                    assert fault.rate is not None
                    size = min(size, max(1, round(fault.rate * SLOW_TICK_S)))
                    await asyncio.sleep(SLOW_TICK_S)
                if size > 0:
                    chunk = (
                        source[position : position + size]
                        if isinstance(source, bytes)
                        else handle.read(size)  # type: ignore[union-attr]
                    )
                    if fault is not None and fault.kind == "corrupt":
                        chunk = _corrupt(chunk, position, fault)
                    writer.write(chunk)
                    await writer.drain()
                    position += len(chunk)
                    entry.bytes_sent += len(chunk)
                    continue
                assert fault is not None
                if fault.kind == "cut":
                    logger.info("fault: cut %s after %d bytes", entry.path, entry.bytes_sent)
                    return
                # Stall: wait, but stop at once if the client hangs up.
                stall_pending = False
                logger.info("fault: stall %s for %s s", entry.path, fault.seconds)
                entry.stalled = True
                self.on_change()  # a test waits for the download to be held here
                try:
                    if await asyncio.wait_for(reader.read(1), fault.seconds) == b"":
                        return
                except TimeoutError:
                    pass
                finally:
                    entry.stalled = False
            entry.completed = True
        finally:
            if handle is not None:
                handle.close()


def _corrupt(chunk: bytes, position: int, fault: Fault) -> bytes:
    """``chunk`` (file bytes from ``position``) with the fault's bytes inverted."""
    start = max(fault.after, position)
    end = min(fault.after + fault.length, position + len(chunk))
    if start >= end:
        return chunk
    data = bytearray(chunk)
    for i in range(start - position, end - position):
        data[i] ^= 0xFF
    logger.info("fault: corrupted bytes %d-%d", start, end - 1)
    return bytes(data)

"""A deliberately small HTTP/1.1 server on asyncio streams.

One request per connection (every response says ``Connection: close``), so a
fault that cuts or stalls a body affects exactly one request. The handler gets
the parsed request and the stream writer and writes the response itself; the
file server needs that control to inject faults byte by byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed request: method, decoded path, raw query, lower-cased headers."""

    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class BadRequest(Exception):
    """The peer sent something that is not an HTTP/1.1 request we can parse."""


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read one request; None if the peer closed before sending one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("truncated request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed header line")
        headers.setdefault(name.strip().lower(), value.strip())
    length = int(headers.get("content-length", "0") or "0")
    if length < 0 or length > MAX_BODY:
        raise BadRequest("bad content-length")
    body = await reader.readexactly(length) if length else b""
    split = urlsplit(target)
    return HttpRequest(method, target, unquote(split.path), split.query, headers, body)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Status line and headers, ending with the blank line."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_simple(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
    *,
    head_only: bool = False,
) -> None:
    """A complete response with a small in-memory body."""
    all_headers = [("Content-Length", str(len(body)))]
    if body:
        all_headers.append(("Content-Type", content_type))
    all_headers.extend(headers or [])
    writer.write(response_head(status, all_headers) + (b"" if head_only else body))
    await writer.drain()


Handler = Callable[[HttpRequest, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HttpServer:
    """Listens, runs ``handler`` once per connection, and can be stopped hard."""

    def __init__(self, handler: Handler, name: str) -> None:
        self._handler = handler
        self._name = name
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        """Bind and listen (SO_REUSEADDR, so a restart can take the same port)."""
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=ssl_context, limit=MAX_HEAD
        )

    async def stop(self) -> None:
        """Stop listening and abort every open connection (stalled bodies too)."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            try:
                request = await read_request(reader)
            except (BadRequest, ValueError) as exc:
                logger.debug("%s: bad request: %s", self._name, exc)
                await send_simple(writer, 400, b"bad request\n")
                return
            if request is not None:
                await self._handler(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

"""An httpx transport that moves a firmware body at the speed of the socket.

httpx's own transport (httpcore) reads a body 64 KiB at a time through anyio and h11
and copies every byte several times in Python objects; at the pace of a firmware
download that was most of the daemon's CPU (py-spy: 1.3 s per 256 MiB, where a
socket read loop takes 0.17 s). This transport keeps httpx as the client (requests,
responses, the downloader's handling of both) and does the I/O itself, the way a
one-request download needs it:

* one connection per request, closed with the response (the downloader opens a
  client per attempt anyway); TLS by the given context, the SNI and the checked
  name being the URL's host, as httpx does;
* h11 writes the request and reads the response head;
* a body with a ``Content-Length`` (what firmware stores send) is handed over in the
  chunks the loop delivers: over plain TCP the bytes of each ``recv`` of up to 256 KiB,
  with no copy in Python; over TLS what asyncio's SSL layer decrypted, joined. Reading
  pauses while two chunks wait for the consumer, so a slow applier throttles TCP. Other
  bodies (chunked, or up to the close) go through h11;
* with ``pieces=True``, a plain-TCP ``Content-Length`` body is read by a thread of its
  own instead (:class:`_SocketReader`), in pieces that end where the body's offset is
  a multiple of ``PIECE`` (1 MiB: a part of the download, whose checksum the
  downloader checks): one ``recv`` per piece, straight into the ``bytes`` handed on,
  and one wake-up of the loop per piece. For the built-in applier, which takes whole
  parts from a queue, the loop's own reads (a wake-up and a trip through the
  downloader per 256 KiB) were what held an update back (256 MiB: 1.45 times the time
  of ``curl | fwup``, 1.15 with pieces, in the same alternation). An external fwup
  is better served by the loop's chunks (its pipe gets each part as it arrives, not a
  piece later: 1.13 against 1.22).

Failures are httpx's exceptions, as its own transport raises them: ``ConnectError``
and ``ConnectTimeout`` for connecting (TLS included), ``ReadError`` for a connection
that breaks, ``RemoteProtocolError`` for a malformed response or a body cut short.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Callable

import h11
import httpx

BUFFER = 256 << 10  # what the loop reads at once (asyncio): a TLS chunk at most
QUEUED = 2  # chunks waiting for the consumer before reading pauses
PIECE = 1 << 20  # with pieces=True: a plain-TCP body's pieces end at multiples of this offset
AHEAD = 1  # pieces read (or being read) that the consumer has not finished with
FLUSH_S = 0.25  # a piece that is not full after this long is handed on as it is


class _Wakeup:
    """One consumer on the loop that waits until a producer has something for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class _Receiver(asyncio.Protocol):
    """The connection's incoming bytes, as chunks, with flow control.

    A plain protocol, not a ``BufferedProtocol``: over plain TCP the loop's ``recv``
    makes each chunk a new ``bytes`` object already (of up to 256 KiB), which is handed
    on as it is; receiving into a buffer of our own would need a copy out of it for
    every chunk, as a chunk outlives the next read. (Over TLS asyncio joins decrypted
    records into each chunk: one copy either way.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._wakeup = _Wakeup(loop)
        self._transport: asyncio.BaseTransport | None = None
        self._paused = False
        self._eof = False
        self._error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= QUEUED and not self._paused:
            assert isinstance(self._transport, asyncio.ReadTransport)
            self._transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def detach(self) -> tuple[bytes, bool]:
        """Stop reading for good: the bytes received and not yet taken, and whether the
        connection has ended (closed, or failed) meanwhile."""
        assert isinstance(self._transport, asyncio.ReadTransport)
        self._transport.pause_reading()
        self._paused = True
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data, self._eof or self._error is not None

    async def chunk(self) -> bytes:
        """The next chunk; b"" once the peer closed. Raises the connection's error."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            await self._wakeup.wait()
        chunk = self._chunks.popleft()
        if self._paused and len(self._chunks) < QUEUED:
            assert isinstance(self._transport, asyncio.ReadTransport)
            self._paused = False
            self._transport.resume_reading()
        return chunk


class _SocketReader:
    """A plain-TCP body's next ``length`` bytes, read on a thread of its own.

    The thread owns a duplicate of the connection's socket, made blocking with a
    receive timeout of ``FLUSH_S`` (the two share one open file, and asyncio no longer
    reads it): ``recv(n, MSG_WAITALL)`` then returns the ``n`` bytes up to the next
    piece's end in one call, or what came within the timeout (a slow link still shows
    progress, and the downloader's idle timeout still sees every byte), or what came
    before the peer closed. Pieces reach the loop in order; the thread reads the next
    one only once fewer than ``AHEAD`` are waiting for, or with, the consumer: the
    socket's buffer holds what comes meanwhile, and a slow consumer throttles TCP.
    :meth:`close` ends the thread at once: a shutdown of the socket wakes a ``recv``.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, offset: int, length: int
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._pieces: collections.deque[bytes | OSError] = collections.deque()  # b"": closed
        self._wakeup = _Wakeup(loop)
        self._slots = threading.Semaphore(AHEAD)
        self._holding = False  # the consumer has the last piece (and its slot)
        self._closed = False
        self._lock = threading.Lock()  # the socket is the thread's to close
        self._sock_open = True
        self._exited: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(offset, length), name="nhlink-recv", daemon=True
        )
        self._thread.start()

    @classmethod
    def of(
        cls,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.BaseTransport,
        offset: int,
        left: int,
    ) -> _SocketReader:
        sock: socket.socket = transport.get_extra_info("socket").dup()
        try:
            sock.settimeout(None)
            seconds = int(FLUSH_S)
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_RCVTIMEO,
                struct.pack("ll", seconds, int((FLUSH_S - seconds) * 1_000_000)),
            )
        except BaseException:
            sock.close()
            raise
        return cls(loop, sock, offset, left)

    # thread ---------------------------------------------------------------------------

    def _main(self, offset: int, left: int) -> None:
        sock = self._sock
        try:
            while left > 0:
                self._slots.acquire()
                if self._closed:
                    return
                try:
                    data = sock.recv(min(PIECE - offset % PIECE, left), socket.MSG_WAITALL)
                except BlockingIOError:  # nothing within FLUSH_S
                    self._slots.release()
                    continue
                self._post(data)
                if not data:
                    return  # the peer closed: the body is short, the consumer says so
                offset += len(data)
                left -= len(data)
        except OSError as exc:
            self._post(exc)
        finally:
            with self._lock:
                self._sock_open = False
                sock.close()
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._exit)

    def _post(self, item: bytes | OSError) -> None:
        if not self._closed:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._put, item)

    # loop -------------------------------------------------------------------------------

    def _put(self, item: bytes | OSError) -> None:
        self._pieces.append(item)
        self._wakeup.set()

    def _exit(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    async def piece(self) -> bytes:
        """The next piece; b"" once the peer closed. Raises the connection's error."""
        if self._holding:  # the consumer is done with the last one
            self._holding = False
            self._slots.release()
        while not self._pieces:
            await self._wakeup.wait()
        item = self._pieces.popleft()
        if isinstance(item, OSError):
            raise item
        self._holding = bool(item)
        return item

    def close(self) -> None:
        """Stop reading (idempotent); the thread ends soon after."""
        if self._closed:
            return
        self._closed = True
        self._slots.release()  # a thread waiting for a slot
        with self._lock, contextlib.suppress(OSError):
            if self._sock_open:
                self._sock.shutdown(socket.SHUT_RDWR)  # a thread in recv

    async def wait_closed(self) -> None:
        self.close()
        await asyncio.shield(self._exited)
        self._thread.join()  # it posted its last callback: already returning


class _Body(httpx.AsyncByteStream):
    """A response body; closing it closes the connection."""

    def __init__(
        self,
        request: httpx.Request,
        conn: h11.Connection,
        receiver: _Receiver,
        transport: asyncio.BaseTransport,
        length: int | None,
        threaded: bool,
    ) -> None:
        self._request = request
        self._conn = conn
        self._receiver = receiver
        self._transport = transport
        self._length = length
        self._threaded = threaded  # plain TCP: a long body is read by a _SocketReader
        self._reader: _SocketReader | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self._length is None:
                async for data in self._through_h11():
                    yield data
                return
            # The bytes h11 holds past the head, then the socket's, up to the length.
            remaining = self._length
            pending = self._conn.trailing_data[0]
            next_chunk = self._receiver.chunk
            if self._threaded and len(pending) < remaining:
                received, ended = self._receiver.detach()
                pending += received
                if len(pending) < remaining and not ended:
                    self._reader = _SocketReader.of(
                        asyncio.get_running_loop(),
                        self._transport,
                        len(pending),
                        remaining - len(pending),
                    )
                    next_chunk = self._reader.piece
            while remaining > 0:
                if not pending:
                    pending = await next_chunk()
                    if not pending:
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body"
                            f" (received {self._length - remaining} bytes, expected"
                            f" {self._length})",
                            request=self._request,
                        )
                data = pending[:remaining] if len(pending) > remaining else pending
                remaining -= len(data)
                pending = b""
                yield data
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc
        finally:
            if self._reader is not None:
                self._reader.close()

    async def _through_h11(self) -> AsyncIterator[bytes]:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=self._request) from exc
            if event is h11.NEED_DATA:
                self._conn.receive_data(await self._receiver.chunk())
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    async def aclose(self) -> None:
        self._transport.close()
        if self._reader is not None:
            await self._reader.wait_closed()


class FirmwareTransport(httpx.AsyncBaseTransport):
    """See the module docstring; ``ssl_context`` serves ``https://`` URLs: a context, or
    a function that makes one (called in a thread, when the first such URL needs it);
    ``pieces``: plain-TCP bodies in pieces read by a thread."""

    def __init__(
        self, ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext], *, pieces: bool = False
    ) -> None:
        self._ssl = ssl_context
        self._pieces = pieces

    async def _context(self) -> ssl.SSLContext:
        if not isinstance(self._ssl, ssl.SSLContext):
            self._ssl = await asyncio.to_thread(self._ssl)
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'.", request=request
            )
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        timeouts = request.extensions.get("timeout", {})
        loop = asyncio.get_running_loop()
        try:
            context = await self._context() if tls else None
            async with asyncio.timeout(timeouts.get("connect")):
                transport, receiver = await loop.create_connection(
                    lambda: _Receiver(loop),
                    url.host,
                    port,
                    ssl=context,
                    server_hostname=url.host if tls else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from exc
        except OSError as exc:  # refused, unreachable, name resolution, TLS handshake
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        try:
            return await self._exchange(request, transport, receiver, tls)
        except BaseException:
            transport.close()
            raise

    async def _exchange(
        self,
        request: httpx.Request,
        transport: asyncio.BaseTransport,
        receiver: _Receiver,
        tls: bool,
    ) -> httpx.Response:
        assert isinstance(transport, asyncio.WriteTransport)
        conn = h11.Connection(our_role=h11.CLIENT)
        try:
            transport.write(
                conn.send(
                    h11.Request(
                        method=request.method,
                        target=request.url.raw_path,
                        headers=request.headers.raw,
                    )
                )
                + conn.send(h11.EndOfMessage())
            )
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await receiver.chunk()
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "Server disconnected without sending a response.", request=request
                        )
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    break
                # h11.InformationalResponse (1xx): the real answer follows.
        except (h11.LocalProtocolError, h11.RemoteProtocolError) as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        length: int | None = None
        lengths = [v for k, v in event.headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _v in event.headers)
        if event.status_code in (204, 304):
            length = 0  # no body, whatever the headers say (RFC 9112 §6.3)
        elif lengths and not chunked:
            length = int(lengths[0])  # h11 checked it is one valid number
        return httpx.Response(
            event.status_code,
            headers=event.headers,
            stream=_Body(
                request, conn, receiver, transport, length, threaded=self._pieces and not tls
            ),
            extensions={
                "http_version": b"HTTP/" + event.http_version,
                "reason_phrase": event.reason,
            },
        )

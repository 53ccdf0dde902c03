"""The downloader's httpx transport against a raw HTTP/1.1 server: the body shapes the
simulator never sends (chunked, up to the close) and the ways a response goes wrong."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from nhlink_dbus.aio.downloader import system_tls_context
from nhlink_dbus.aio.http_transport import BUFFER, PIECE, FirmwareTransport

BODY = os.urandom(3 * BUFFER + 123)
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def serve(answer: Answer) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await answer(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/firmware.fw?token=x"


async def fetch(url: str, *, pieces: bool = False) -> tuple[int, bytes]:
    transport = FirmwareTransport(system_tls_context(), pieces=pieces)
    async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", url) as r:
        return r.status_code, b"".join([chunk async for chunk in r.aiter_raw()])


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nhlink-recv"]


@pytest.fixture
async def server_for() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> str:
        server, url = await serve(answer)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_chunked_body(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(BODY), 70_000):
            piece = BODY[start : start + 70_000]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    assert await fetch(await server_for(answer)) == (200, BODY)


async def test_body_up_to_the_close(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY)
        await writer.drain()

    assert await fetch(await server_for(answer)) == (200, BODY)


@pytest.mark.parametrize("pieces", [False, True])
async def test_body_and_head_in_one_read(
    server_for: Callable[[Answer], Awaitable[str]], pieces: bool
) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\nhello")

    assert await fetch(await server_for(answer), pieces=pieces) == (206, b"hello")


@pytest.mark.parametrize("pieces", [False, True])
async def test_length_body_cut_short(
    server_for: Callable[[Answer], Awaitable[str]], pieces: bool
) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:1000])

    with pytest.raises(httpx.RemoteProtocolError, match="received 1000 bytes"):
        await fetch(await server_for(answer), pieces=pieces)
    assert not readers()


async def test_pieces_end_on_part_boundaries(
    server_for: Callable[[Answer], Awaitable[str]],
) -> None:
    """With pieces, what the loop had read before the thread took over comes first,
    then pieces that end at multiples of PIECE (the parts a verifier checks), the last
    at the body's end."""
    body = os.urandom(2 * PIECE + PIECE // 2)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 65536):
            writer.write(body[start : start + 65536])
            await writer.drain()

    url = await server_for(answer)
    transport = FirmwareTransport(system_tls_context(), pieces=True)
    ends: list[int] = []
    received = b""
    async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", url) as r:
        async for chunk in r.aiter_raw():
            received += chunk
            ends.append(len(received))
    assert received == body
    assert all(end % PIECE == 0 for end in ends[1:-1]) and ends[-1] == len(body)
    assert len(ends) <= 4
    assert not readers()


async def test_a_slow_link_still_hands_on_what_came(
    server_for: Callable[[Answer], Awaitable[str]],
) -> None:
    """A piece that does not fill is handed on after FLUSH_S: the server sends the rest
    only once the client has the first bytes (it would wait forever otherwise)."""
    got_first = asyncio.Event()
    head = os.urandom(300_000)  # more than the loop reads with the head, less than PIECE
    tail = os.urandom(5000)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(head) + len(tail)))
        writer.write(head)
        await writer.drain()
        await asyncio.wait_for(got_first.wait(), 30)
        writer.write(tail)
        await writer.drain()

    url = await server_for(answer)
    transport = FirmwareTransport(system_tls_context(), pieces=True)
    received = b""
    async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", url) as r:
        async for chunk in r.aiter_raw():
            received += chunk
            if len(received) >= len(head):
                got_first.set()
    assert received == head + tail


async def test_closing_a_body_early_ends_its_reader(
    server_for: Callable[[Answer], Awaitable[str]],
) -> None:
    """The consumer stops after the first chunk (the server would send much more): the
    reader thread ends with the response, woken out of its recv."""
    release = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * PIECE))
        writer.write(os.urandom(PIECE // 2))
        await writer.drain()
        await asyncio.wait_for(release.wait(), 30)

    url = await server_for(answer)
    transport = FirmwareTransport(system_tls_context(), pieces=True)
    async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", url) as r:
        async for _chunk in r.aiter_raw():
            break
    release.set()
    assert not readers()


async def test_no_response(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        pass

    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await fetch(await server_for(answer))


async def test_malformed_response(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 two hundred\r\n\r\n")

    with pytest.raises(httpx.RemoteProtocolError):
        await fetch(await server_for(answer))


async def test_nothing_listening_is_a_connect_error() -> None:
    server, url = await serve(lambda writer: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await fetch(url)


async def test_other_schemes_are_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await fetch("ftp://127.0.0.1/firmware.fw")

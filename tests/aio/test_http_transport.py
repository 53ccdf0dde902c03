"""The downloader's httpx transport against a raw HTTP/1.1 server: the body shapes the
simulator never sends (chunked, up to the close) and the ways a response goes wrong."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from nhlink_dbus.aio.downloader import system_tls_context
from nhlink_dbus.aio.http_transport import BUFFER, FirmwareTransport

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


async def fetch(url: str) -> tuple[int, bytes]:
    transport = FirmwareTransport(system_tls_context())
    async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", url) as r:
        return r.status_code, b"".join([chunk async for chunk in r.aiter_raw()])


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


async def test_body_and_head_in_one_read(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\nhello")

    assert await fetch(await server_for(answer)) == (206, b"hello")


async def test_length_body_cut_short(server_for: Callable[[Answer], Awaitable[str]]) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:1000])

    with pytest.raises(httpx.RemoteProtocolError, match="received 1000 bytes"):
        await fetch(await server_for(answer))


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

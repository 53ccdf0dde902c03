"""aio.ws_compat and aio.hub_tls: error translation and TLS set-up, on both websockets lines."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nhlink_dbus.aio import ws_compat
from nhlink_dbus.aio.hub_tls import server_hostname, tls_context
from nhlink_dbus.core.hub_settings import HubSettings, SharedSecretAuth, TlsAuth
from nhlink_dbus.errors import AuthError, ConfigError, HubConnectionError
from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret

NH1 = SharedSecretAuth("nhd_k", "s")


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


def test_the_api_matching_the_installed_release_is_used() -> None:
    major = int(ws_compat.WEBSOCKETS_VERSION.split(".")[0])
    assert ("additional_headers" if major >= 13 else "extra_headers") == ws_compat._HEADERS_ARG


async def test_a_whole_connection_raises_no_deprecation_warning() -> None:
    """websockets 10.4 on Python 3.11, and the current release: no DeprecationWarning at all."""
    config = HubSimConfig(shared_secrets=[SharedSecret("nhd_k", "s")])
    async with HubSim(config) as sim:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ws = await ws_compat.open_connection(
                sim.ws_url + "/device-socket/websocket?vsn=2.0.0",
                headers=NH1.headers("dev", int(sim.config.clock())),
            )
            assert await ws.send('["1","1","device","phx_join",{}]')
            reply = await ws.recv()
            assert isinstance(reply, str) and "phx_reply" in reply
            await ws.close()
            while await ws.recv() is not None:  # after-join pushes still buffered
                pass
            assert "1000" in ws.close_reason
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


@contextlib.asynccontextmanager
async def raw_http_server(answer: bytes | None, *, eager: bool = False) -> AsyncIterator[int]:
    """A TCP server that answers any request with ``answer`` (None: never answers);
    ``eager`` answers before reading anything (a TLS client then gets garbage)."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not eager:
                await reader.readuntil(b"\r\n\r\n")
            if answer is None:
                await asyncio.sleep(10)
            else:
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(serve(reader, writer))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def status(code: int, reason: str) -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


@pytest.mark.parametrize(("code", "error"), [(401, AuthError), (403, AuthError)])
async def test_auth_refusals(code: int, error: type[Exception]) -> None:
    async with raw_http_server(status(code, "Nope")) as port:
        with pytest.raises(error, match=str(code)):
            await ws_compat.open_connection(f"ws://127.0.0.1:{port}/device-socket/websocket")


async def test_other_statuses_eof_timeout_and_refused_are_connection_errors() -> None:
    async with raw_http_server(status(500, "Oops")) as port:
        with pytest.raises(HubConnectionError, match="HTTP 500"):
            await ws_compat.open_connection(f"ws://127.0.0.1:{port}/x")
    async with raw_http_server(b"") as port:
        with pytest.raises(HubConnectionError):
            await ws_compat.open_connection(f"ws://127.0.0.1:{port}/x")
    async with raw_http_server(None) as port:
        with pytest.raises(HubConnectionError, match=r"cannot reach the hub: .+"):
            await ws_compat.open_connection(
                f"ws://127.0.0.1:{port}/x", open_timeout=0.2, close_timeout=0.2
            )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    with pytest.raises(HubConnectionError, match="cannot reach"):
        await ws_compat.open_connection(f"ws://127.0.0.1:{free_port}/x")


async def test_tls_to_a_plain_server_is_a_connection_error() -> None:
    async with raw_http_server(status(200, "OK"), eager=True) as port:
        with pytest.raises(HubConnectionError):
            await ws_compat.open_connection(
                f"wss://127.0.0.1:{port}/x", ssl_context=ssl.create_default_context()
            )


def test_tls_context_rules(tmp_path: Path) -> None:
    assert tls_context(HubSettings(url="ws://127.0.0.1:4000", identifier="d", auth=NH1)) is None
    wss = HubSettings(url="hub.example.com", identifier="d", auth=NH1)
    context = tls_context(wss)
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.maximum_version is ssl.TLSVersion.TLSv1_2
    assert server_hostname(wss) == "hub.example.com"
    sni = HubSettings(url="wss://10.0.0.1", identifier="d", auth=TlsAuth("c", "k", sni="hub.x"))
    assert server_hostname(sni) == "hub.x"
    missing_ca = HubSettings(url="wss://h", identifier="d", auth=NH1, cafile=str(tmp_path / "no"))
    with pytest.raises(ConfigError, match="CA file"):
        tls_context(missing_ca)
    (tmp_path / "bad.pem").write_text("not a certificate")
    bad_cert = HubSettings(
        url="wss://h",
        identifier="d",
        auth=TlsAuth(str(tmp_path / "bad.pem"), str(tmp_path / "bad.pem")),
    )
    with pytest.raises(ConfigError, match="certfile"):
        tls_context(bad_cert)

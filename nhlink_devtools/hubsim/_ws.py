"""The one place where the simulator meets the websockets server API.

websockets 13+ has ``websockets.asyncio.server``; Debian 12 ships 10.4, which
only has the legacy ``websockets.server`` (importing the legacy module on new
releases warns, and tests turn warnings into errors). Both are wrapped behind
:func:`start_server` and :class:`WsConnection`, so the rest of the simulator
never sees a websockets type.

The hook ``decide(path, headers, peercert)`` runs before the upgrade: it
returns a :class:`Reject` (answered as a plain HTTP response) or any other
object, the context handed to ``handler(connection, context)`` after the
upgrade.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from nhlink_dbus.aio.ws_compat import WsMessages

try:  # websockets >= 13
    from websockets.asyncio import server as _new_server
except ImportError:  # pragma: no cover - websockets 10.4 (Debian 12)
    _new_server = None  # type: ignore[assignment]

PeerCert = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reject:
    """An HTTP answer instead of the WebSocket upgrade."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Decide = Callable[[str, dict[str, str], PeerCert | None], object]


class WsConnection(WsMessages):
    """A server-side WebSocket connection, whatever the websockets version."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake with ``code`` (bounded by the server's close timeout)."""
        await self._raw.close(code, reason)

    @property
    def close_code(self) -> int | None:
        code: int | None = self._raw.close_code
        return code


def _headers_dict(raw_headers: Any) -> dict[str, str]:
    # Lower-case names; a repeated header keeps its first value, as Plug's
    # get_req_header |> List.first does for the NH1 headers.
    result: dict[str, str] = {}
    for name, value in raw_headers.raw_items():
        result.setdefault(name.lower(), value)
    return result


def _peercert(transport: Any) -> PeerCert | None:
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert: PeerCert | None = ssl_object.getpeercert() or None
    return cert


class WsServer:
    """A running WebSocket server: its port, its connections, and stop()."""

    def __init__(self, server: Any, connections: set[WsConnection]) -> None:
        self._server = server
        self._connections = connections

    @property
    def port(self) -> int:
        sockets = list(self._server.sockets)
        port: int = sockets[0].getsockname()[1]
        return port

    async def stop(self, *, abort: bool) -> None:
        """Stop listening; abort connections (as a killed server) or close them (1001)."""
        if abort:
            for connection in list(self._connections):
                connection.abort()
        self._server.close()
        await self._server.wait_closed()


async def start_server(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    decide: Decide,
    handler: Callable[[WsConnection, object], Awaitable[None]],
) -> WsServer:
    """Listen on ``host:port`` and run ``handler`` for every accepted upgrade."""
    connections: set[WsConnection] = set()
    # Phoenix does not ping (the client heartbeats); cowboy does not either.
    common: dict[str, Any] = {"ssl": ssl_context, "ping_interval": None, "close_timeout": 2}

    async def run(raw: Any, context: object) -> None:
        connection = WsConnection(raw)
        connections.add(connection)
        try:
            await handler(connection, context)
        finally:
            connections.discard(connection)

    if _new_server is not None:
        contexts: dict[int, object] = {}

        def process_request(connection: Any, request: Any) -> Any:
            decision = decide(
                request.path, _headers_dict(request.headers), _peercert(connection.transport)
            )
            if isinstance(decision, Reject):
                response = connection.respond(decision.status, "")
                response.body = decision.body
                # websockets' Headers is a multidict: assigning appends, so delete first.
                del response.headers["Content-Length"]
                response.headers["Content-Length"] = str(len(decision.body))
                if not decision.body:
                    del response.headers["Content-Type"]
                for name, _ in decision.headers:
                    if name in response.headers:  # ours replace websockets' own (Date)
                        del response.headers[name]
                for name, value in decision.headers:
                    response.headers[name] = value
                return response
            contexts[id(connection)] = decision
            return None

        async def new_handler(connection: Any) -> None:
            await run(connection, contexts.pop(id(connection)))

        server = await _new_server.serve(
            new_handler, host, port, process_request=process_request, **common
        )
        return WsServer(server, connections)

    legacy = importlib.import_module("websockets.server")  # pragma: no cover

    class Protocol(legacy.WebSocketServerProtocol):  # type: ignore[name-defined,misc]  # pragma: no cover
        nh_context: object = None

        async def process_request(self, path: str, request_headers: Any) -> Any:
            decision = decide(path, _headers_dict(request_headers), _peercert(self.transport))
            if isinstance(decision, Reject):
                headers = [("Content-Length", str(len(decision.body)))]
                if decision.body:
                    headers.append(("Content-Type", "text/plain; charset=utf-8"))
                headers.extend(decision.headers)
                return HTTPStatus(decision.status), headers, decision.body
            self.nh_context = decision
            return None

    async def legacy_handler(protocol: Any) -> None:  # pragma: no cover
        await run(protocol, protocol.nh_context)

    server = await legacy.serve(legacy_handler, host, port, create_protocol=Protocol, **common)
    return WsServer(server, connections)


__all__ = ["PeerCert", "Reject", "WsConnection", "WsServer", "start_server"]

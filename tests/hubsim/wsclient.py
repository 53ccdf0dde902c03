"""A minimal raw WebSocket client for the simulator's tests (websockets 10.4 to 17)."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

try:  # websockets >= 13
    from websockets.asyncio.client import connect as _connect

    NEW_API = True
except ImportError:  # pragma: no cover - websockets 10.4
    from websockets.client import connect as _connect  # type: ignore[no-redef]

    NEW_API = False


async def open_ws(
    url: str,
    headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """Open a WebSocket connection; raises websockets' handshake errors."""
    extra = "additional_headers" if NEW_API else "extra_headers"
    kwargs: dict[str, Any] = {extra: headers or [], "ping_interval": None, "close_timeout": 1}
    if ssl_context is not None:
        kwargs["ssl"] = ssl_context
    return await _connect(url, **kwargs)


def rejected_status(exc: BaseException) -> int:
    """The HTTP status of a refused upgrade, whatever the websockets version."""
    response = getattr(exc, "response", None)
    if response is not None:
        return int(response.status_code)
    return int(exc.status_code)  # type: ignore[attr-defined]


async def send(ws: Any, *frame: Any) -> None:
    """Send ``[join_ref, ref, topic, event, payload]``."""
    await ws.send(json.dumps(list(frame)))


async def recv(ws: Any, timeout: float = 5.0) -> list[Any]:
    async with asyncio.timeout(timeout):
        frame: list[Any] = json.loads(await ws.recv())
    return frame

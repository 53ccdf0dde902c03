"""The one place that knows websockets' version differences (client side).

* websockets >= 13 has ``websockets.asyncio.client.connect(..., additional_headers=)``
  and refuses an upgrade with ``InvalidStatus`` (``exc.response.status_code``).
* websockets 10.4 (Debian 12) has only the legacy ``websockets.client.connect(...,
  extra_headers=)`` and raises ``InvalidStatusCode`` (``exc.status_code``). The
  legacy API warns (DeprecationWarning) from 14.0 on, so it is used only when the
  new one is missing.

Everything else sees :class:`WsClient` and the project's errors: a 401/403 is
:class:`AuthError`, any other failure to open is :class:`HubConnectionError`
(for TLS, with what went wrong in words an operator can act on:
:func:`tls_problem`).
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.version import version as _websockets_version

from nhlink_dbus import __version__
from nhlink_dbus.errors import AuthError, HubConnectionError


def _pick_connect() -> tuple[Callable[..., Any], str]:
    """``connect`` and the name of its headers argument for the installed release."""
    try:  # websockets >= 13
        module = importlib.import_module("websockets.asyncio.client")
        return module.connect, "additional_headers"
    except ImportError:  # websockets 10.4: only the legacy client exists
        module = importlib.import_module("websockets.client")
        return module.connect, "extra_headers"


_connect, _HEADERS_ARG = _pick_connect()

# websockets logs the upgrade request's headers at DEBUG, and those carry the NH1
# signature: its logger gets a level of its own so a global DEBUG never shows them.
_library_logger = logging.getLogger(f"{__name__}.websockets")
_library_logger.setLevel(logging.INFO)

WEBSOCKETS_VERSION: str = _websockets_version
USER_AGENT = f"nhlink-dbus/{__version__}"


def _date_of(exc: BaseException) -> float | None:
    """The ``Date`` header of a refused upgrade as Unix seconds, whatever the version."""
    response = getattr(exc, "response", None)  # InvalidStatus (>= 10)
    headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
    text = headers.get("Date") if headers is not None else None
    if not isinstance(text, str):
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status of a refused upgrade, whatever the websockets version."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)  # InvalidStatus (>= 10)
    if status is None:
        status = getattr(exc, "status_code", None)  # InvalidStatusCode (legacy)
    return status if isinstance(status, int) else None


# OpenSSL's names of the alerts a server sends when it refuses the client's
# certificate (RFC 5246 §7.2.2), as the hub's TLS stack sends them (mutual TLS).
_CERTIFICATE_ALERTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate unknown",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown CA",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate required",
}
# X.509 verification results (OpenSSL's X509_V_ERR_*) and where to look.
_VERIFY_HINTS = {
    9: "is the device clock right?",  # certificate is not yet valid
    10: "is the device clock right?",  # certificate has expired
    18: "check hub.cafile / hub.tls.cafile",  # self-signed certificate
    19: "check hub.cafile / hub.tls.cafile",  # self-signed certificate in chain
    20: "check hub.cafile / hub.tls.cafile",  # unable to get local issuer certificate
    62: "check hub.url / hub.sni",  # hostname mismatch
}


def tls_problem(exc: ssl.SSLError) -> str:
    """What a failed TLS handshake means, for the log and the ``Error`` signal."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or exc.reason or str(exc)).rstrip(".")
        hint = _VERIFY_HINTS.get(exc.verify_code)
        return f"the hub's TLS certificate is not trusted: {detail}" + (
            f" ({hint})" if hint else ""
        )
    alert = _CERTIFICATE_ALERTS.get(exc.reason or "")
    if alert is not None:
        return f"the hub refused this device's certificate: {alert} (TLS alert)"
    return f"TLS handshake failed: {exc.reason or exc}"


class WsMessages:
    """Messages over an open websockets connection (client or server side, any
    version): the part both have in common. The simulator's server connection
    reuses it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    async def recv(self) -> str | bytes | None:
        """The next message; None once the connection is closed."""
        try:
            message: str | bytes = await self._raw.recv()
        except ConnectionClosed:
            return None
        return message

    async def send(self, text: str) -> bool:
        """Send one text frame; False if the connection is already closed."""
        try:
            await self._raw.send(text)
        except ConnectionClosed:
            return False
        return True

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        transport = getattr(self._raw, "transport", None)
        if transport is not None:
            transport.abort()


class WsClient(WsMessages):
    """An open client WebSocket, whatever the websockets version."""

    async def close(self) -> None:
        """Close handshake (bounded by the close timeout), errors swallowed."""
        try:
            await self._raw.close()
        except (OSError, ConnectionClosed, TimeoutError):  # pragma: no cover
            self.abort()

    @property
    def close_reason(self) -> str:
        """Why the connection ended, for logs and the Disconnected event."""
        code = getattr(self._raw, "close_code", None)
        reason = getattr(self._raw, "close_reason", None) or ""
        if code is None:
            return "connection closed"
        return f"connection closed (code {code}{', ' + reason if reason else ''})"


async def open_connection(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 2.0,
) -> WsClient:
    """Open the WebSocket; raise :class:`AuthError` on 401/403, else :class:`HubConnectionError`.

    websockets 10.4 spends up to ``close_timeout`` tearing down an attempt that hit
    ``open_timeout``; newer releases return at once.

    No compression (2.5.2 negotiates no extension, §1.2) and no WebSocket pings of
    our own: the Phoenix heartbeat is the liveness check. Pings from the server
    are answered by websockets itself.
    """
    kwargs: dict[str, Any] = {
        "compression": None,
        "ping_interval": None,
        "open_timeout": open_timeout,
        "close_timeout": close_timeout,
        "user_agent_header": USER_AGENT,
        "logger": _library_logger,
    }
    if ssl_context is not None:
        kwargs["ssl"] = ssl_context
        if server_hostname is not None:
            kwargs["server_hostname"] = server_hostname
    kwargs[_HEADERS_ARG] = list(headers)
    try:
        raw = await _connect(url, **kwargs)
    except InvalidURI as exc:
        raise HubConnectionError("invalid hub URL") from exc
    except InvalidHandshake as exc:
        status = _status_of(exc)
        if status in (401, 403):
            raise AuthError(
                f"the hub refused the credentials (HTTP {status})", server_time=_date_of(exc)
            ) from exc
        if status is not None:
            raise HubConnectionError(f"WebSocket upgrade refused (HTTP {status})") from exc
        raise HubConnectionError(f"WebSocket handshake failed: {exc}") from exc
    except ssl.SSLError as exc:
        raise HubConnectionError(tls_problem(exc)) from exc
    except (OSError, EOFError, TimeoutError, ConnectionClosed) as exc:
        raise HubConnectionError(f"cannot reach the hub: {str(exc) or type(exc).__name__}") from exc
    return WsClient(raw)

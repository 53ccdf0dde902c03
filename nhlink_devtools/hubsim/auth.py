"""The upgrade-request decision of nerves_hub_web's DeviceSocket (protocol.md §1.1, §2).

A pure function: path, lower-cased headers and the verified TLS peer
certificate go in, an :class:`Accepted` or an :class:`HttpAnswer` comes out.
Order of the checks, as the server makes them:

1. path: ``/socket/websocket`` and ``/device-socket/websocket`` mount the
   device socket; ``/status/alive`` answers 200; anything else a 301 to docs;
2. serializer: Phoenix negotiates ``vsn`` before ``connect``; the simulator
   speaks only V2 JSON and answers 403 to anything but ``vsn=2.0.x``;
3. a client certificate (already verified against the device CA by the TLS
   layer) → certificate auth, device identifier = the certificate's CN;
4. else any ``x-`` header → NH1 shared-secret auth (:func:`verify_headers`):
   ``nhp_`` keys are product keys (any identifier is accepted: the server
   creates the device), other keys are device keys whose identifier must match;
5. else 401 with the ``nh-connection-error-reason`` header and body.

Every other refusal is a 401 with an empty body; the reason only reaches the
simulator's handshake log, never the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nhlink_dbus.core.nh1 import SERVER_MAX_AGE_S, verify_headers
from nhlink_dbus.errors import AuthError, ConfigError

SOCKET_PATHS = ("/socket/websocket", "/device-socket/websocket")
NO_AUTH_REASON = "no certificate pair or shared secrets connection settings were provided"
DOCS_URL = "https://docs.nerves-hub.org/"


@dataclass(frozen=True, slots=True)
class SharedSecret:
    """An NH1 key the simulator knows. ``identifier`` pins a device key to one device."""

    key: str
    secret: str = field(repr=False)
    identifier: str | None = None

    @classmethod
    def parse(cls, text: str) -> SharedSecret:
        """``KEY:SECRET`` or ``KEY:SECRET:IDENTIFIER`` (the CLI's ``--shared-secret``)."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ConfigError("--shared-secret: expected KEY:SECRET or KEY:SECRET:IDENTIFIER")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An upgrade the server accepts, and what the device authenticated as."""

    identifier: str
    auth: str  # "cert" or "nh1"
    key: str | None  # the NH1 key (never the secret); None for cert auth
    path: str
    headers: Mapping[str, str]  # the upgrade request's headers, x-nh-signature redacted


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A plain HTTP response instead of the upgrade; ``reason`` is for the sim's log only."""

    status: int
    reason: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _common_name(peercert: Mapping[str, Any]) -> str | None:
    for rdn in peercert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def decide(
    target: str,
    headers: Mapping[str, str],
    peercert: Mapping[str, Any] | None,
    *,
    secrets: Mapping[str, SharedSecret],
    now_ms: int,
    max_age_s: int = SERVER_MAX_AGE_S,
) -> Accepted | HttpAnswer:
    """Decide one upgrade request as nerves_hub_web's device endpoint would."""
    split = urlsplit(target)
    path = split.path
    if path == "/status/alive":
        return HttpAnswer(200, "alive", b"Hello Friend!")
    if path not in SOCKET_PATHS:
        return HttpAnswer(301, "not a socket path", b"", (("Location", DOCS_URL),))
    vsn = parse_qs(split.query).get("vsn", [""])[0]
    if not vsn.startswith("2.0."):
        return HttpAnswer(
            403,
            f"unsupported serializer vsn={vsn!r}",
            b"nhlink-hub-sim speaks only the Phoenix V2 serializer: connect with ?vsn=2.0.0",
        )
    recorded = {k: ("<redacted>" if k == "x-nh-signature" else v) for k, v in headers.items()}

    if peercert is not None:
        common_name = _common_name(peercert)
        if not common_name:
            return HttpAnswer(401, "certificate without a common name")
        return Accepted(common_name, "cert", None, path, recorded)

    if not any(name.startswith("x-") for name in headers):
        return HttpAnswer(
            401,
            "no_auth",
            NO_AUTH_REASON.encode(),
            (("nh-connection-error-reason", NO_AUTH_REASON),),
        )
    if not secrets:
        return HttpAnswer(401, "shared secrets are disabled (none configured)")
    try:
        token = verify_headers(
            dict(headers), {k: s.secret for k, s in secrets.items()}, now_ms, max_age_s
        )
    except AuthError as exc:
        return HttpAnswer(401, str(exc))
    record = secrets[token.key]
    if (
        not token.key.startswith("nhp_")
        and record.identifier is not None
        and record.identifier != token.identifier
    ):
        return HttpAnswer(401, "device key signed for another identifier")
    return Accepted(token.identifier, "nh1", token.key, path, recorded)

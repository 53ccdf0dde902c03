"""TLS for the hub connection (protocol.md §1.2, §2.1).

The server certificate is always verified: against the configured CA file, else
the system trust store; the name checked is the SNI name (configured, else the
URL host), as Erlang's ``server_name_indication`` does both. With mutual TLS the
device certificate and key come from PEM files. ``ws://`` URLs get no TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nhlink_dbus.core.hub_settings import HubSettings, TlsAuth, websocket_url
from nhlink_dbus.errors import ConfigError

if TYPE_CHECKING:
    import ssl


def tls_context(settings: HubSettings) -> ssl.SSLContext | None:
    """The client context for ``settings``, or None for a ``ws://`` URL."""
    if urlsplit(websocket_url(settings)).scheme != "wss":
        return None
    import ssl  # noqa: PLC0415  (a ws:// hub, as in tests, needs none of it)

    cafile = settings.server_cafile
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"hub CA file {cafile!r} cannot be loaded: {exc}") from exc
    # nerves_hub_link offers TLS 1.2 only (§1.2): the server's TLS 1.3 set-up sends
    # certificate_authorities and is off unless the operator enables it.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if isinstance(settings.auth, TlsAuth):
        auth = settings.auth
        try:
            context.load_cert_chain(auth.certfile, auth.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"hub.tls certfile {auth.certfile!r} / keyfile {auth.keyfile!r} cannot be "
                f"loaded: {getattr(exc, 'strerror', None) or exc}"
            ) from exc
    return context


def server_hostname(settings: HubSettings) -> str | None:
    """The SNI (and certificate check) name: configured ``sni``, else the URL host."""
    return settings.server_sni or urlsplit(websocket_url(settings)).hostname

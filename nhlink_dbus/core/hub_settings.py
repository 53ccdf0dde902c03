"""Hub connection settings and the WebSocket URL rule (protocol.md §1.1, §2).

Built by the daemon from its TOML file; nothing here reads files or the
environment. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nhlink_dbus.core.bounds import bounded, check_bounds
from nhlink_dbus.core.nh1 import NH1Params, sign_headers
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.core.redact import redact_url
from nhlink_dbus.errors import ConfigError

MTLS_PATH = "/socket/websocket"
NH1_PATH = "/device-socket/websocket"
SERIALIZER_VSN = "2.0.0"

# The old name of core.redact.redact_url, kept for nhlink_dbus.service; call redact_url.
loggable_url = redact_url


@dataclass(frozen=True, slots=True)
class SharedSecretAuth:
    """NH1 shared-secret auth (§2.2): a ``nhd_``/``nhp_`` key and its secret."""

    key: str
    secret: str = field(repr=False)
    params: NH1Params = field(default_factory=NH1Params)

    def headers(self, identifier: str, now_s: int) -> list[tuple[str, str]]:
        """Fresh upgrade headers; call right before every connection attempt."""
        return sign_headers(self.key, self.secret, identifier, now_s, self.params)


@dataclass(frozen=True, slots=True)
class TlsAuth:
    """Mutual TLS (§2.1) from PEM files; ``cafile`` None = the system trust store."""

    certfile: str
    keyfile: str
    cafile: str | None = None
    sni: str | None = None


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Everything the hub client needs to know (the ``[hub]`` table)."""

    url: str
    identifier: str
    auth: SharedSecretAuth | TlsAuth
    # The defaults of [hub] too (config.HubConfig reads them from here). Any
    # non-negative value is valid; the file's stricter minimum is config's own.
    heartbeat_interval_ms: int = bounded(30_000, 0)
    rejoin_after_ms: int = bounded(5_000, 0)
    # With NH1 over wss:// the server is still verified; these apply to both kinds.
    cafile: str | None = None
    sni: str | None = None

    def __post_init__(self) -> None:
        check_bounds(self, "hub")
        if not self.identifier:
            raise ConfigError("hub.identifier must not be empty")
        websocket_url(self)  # validates the URL

    @property
    def server_cafile(self) -> str | None:
        if isinstance(self.auth, TlsAuth) and self.auth.cafile is not None:
            return self.auth.cafile
        return self.cafile

    @property
    def server_sni(self) -> str | None:
        if isinstance(self.auth, TlsAuth) and self.auth.sni is not None:
            return self.auth.sni
        return self.sni


def hub_url_problem(url: str) -> str | None:
    """What is wrong with a configured hub URL, or None: the one check, used by the
    config reader (which names the file and key) and by ``websocket_url``.

    A host without a scheme means ``wss://host``.
    """
    base = url if "://" in url else f"wss://{url}"
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"not a valid URL ({url!r})"
    if parts.scheme not in ("ws", "wss"):
        return f"must be a wss:// (or ws://) URL (got scheme {parts.scheme!r})"
    if not parts.hostname or " " in url or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return f"not a valid URL ({url!r})"
    return None


def websocket_url(settings: HubSettings) -> str:
    """Base URL + auth-kind path + ``vsn=2.0.0`` merged into any query (§1.1).

    A host without a scheme means ``wss://host``; ``ws://`` is used only when the
    configured URL says so.
    """
    raw = settings.url.strip()
    problem = hub_url_problem(raw)
    if problem is not None:
        raise ConfigError(f"hub.url: {problem}")
    parts = urlsplit(raw if "://" in raw else f"wss://{raw}")
    path = MTLS_PATH if isinstance(settings.auth, TlsAuth) else NH1_PATH
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "vsn"]
    query.append(("vsn", SERIALIZER_VSN))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query), ""))

"""Firmware and archive download over httpx (protocol.md §6.4 with the §14 fixes).

The adapter of :class:`~nhlink_dbus.core.download_policy.DownloadState`: it
performs each request the state machine asks for on a *fresh* ``AsyncClient``
(one connection per attempt, closed on every failure, idle timeouts included),
hands every body chunk straight to ``await sink.write(chunk)`` before reading the
next (the applier's pace throttles TCP; PR #202), sleeps between retries and
raises :class:`~nhlink_dbus.errors.DownloadError` with the reason when the
machine gives up.

Works on httpx 0.23.3 (Debian 12) and 0.28; every difference stays here:

* TLS options are turned into one ``ssl.SSLContext`` (``verify=<path>`` and
  ``cert=`` are deprecated in 0.28, which ``filterwarnings=error`` would turn
  into failures);
* redirects are never followed by httpx (``follow_redirects=False`` exists in
  both; we count hops ourselves and keep the Location's query string);
* bodies are read with ``aiter_raw()``: the bytes as sent, never decoded (and we
  ask for ``Accept-Encoding: identity`` so there is nothing to decode);
* the default client's transport is :class:`~nhlink_dbus.aio.http_transport.
  FirmwareTransport`, not httpcore: the same requests and responses, the body received
  in large chunks with one copy per byte (httpcore's reads cost most of the daemon's
  CPU during a download); a ``client_factory`` may bring any transport;
* both versions log each request with its full URL on the ``httpx`` logger
  (0.28 at INFO, 0.23 at DEBUG) and httpcore 1.x logs a ``Location`` header at
  DEBUG; a filter installed on those loggers (process-wide, on the first
  download) drops URL query strings, which are credentials (STYLE.md 6).

Exceptions raised by the sink propagate unchanged: an applier failure is not a
download failure, and the caller knows best what it means.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

import httpx

from nhlink_dbus import __version__
from nhlink_dbus.aio.http_transport import FirmwareTransport
from nhlink_dbus.core.download_policy import (
    Complete,
    Continue,
    DownloadState,
    DownloadStats,
    GiveUp,
    Phase,
    Redirect,
    Retry,
    RetryPolicy,
)
from nhlink_dbus.core.redact import redact_text, redact_url
from nhlink_dbus.errors import DownloadError

logger = logging.getLogger(__name__)

USER_AGENT: Final = f"nhlink-dbus/{__version__}"

# Reasons of non-fatal failures (passed to on_error; they count as disconnects).
IDLE_TIMEOUT: Final = "idle_timeout"
CONNECT_ERROR: Final = "connect_error"
PROTOCOL_ERROR: Final = "protocol_error"
TRANSPORT_ERROR: Final = "transport_error"
BAD_URL: Final = "bad_url"


class ChunkSink(Protocol):
    """What the downloader writes into (docs/architecture.md, streaming contracts)."""

    async def write(self, chunk: bytes) -> None:
        """Take the next bytes; raise :class:`Refetch` to have them sent again from an
        earlier offset (a part that failed its checksum)."""

    async def restart(self) -> None:
        """The server ignored our Range (200): everything written so far is void."""


class Refetch(Exception):
    """Raised by a sink: drop what came from ``offset`` on and ask for it again."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


ClientFactory = Callable[[], httpx.AsyncClient]
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")  # c_rehash's link: subject hash, index
Verify = bool | str | ssl.SSLContext


def ssl_context(verify: Verify = True, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """One ``SSLContext`` for both httpx versions: system trust (True), a CA file
    (str), none (False), or the caller's context; ``cert`` = (certfile, keyfile)."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = system_trust_context()
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    return context


def system_trust_context(
    paths: ssl.DefaultVerifyPaths | None = None, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext:
    """A client context that trusts the system's certificate authorities.

    Where the system keeps them as a hashed directory that holds what its bundle holds
    (Debian's ``/etc/ssl/certs`` beside ``ca-certificates.crt``, both written by
    ``update-ca-certificates``), the context looks a CA up in the directory when a
    handshake needs it: OpenSSL's default paths would also parse the whole bundle (~140
    certificates: 17 ms and 1.7 MiB here) before the first download could start.
    Otherwise it is OpenSSL's defaults, as ``ssl.create_default_context()`` gives them:
    with ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` set (even empty), or when the bundle may
    hold a CA the directory does not (see :func:`_hashed_trust_dir`)."""
    capath = _hashed_trust_dir(paths, environ)
    if capath:
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context()


def _hashed_trust_dir(
    paths: ssl.DefaultVerifyPaths | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The system's hashed CA directory if it can stand for the bundle, else "".

    It can when the bundle (OpenSSL's default file) lies in the directory, is not newer
    than the directory (a CA appended to the bundle by hand is not in the directory),
    and holds as many certificates as the directory has hashed names (each CA is one
    ``<subject hash>.<n>`` link). Counting reads the bundle but parses nothing."""
    paths = paths if paths is not None else ssl.get_default_verify_paths()
    environ = environ if environ is not None else os.environ
    if paths.openssl_cafile_env in environ or paths.openssl_capath_env in environ:
        return ""
    capath, cafile = paths.capath, paths.cafile
    if not capath or not cafile:
        return ""
    try:
        directory = os.path.realpath(capath)
        bundle = os.path.realpath(cafile)
        if os.path.dirname(bundle) != directory:
            return ""
        if os.stat(bundle).st_mtime > os.stat(directory).st_mtime:
            return ""
        hashed = sum(1 for name in os.listdir(directory) if _HASHED_NAME.fullmatch(name))
        with open(bundle, "rb") as fh:
            certificates = fh.read().count(b"-----BEGIN CERTIFICATE-----")
    except OSError:
        return ""
    return capath if hashed and hashed == certificates else ""


@functools.cache
def system_tls_context() -> ssl.SSLContext:
    """The context of ``verify=True`` without a client certificate, made once."""
    return ssl_context(True)


_warm = False  # httpx's first client was made: the next ones take microseconds


def warm_up(url: str | None = None) -> None:
    """Load what the first download of ``url`` would load on its way: httpx's client
    and, for ``https://``, the system trust store (``None``: what any download needs,
    the trust store left out). Done in a thread: by the service once it is on the bus,
    and by an update while it waits for logind."""
    global _warm
    default_client_factory(idle_timeout_s=1.0)()  # built and dropped, never opened
    _warm = True
    if url is not None and url.startswith("https://"):
        system_tls_context()


def is_warm(url: str) -> bool:
    """Whether :func:`warm_up` has nothing left to load for ``url``."""
    return _warm and (
        not url.startswith("https://") or system_tls_context.cache_info().currsize > 0
    )


def default_client_factory(
    *,
    idle_timeout_s: float,
    verify: Verify = True,
    cert: tuple[str, str] | None = None,
    pieces: bool = False,
) -> ClientFactory:
    """The default factory: a new client (hence a new connection) per attempt. The
    system's trust is made when an ``https://`` URL first needs it (once: it is
    cached), not for a plain HTTP download. ``pieces``: see :class:`FirmwareTransport`."""
    context: ssl.SSLContext | Callable[[], ssl.SSLContext] = (
        system_tls_context if verify is True and cert is None else ssl_context(verify, cert)
    )

    def make() -> httpx.AsyncClient:
        # trust_env=False: no proxy or CA settings picked up from the environment
        # deep inside the daemon (STYLE.md: configuration is read once, at the edge).
        return httpx.AsyncClient(
            transport=FirmwareTransport(context, pieces=pieces),
            timeout=httpx.Timeout(idle_timeout_s),
            follow_redirects=False,
            trust_env=False,
        )

    return make


class _RedactQueryFilter(logging.Filter):
    """Redact URLs in the HTTP libraries' own log records (core.redact).

    httpx logs every request with its full URL (0.28 at INFO, 0.23 at DEBUG);
    httpcore 1.x logs response headers, a ``Location`` included, at DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, httpx.URL):
        return redact_url(str(arg))
    if isinstance(arg, str | bytes):
        text = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        redacted = redact_text(text)
        if redacted != text:
            return redacted
    return arg


_HTTPX_FILTER: Final = _RedactQueryFilter()
# A logger's filters see only records logged on that very logger, not its children.
_FILTERED_LOGGERS: Final = (
    "httpx",  # 0.28
    "httpx._client",  # 0.23
    "httpx._config",  # 0.23
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _install_log_filter() -> None:
    for name in _FILTERED_LOGGERS:
        library_logger = logging.getLogger(name)
        if _HTTPX_FILTER not in library_logger.filters:
            library_logger.addFilter(_HTTPX_FILTER)


def _scrub(text: str, urls: Sequence[str]) -> str:
    """An exception's text without any of ``urls``' query strings."""
    for url in urls:
        _, sep, query = url.partition("?")
        if sep and query:
            text = text.replace(url, redact_url(url)).replace(query, "<redacted>")
    return redact_text(text)


def _classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return IDLE_TIMEOUT
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return BAD_URL
    if isinstance(exc, httpx.ConnectError):
        return CONNECT_ERROR
    if isinstance(exc, httpx.RemoteProtocolError):
        return PROTOCOL_ERROR
    return TRANSPORT_ERROR


class _Attempt:
    """One request/response on its own client; reports to the state machine."""

    def __init__(
        self,
        state: DownloadState,
        sink: ChunkSink,
        clock: Callable[[], float],
        idle_s: float,
        on_connected: Callable[[], object] | None = None,
    ) -> None:
        self.state = state
        self.sink = sink
        self.clock = clock
        self.idle_s = idle_s
        self._on_connected = on_connected

    def _step_timeout(self) -> float:
        """Idle timeout for the next read, cut short by the download's deadline."""
        return max(0.0, min(self.idle_s, self.state.deadline() - self.clock()))

    async def run(
        self, client: httpx.AsyncClient
    ) -> Complete | Continue | Redirect | Retry | GiveUp:
        state = self.state
        request = state.next_request(self.clock())
        if request.attempt > 0 or request.offset > 0:
            logger.info(
                "download: resuming %s at byte %d (retry %d)",
                redact_url(request.url),
                request.offset,
                request.attempt,
            )
        http_request = client.build_request(
            "GET", request.url, headers=[*request.headers, ("Accept-Encoding", "identity")]
        )
        async with asyncio.timeout(self._step_timeout()):
            response = await client.send(http_request, stream=True)
        try:
            verdict = state.response(
                self.clock(), response.status_code, response.headers.multi_items()
            )
            if isinstance(verdict, GiveUp | Redirect):
                return verdict
            if self._on_connected is not None:
                on_connected, self._on_connected = self._on_connected, None
                on_connected()
            if verdict.restart:
                logger.info("download: the server ignored Range (200); restarting from byte 0")
                await _sink_call(self.sink.restart())
            body = response.aiter_raw()
            try:
                while True:
                    async with asyncio.timeout(self._step_timeout()):
                        chunk = await anext(body, None)
                    if chunk is None:
                        break
                    if chunk:
                        # Back-pressure: the next read waits for the sink.
                        await _sink_call(self.sink.write(chunk))
                        state.data(self.clock(), len(chunk))
                    give_up = state.check(self.clock())
                    if give_up is not None:
                        return give_up
            finally:
                # An async generator in both versions; close it here, not in the GC.
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await response.aclose()
        # Retry: the body ended short without a transport error (a disconnect).
        return state.body_end(self.clock())


class _SinkRefetch(Exception):
    def __init__(self, refetch: Refetch) -> None:
        super().__init__(str(refetch))
        self.refetch = refetch


class _SinkFailed(Exception):
    """Carries the sink's own exception past the transport-error handlers."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _sink_call(call: Awaitable[None]) -> None:
    try:
        await call
    except Refetch as refetch:
        raise _SinkRefetch(refetch) from refetch
    except Exception as exc:
        raise _SinkFailed(exc) from exc


async def download(
    url: str,
    sink: ChunkSink,
    policy: RetryPolicy | None = None,
    *,
    client_factory: ClientFactory | None = None,
    user_agent: str = USER_AGENT,
    on_error: Callable[[str], object] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    verify: Verify = True,
    cert: tuple[str, str] | None = None,
    on_connected: Callable[[], object] | None = None,
    pieces: bool = False,
) -> DownloadStats:
    """Download ``url`` into ``sink`` under ``policy``; return the counters.

    Raises :class:`DownloadError` whose text is the reason (``http_error 503``,
    ``max_disconnects_reached``, ``max_timeout_reached``,
    ``worst_case_download_speed_reached``, ``content_range_mismatch``,
    ``too_many_redirects``, ``bad_redirect``, ``bad_url``, ``body_too_long``).
    ``on_error(reason)`` is called for every non-fatal failure before its retry
    (``idle_timeout``, ``connect_error``, ``protocol_error``, ``transport_error``,
    ``incomplete_body``). ``verify``/``cert`` configure the default client;
    ``client_factory`` replaces it (one client per attempt; it is closed after).
    ``pieces``: the default client's transport reads a plain-TCP body on a thread, in
    1 MiB pieces aligned on the download's parts (for a sink that takes whole parts).
    ``on_connected()`` is called once, when the first response is accepted. A
    sink's :class:`Refetch` makes the next request start at its offset.
    """
    policy = policy if policy is not None else RetryPolicy()
    idle_s = policy.idle_timeout_ms / 1000
    # Off the loop: loading a trust store (and httpx's first client, which imports
    # its backends) takes 50 ms and more, during which the service would answer
    # nobody on the bus (issue 14: latency while an update starts). Once that is
    # done, a client takes microseconds: a trip through a thread would only delay
    # the request (by a millisecond and more on a busy machine).
    if client_factory is not None:
        factory = client_factory
    elif verify is True and cert is None and _warm:  # the trust is loaded when needed
        factory = default_client_factory(idle_timeout_s=idle_s, pieces=pieces)
    else:
        factory = await asyncio.to_thread(
            default_client_factory, idle_timeout_s=idle_s, verify=verify, cert=cert, pieces=pieces
        )
    _install_log_filter()
    state = DownloadState(url, policy, clock(), user_agent=user_agent)
    attempt = _Attempt(state, sink, clock, idle_s, on_connected)
    logger.info("download: start %s", redact_url(url))

    def fail(reason: str, cause: BaseException | None = None) -> DownloadError:
        stats = state.stats(clock())
        logger.info(
            "download: failed %s: %s (%d bytes, %d requests)",
            redact_url(state.url),
            reason,
            stats.received,
            stats.requests,
        )
        error = DownloadError(reason)
        error.__cause__ = cause
        return error

    while True:
        give_up = state.check(clock())
        if give_up is not None:
            raise fail(give_up.reason)
        if state.phase is Phase.WAITING:
            wait = min(state.retry_at, state.deadline()) - clock()
            if wait > 0:
                await sleep(wait)
                continue
            if clock() < state.retry_at:
                continue
        try:
            if _warm and client_factory is None:
                client = factory()
            else:
                client = await asyncio.to_thread(factory)
            async with client:
                outcome = await attempt.run(client)
        except _SinkRefetch as wrapped:
            refetch = wrapped.refetch
            logger.warning(
                "download: %s; fetching again from byte %d", refetch.reason, refetch.offset
            )
            state.refetch(clock(), refetch.offset)
            continue
        except _SinkFailed as failed:
            raise failed.error from None
        except (TimeoutError, httpx.TransportError, httpx.InvalidURL) as exc:
            reason = _classify(exc)
            logger.debug(
                "download: %s: %s", reason, _scrub(f"{type(exc).__name__}: {exc}", [url, state.url])
            )
            give_up = state.check(clock())
            if give_up is not None:
                raise fail(give_up.reason, exc) from exc
            if reason == BAD_URL or state.phase not in (Phase.REQUESTING, Phase.RECEIVING):
                raise fail(reason, exc) from exc
            outcome = state.failed(clock(), reason)
            _report(on_error, reason, state)
        else:
            if isinstance(outcome, Retry):  # the body ended short
                _report(on_error, outcome.reason, state)
        if isinstance(outcome, Retry):
            continue
        if isinstance(outcome, GiveUp):
            raise fail(outcome.reason)
        if isinstance(outcome, Redirect):
            logger.info("download: redirected to %s", redact_url(outcome.url))
            continue
        if isinstance(outcome, Continue):
            continue
        stats = state.stats(clock())
        logger.info(
            "download: complete %s: %d bytes, %d requests, %d disconnects, %d restarts",
            redact_url(state.url),
            stats.received,
            stats.requests,
            stats.disconnects,
            stats.restarts,
        )
        return stats


def _report(on_error: Callable[[str], object] | None, reason: str, state: DownloadState) -> None:
    """Log a non-fatal error (as 2.5.2's "Nonfatal HTTP download error") and tell the caller."""
    logger.warning(
        "download: nonfatal error %s after %d bytes (disconnect %d of %d)",
        reason,
        state.received,
        state.disconnects,
        state.policy.max_disconnects,
    )
    if on_error is not None:
        on_error(reason)

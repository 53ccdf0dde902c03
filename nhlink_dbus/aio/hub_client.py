"""The asyncio driver of the hub connection (protocol.md §1, §2, §8).

:class:`HubClient` performs what :class:`~nhlink_dbus.core.hub_session.HubSession`
asks for: it opens the WebSocket (fresh NH1 headers right before every attempt),
writes the frames the session produces, feeds it what arrives, calls its timers
and sleeps out the reconnect delays. Typed events (``UpdateInfo``,
``ArchiveInfo``, key lists, ``Reboot``, ``Identify`` and the lifecycle events of
``hub_session``) go to the ``on_event`` callback, or to :attr:`HubClient.events`
when no callback is given.

Use::

    client = HubClient(settings, device, on_event=handle)
    task = asyncio.create_task(client.run())   # cancel the task to stop
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from nhlink_dbus.aio.hub_tls import server_hostname, tls_context
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import records
from nhlink_dbus.core import update_mode as um
from nhlink_dbus.core.backoff import BackoffHook, ReconnectBackoff
from nhlink_dbus.core.hub_session import (
    DeviceInfo,
    HubSession,
    SessionEvent,
    SessionState,
    UpdateCheckResult,
)
from nhlink_dbus.core.hub_settings import HubSettings, SharedSecretAuth, websocket_url
from nhlink_dbus.core.nh1 import SERVER_MAX_AGE_S, ClockHint, signing_time
from nhlink_dbus.core.redact import redact_url
from nhlink_dbus.errors import (
    AuthError,
    HubConnectionError,
    NotPossible,
    ProtocolError,
    StateError,
)

if TYPE_CHECKING:
    from nhlink_dbus.aio import ws_compat

logger = logging.getLogger(__name__)

# A refusal whose Date is this far from our clock is worth a line in the log: a
# third of the hub's NH1 max age (protocol.md §2.2).
CLOCK_SKEW_WARNING_S = SERVER_MAX_AGE_S // 3


class Connector(Protocol):
    """How a connection is opened (``ws_compat.open_connection``; tests may pass another)."""

    def __call__(
        self,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        ssl_context: Any = None,
        server_hostname: str | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
    ) -> Awaitable[ws_compat.WsClient]: ...


async def _open_connection(url: str, **options: Any) -> ws_compat.WsClient:
    """:func:`ws_compat.open_connection` (a :class:`Connector`), imported by the first
    attempt: websockets (and the importlib.metadata it loads) is not needed to start the
    daemon and own its name."""
    from nhlink_dbus.aio import ws_compat  # noqa: PLC0415

    return await ws_compat.open_connection(url, **options)


class HubClient:
    """One NervesHub device connection, kept up until :meth:`run` is cancelled."""

    def __init__(
        self,
        settings: HubSettings,
        device: DeviceInfo,
        *,
        on_event: Callable[[SessionEvent], object] | None = None,
        reconnect_backoff: BackoffHook | None = None,
        connector: Connector | None = None,
        wall_clock: Callable[[], float] = time.time,
        open_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.url = websocket_url(settings)
        self._ssl = tls_context(settings)
        self._server_hostname = server_hostname(settings) if self._ssl is not None else None
        self.session = HubSession(
            device,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            rejoin_after_ms=settings.rejoin_after_ms,
            backoff=ReconnectBackoff(reconnect_backoff),
        )
        self.events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self._on_event = on_event
        self._connector: Connector = connector or _open_connection
        self._wall_clock = wall_clock
        self._open_timeout = open_timeout
        self._wake = asyncio.Event()
        self._reconnect = False
        self._checks: dict[str, asyncio.Future[hm.UpdateInfo | None]] = {}
        # Answers that come as pushes, not replies (device-managed updates): the
        # next one of its type answers every caller waiting for it.
        self._awaited: dict[type, list[asyncio.Future[Any]]] = {}
        self._ws: ws_compat.WsClient | None = None
        self._clock_hint: ClockHint | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.session.state is SessionState.CONNECTED

    @property
    def joined(self) -> bool:
        return self.session.joined

    def push(self, event: str, payload: dict[str, Any]) -> str | None:
        """Push on ``"device"``; the ref, or None when not joined (dropped, as 2.5.2)."""
        ref = self.session.push(event, payload)
        self._wake.set()
        return ref

    def push_fwup_progress(self, value: int) -> str | None:
        """``fwup_progress {"value": 0..100}`` (ValueError outside that range)."""
        return self.push("fwup_progress", hm.fwup_progress(value))

    def push_status_update(self, status: str) -> str | None:
        """``status_update {"status": …}``, e.g. ``"fwup error <message>"``."""
        return self.push("status_update", hm.status_update(status))

    def push_rebooting(self) -> str | None:
        """``rebooting {}``: push it before a reboot the hub asked for."""
        return self.push("rebooting", {})

    def push_extension(self, name: str, event: str, payload: dict[str, Any]) -> str | None:
        """Push ``<name>:<event>`` on ``extensions`` (dropped unless ``name`` is attached)."""
        ref = self.session.push_extension(name, event, payload)
        self._wake.set()
        return ref

    def set_meta(self, meta: dict[str, bool]) -> None:
        """The firmware validation state for the next join's ``meta``."""
        self.session.set_device(records.replace(self.session.device, meta=meta))

    async def check_update(self, timeout: float = 15.0) -> um.UpdateAvailability:
        """Device-managed ``check_update``: the hub's ``update_available`` (metadata, no URL)."""
        answer = await self._push_and_wait("check_update", {}, um.UpdateAvailability, timeout)
        assert isinstance(answer, um.UpdateAvailability)
        return answer

    async def set_update_mode(self, mode: str, timeout: float = 15.0) -> um.UpdateMode:
        """``set_update_mode``; the hub answers ``update_mode`` with the mode it now holds."""
        payload = um.set_update_mode_payload(mode)
        answer = await self._push_and_wait("set_update_mode", payload, um.UpdateMode, timeout)
        assert isinstance(answer, um.UpdateMode)
        return answer

    async def _push_and_wait(
        self, event: str, payload: dict[str, Any], answer: type, timeout: float
    ) -> Any:
        if not self.session.joined:
            raise StateError("not joined to the hub")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = self._awaited.setdefault(answer, [])
        waiting.append(future)
        try:
            if self.push(event, payload) is None:
                raise StateError("not joined to the hub")
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise HubConnectionError(f"no answer to {event}") from exc
        finally:
            if future in waiting:
                waiting.remove(future)

    def set_downloading(self, uuid: str | None) -> None:
        """The UUID of the firmware being applied, sent as currently_downloading_uuid."""
        self.session.set_downloading(uuid)

    def set_backoff(self, delays_ms: Sequence[int] | None) -> None:
        """Delays (ms) for the next reconnects (``reconnect_backoff``); None or [] = default."""
        self.session.backoff.set_delays(delays_ms)

    def reconnect(self) -> None:
        """Drop the connection and reconnect after the next back-off delay.

        While waiting to reconnect, try at once instead.
        """
        self._reconnect = True
        self._wake.set()

    async def check_update_available(self, timeout: float = 15.0) -> hm.UpdateInfo | None:
        """Ask the hub for an update now (§5.2). Raises StateError when not joined,
        HubConnectionError if the connection drops or no reply comes in time."""
        ref = self.session.check_update_available()
        if ref is None:
            raise StateError("not joined to the hub")
        future: asyncio.Future[hm.UpdateInfo | None] = asyncio.get_running_loop().create_future()
        self._checks[ref] = future
        self._wake.set()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise HubConnectionError("no answer to check_update_available") from exc
        finally:
            self._checks.pop(ref, None)

    async def run(self) -> None:
        """Connect, stay connected, reconnect; returns only by cancellation."""
        loop = asyncio.get_running_loop()
        logger.info("hub client for %s starting", redact_url(self.url))
        try:
            while True:
                await self._wait_for_attempt(loop)
                self.session.begin_attempt(loop.time())
                self._reconnect = False
                try:
                    self._ws = await self._connector(
                        self.url,
                        headers=self._auth_headers(),
                        ssl_context=self._ssl,
                        server_hostname=self._server_hostname,
                        open_timeout=self._open_timeout,
                    )
                except (AuthError, HubConnectionError) as exc:
                    if isinstance(exc, AuthError):
                        self._take_clock_hint(exc.server_time)
                    delay = self.session.attempt_failed(loop.time(), str(exc))
                    logger.warning(
                        "connection to %s failed: %s; retrying in %d ms",
                        redact_url(self.url),
                        exc,
                        delay,
                    )
                    self._dispatch()
                    continue
                logger.info("connected to %s", redact_url(self.url))
                self.session.connected(loop.time())
                reason = await self._serve(self._ws, loop)
                await self._ws.close()
                self._ws = None
                delay = self.session.connection_lost(loop.time(), reason)
                logger.warning("disconnected (%s); reconnecting in %d ms", reason, delay)
                self._fail_checks(reason)
                self._dispatch()
        finally:
            if self._ws is not None:
                self._ws.abort()
                self._ws = None
            self._fail_checks("client stopped")
            self.session.stop()

    # -- internals --------------------------------------------------------------------

    def _auth_headers(self) -> list[tuple[str, str]]:
        # Signed right before every attempt (§14 fix: 2.5.2 signs at the start of
        # the back-off wait, so a long wait could present an expired token), with
        # the hub's clock if a refusal showed ours behind (core.nh1.ClockHint).
        auth = self.settings.auth
        if isinstance(auth, SharedSecretAuth):
            now = signing_time(self._wall_clock(), time.monotonic(), self._clock_hint)
            return auth.headers(self.settings.identifier, now)
        return []

    def _take_clock_hint(self, server_time: float | None) -> None:
        if server_time is None or not isinstance(self.settings.auth, SharedSecretAuth):
            return
        skew = server_time - self._wall_clock()
        if abs(skew) >= CLOCK_SKEW_WARNING_S:
            logger.warning(
                "the hub's clock is %+d s from this device's; signing the next attempt "
                "with the hub's time",
                round(skew),
            )
        self._clock_hint = ClockHint(server_time, time.monotonic())

    async def _wait_for_attempt(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if self._reconnect:
                return
            delay = self.session.connect_at - loop.time()
            if delay <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _serve(self, ws: ws_compat.WsClient, loop: asyncio.AbstractEventLoop) -> str:
        """Run one connection until it ends; return why it ended."""
        recv: asyncio.Task[str | bytes | None] | None = None
        wake: asyncio.Task[bool] | None = None
        try:
            while True:
                self._dispatch()
                for text in self.session.data_to_send():
                    if not await ws.send(text):
                        return ws.close_reason
                if self.session.close_requested:
                    return "heartbeat_timeout"
                if self._reconnect:
                    return "reconnect requested"
                deadline = self.session.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                if recv is None:
                    recv = asyncio.ensure_future(ws.recv())
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {recv, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                wake = None
                if recv in done:
                    message = recv.result()
                    recv = None
                    if message is None:
                        return ws.close_reason
                    try:
                        self.session.receive_text(message, loop.time())
                    except ProtocolError as exc:
                        logger.warning("malformed frame ignored: %s", exc)
                self.session.tick(loop.time())
        finally:
            for task in (recv, wake):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _dispatch(self) -> None:
        for event in self.session.events():
            for waiting in self._awaited.pop(type(event), []):
                if not waiting.done():
                    waiting.set_result(event)
            if isinstance(event, um.UpdateAvailability):
                continue  # only ever an answer (check_update)
            if isinstance(event, UpdateCheckResult):
                future = self._checks.get(event.ref)
                if future is not None and not future.done():
                    if event.error is not None:
                        future.set_exception(HubConnectionError(event.error))
                    else:
                        future.set_result(event.update)
                continue
            if self._on_event is not None:
                self._on_event(event)
            else:
                self.events.put_nowait(event)

    def _fail_checks(self, reason: str) -> None:
        waiting = [f for futures in self._awaited.values() for f in futures]
        for future in [*self._checks.values(), *waiting]:
            if not future.done():
                future.set_exception(HubConnectionError(f"connection lost: {reason}"))


class NoHub:
    """The hub client of a daemon that is not configured (no ``[hub]`` table).

    It has :class:`HubClient`'s surface and connects nowhere: pushes are dropped
    (as HubClient drops them while not joined), ``run`` waits for cancellation,
    and what needs a hub is refused with :class:`NotPossible` naming the reason.
    """

    url = ""
    connected = False
    joined = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def push(self, event: str, payload: dict[str, Any]) -> str | None:
        return None

    def push_fwup_progress(self, value: int) -> str | None:
        return None

    def push_status_update(self, status: str) -> str | None:
        return None

    def push_rebooting(self) -> str | None:
        return None

    def push_extension(self, name: str, event: str, payload: dict[str, Any]) -> str | None:
        return None

    def set_meta(self, meta: dict[str, bool]) -> None:
        pass

    async def check_update(self, timeout: float = 15.0) -> um.UpdateAvailability:
        raise NotPossible(self.reason)

    async def set_update_mode(self, mode: str, timeout: float = 15.0) -> um.UpdateMode:
        raise NotPossible(self.reason)

    def set_downloading(self, uuid: str | None) -> None:
        pass

    def set_backoff(self, delays_ms: Sequence[int] | None) -> None:
        pass

    def reconnect(self) -> None:
        raise NotPossible(self.reason)

    async def check_update_available(self, timeout: float = 15.0) -> hm.UpdateInfo | None:
        raise NotPossible(self.reason)

    async def run(self) -> None:
        await asyncio.get_running_loop().create_future()

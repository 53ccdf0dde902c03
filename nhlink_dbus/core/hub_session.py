"""The hub connection lifecycle, sans-I/O (protocol.md §1.5, §3, §4.1, §8).

A :class:`HubSession` lives as long as the client: it decides when to connect,
owns one :class:`PhoenixConnection` per WebSocket, joins ``"device"`` (and
``"extensions"`` when the hub asks, :mod:`.extensions`), turns pushes into typed
values and counts reconnect attempts. The driver (the asyncio
adapter, or a test with a fake clock) performs what it asks for::

    WAITING    --begin_attempt-->     CONNECTING   (at connect_at; the first one at once)
    CONNECTING --connected-->         CONNECTED    (upgrade OK: join sent)
    CONNECTING --attempt_failed-->    WAITING      (connect_at = now + next delay)
    CONNECTED  --connection_lost-->   WAITING      (ditto; also after a heartbeat timeout;
                                                    the back-off starts again only if the
                                                    connection lasted, backoff.py)
    any        --stop-->              STOPPED

An illegal transition raises :class:`StateError` and leaves the state unchanged.
:meth:`HubSession.receive_text` raises only :class:`ProtocolError` (a frame that
is not a Phoenix frame); malformed payloads of known events are logged and
dropped, as 2.5.2 does.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from nhlink_dbus.core import extensions as ext
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import phoenix
from nhlink_dbus.core import update_mode as um
from nhlink_dbus.core.backoff import ReconnectBackoff
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import ProtocolError, StateError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the device reports when it joins (§3.1)."""

    kv: Mapping[str, str]
    fwup_version: str
    fwup_keys_configured: bool = False
    archive_keys_configured: bool = False
    meta: Mapping[str, bool] | None = None  # firmware validation (core/validation.py)
    extensions: Mapping[str, str] = field(default_factory=dict)  # offered: name -> version


# -- lifecycle events handed to the service, beside the hub_messages values ------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The WebSocket upgrade succeeded."""


@dataclass(frozen=True, slots=True)
class Joined:
    """``"device"`` joined; ``response`` is the join reply's response."""

    response: Any


@dataclass(frozen=True, slots=True)
class ChannelDown:
    """The ``"device"`` topic failed (refused join, phx_error, phx_close); re-join pending.

    2.5.2 calls ``handle_error(reason)`` here.
    """

    reason: str
    rejoin_in_ms: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection (attempt) ended; the next attempt is in ``reconnect_in_ms``."""

    reason: str
    reconnect_in_ms: int


@dataclass(frozen=True, slots=True)
class UpdateCheckResult:
    """The reply to :meth:`HubSession.check_update_available` (matched by ref)."""

    ref: str
    update: hm.UpdateInfo | None
    error: str | None = None


SessionEvent = (
    Connected
    | Joined
    | ChannelDown
    | Disconnected
    | UpdateCheckResult
    | hm.ServerMessage
    | ext.Deliver
    | ext.AttachedChanged
    | um.UpdateMode
    | um.UpdateAvailability
    | um.UpdateRejected
)

# Pushes on "device" of the newer API (core/update_mode.py), beside hub_messages'.
_MORE_PARSERS: dict[str, Callable[[Any], SessionEvent]] = {
    "update_mode": um.parse_update_mode,
    "update_available": um.parse_update_available,
    "update_rejected": um.parse_update_rejected,
}


class SessionState(enum.Enum):
    WAITING = "waiting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    STOPPED = "stopped"


_TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.WAITING, "begin_attempt"): SessionState.CONNECTING,
    (SessionState.CONNECTING, "connected"): SessionState.CONNECTED,
    (SessionState.CONNECTING, "attempt_failed"): SessionState.WAITING,
    (SessionState.CONNECTED, "connection_lost"): SessionState.WAITING,
}


class HubSession:
    """Connection lifecycle and ``"device"`` channel logic, driven from outside."""

    def __init__(
        self,
        device: DeviceInfo,
        *,
        heartbeat_interval_ms: int,
        rejoin_after_ms: int,
        backoff: ReconnectBackoff | None = None,
    ) -> None:
        self.device = device
        self.backoff = backoff if backoff is not None else ReconnectBackoff()
        self._heartbeat_s = heartbeat_interval_ms / 1000
        self._rejoin_s = rejoin_after_ms / 1000
        self.state = SessionState.WAITING
        self.connect_at = -math.inf  # the first connection is made at once (§8)
        self._connected_at = 0.0
        self._conn: phoenix.PhoenixConnection | None = None
        self._downloading: str | None = None
        self._update_checks: set[str] = set()
        self._events: list[SessionEvent] = []
        self.extensions = ext.Extensions(device.extensions)

    # -- queries ----------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self._conn is not None and self._conn.is_joined(hm.DEVICE_TOPIC)

    def join_params(self) -> dict[str, Any]:
        """The ``"device"`` join payload as of now."""
        return hm.device_join_params(
            self.device.kv,
            self.device.fwup_version,
            fwup_keys_configured=self.device.fwup_keys_configured,
            archive_keys_configured=self.device.archive_keys_configured,
            currently_downloading_uuid=self._downloading,
            meta=self.device.meta,
        )

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (WAITING: when to begin the next attempt)."""
        if self.state is SessionState.WAITING:
            return self.connect_at
        if self.state is SessionState.CONNECTED and self._conn is not None:
            return self._conn.next_deadline()
        return None

    def data_to_send(self) -> list[str]:
        """Frames to write now, in order."""
        return [] if self._conn is None else self._conn.data_to_send()

    def events(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events

    @property
    def close_requested(self) -> bool:
        """True once the Phoenix layer gave up on the connection (heartbeat timeout)."""
        return self.state is SessionState.CONNECTED and (self._conn is None or self._conn.closed)

    # -- lifecycle --------------------------------------------------------------------

    def _move(self, trigger: str) -> None:
        new = _TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise StateError(f"hub session: {trigger} not allowed in {self.state.value}")
        self.state = new

    def begin_attempt(self, now: float) -> None:
        """The driver starts a connection attempt (normally at :attr:`connect_at`)."""
        del now
        self._move("begin_attempt")

    def connected(self, now: float) -> None:
        """The WebSocket upgrade succeeded: join ``"device"``."""
        self._move("connected")
        self._connected_at = now
        self._conn = phoenix.PhoenixConnection(
            now, heartbeat_interval=self._heartbeat_s, rejoin_after=self._rejoin_s
        )
        self._events.append(Connected())
        self._conn.join(hm.DEVICE_TOPIC, self.join_params())

    def attempt_failed(self, now: float, reason: str) -> int:
        """A connection attempt failed (refused, TLS, 401…); returns the wait in ms."""
        self._move("attempt_failed")
        return self._schedule_reconnect(now, reason)

    def connection_lost(self, now: float, reason: str) -> int:
        """An established connection ended (either side); returns the wait in ms.

        The back-off starts again from its head only if the connection lasted
        ``backoff.stable_after_ms()`` (a short one, e.g. closed because the same
        identifier connected elsewhere, keeps it climbing: backoff.py).
        """
        self._move("connection_lost")
        if (now - self._connected_at) * 1000 >= self.backoff.stable_after_ms():
            self.backoff.reset()
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._update_checks.clear()
        self._extension_actions(self.extensions.reset())
        return self._schedule_reconnect(now, reason)

    def stop(self) -> None:
        """Final: the driver is done with this session."""
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self.state = SessionState.STOPPED

    def _schedule_reconnect(self, now: float, reason: str) -> int:
        # The list is rebuilt on every disconnect (hook or default), §8.
        delay_ms = self.backoff.next_delay_ms()
        self.connect_at = now + delay_ms / 1000
        self._events.append(Disconnected(reason, delay_ms))
        return delay_ms

    # -- device state that travels in join params ---------------------------------------

    def set_downloading(self, uuid: str | None) -> None:
        """The firmware UUID being applied (or None); sent as currently_downloading_uuid."""
        self._downloading = uuid
        if self._conn is not None:
            self._conn.set_join_params(hm.DEVICE_TOPIC, self.join_params())

    def set_device(self, device: DeviceInfo) -> None:
        """New KV/key configuration; used from the next join on."""
        self.device = device
        if self._conn is not None:
            self._conn.set_join_params(hm.DEVICE_TOPIC, self.join_params())

    # -- traffic ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Fire due Phoenix timers (heartbeats, re-joins)."""
        if self.state is not SessionState.CONNECTED or self._conn is None:
            return
        self._conn.tick(now)
        self._drain(now)

    def receive_text(self, data: str | bytes, now: float) -> None:
        """Feed one received frame; raises only :class:`ProtocolError`."""
        if self.state is not SessionState.CONNECTED or self._conn is None:
            return
        try:
            self._conn.receive_text(data, now)
        finally:
            self._drain(now)

    def push(self, event: str, payload: Mapping[str, Any]) -> str | None:
        """Push on ``"device"``; the ref, or None when not joined (dropped, §1.5.9)."""
        if self._conn is None or self._conn.closed:
            logger.debug("= push %s dropped: not connected", event)
            return None
        return self._conn.push(hm.DEVICE_TOPIC, event, payload)

    def push_fwup_progress(self, value: int) -> str | None:
        """``fwup_progress {"value": 0..100}`` (ValueError outside that range)."""
        return self.push("fwup_progress", hm.fwup_progress(value))

    def push_status_update(self, status: str) -> str | None:
        """``status_update {"status": …}``."""
        return self.push("status_update", hm.status_update(status))

    def push_rebooting(self) -> str | None:
        """``rebooting {}``."""
        return self.push("rebooting", {})

    def push_extension(self, name: str, event: str, payload: Mapping[str, Any]) -> str | None:
        """Push ``<name>:<event>`` on ``extensions``; dropped unless ``name`` is attached."""
        if self._conn is None or self._conn.closed or not self.extensions.allows(name):
            logger.debug("= %s:%s dropped: extension not attached", name, event)
            return None
        return self._conn.push(ext.TOPIC, f"{name}:{event}", payload)

    def check_update_available(self) -> str | None:
        """Ask the hub now (§5.2); the answer comes as :class:`UpdateCheckResult`."""
        ref = self.push("check_update_available", {})
        if ref is not None:
            self._update_checks.add(ref)
        return ref

    def _drain(self, now: float) -> None:
        assert self._conn is not None
        for event in self._conn.events_received():
            self._handle(event, now)

    def _handle(self, event: phoenix.PhoenixEvent, now: float) -> None:
        match event:
            case phoenix.Message(topic=hm.DEVICE_TOPIC, event=name, payload=payload):
                self._handle_push(name, payload)
            case phoenix.Message(topic=ext.TOPIC, event=name, payload=payload):
                self._extension_actions(self.extensions.message(name, payload))
            case phoenix.Joined(topic=ext.TOPIC, response=response):
                logger.info("joined %s", ext.TOPIC)
                self._extension_actions(self.extensions.joined(response))
            case (
                phoenix.JoinRefused(topic=ext.TOPIC)
                | phoenix.ChannelErrored(topic=ext.TOPIC)
                | phoenix.ChannelClosed(topic=ext.TOPIC)
            ):
                logger.info("%s channel down; re-joining", ext.TOPIC)
                self._extension_actions(self.extensions.reset())
            case phoenix.Message(topic=topic, event=name):
                logger.debug("= %s on %s ignored", name, topic)
            case phoenix.Joined(topic=hm.DEVICE_TOPIC, response=response):
                logger.info("joined %s", hm.DEVICE_TOPIC)
                self._events.append(Joined(response))
                # Legacy servers put the update in the join reply (§1.5.5, §3.2).
                if isinstance(response, dict) and isinstance(response.get("firmware_url"), str):
                    self._handle_push("update", response)
            case phoenix.JoinRefused(topic=hm.DEVICE_TOPIC, response=response, rejoin_at=at):
                reason = _reason(response)
                logger.warning("join refused (%s); re-joining in %d ms", reason, _ms(at - now))
                self._events.append(ChannelDown(f"join refused: {reason}", _ms(at - now)))
            case phoenix.ChannelErrored(topic=hm.DEVICE_TOPIC, rejoin_at=at):
                logger.warning("channel error; re-joining in %d ms", _ms(at - now))
                self._events.append(ChannelDown("phx_error", _ms(at - now)))
            case phoenix.ChannelClosed(topic=hm.DEVICE_TOPIC, rejoin_at=at):
                logger.warning("channel closed by the hub; re-joining in %d ms", _ms(at - now))
                self._events.append(ChannelDown("phx_close", _ms(at - now)))
            case phoenix.Reply(ref=ref, status=status, response=response):
                self._handle_reply(ref, status, response)
            case phoenix.HeartbeatTimeout():
                logger.warning("heartbeat unanswered: closing the connection")
            case _:
                logger.debug("= %r ignored", event)

    def _handle_push(self, name: str, payload: dict[str, Any]) -> None:
        if name == "extensions:get":
            self._join_extensions()
            return
        parse = _MORE_PARSERS.get(name)
        message: SessionEvent | None
        try:
            message = parse(payload) if parse else hm.parse_server_message(name, payload)
        except ProtocolError as exc:
            logger.warning("%s: malformed payload ignored: %s", name, exc)
            return
        if message is None:
            logger.debug("= %s tolerated and ignored", name)
            return
        if isinstance(message, hm.ScriptRun):
            logger.info("scripts/run answered as unsupported")
            self.push("scripts/run", hm.script_run_reply(message))
            return
        logger.info("hub sent %s", name)
        self._events.append(message)

    def _join_extensions(self) -> None:
        """``extensions:get``: join ``extensions`` with what we offer (nothing: stay away)."""
        params = self.extensions.join_params()
        if not params or self._conn is None:
            logger.info("extensions:get: no extension offered")
            return
        logger.info("extensions offered: %s", ", ".join(sorted(params)))
        self._conn.join(ext.TOPIC, params)

    def _extension_actions(self, actions: list[ext.Action]) -> None:
        for action in actions:
            if isinstance(action, ext.Push):
                ref = None
                if self._conn is not None and not self._conn.closed:
                    ref = self._conn.push(ext.TOPIC, action.event, action.payload)
                if action.attaching is not None:
                    self._extension_actions(self.extensions.attach_pushed(action.attaching, ref))
            else:
                self._events.append(action)

    def _handle_reply(self, ref: str, status: str, response: Any) -> None:
        self._extension_actions(self.extensions.reply(ref, status, response))
        if ref not in self._update_checks:
            logger.debug("= reply %s (%s) to an untracked push", ref, status)
            return
        self._update_checks.discard(ref)
        if status != "ok":
            self._events.append(UpdateCheckResult(ref, None, f"hub replied {status}"))
            return
        try:
            update = hm.parse_update_check(response)
        except ProtocolError as exc:
            self._events.append(UpdateCheckResult(ref, None, str(exc)))
            return
        self._events.append(UpdateCheckResult(ref, update))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _reason(response: Any) -> str:
    if isinstance(response, dict):
        for key in ("reason", "error"):
            if isinstance(response.get(key), str):
                return str(response[key])
    return "unknown"

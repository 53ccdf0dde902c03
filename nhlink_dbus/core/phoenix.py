"""Phoenix channels client, sans-I/O (protocol.md §1.3 and §1.4).

One :class:`PhoenixConnection` lives for one WebSocket connection. Received text
goes in (:meth:`~PhoenixConnection.receive_text`), frames to send and events come
out (:meth:`~PhoenixConnection.data_to_send`, :meth:`~PhoenixConnection.events_received`),
timers fire in :meth:`~PhoenixConnection.tick`. ``now`` (seconds, any monotonic
origin) is always an argument; :meth:`~PhoenixConnection.next_deadline` says when
``tick`` must be called next. Nothing here sleeps, reads a clock or does I/O.

Rules:

* Frames are JSON arrays ``[join_ref, ref, topic, event, payload]``; join_ref and
  ref are strings or null, topic and event strings, payload an object.
* Client refs are decimal strings of one counter per connection starting at "1";
  joins, pushes and heartbeats share it. A join's join_ref is its own ref; pushes
  carry ``join_ref = null`` (as Slipstream sends them).
* Received frames are classified in the order of §1.3 (Slipstream's events.ex):
  1. ``ref == null`` → a server push (fastlane pushes with ``join_ref == null``
     included); pushes carrying another channel's (stale) join_ref are dropped;
  2. ``phoenix``/``phx_reply`` ``ok`` with the outstanding heartbeat's ref → ack;
  3. ``phx_reply`` whose ref is the pending join's ref → join result;
  4. any other ``phx_reply`` → :class:`Reply` to an earlier push;
  5. ``phx_error`` for the current join_ref → channel errored, re-join later;
  6. ``phx_close`` for the current join_ref → channel closed, re-join later.
     2.5.2 leaves the topic un-joined until the next reconnect; we re-join
     (protocol.md §14 recommends fixing that quirk).
  ``phx_error``/``phx_close`` for an older join_ref are stale (a second join makes
  Phoenix close the old channel) and are dropped.
* Heartbeat: ``[null, ref, "phoenix", "heartbeat", {}]`` every interval from the
  upgrade on; when the interval fires and the previous heartbeat is still
  unanswered the connection is finished (:class:`HeartbeatTimeout`). Interval 0
  disables heartbeats.
* A refused join, ``phx_error`` and ``phx_close`` re-join the topic after
  ``rejoin_after`` with the topic's current join parameters.
* Pushes to a topic that is not joined are dropped (``push`` returns None), as in
  2.5.2 (§1.5.9): there is no queue.

Per-topic state machine (an illegal transition raises :class:`StateError` and
leaves the state unchanged)::

    JOINING  --join ok-->             JOINED
    JOINING  --join refused/error-->  REJOIN_WAIT
    JOINED   --phx_error/phx_close--> REJOIN_WAIT
    REJOIN_WAIT --timer-->            JOINING
    JOINING/JOINED/REJOIN_WAIT --join()--> JOINING   (explicit re-join)

:meth:`PhoenixConnection.receive_text` raises only :class:`ProtocolError` (an
undecodable frame, or a reply without a status); the connection state is then
unchanged and the caller may go on feeding frames.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import ProtocolError, StateError

logger = logging.getLogger(__name__)

PHOENIX_TOPIC = "phoenix"
_REDACTED_KEYS = frozenset({"firmware_url", "url"})


@dataclass(frozen=True, slots=True)
class Frame:
    """One Phoenix V2 JSON frame."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: dict[str, Any]


def decode_frame(data: str | bytes) -> Frame:
    """Parse one text frame; raise :class:`ProtocolError` for anything but a valid frame."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("frame is not JSON") from exc
    if not isinstance(value, list) or len(value) != 5:
        raise ProtocolError("frame is not a five-element array")
    join_ref, ref, topic, event, payload = value
    if not (join_ref is None or isinstance(join_ref, str)):
        raise ProtocolError("frame join_ref is neither string nor null")
    if not (ref is None or isinstance(ref, str)):
        raise ProtocolError("frame ref is neither string nor null")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise ProtocolError("frame topic and event must be strings")
    if not isinstance(payload, dict):
        raise ProtocolError("frame payload is not an object")
    return Frame(join_ref, ref, topic, event, payload)


def encode_frame(frame: Frame) -> str:
    """The frame as compact JSON text."""
    return json.dumps(
        [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload],
        separators=(",", ":"),
    )


def redact(value: Any) -> Any:
    """A copy of a payload safe to log: pre-signed download URLs are credentials."""
    if isinstance(value, dict):
        return {
            k: ("<redacted>" if k in _REDACTED_KEYS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def describe(frame: Frame) -> str:
    """A one-line, secret-free rendering of a frame for DEBUG logs."""
    return json.dumps(
        [frame.join_ref, frame.ref, frame.topic, frame.event, redact(frame.payload)],
        separators=(",", ":"),
    )


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Joined:
    """The server accepted a join; ``response`` is the reply's response value."""

    topic: str
    response: Any


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """The server refused a join; a re-join is scheduled at ``rejoin_at``."""

    topic: str
    response: Any
    rejoin_at: float


@dataclass(frozen=True, slots=True)
class ChannelErrored:
    """``phx_error``: the server's channel process crashed; re-join at ``rejoin_at``."""

    topic: str
    rejoin_at: float


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """``phx_close``: the server stopped the channel; re-join at ``rejoin_at``."""

    topic: str
    payload: dict[str, Any]
    rejoin_at: float


@dataclass(frozen=True, slots=True)
class Message:
    """A server push (``ref == null``) on a topic this connection joined."""

    topic: str
    event: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A ``phx_reply`` to one of our pushes (matched by ``ref``)."""

    topic: str
    ref: str
    status: str
    response: Any


@dataclass(frozen=True, slots=True)
class HeartbeatTimeout:
    """The previous heartbeat was unanswered at the next tick: the connection is over."""


PhoenixEvent = (
    Joined | JoinRefused | ChannelErrored | ChannelClosed | Message | Reply | HeartbeatTimeout
)


# -- channel state machine ----------------------------------------------------------------


class ChannelState(enum.Enum):
    JOINING = "joining"
    JOINED = "joined"
    REJOIN_WAIT = "rejoin_wait"


class _Trigger(enum.Enum):
    JOIN = "join"
    JOIN_OK = "join_ok"
    JOIN_REFUSED = "join_refused"
    CHANNEL_ERROR = "channel_error"
    CHANNEL_CLOSE = "channel_close"
    REJOIN_DUE = "rejoin_due"


_TRANSITIONS: dict[tuple[ChannelState, _Trigger], ChannelState] = {
    (ChannelState.JOINING, _Trigger.JOIN): ChannelState.JOINING,
    (ChannelState.JOINED, _Trigger.JOIN): ChannelState.JOINING,
    (ChannelState.REJOIN_WAIT, _Trigger.JOIN): ChannelState.JOINING,
    (ChannelState.JOINING, _Trigger.JOIN_OK): ChannelState.JOINED,
    (ChannelState.JOINING, _Trigger.JOIN_REFUSED): ChannelState.REJOIN_WAIT,
    (ChannelState.JOINING, _Trigger.CHANNEL_ERROR): ChannelState.REJOIN_WAIT,
    (ChannelState.JOINED, _Trigger.CHANNEL_ERROR): ChannelState.REJOIN_WAIT,
    (ChannelState.JOINING, _Trigger.CHANNEL_CLOSE): ChannelState.REJOIN_WAIT,
    (ChannelState.JOINED, _Trigger.CHANNEL_CLOSE): ChannelState.REJOIN_WAIT,
    (ChannelState.REJOIN_WAIT, _Trigger.REJOIN_DUE): ChannelState.JOINING,
}


@dataclass(slots=True)
class _Channel:
    topic: str
    params: dict[str, Any]
    state: ChannelState
    join_ref: str
    rejoin_at: float = math.inf

    def move(self, trigger: _Trigger) -> None:
        new = _TRANSITIONS.get((self.state, trigger))
        if new is None:
            raise StateError(
                f"channel {self.topic!r}: {trigger.value} not allowed in {self.state.value}"
            )
        self.state = new


@dataclass(slots=True)
class _Outbox:
    frames: list[str] = field(default_factory=list)
    events: list[PhoenixEvent] = field(default_factory=list)


class PhoenixConnection:
    """Client-side Phoenix bookkeeping for one WebSocket connection."""

    def __init__(
        self, now: float, *, heartbeat_interval: float = 30.0, rejoin_after: float = 5.0
    ) -> None:
        """``now`` is the moment the upgrade succeeded: the heartbeat timer starts there."""
        if heartbeat_interval < 0 or rejoin_after < 0:
            raise StateError("heartbeat_interval and rejoin_after must be >= 0")
        self._heartbeat_interval = heartbeat_interval
        self._rejoin_after = rejoin_after
        self._next_ref = 1
        self._channels: dict[str, _Channel] = {}
        self._heartbeat_ref: str | None = None
        self._next_heartbeat = now + heartbeat_interval if heartbeat_interval > 0 else math.inf
        self._out = _Outbox()
        self.closed = False

    # -- outputs ----------------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """Frames to write, in order; the list is handed over and emptied."""
        frames, self._out.frames = self._out.frames, []
        return frames

    def events_received(self) -> list[PhoenixEvent]:
        """Events produced since the last call, in order."""
        events, self._out.events = self._out.events, []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must run next (None: no timer pending)."""
        if self.closed:
            return None
        deadline = min(
            [self._next_heartbeat]
            + [c.rejoin_at for c in self._channels.values() if c.state is ChannelState.REJOIN_WAIT]
        )
        return None if math.isinf(deadline) else deadline

    def channel_state(self, topic: str) -> ChannelState | None:
        channel = self._channels.get(topic)
        return None if channel is None else channel.state

    def is_joined(self, topic: str) -> bool:
        return self.channel_state(topic) is ChannelState.JOINED

    # -- commands ---------------------------------------------------------------------

    def join(self, topic: str, params: Mapping[str, Any]) -> str:
        """Send ``phx_join`` for ``topic`` (again, if already joined); return its ref."""
        self._check_open()
        channel = self._channels.get(topic)
        if channel is None:
            ref = self._take_ref()
            channel = _Channel(topic, dict(params), ChannelState.JOINING, ref)
            self._channels[topic] = channel
        else:
            channel.move(_Trigger.JOIN)
            channel.params = dict(params)
            channel.join_ref = self._take_ref()
        self._send_join(channel)
        return channel.join_ref

    def set_join_params(self, topic: str, params: Mapping[str, Any]) -> None:
        """Replace the parameters the next re-join of ``topic`` sends."""
        channel = self._channels.get(topic)
        if channel is None:
            raise StateError(f"topic {topic!r} was never joined")
        channel.params = dict(params)

    def push(self, topic: str, event: str, payload: Mapping[str, Any]) -> str | None:
        """Send a push on a joined topic and return its ref; None if not joined (dropped)."""
        self._check_open()
        if not self.is_joined(topic):
            logger.debug("= push %s %s dropped: topic not joined", topic, event)
            return None
        ref = self._take_ref()
        self._emit_frame(Frame(None, ref, topic, event, dict(payload)))
        return ref

    def close(self) -> None:
        """Mark the connection finished; nothing more is sent or reported."""
        self.closed = True

    def tick(self, now: float) -> None:
        """Fire the timers that are due at ``now``."""
        if self.closed:
            return
        if now >= self._next_heartbeat:
            if self._heartbeat_ref is not None:
                logger.debug("= heartbeat %s unanswered: closing", self._heartbeat_ref)
                self.closed = True
                self._out.events.append(HeartbeatTimeout())
                return
            ref = self._take_ref()
            self._heartbeat_ref = ref
            self._emit_frame(Frame(None, ref, PHOENIX_TOPIC, "heartbeat", {}))
            self._next_heartbeat = now + self._heartbeat_interval
        for channel in self._channels.values():
            if channel.state is ChannelState.REJOIN_WAIT and now >= channel.rejoin_at:
                channel.move(_Trigger.REJOIN_DUE)
                channel.join_ref = self._take_ref()
                channel.rejoin_at = math.inf
                self._send_join(channel)

    def receive_text(self, data: str | bytes, now: float) -> None:
        """Feed one received text frame; raise :class:`ProtocolError` if it is malformed."""
        if self.closed:
            return
        frame = decode_frame(data)
        status: str = ""
        response: Any = None
        if frame.event == "phx_reply":
            status, response = self._reply_parts(frame.payload)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("< %s", describe(frame))
        channel = self._channels.get(frame.topic)

        # 1. server push (including fastlane pushes whose join_ref is null)
        if frame.ref is None:
            if channel is None:
                logger.debug("= push on unjoined topic %s dropped", frame.topic)
            elif frame.join_ref is not None and frame.join_ref != channel.join_ref:
                logger.debug("= push for stale join_ref %s dropped", frame.join_ref)
            else:
                self._out.events.append(Message(frame.topic, frame.event, frame.payload))
            return

        if frame.event == "phx_reply":
            # 2. heartbeat ack
            if frame.topic == PHOENIX_TOPIC and frame.ref == self._heartbeat_ref and status == "ok":
                self._heartbeat_ref = None
                return
            # 3. join result
            if (
                channel is not None
                and channel.state is ChannelState.JOINING
                and frame.ref == channel.join_ref
            ):
                if status == "ok":
                    channel.move(_Trigger.JOIN_OK)
                    self._out.events.append(Joined(frame.topic, response))
                else:
                    channel.move(_Trigger.JOIN_REFUSED)
                    channel.rejoin_at = now + self._rejoin_after
                    self._out.events.append(JoinRefused(frame.topic, response, channel.rejoin_at))
                return
            # 4. reply to a push
            self._out.events.append(Reply(frame.topic, frame.ref, status, response))
            return

        if frame.event in ("phx_error", "phx_close"):
            if (
                channel is None
                or frame.join_ref != channel.join_ref
                or channel.state is ChannelState.REJOIN_WAIT
            ):
                logger.debug("= stale %s for join_ref %s dropped", frame.event, frame.join_ref)
                return
            if frame.event == "phx_error":
                # 5. the channel process crashed
                channel.move(_Trigger.CHANNEL_ERROR)
                channel.rejoin_at = now + self._rejoin_after
                self._out.events.append(ChannelErrored(frame.topic, channel.rejoin_at))
            else:
                # 6. the channel was stopped; 2.5.2 stays un-joined here, we re-join (§14)
                channel.move(_Trigger.CHANNEL_CLOSE)
                channel.rejoin_at = now + self._rejoin_after
                self._out.events.append(
                    ChannelClosed(frame.topic, frame.payload, channel.rejoin_at)
                )
            return

        # Anything else with a ref is not sent by Phoenix; tolerate it as a push.
        if channel is not None and frame.join_ref in (None, channel.join_ref):
            self._out.events.append(Message(frame.topic, frame.event, frame.payload))

    # -- internals --------------------------------------------------------------------

    @staticmethod
    def _reply_parts(payload: dict[str, Any]) -> tuple[str, Any]:
        status = payload.get("status")
        if not isinstance(status, str):
            raise ProtocolError("phx_reply without a string status")
        return status, payload.get("response")

    def _check_open(self) -> None:
        if self.closed:
            raise StateError("the Phoenix connection is closed")

    def _take_ref(self) -> str:
        ref = str(self._next_ref)
        self._next_ref += 1
        return ref

    def _send_join(self, channel: _Channel) -> None:
        self._emit_frame(
            Frame(channel.join_ref, channel.join_ref, channel.topic, "phx_join", channel.params)
        )

    def _emit_frame(self, frame: Frame) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("> %s", describe(frame))
        self._out.frames.append(encode_frame(frame))

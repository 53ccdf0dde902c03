"""core.phoenix: frames, refs, joins, heartbeats, classification (protocol.md §1.3, §1.4)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core import phoenix
from nhlink_dbus.core.phoenix import (
    ChannelClosed,
    ChannelErrored,
    ChannelState,
    Frame,
    HeartbeatTimeout,
    Joined,
    JoinRefused,
    Message,
    PhoenixConnection,
    Reply,
    decode_frame,
    encode_frame,
)
from nhlink_dbus.errors import ProtocolError, StateError


def sent(conn: PhoenixConnection) -> list[list[Any]]:
    return [json.loads(f) for f in conn.data_to_send()]


def frame(*parts: Any) -> str:
    return json.dumps(list(parts))


def joined_conn(now: float = 0.0, **kw: Any) -> PhoenixConnection:
    conn = PhoenixConnection(now, **kw)
    conn.join("device", {"a": "b"})
    conn.receive_text(frame("1", "1", "device", "phx_reply", {"status": "ok", "response": {}}), now)
    conn.data_to_send()
    conn.events_received()
    return conn


# -- codec ----------------------------------------------------------------------------


def test_decode_and_encode_round_trip() -> None:
    f = decode_frame('["1","2","device","update",{"x":[1,null]}]')
    assert f == Frame("1", "2", "device", "update", {"x": [1, None]})
    assert decode_frame(encode_frame(f)) == f
    assert decode_frame(b'[null,null,"device","identify",{}]').join_ref is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{}",
        "[]",
        '["1","1","device","x"]',
        '["1","1","device","x",{},6]',
        '[1,"1","device","x",{}]',
        '["1",1,"device","x",{}]',
        '["1","1",null,"x",{}]',
        '["1","1","device",7,{}]',
        '["1","1","device","x",[]]',
        '["1","1","device","x","text"]',
        "[" * 100000,
        b"\xff\xfe",
    ],
)
def test_decode_rejects(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(text)


def test_encode_is_ascii_safe_for_lone_surrogates() -> None:
    text = encode_frame(Frame(None, "3", "device", "scripts/run", {"ref": "\ud800"}))
    text.encode("utf-8")  # a WebSocket text frame must be valid UTF-8
    assert json.loads(text)[4]["ref"] == "\ud800"


def test_redact_hides_signed_urls() -> None:
    payload = {"firmware_url": "https://x/fw?X-Amz-Signature=s", "firmware_meta": {"uuid": "u"}}
    text = phoenix.describe(Frame("1", None, "device", "update", payload))
    assert "X-Amz" not in text and "<redacted>" in text and '"uuid":"u"' in text
    nested = phoenix.redact({"a": [{"url": "https://q?sig"}], "firmware_url": None})
    assert nested == {"a": [{"url": "<redacted>"}], "firmware_url": None}


# -- refs and joins -------------------------------------------------------------------


def test_join_frame_and_ref_counter_shared_by_everything() -> None:
    conn = PhoenixConnection(0.0, heartbeat_interval=30, rejoin_after=5)
    assert conn.join("device", {"k": "v"}) == "1"
    assert sent(conn) == [["1", "1", "device", "phx_join", {"k": "v"}]]
    assert conn.push("device", "fwup_progress", {"value": 1}) is None  # not joined: dropped
    assert sent(conn) == []
    conn.receive_text(frame("1", "1", "device", "phx_reply", {"status": "ok", "response": {}}), 0.1)
    assert conn.events_received() == [Joined("device", {})]
    assert conn.push("device", "fwup_progress", {"value": 42}) == "2"
    conn.tick(30.0)
    conn.push("device", "rebooting", {})
    assert sent(conn) == [
        [None, "2", "device", "fwup_progress", {"value": 42}],
        [None, "3", "phoenix", "heartbeat", {}],
        [None, "4", "device", "rebooting", {}],
    ]


def test_refused_join_rejoins_after_delay_with_current_params() -> None:
    conn = PhoenixConnection(0.0, heartbeat_interval=0, rejoin_after=5)
    conn.join("device", {"p": 1})
    conn.data_to_send()
    reply = {"status": "error", "response": {"error": "could not connect"}}
    conn.receive_text(frame("1", "1", "device", "phx_reply", reply), 1.0)
    assert conn.events_received() == [JoinRefused("device", {"error": "could not connect"}, 6.0)]
    assert conn.channel_state("device") is ChannelState.REJOIN_WAIT
    assert conn.next_deadline() == 6.0
    conn.set_join_params("device", {"p": 2})
    conn.tick(5.9)
    assert sent(conn) == []
    conn.tick(6.0)
    assert sent(conn) == [["2", "2", "device", "phx_join", {"p": 2}]]
    assert conn.channel_state("device") is ChannelState.JOINING
    assert conn.next_deadline() is None


@pytest.mark.parametrize("event", ["phx_error", "phx_close"])
def test_error_and_close_rejoin(event: str) -> None:
    conn = joined_conn(rejoin_after=5, heartbeat_interval=0)
    conn.receive_text(frame("1", "1", "device", event, {}), 10.0)
    expected = ChannelErrored("device", 15.0) if event == "phx_error" else None
    events = conn.events_received()
    if expected is not None:
        assert events == [expected]
    else:
        assert events == [ChannelClosed("device", {}, 15.0)]
    assert not conn.is_joined("device")
    assert conn.push("device", "x", {}) is None
    conn.tick(15.0)
    assert sent(conn) == [["2", "2", "device", "phx_join", {"a": "b"}]]
    conn.receive_text(frame("2", "2", "device", "phx_reply", {"status": "ok", "response": {}}), 15)
    assert conn.events_received() == [Joined("device", {})]


def test_stale_close_of_an_older_join_is_ignored() -> None:
    conn = joined_conn(heartbeat_interval=0)
    conn.join("device", {"again": True})  # Phoenix closes the old channel (join_ref "1")
    assert sent(conn) == [["2", "2", "device", "phx_join", {"again": True}]]
    conn.receive_text(frame("1", "1", "device", "phx_close", {}), 1)
    conn.receive_text(frame("2", "2", "device", "phx_reply", {"status": "ok", "response": {}}), 1)
    conn.receive_text(frame("1", "1", "device", "phx_error", {}), 1)
    assert conn.events_received() == [Joined("device", {})]
    assert conn.is_joined("device")


def test_pushes_server_and_fastlane_and_stale() -> None:
    conn = joined_conn(heartbeat_interval=0)
    conn.receive_text(frame("1", None, "device", "identify", {}), 1)
    conn.receive_text(frame(None, None, "device", "reboot", {}), 1)  # fastlane
    conn.receive_text(frame("9", None, "device", "update", {}), 1)  # other channel: dropped
    conn.receive_text(frame(None, None, "console", "dn", {}), 1)  # never joined: dropped
    assert conn.events_received() == [
        Message("device", "identify", {}),
        Message("device", "reboot", {}),
    ]


def test_replies_are_matched_by_ref() -> None:
    conn = joined_conn(heartbeat_interval=0)
    ref = conn.push("device", "check_update_available", {})
    assert ref == "2"
    conn.receive_text(
        frame(None, "2", "device", "phx_reply", {"status": "ok", "response": {"u": 1}}), 1
    )
    conn.receive_text(frame("1", "2", "device", "phx_reply", {"status": "error"}), 1)
    assert conn.events_received() == [
        Reply("device", "2", "ok", {"u": 1}),
        Reply("device", "2", "error", None),
    ]


def test_reply_without_status_is_a_protocol_error_and_changes_nothing() -> None:
    conn = joined_conn(heartbeat_interval=0)
    with pytest.raises(ProtocolError):
        conn.receive_text(frame("1", "1", "device", "phx_reply", {"response": {}}), 1)
    assert conn.is_joined("device")
    assert conn.events_received() == []


# -- heartbeats ------------------------------------------------------------------------


def test_heartbeat_cadence_ack_and_timeout() -> None:
    conn = joined_conn(0.0, heartbeat_interval=30, rejoin_after=5)
    assert conn.next_deadline() == 30.0
    conn.tick(29.999)
    assert sent(conn) == []
    conn.tick(30.0)
    assert sent(conn) == [[None, "2", "phoenix", "heartbeat", {}]]
    ack = {"status": "ok", "response": {}}
    conn.receive_text(frame(None, "2", "phoenix", "phx_reply", ack), 30.2)
    assert conn.events_received() == []  # acks are internal
    conn.tick(60.0)
    assert sent(conn) == [[None, "3", "phoenix", "heartbeat", {}]]
    # an ack for a different ref does not count
    conn.receive_text(frame(None, "2", "phoenix", "phx_reply", ack), 61)
    conn.events_received()
    conn.tick(90.0)  # heartbeat "3" unanswered one interval later
    assert conn.events_received() == [HeartbeatTimeout()]
    assert sent(conn) == []
    assert conn.closed and conn.next_deadline() is None
    with pytest.raises(StateError):
        conn.push("device", "x", {})
    conn.receive_text(frame("1", None, "device", "identify", {}), 91)  # ignored once closed
    assert conn.events_received() == []


def test_heartbeat_disabled_with_zero_interval() -> None:
    conn = joined_conn(heartbeat_interval=0)
    assert conn.next_deadline() is None
    conn.tick(1e9)
    assert sent(conn) == []


def test_illegal_channel_transition_raises_and_keeps_state() -> None:
    channel = phoenix._Channel("device", {}, ChannelState.REJOIN_WAIT, "1")
    with pytest.raises(StateError):
        channel.move(phoenix._Trigger.JOIN_OK)
    assert channel.state is ChannelState.REJOIN_WAIT
    conn = PhoenixConnection(0.0)
    with pytest.raises(StateError):
        conn.set_join_params("device", {})
    with pytest.raises(StateError):
        PhoenixConnection(0.0, heartbeat_interval=-1)


# -- properties -------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
refs = st.none() | st.sampled_from(["1", "2", "3", "4"]) | st.text(max_size=3)
topics = st.sampled_from(["device", "phoenix", "console", "extensions"]) | st.text(max_size=4)
events = st.sampled_from(
    ["phx_reply", "phx_error", "phx_close", "phx_join", "update", "archive", "reboot", "identify"]
) | st.text(max_size=6)
reply_payloads = st.fixed_dictionaries(
    {"status": st.sampled_from(["ok", "error"]) | st.text(max_size=3), "response": json_values}
)
payloads = reply_payloads | st.dictionaries(st.text(max_size=6), json_values, max_size=4)

# Cheap strategies for the bulk run: drawing from pools keeps 10^4 frames per run fast,
# while truncation and byte flips of valid frames give garbage that is close to valid.
_PAYLOAD_POOL: list[Any] = [
    {},
    {"status": "ok", "response": {}},
    {"status": "error", "response": {"reason": "unmatched topic"}},
    {"status": "ok", "response": {"firmware_url": "http://h/f.fw", "firmware_meta": {}}},
    {"status": 1},
    {"response": {}},
    {"keys": ["a", 2]},
    {"firmware_url": "http://h/f.fw", "firmware_meta": {"uuid": "u"}},
]
fast_refs = st.sampled_from([None, "1", "2", "3", "4", "x"])
fast_payloads = st.sampled_from(_PAYLOAD_POOL) | st.dictionaries(
    st.sampled_from(["status", "response", "keys"]), json_scalars, max_size=2
)
fast_frames = st.builds(
    lambda *p: json.dumps(list(p)),
    fast_refs,
    fast_refs,
    st.sampled_from(["device", "phoenix", "console", "zzz"]),
    st.sampled_from(["phx_reply", "phx_error", "phx_close", "update", "identify", "x"]),
    fast_payloads,
)


def _mangle(text: str, at: int, how: int) -> str | bytes:
    at %= len(text) + 1
    if how == 0:
        return text[:at]
    if how == 1:
        return text[:at] + "]" + text[at:]
    raw = bytearray(text.encode())
    if at < len(raw):
        raw[at] ^= 0x80 if how == 2 else 0x22
    return bytes(raw)


fast_garbage = st.builds(_mangle, fast_frames, st.integers(0, 120), st.integers(0, 3))
FRAMES_PER_EXAMPLE = 25


@settings(max_examples=400, deadline=None)
@given(
    st.lists(fast_frames | fast_garbage, min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE),
    st.lists(st.floats(0, 100), min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE),
)
def test_any_frames_raise_only_protocol_error(texts: list[str | bytes], ticks: list[float]) -> None:
    """Valid and garbage frames, 400 x 25 = 10^4 per run: only ProtocolError escapes."""
    conn = PhoenixConnection(0.0, heartbeat_interval=10, rejoin_after=1)
    conn.join("device", {})
    now = 0.0
    for text, step in zip(texts, ticks, strict=True):
        with contextlib.suppress(ProtocolError):
            conn.receive_text(text, now)
        now += step
        conn.tick(now)
        if conn.closed:  # heartbeat timeout: a new connection, as the driver would
            conn = PhoenixConnection(now, heartbeat_interval=10, rejoin_after=1)
            conn.join("device", {})
        for out in conn.data_to_send():
            decode_frame(out)  # everything we send is a valid frame
        conn.events_received()
        deadline = conn.next_deadline()
        assert deadline is None or deadline >= now - 100


@settings(max_examples=300, deadline=None)
@given(st.lists(refs, min_size=2, max_size=2), topics, events, payloads)
def test_rich_frames_round_trip_and_never_raise_otherwise(
    two_refs: list[str | None], topic: str, event: str, payload: dict[str, Any]
) -> None:
    f = Frame(two_refs[0], two_refs[1], topic, event, payload)
    text = encode_frame(f)
    assert decode_frame(text) == f
    conn = joined_conn(heartbeat_interval=1)
    try:
        conn.receive_text(text, 0.5)
    except ProtocolError:
        assert event == "phx_reply"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60) | st.builds(json.dumps, json_values))
def test_arbitrary_input_decodes_or_raises_protocol_error(text: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(text)

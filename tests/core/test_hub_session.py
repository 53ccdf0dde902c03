"""core.hub_session: the connection lifecycle on a fake clock (protocol.md §1.5, §3, §8)."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core.backoff import ReconnectBackoff, delay_list
from nhlink_dbus.core.hub_session import (
    ChannelDown,
    Connected,
    DeviceInfo,
    Disconnected,
    HubSession,
    Joined,
    SessionState,
    UpdateCheckResult,
)
from nhlink_dbus.errors import ProtocolError, StateError

KV = {"nerves_fw_uuid": "u-running", "nerves_fw_version": "0.1.0", "nerves_fw_product": "p"}
DEVICE = DeviceInfo(KV, "1.10.2")
OK = {"status": "ok", "response": {}}


def frame(*parts: Any) -> str:
    return json.dumps(list(parts))


def sent(session: HubSession) -> list[list[Any]]:
    return [json.loads(f) for f in session.data_to_send()]


def new_session(**kw: Any) -> HubSession:
    kw.setdefault("heartbeat_interval_ms", 30000)
    kw.setdefault("rejoin_after_ms", 5000)
    return HubSession(DEVICE, **kw)


def connect_and_join(session: HubSession, now: float) -> list[Any]:
    session.begin_attempt(now)
    session.connected(now)
    (join,) = sent(session)
    session.receive_text(frame(join[0], join[1], "device", "phx_reply", OK), now)
    session.events()
    return join  # type: ignore[no-any-return]


def test_first_connect_is_immediate_and_join_carries_section_3_1_params() -> None:
    session = new_session()
    assert session.next_deadline() == float("-inf")
    session.begin_attempt(0.0)
    session.connected(0.0)
    (join,) = sent(session)
    assert join[:4] == ["1", "1", "device", "phx_join"]
    assert join[4] == KV | {
        "fwup_version": "1.10.2",
        "device_api_version": "2.4.0",
        "console_version": "2.0.0",
        "fwup_public_keys": "on_connect",
        "archive_public_keys": "on_connect",
        "currently_downloading_uuid": None,
    }
    session.receive_text(frame("1", "1", "device", "phx_reply", OK), 0.1)
    assert session.events() == [Connected(), Joined({})]
    assert session.joined


def test_currently_downloading_uuid_on_every_join_including_rejoins() -> None:
    session = new_session()
    connect_and_join(session, 0.0)
    session.set_downloading("f00d")
    session.receive_text(frame("1", "1", "device", "phx_error", {}), 1.0)
    assert session.events() == [ChannelDown("phx_error", 5000)]
    session.tick(6.0)
    (rejoin,) = sent(session)
    assert rejoin[3] == "phx_join" and rejoin[4]["currently_downloading_uuid"] == "f00d"
    # 2.5.2 would drop the key here; and a fresh connection keeps it too
    session.connection_lost(7.0, "closed")
    session.begin_attempt(100.0)
    session.connected(100.0)
    (join,) = sent(session)
    assert join[4]["currently_downloading_uuid"] == "f00d"


def test_phx_close_is_rejoined() -> None:
    session = new_session()
    connect_and_join(session, 0.0)
    session.receive_text(frame("1", "1", "device", "phx_close", {}), 2.0)
    assert session.events() == [ChannelDown("phx_close", 5000)]
    assert session.next_deadline() == 7.0
    session.tick(7.0)
    assert sent(session)[0][3] == "phx_join"


def test_refused_join_rejoins_after_rejoin_after() -> None:
    session = new_session(rejoin_after_ms=250)
    session.begin_attempt(0.0)
    session.connected(0.0)
    sent(session)
    error = {"status": "error", "response": {"error": "could not connect"}}
    session.receive_text(frame("1", "1", "device", "phx_reply", error), 1.0)
    assert session.events() == [Connected(), ChannelDown("join refused: could not connect", 250)]
    session.tick(1.2)
    assert sent(session) == []
    session.tick(1.25)
    assert [f[3] for f in sent(session)] == ["phx_join"]


def test_reconnect_delays_follow_the_delay_list_on_a_fake_clock() -> None:
    seeds = iter(range(100))
    backoff = ReconnectBackoff(rng_factory=lambda: random.Random(next(seeds)))
    session = new_session(backoff=backoff)
    expected = [delay_list(rng=random.Random(seed)) for seed in range(9)]
    now = 0.0
    attempts: list[float] = []
    for n in range(9):  # nine failed attempts in a row (e.g. 401s)
        assert session.next_deadline() == (now if n else float("-inf"))
        attempts.append(now)
        session.begin_attempt(now)
        delay = session.attempt_failed(now, "auth refused")
        # n-th attempt waits list[n], the last value repeats past the end
        assert delay == expected[n][min(n, 6)]
        assert session.events() == [Disconnected("auth refused", delay)]
        now = session.connect_at
    # a successful upgrade resets the index
    session.begin_attempt(now)
    session.connected(now)
    session.events()
    delay = session.connection_lost(now + 1, "closed")
    assert delay == delay_list(rng=random.Random(9))[0]
    assert [round(b - a, 3) for a, b in itertools.pairwise(attempts)] == [
        expected[n][min(n, 6)] / 1000 for n in range(8)
    ]


def test_heartbeat_timeout_requests_close() -> None:
    session = new_session(heartbeat_interval_ms=1000)
    connect_and_join(session, 0.0)
    session.tick(1.0)
    assert sent(session)[0][2:4] == ["phoenix", "heartbeat"]
    assert not session.close_requested
    session.tick(2.0)
    assert session.close_requested
    session.connection_lost(2.0, "heartbeat_timeout")
    assert session.state is SessionState.WAITING


def test_server_events_become_typed_values_and_scripts_are_answered() -> None:
    session = new_session()
    connect_and_join(session, 0.0)
    update = {
        "update_available": True,
        "firmware_url": "http://h/f.fw",
        "firmware_meta": {"uuid": "new"},
        "deployment_id": 3,
    }
    pushes = [
        ("update", update),
        ("archive", {"size": 1, "uuid": "a", "version": "1", "url": "http://h/a.fw"}),
        ("fwup_public_keys", {"keys": ["k"]}),
        ("archive_public_keys", {"keys": ["ak"]}),
        ("reboot", {}),
        ("identify", {}),
        ("check_health", {}),
        ("extensions:get", {}),
        ("brand_new_event", {"x": 1}),
        ("update", {"firmware_url": 5}),  # malformed: logged and dropped
        ("scripts/run", {"text": "1 + 1", "ref": "r4nd"}),
    ]
    for name, payload in pushes:
        session.receive_text(frame("1", None, "device", name, payload), 1.0)
    assert session.events() == [
        hm.UpdateInfo("http://h/f.fw", hm.FirmwareMetadata(uuid="new"), 3),
        hm.ArchiveInfo(1, "a", "1", "http://h/a.fw"),
        hm.FwupPublicKeys(("k",)),
        hm.ArchivePublicKeys(("ak",)),
        hm.Reboot(),
        hm.Identify(),
    ]
    assert sent(session) == [
        [
            None,
            "2",
            "device",
            "scripts/run",
            {"ref": "r4nd", "output": hm.SCRIPTS_UNSUPPORTED_OUTPUT, "return": "nil"},
        ]
    ]


def test_legacy_join_reply_with_firmware_url_is_an_update() -> None:
    session = new_session()
    session.begin_attempt(0.0)
    session.connected(0.0)
    sent(session)
    legacy = {"update_available": True, "firmware_url": "http://h/f", "firmware_meta": {}}
    session.receive_text(
        frame("1", "1", "device", "phx_reply", {"status": "ok", "response": legacy}), 0
    )
    assert session.events()[-1] == hm.UpdateInfo("http://h/f", hm.FirmwareMetadata(), None)


def test_device_pushes_and_update_check() -> None:
    session = new_session()
    assert session.push_fwup_progress(1) is None  # not connected: dropped
    connect_and_join(session, 0.0)
    assert session.push_fwup_progress(42) == "2"
    assert session.push_status_update("fwup error x") == "3"
    assert session.push_rebooting() == "4"
    ref = session.check_update_available()
    assert [f[3:] for f in sent(session)] == [
        ["fwup_progress", {"value": 42}],
        ["status_update", {"status": "fwup error x"}],
        ["rebooting", {}],
        ["check_update_available", {}],
    ]
    nothing = {"update_available": False, "firmware_url": None, "firmware_meta": None}
    session.receive_text(
        frame(None, ref, "device", "phx_reply", {"status": "ok", "response": nothing}), 1
    )
    assert session.events() == [UpdateCheckResult("5", None)]
    ref2 = session.check_update_available()
    session.receive_text(frame(None, ref2, "device", "phx_reply", {"status": "error"}), 1)
    assert session.events() == [UpdateCheckResult("6", None, "hub replied error")]
    # untracked replies are ignored
    session.receive_text(frame(None, "99", "device", "phx_reply", OK), 1)
    assert session.events() == []


def test_illegal_transitions_raise_and_keep_state() -> None:
    session = new_session()
    with pytest.raises(StateError):
        session.connected(0.0)
    assert session.state is SessionState.WAITING
    session.begin_attempt(0.0)
    with pytest.raises(StateError):
        session.begin_attempt(0.0)
    with pytest.raises(StateError):
        session.connection_lost(0.0, "x")
    assert session.state is SessionState.CONNECTING
    session.stop()
    assert session.state is SessionState.STOPPED
    with pytest.raises(StateError):
        session.begin_attempt(0.0)


def test_frames_before_connect_are_ignored_and_bad_frames_raise_protocol_error() -> None:
    session = new_session()
    session.receive_text("garbage", 0.0)  # not connected: nothing to feed
    connect_and_join(session, 0.0)
    with pytest.raises(ProtocolError):
        session.receive_text("garbage", 0.0)
    assert session.joined


_events = ["update", "archive", "fwup_public_keys", "archive_public_keys", "reboot", "identify"]
_events += ["scripts/run", "check_health", "phx_reply", "phx_error", "phx_close", "zz"]
_payloads: list[Any] = [
    {},
    OK,
    {"status": "error", "response": {"reason": "x"}},
    {"firmware_url": "u", "firmware_meta": {}},
    {"status": "ok", "response": {"firmware_url": "u", "firmware_meta": {"uuid": 1}}},
    {"keys": ["a"]},
    {"keys": "a"},
    {"text": "t", "ref": "r"},
    {"text": 1},
    {"size": 1, "uuid": "u", "version": "v", "url": "x"},
    {"size": -1},
]
session_frames = st.builds(
    lambda *p: json.dumps(list(p)),
    st.sampled_from([None, "1", "2", "3"]),
    st.sampled_from([None, "1", "2", "3", "4", "5"]),
    st.sampled_from(["device", "phoenix", "x"]),
    st.sampled_from(_events),
    st.sampled_from(_payloads),
)
garbage = st.sampled_from(["", "[", "[1,2,3,4,5]", "null", '["1","1","device","phx_reply",{}]'])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(session_frames | garbage, st.floats(0, 20)), min_size=25, max_size=25))
def test_session_raises_only_protocol_error(steps: list[tuple[str, float]]) -> None:
    """400 runs x 25 frames = 10^4 frames through the whole session."""
    session = new_session(heartbeat_interval_ms=10000, rejoin_after_ms=1000)
    now = 0.0
    session.begin_attempt(now)
    session.connected(now)
    for text, step in steps:
        with contextlib.suppress(ProtocolError):
            session.receive_text(text, now)
        now += step
        session.tick(now)
        if session.close_requested:
            session.connection_lost(now, "heartbeat_timeout")
            session.begin_attempt(session.connect_at)
            session.connected(session.connect_at)
            now = session.connect_at
        session.data_to_send()
        session.events()
        session.check_update_available()

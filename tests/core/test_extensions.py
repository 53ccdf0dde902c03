"""The extensions topic's bookkeeping (core/extensions.py) and how HubSession carries it
(frames in, frames out), synchronously."""

from __future__ import annotations

import json

from nhlink_dbus.core import extensions as ext
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core.phoenix import decode_frame

OFFER = {"health": "0.0.1", "geo": "0.0.1"}


def test_join_attaches_what_the_server_lists_and_refuses_the_rest() -> None:
    e = ext.Extensions(OFFER)
    assert e.join_params() == OFFER
    out = e.joined(["health", "local_shell"])
    assert out == [
        ext.Push("health:attached", {}, attaching="health"),
        ext.Push("local_shell:error", {"reason": "unknown_extension"}),
    ]
    assert e.attach_pushed("health", "7") == [ext.AttachedChanged(("health",))]
    assert e.allows("health") and not e.allows("geo")
    assert e.joined({"not": "a list"}) == [ext.AttachedChanged(())]  # nothing attached


def test_events_reach_only_attached_extensions() -> None:
    e = ext.Extensions(OFFER)
    e.joined(["health"])
    e.attach_pushed("health", "3")
    assert e.message("health:check", {}) == [ext.Deliver("health", "check", {})]
    assert e.message("geo:location:request", {}) == []
    assert e.message("nonsense", {}) == []


def test_attach_and_detach_pushes() -> None:
    e = ext.Extensions(OFFER)
    e.joined([])
    assert e.message("attach", {"extensions": "all"}) == [
        ext.Push("health:attached", {}, attaching="health"),
        ext.Push("geo:attached", {}, attaching="geo"),
    ]
    e.attach_pushed("health", "4")
    e.attach_pushed("geo", "5")
    assert e.message("detach", {"extensions": "geo"}) == [
        ext.Push("geo:detached", {}),
        ext.AttachedChanged(("health",)),
    ]
    assert e.message("detach", {"extensions": ["geo"]}) == []  # already detached
    assert e.message("detach", {"extensions": 42}) == []  # unusable: ignored
    # The server refuses the health:attached push (ref 4): detach it.
    assert e.reply("4", "error", "detach") == [
        ext.Push("health:detached", {}),
        ext.AttachedChanged(()),
    ]
    assert e.reply("4", "error", "detach") == []
    assert e.reset() == []


def test_attach_that_could_not_be_pushed_does_not_count() -> None:
    e = ext.Extensions(OFFER)
    e.joined(["geo"])
    assert e.attach_pushed("geo", None) == [] and not e.allows("geo")


# -- through the hub session (frames) --------------------------------------------------


def joined_session(offer: dict[str, str]) -> hs.HubSession:
    session = hs.HubSession(
        hs.DeviceInfo(
            kv={"nerves_fw_uuid": "u"},
            fwup_version="1.16.0",
            meta={"firmware_validated": True, "firmware_auto_revert_detected": False},
            extensions=offer,
        ),
        heartbeat_interval_ms=30_000,
        rejoin_after_ms=5_000,
    )
    session.begin_attempt(0.0)
    session.connected(0.0)
    join = decode_frame(session.data_to_send()[0])
    assert join.payload["meta"] == {
        "firmware_validated": True,
        "firmware_auto_revert_detected": False,
    }
    assert join.payload["device_api_version"] == "2.4.0"
    session.receive_text(
        json.dumps(["1", "1", "device", "phx_reply", {"status": "ok", "response": {}}]), 0.1
    )
    session.events()
    return session


def test_session_joins_extensions_on_request_and_gates_pushes() -> None:
    session = joined_session(OFFER)
    assert session.push_extension("health", "report", {}) is None  # not attached yet
    session.receive_text(json.dumps(["1", None, "device", "extensions:get", {}]), 1.0)
    (join,) = map(decode_frame, session.data_to_send())
    assert (join.topic, join.event, join.payload) == ("extensions", "phx_join", OFFER)
    reply = [
        join.ref,
        join.ref,
        "extensions",
        "phx_reply",
        {"status": "ok", "response": ["health"]},
    ]
    session.receive_text(json.dumps(reply), 1.1)
    (attached,) = map(decode_frame, session.data_to_send())
    assert (attached.topic, attached.event) == ("extensions", "health:attached")
    assert session.events() == [ext.AttachedChanged(("health",))]
    session.receive_text(json.dumps([join.ref, None, "extensions", "health:check", {}]), 1.2)
    assert session.events() == [ext.Deliver("health", "check", {})]
    ref = session.push_extension("health", "report", {"value": {}})
    (report,) = map(decode_frame, session.data_to_send())
    assert (report.ref, report.event) == (ref, "health:report")
    assert session.push_extension("geo", "location:update", {}) is None
    # The server does not take it after all: error "detach" to the attached push.
    detach = [
        join.ref,
        attached.ref,
        "extensions",
        "phx_reply",
        {"status": "error", "response": "detach"},
    ]
    session.receive_text(json.dumps(detach), 1.3)
    (detached,) = map(decode_frame, session.data_to_send())
    assert detached.event == "health:detached"
    assert session.events() == [ext.AttachedChanged(())]


def test_nothing_offered_stays_away_and_a_lost_connection_detaches() -> None:
    session = joined_session({})
    session.receive_text(json.dumps(["1", None, "device", "extensions:get", {}]), 1.0)
    assert session.data_to_send() == []
    session = joined_session(OFFER)
    session.receive_text(json.dumps(["1", None, "device", "extensions:get", {}]), 1.0)
    (join,) = map(decode_frame, session.data_to_send())
    ok = {"status": "ok", "response": ["geo"]}
    session.receive_text(json.dumps([join.ref, join.ref, "extensions", "phx_reply", ok]), 1.1)
    session.events()
    session.connection_lost(2.0, "gone")
    events = session.events()
    assert ext.AttachedChanged(()) in events

"""Device-managed updates (core/update_mode.py) and how LinkCore runs them: a checked
update is asked about without a URL, applying it asks the hub (request_update), the
hub's update is applied under the same request id, update_rejected reschedules it."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import link
from nhlink_dbus.core import update_mode as um
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.device_api import Changed
from nhlink_dbus.core.update_manager import StartUpdate
from nhlink_dbus.errors import InvalidArgument, ProtocolError
from tests.core.test_link import core, of, update


def test_parsers() -> None:
    assert um.parse_update_mode({"mode": "device_managed", "managed_updates_allowed": True}) == (
        um.UpdateMode("device_managed", True)
    )
    assert um.parse_update_mode({"mode": "off"}) == um.UpdateMode("off", False)
    assert um.parse_update_available({"available": False, "firmware_meta": None}) == (
        um.UpdateAvailability(False, None)
    )
    found = um.parse_update_available({"available": True, "firmware_meta": {"uuid": "x"}})
    assert found.firmware_meta == hm.FirmwareMetadata(uuid="x")
    rejected = um.parse_update_rejected({"reason": "busy", "delay_for": 5})
    assert rejected == um.UpdateRejected("busy", 5) and rejected.delay_ms == 300_000
    with pytest.raises(InvalidArgument, match="off is the operator's alone"):
        um.set_update_mode_payload("off")
    assert um.set_update_mode_payload("device_managed") == {"mode": "device_managed"}


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.integers())))
def test_parsers_give_a_value_or_protocol_error(payload: object) -> None:
    for parse in (um.parse_update_mode, um.parse_update_available, um.parse_update_rejected):
        with contextlib.suppress(ProtocolError):
            parse(payload)


def managed_core() -> link.LinkCore:
    c = core()
    out = c.hub_event(um.UpdateMode("device_managed", True), now=0.0)
    assert link.PropertiesChanged({"UpdateMode": "device_managed"}) in out
    assert c.device_api.managed
    return c


def test_apply_asks_the_hub_and_its_update_runs_under_the_same_id() -> None:
    c = managed_core()
    out = c.managed_offer(hm.FirmwareMetadata(uuid="new", version="2.0.0"), now=1.0)
    (ask,) = of(link.Announce, out)
    assert ask.info == {"source": "hub", "uuid": "new", "version": "2.0.0"}  # type: ignore[attr-defined]
    assert not of(us.HubPush, out)  # nothing was received from the hub: no status
    out = c.decide("u-tok-1", "apply", 0, "uid=0 :1.9", now=2.0)
    assert us.HubPush("request_update", {}) in out and not of(StartUpdate, out)
    assert c.next_deadline() == 2.0 + um.REQUEST_TIMEOUT_S
    out = c.hub_event(update("new"), now=3.0)
    (start,) = of(StartUpdate, out)
    assert start.request_id == "u-tok-1"  # type: ignore[attr-defined]
    assert us.received() in out and not of(link.Announce, out)  # not asked again


def test_update_rejected_reschedules_by_its_delay_for() -> None:
    c = managed_core()
    c.managed_offer(hm.FirmwareMetadata(uuid="new"), now=1.0)
    c.decide("u-tok-1", "apply", 0, "me", now=2.0)
    out = c.hub_event(um.UpdateRejected("busy", 5), now=3.0)
    assert of(link.DecisionMade, out) == [
        link.DecisionMade("update", "u-tok-1", "reschedule", 300_000, "hub")
    ]
    assert c.state == "rescheduled" and c.next_deadline() == 303.0
    out = c.tick(303.0)
    assert of(link.Announce, out)[0].request_id == "u-tok-1"  # type: ignore[attr-defined]
    assert c.hub_event(um.UpdateRejected("busy", 5), now=304.0) == []  # nothing requested


def test_no_answer_to_request_update_is_an_error() -> None:
    c = managed_core()
    c.managed_offer(hm.FirmwareMetadata(uuid="new"), now=1.0)
    c.decide("u-tok-1", "apply", 0, "me", now=2.0)
    out = c.tick(2.0 + um.REQUEST_TIMEOUT_S)
    assert any("did not answer request_update" in str(e) for e in out)
    assert c.next_deadline() is None


def test_statuses_for_hub_offers_ignored_and_rescheduled() -> None:
    c = core()
    out = c.hub_event(update("new"), now=0.0)
    assert out[0] == us.received()
    out = c.decide("u-tok-1", "reschedule", 60_000, "uid=1000 :1.7", now=1.0)
    assert us.rescheduled(60_000, "reschedule on the device (decided by uid=1000 :1.7)") in out
    c.tick(61.0)
    out = c.decide("u-tok-1", "ignore", 0, "uid=1000 :1.7", now=62.0)
    assert us.ignored("ignore on the device (decided by uid=1000 :1.7)") in out
    out = c.hub_event(update("running"), now=63.0)  # the same-UUID policy
    assert out[0] == us.received()
    assert us.ignored("the device is already running this firmware") in out
    assert not of(Changed, out)

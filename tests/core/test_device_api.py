"""The device API beside updates (core/device_api.py) as LinkCore runs it: what a join
starts, what health:check and geo:location:request produce, validation reaching the
join meta and the hub."""

from __future__ import annotations

import pytest

from nhlink_dbus.core import device_api as da
from nhlink_dbus.core import extensions as ext
from nhlink_dbus.core import geo, link
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import validation as val
from nhlink_dbus.core.health import HealthSample
from nhlink_dbus.core.update_status import HubPush
from tests.core.test_link import RUNNING

KV = {"nerves_fw_active": "a", "a.nerves_fw_uuid": "running", "nerves_fw_validated": "0"}


def core(kv: dict[str, str] = KV, **settings: object) -> link.LinkCore:
    return link.LinkCore(
        link.LinkSettings(
            decision_timeout_ms=30_000,
            default_update="apply",
            default_archive="ignore",
            ignore_same_uuid=True,
            reboot_delay_ms=0,
            fwup_keys=("k",),
        ),
        RUNNING,
        "tok",
        kv=kv,
        device_api=da.DeviceApiSettings(**settings),  # type: ignore[arg-type]
    )


def test_join_starts_validation_checks_and_the_network_report() -> None:
    c = core()
    assert c.device_api.validation.meta() == {
        "firmware_validated": False,
        "firmware_auto_revert_detected": False,
    }
    out = c.hub_event(hs.Joined({}), now=0.0)
    assert out == [da.FindNetworkInterface()]
    assert c.next_deadline() == val.RECHECK_S
    assert c.tick(val.RECHECK_S) == [val.ReadValidation()]
    out = c.device_api_effects(c.device_api.validation_observed(True, 11.0))
    assert out == [
        da.JoinMeta({"firmware_validated": True, "firmware_auto_revert_detected": False}),
        link.PropertiesChanged({"FirmwareValidated": True}),
        HubPush("firmware_validated", {}),
    ]


def test_on_connect_policy_marks_valid() -> None:
    c = core(validate="on-connect", validate_after_ms=5000)
    c.hub_event(hs.Joined({}), now=0.0)
    assert val.MarkValidNow("policy") in c.tick(5.0)


def test_health_check_gives_a_report_with_the_hub_route() -> None:
    c = core()
    c.hub_event(hs.Joined({}), now=0.0)
    c.device_api_effects(c.device_api.network_found("wlp2s0", "wifi"))
    assert c.hub_event(ext.Deliver("health", "check", {}), now=1.0) == [da.CollectHealth()]
    c.device_api.health.set_metric("queue", 2)
    (push,) = c.device_api.health_sampled(HealthSample(loadavg=(1.0, 1.0, 1.0)), 0.0)
    assert isinstance(push, da.ExtensionPush) and (push.name, push.event) == ("health", "report")
    report = push.payload["value"]
    assert report["metrics"]["queue"] == 2.0 and report["metrics"]["load_1min"] == 1.0
    assert report["connectivity"]["wlp2s0"]["type"] == "wifi"
    assert report["connectivity"]["wlp2s0"]["connection_status"] == "internet"


def test_network_report_carries_the_honest_type() -> None:
    c = core()
    out = c.device_api_effects(c.device_api.network_found("wlp2s0", "wifi"))
    assert HubPush("report_network_interface", {"interface": "wlp2s0", "type": "wifi"}) in out
    assert link.PropertiesChanged({"NetworkInterface": "wlp2s0"}) in out
    assert c.device_api.network_found(None, "unknown") == []
    assert c.device_api.network_found("x0", "bogus")[0] == HubPush(
        "report_network_interface", {"interface": "x0", "type": "unknown"}
    )


def test_geo_request_and_answers() -> None:
    c = core()
    assert c.hub_event(ext.Deliver("geo", "location:request", {}), now=0.0) == [da.Locate()]
    (push,) = c.device_api.located(geo.Location("geoclue", 52.5, 13.4, 25.4))
    assert push == da.ExtensionPush(
        "geo",
        "location:update",
        {"source": "geoclue", "latitude": 52.5, "longitude": 13.4, "accuracy": 25},
    )
    (push,) = c.device_api.located(geo.LocationError("NO_LOCATION", "none"))
    assert push.payload == {"error_code": "NO_LOCATION", "error_description": "none"}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="latitude"):
        geo.Location("manual", 91.0, 0.0)


def test_auto_revert_is_an_alarm_in_the_report() -> None:
    kv = KV | {
        "b.nerves_fw_validated": "0",
        "b.nerves_fw_platform": "x86_64",
        "b.nerves_fw_architecture": "x86_64",
        "b.nerves_fw_version": "2.0.0",
    }
    c = core(kv)
    assert c.device_api.validation.meta()["firmware_auto_revert_detected"] is True
    (push,) = c.device_api.health_sampled(HealthSample(), 0.0)
    assert push.payload["value"]["alarms"] == {  # type: ignore[union-attr]
        "nhlink.FirmwareReverted": "the bootloader fell back from 2.0.0"
    }


def test_settings_refuse_what_is_not_implemented() -> None:
    with pytest.raises(ValueError, match="local_shell"):
        da.DeviceApiSettings(extensions=("local_shell",))
    with pytest.raises(ValueError, match="manual, on-connect"):
        da.DeviceApiSettings(validate="never")
    assert core(extensions=("health",)).device_api.offered_extensions == {"health": "0.0.1"}

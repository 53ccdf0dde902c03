"""nhlinkctl's device-API commands (ctl_device.py) and the bus members behind them,
against the fake service on the private system bus: validation, health and mode in
``status``, ``health``, ``mark-valid``, ``mode``, ``metric``, ``alarm``; the
service's refusals reach the user in one line."""

from __future__ import annotations

import json

import pytest

from nhlink_dbus.bus.server import BusFace
from tests.bus.fake_service import FakeLinkService
from tests.bus.test_ctl import nhlinkctl


async def test_status_shows_validation_mode_and_extensions(
    face: BusFace, service: FakeLinkService
) -> None:
    service.auto_revert_detected = True
    status, out, err = await nhlinkctl("status")
    assert (status, err) == (0, "")
    assert "validated:  no (not yet confirmed); the bootloader fell back from the other slot" in out
    assert "update mode:automatic (device may choose)" in out
    assert "extensions: health" in out
    assert "interface:  eth0" in out


async def test_mark_valid(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("mark-valid") == (0, "the running firmware is marked valid\n", "")
    assert service.firmware_validated and service.calls[-1][0] == "mark_valid"


async def test_health_metric_and_alarm(face: BusFace, service: FakeLinkService) -> None:
    assert (await nhlinkctl("metric", "queue_depth", "3"))[0] == 0
    assert (await nhlinkctl("alarm", "raise", "door_open", "the", "door", "is", "open"))[0] == 0
    service.health.set_check("printer", False, "paper out")
    status, out, _ = await nhlinkctl("health")
    assert status == 0
    assert "queue_depth:                    3" in out
    assert "load_1min:                      0.5" in out
    assert "check printer: FAIL (paper out)" in out
    assert "alarm door_open: the door is open" in out
    status, out, _ = await nhlinkctl("--json", "health")
    assert json.loads(out) == {
        "metrics": {"load_1min": 0.5, "queue_depth": 3.0},
        "checks": {"printer": {"pass": False, "note": "paper out"}},
        "alarms": {"door_open": "the door is open"},
    }
    assert (await nhlinkctl("alarm", "clear", "door_open"))[0] == 0
    status, _, err = await nhlinkctl("alarm", "clear", "door_open")
    assert (status, err) == (1, "nhlinkctl: no alarm 'door_open' is raised\n")
    status, _, err = await nhlinkctl("metric", "cpu_temp", "1")
    assert status == 1 and "is one of the service's own" in err


async def test_mode(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("mode") == (0, "update mode: automatic\n", "")
    assert await nhlinkctl("mode", "device_managed") == (0, "update mode: device_managed\n", "")
    assert service.update_mode == "device_managed"
    with pytest.raises(SystemExit) as usage:  # argparse: off is not the device's to ask
        await nhlinkctl("mode", "off")
    assert usage.value.code == 2

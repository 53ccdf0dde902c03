"""Issue 15 through the real daemon on a private system bus, against nhlink-hub-sim:

* the extensions handshake; a ``health:report`` whose metrics match /proc at that
  moment and carry a metric and an alarm a D-Bus client set; ``geo:location:update``
  from a mocked GeoClue2; ``report_network_interface``; an auto-revert the
  bootloader did, told to the hub (join ``meta``) and the bus (``AutoReverted``);
* every ``status_update`` of an ignored, a rescheduled, a failed and an applied
  update; a 1 MiB part corrupted on the wire caught by ``partials_checksums`` and
  fetched again; after the "reboot", join ``meta`` unvalidated, ``MarkValid`` over
  the bus, ``firmware_validated`` pushed, and ``meta`` validated at the next join;
* device-managed mode end to end, the firmware delivered as a delta (the server's
  rule for the ``fwup_version`` we report), with the built-in applier and with an
  external fwup.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from nhlink_dbus.core.health import parse_loadavg, parse_meminfo, parse_net_dev
from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.core.partials import PART_SIZE
from nhlink_dbus.kv_store import read_kv, update_kv
from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus, system_bus_connection
from tests.harness.system_mocks import GeoClueMock
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
    Daemon,
    device_with_update,
    install_complete,
    sim_config,
    until,
    write_config,
)
from tests.integration.device_api_helpers import Kiosk, firmware_with_delta

A_START, B_START = 4096 * 512, LAYOUT.rootfs_b * 512


def proc_now() -> dict[str, Any]:
    st = os.statvfs("/")
    return {
        "load": parse_loadavg(Path("/proc/loadavg").read_text()),
        "mem": parse_meminfo(Path("/proc/meminfo").read_text()),
        "net": parse_net_dev(Path("/proc/net/dev").read_text()),
        "disk_total_kb": st.f_blocks * st.f_frsize // 1024,
        "disk_available_kb": st.f_bavail * st.f_frsize // 1024,
    }


def between(value: float, a: float, b: float, slack: float = 0.0) -> bool:
    return min(a, b) - slack <= value <= max(a, b) + slack


async def test_extensions_health_geo_network_and_auto_revert(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, _v2, image = device_with_update(tmp_path, rootfs_size=1 << 20)
    # The bootloader fell back from firmware 0.9.0 in slot B (never validated).
    fallen = {"b.nerves_fw_validated": "0", "b.nerves_fw_platform": "x86_64"}
    fallen |= {"b.nerves_fw_architecture": "x86_64", "b.nerves_fw_version": "0.9.0"}
    update_kv(LAYOUT.kv_spec(image), fallen)
    geoclue = GeoClueMock(system_bus, latitude=52.52, longitude=13.405, accuracy=25.0)
    config = sim_config()
    async with HubSim(config) as sim, system_bus_connection() as bus:
        kiosk = Kiosk(bus)
        await kiosk.subscribe()
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[geo]\ngeoclue = true\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            params = record.join_params
            assert params["device_api_version"] == "2.4.0"
            assert params["meta"] == {
                "firmware_validated": True,
                "firmware_auto_revert_detected": True,
            }
            (reverted,) = await kiosk.wait_signal("AutoReverted")
            assert reverted[0]["version"] == "0.9.0"
            assert await kiosk.prop("AutoRevertDetected") is True

            # The handshake: extensions:get -> join {name: version} -> [names] -> attached.
            def attached() -> list[Any] | None:
                return record.events("health:attached", "extensions") and record.events(
                    "geo:attached", "extensions"
                )

            await sim.wait_for(attached, timeout=20)
            (ext_join,) = [j for j in record.joins if j.topic == "extensions"]
            assert ext_join.payload == {"health": "0.0.1", "geo": "0.0.1"}
            sent = [f.event for f in record.frames_sent if f.topic in ("device", "extensions")]
            assert sent.index("extensions:get") < sent.index(
                "phx_reply", sent.index("extensions:get")
            )
            await until(lambda: kiosk_props_ready(record), 20, "first reports", daemon)
            assert sorted(await kiosk.prop("Extensions")) == ["geo", "health"]

            # geo: answered from GeoClue2 (the sim asks once, on attach).
            (location,) = record.events("geo:location:update", "extensions")
            assert location == {
                "source": "geoclue",
                "latitude": 52.52,
                "longitude": 13.405,
                "accuracy": 25,
            }
            # network: the route to the hub, classified from sysfs (no NetworkManager).
            (network,) = record.events("report_network_interface")
            assert network == {"interface": "lo", "type": "local"}
            assert await kiosk.prop("NetworkInterface") == "lo"

            # health: what a kiosk app adds, then a check the hub asks for now.
            await kiosk.call("SetHealthMetric", "sd", ["queue_depth", 3.5])
            await kiosk.call("SetHealthCheck", "sbs", ["printer", False, "paper out"])
            await kiosk.call("RaiseAlarm", "ss", ["door_open", "the cabinet door is open"])
            with pytest.raises(RuntimeError, match="InvalidArgument"):
                await kiosk.call("SetHealthMetric", "sd", ["cpu_temp", 1.0])
            before = proc_now()
            await sim.push(DEVICE, "health:check", {}, topic="extensions")
            reports = await sim.wait_for(
                lambda: (r := record.events("health:report", "extensions"))[1:] and r, 20
            )
            after = proc_now()
            report = reports[1]["value"]
        finally:
            assert daemon.stop() == 0, daemon.text()
            geoclue.stop()
    metrics = report["metrics"]
    assert report["timestamp"].endswith("Z")
    assert metrics["queue_depth"] == 3.5
    assert report["checks"] == {"printer": {"pass": False, "note": "paper out"}}
    assert report["alarms"] == {
        "door_open": "the cabinet door is open",
        "nhlink.FirmwareReverted": "the bootloader fell back from 0.9.0",
    }
    # Metrics as /proc says at that moment (read just before and just after).
    for i, name in enumerate(("load_1min", "load_5min", "load_15min")):
        assert between(metrics[name], before["load"][i], after["load"][i]), name
    total = before["mem"].total_kb
    assert metrics["mem_size_mb"] == round(total / 1000)
    used = [round((total - m.available_kb) / 1000) for m in (before["mem"], after["mem"])]
    assert between(metrics["mem_used_mb"], *used, slack=64), (metrics["mem_used_mb"], used)
    assert metrics["mem_used_percent"] == round(
        metrics["mem_used_mb"] / metrics["mem_size_mb"] * 100
    )
    assert metrics["disk_total_kb"] == before["disk_total_kb"]
    assert between(
        metrics["disk_available_kb"], before["disk_available_kb"], after["disk_available_kb"],
        slack=64 * 1024,
    )  # fmt: skip
    assert 0 <= metrics["cpu_usage_percent"] <= 100
    for iface, (rx, tx) in before["net"].items():
        assert between(metrics[f"{iface}_bytes_received_total"], rx, after["net"][iface][0])
        assert between(metrics[f"{iface}_bytes_sent_total"], tx, after["net"][iface][1])
    assert not any(k.startswith("lo_") for k in metrics)
    assert ("cpu_temp" in metrics) == Path("/sys/class/thermal/thermal_zone0/temp").exists()
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in metrics.values())


def kiosk_props_ready(record: Any) -> bool:
    return bool(
        record.events("health:report", "extensions")
        and record.events("geo:location:update", "extensions")
        and record.events("report_network_interface")
    )


async def test_status_sequence_partials_and_validation_after_the_update(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    from tests.integration.test_update_faults import _corrupted  # noqa: PLC0415

    _v1, v2, image = device_with_update(tmp_path)
    bad = _corrupted(v2, tmp_path / "corrupt.fw")
    assert v2.path.stat().st_size > 3 * PART_SIZE
    async with HubSim(sim_config()) as sim, system_bus_connection() as bus:
        kiosk = Kiosk(bus)
        await kiosk.subscribe()
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)

            def statuses() -> list[str]:
                return [s["status"] for s in record.events("status_update")]

            async def offer_and_decide(fw: Path, decision: str, delay: int = 0) -> str:
                seen = len(kiosk.named("UpdateAvailable"))
                await sim.offer_update(DEVICE, fw)
                offers = await kiosk.wait_signal("UpdateAvailable", seen + 1)
                rid = str(offers[-1][0])
                await kiosk.call("Decide", "sst", [rid, decision, delay])
                return rid

            # ignored: the hub clears its in-flight update and penalises the device.
            await offer_and_decide(v2.path, "ignore")
            await until(lambda: "ignored" in statuses(), 20, "ignored", daemon)
            assert record.api.blocked_until is not None
            # rescheduled: delay_for in milliseconds, the unit the server adds.
            rid = await offer_and_decide(v2.path, "reschedule", 60_000)
            await until(lambda: "rescheduled" in statuses(), 20, "rescheduled", daemon)
            # failed: a corrupt image (the rescheduled question is asked again, same id).
            again = await offer_and_decide(bad, "apply")
            assert again == rid
            await until(lambda: "failed" in statuses(), 30, "failed", daemon)
            # applied, with the second 1 MiB part corrupted on the wire once.
            sim.clear_faults()
            sim.set_fault(kind="corrupt", path=f"/firmware/{v2.path.name}", after=PART_SIZE + 1000,
                          length=16, times=1)  # fmt: skip
            await offer_and_decide(v2.path, "apply")
            await until(lambda: "completed" in statuses(), 60, "completed", daemon)
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            events = record.events("status_update")
            log = [(e.path, e.range, e.fault) for e in sim.http_log]
        finally:
            assert daemon.stop() == 0, daemon.text()
        assert [s for s in statuses() if s != "started"] == [
            *("received", "ignored"),
            *("received", "rescheduled"),
            *("received", "failed"),
            *("received", "completed"),
        ]
        by_status = {e["status"]: e for e in events}
        assert by_status["ignored"]["reason"].startswith("ignore on the device (decided by uid=0")
        assert by_status["rescheduled"]["delay_for"] == 60_000
        assert (
            by_status["failed"]["reason"] == "raw_write detected blake2b mismatch on 'rootfs.img'"
        )
        # The applied update's progress: staged, increasing, 100 last, before completed.
        frames = [(f.event, f.payload) for f in record.frames_received if f.topic == "device"]
        last = max(i for i, (e, p) in enumerate(frames) if p.get("status") == "received")
        tail = frames[last:]
        values = [p["value"] for e, p in tail if e == "fwup_progress"]
        assert values[0] == 0 and values[-1] == 100 and values == sorted(set(values))
        assert all(p["stage"] == "updating" for e, p in tail if e == "fwup_progress")
        assert [p.get("status") for e, p in tail if e == "status_update"][-1] == "completed"
        # partials_checksums: the corrupted part was caught and fetched again from its offset.
        firmware = f"/firmware/{v2.path.name}"
        assert [(r, f) for p, r, f in log if p == firmware][-2:] == [
            (None, "corrupt"),
            (f"bytes={PART_SIZE}-", None),
        ]
        assert "part 2 failed its checksum" in daemon.text()
        kv = read_kv(LAYOUT.kv_spec(image))
        assert active_slot_metadata(kv)["nerves_fw_uuid"] == v2.uuid

        # After the reboot: v2 runs, not validated yet; the kiosk app confirms it.
        joins = len(record.joins)
        daemon = Daemon(cfg, tmp_path / "daemon2.log", system_bus.address, export_bus=True)
        try:
            await sim.wait_for(lambda: len(record.joins) > joins and record.joined, timeout=20)
            assert record.join_params["nerves_fw_uuid"] == v2.uuid
            assert record.join_params["meta"]["firmware_validated"] is False
            await kiosk.wait_for_service()
            assert await kiosk.prop("FirmwareValidated") is False
            assert record.events("firmware_validated") == []
            await kiosk.call("MarkValid")
            await sim.wait_for(lambda: record.events("firmware_validated"), timeout=20)
            assert await kiosk.prop("FirmwareValidated") is True
        finally:
            assert daemon.stop() == 0, daemon.text()
        kv = read_kv(LAYOUT.kv_spec(image))
        assert kv["nerves_fw_validated"] == "1"
        joins = len(record.joins)
        daemon = Daemon(cfg, tmp_path / "daemon3.log", system_bus.address)
        try:
            await sim.wait_for(lambda: len(record.joins) > joins and record.joined, timeout=20)
            assert record.join_params["meta"] == {
                "firmware_validated": True,
                "firmware_auto_revert_detected": False,
            }
        finally:
            assert daemon.stop() == 0, daemon.text()


@pytest.mark.parametrize("applier", ["builtin", "fwup"])
async def test_device_managed_update_delivered_as_a_delta(
    applier: str, tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    pair = firmware_with_delta(tmp_path)
    image = tmp_path / "disk.img"
    install_complete(image, pair.v1)
    config = sim_config()
    config.request_update_busy = 1  # the first request_update: "busy", come back later
    config.busy_delay_for_min = 0
    async with HubSim(config) as sim, system_bus_connection() as bus:
        await sim.set_update_mode(DEVICE, "device_managed", allowed=True)
        kiosk = Kiosk(bus)
        await kiosk.subscribe()
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image, applier=applier)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            # The fwup_version we report lets the server send a delta (its rule, in the sim).
            assert record.join_params["fwup_version"] == "1.16.0"
            await sim.offer_update(DEVICE, pair.v2.path, push=False, delta=pair.delta)
            assert record.api.update_types == ["delta"]
            await kiosk.wait_for_service()
            mode = await until_prop(kiosk, "UpdateMode", "device_managed")
            assert mode == "device_managed" and await kiosk.prop("ManagedUpdatesAllowed") is True
            with pytest.raises(RuntimeError, match="InvalidArgument"):
                await kiosk.call("SetUpdateMode", "s", ["off"])
            assert await kiosk.call("SetUpdateMode", "s", ["automatic"]) == ["automatic"]
            assert await kiosk.call("SetUpdateMode", "s", ["device_managed"]) == ["device_managed"]
            assert not [f for f in record.frames_sent if f.event == "update"]  # the device chooses

            (answer,) = await kiosk.call("CheckForUpdate")
            assert answer["update_available"] == 1 and answer["uuid"] == pair.v2.uuid
            assert record.events("check_update") == [{}]
            ((rid, info),) = await kiosk.wait_signal("UpdateAvailable")
            assert info["uuid"] == pair.v2.uuid and info["source"] == "hub"
            await kiosk.call("Decide", "sst", [rid, "apply", 0])
            # busy: rescheduled by the hub's delay_for, asked again with the same id
            await kiosk.wait_signal(
                "DecisionMade", where=lambda r, d, _ms, by: (r, d, by) == (rid, "reschedule", "hub")
            )
            offers = await kiosk.wait_signal("UpdateAvailable", 2)
            assert offers[1][0] == rid
            await kiosk.call("Decide", "sst", [rid, "apply", 0])
            finished = await kiosk.wait_signal("UpdateFinished", timeout=60)
            assert finished == [[rid, True, ""]]
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            requests = [f.event for f in record.frames_received if f.event == "request_update"]
            served = [e.path for e in sim.http_log]
        finally:
            assert daemon.stop() == 0, daemon.text()
    pushed = [f for f in record.frames_sent if f.event in ("update", "update_rejected")]
    assert len(requests) == 2 and [f.event for f in pushed] == ["update_rejected", "update"]
    assert served == [f"/firmware/{pair.delta.name}"]
    assert [s["status"] for s in record.events("status_update")] == [
        "received",
        "started",
        "completed",
    ]
    kv = read_kv(LAYOUT.kv_spec(image))
    assert kv["nerves_fw_active"] == "b"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == pair.v2.uuid
    with image.open("rb") as fh:
        fh.seek(B_START)
        assert fh.read(len(pair.v2_rootfs)) == pair.v2_rootfs  # patched from slot A


async def until_prop(kiosk: Kiosk, name: str, value: object) -> object:
    """The property once it has ``value`` (it follows the hub's pushes; PropertiesChanged)."""
    seen = len(kiosk.named("PropertiesChanged"))
    while (current := await kiosk.prop(name)) != value:
        seen += 1
        await kiosk.wait_signal("PropertiesChanged", seen, timeout=20)
    return current

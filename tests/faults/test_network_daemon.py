"""Network faults from nhlink-hub-sim, through the real daemon on a private system bus
with dbusmock's logind: a hub restart during a decision and during a download,
heartbeat replies withheld, a slow hub (1 KiB/s) inside the worst-case download
timer, and a hub whose clock is an hour ahead of the device.

What each shows is what the README's "What happens when..." table promises for a
lost network: nothing the user decided is lost, a download resumes where it
stopped, and the hub hears the outcome once the connection is back.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import pytest
from dbus_next.constants import MessageType

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.hubsim import DeviceRecord, HubSim
from tests.faults.helpers import LinkClient, tune_config
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
    NHLINK_FWUP,
    PUBLIC_KEY,
    Daemon,
    Firmware,
    device_with_update,
    install_complete,
    make_firmware,
    sim_config,
    until,
    write_config,
)

A_START, B_START = 4096 * 512, LAYOUT.rootfs_b * 512
HOUR = 3600.0


def _reference_upgrade(tmp_path: Path, v1: Firmware, v2: Firmware) -> bytes:
    """The image ``nhlink-fwup`` makes from v1's with v2's upgrade task, uninterrupted."""
    reference = tmp_path / "reference.img"
    install_complete(reference, v1)
    argv = [NHLINK_FWUP, "-a", "-q", "-d", str(reference), "-t", "upgrade", "-i", str(v2.path)]
    subprocess.run([*argv, "--public-key", PUBLIC_KEY], check=True)
    return reference.read_bytes()


async def test_a_hub_restart_during_a_decision_keeps_the_question(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, v2, image = device_with_update(tmp_path)
    config = sim_config()
    config.push_update_on_join = True  # as the server: the deployment's update after each join
    async with HubSim(config) as sim, LinkClient.connect() as ui:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 120000\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            await ui.wait_for_service(daemon)
            await sim.offer_update(DEVICE, v2.path)
            request_id, _info = await ui.wait_signal("UpdateAvailable")

            await sim.stop()  # killed: TCP abort, no close frame
            await ui.wait_signal("Disconnected")
            assert await ui.get("Connected") is False
            assert await ui.pending() == [request_id]
            await sim.start()
            await sim.wait_for(lambda: record.connections == 2 and record.joined, timeout=20)
            # the hub pushed the same update again after the join: still one question,
            # with the same id, announced once (CheckForUpdate's round trip to the hub
            # comes after that push on the same socket: the daemon has seen it)
            await sim.wait_for(
                lambda: len([f for f in record.frames_sent if f.event == "update"]) >= 2
            )
            # The hub has sent its join reply; the daemon may not have read it yet (seen
            # on one slow core): CheckForUpdate needs the daemon joined, so wait for that.
            await ui.wait_property("Connected", True)
            check = await ui.reply("CheckForUpdate")
            assert check.message_type == MessageType.METHOD_RETURN, check.body
            assert await ui.pending() == [request_id]
            assert len(ui.of("UpdateAvailable")) == 1

            reply = await ui.decide(request_id, "apply")
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            finished = await ui.wait_signal("UpdateFinished", timeout=60)
            assert finished[:2] == [request_id, True]
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            assert record.events("fwup_progress")[-1]["value"] == 100
        finally:
            assert daemon.stop() == 0, daemon.text()
    assert active_slot_metadata(read_kv(LAYOUT.kv_spec(image)))["nerves_fw_uuid"] == v2.uuid


async def test_a_hub_restart_during_a_download_resumes_it(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1, v2, image = device_with_update(tmp_path)
    reference = await asyncio.to_thread(_reference_upgrade, tmp_path, v1, v2)
    url_path = "/firmware/" + v2.path.name
    async with HubSim(sim_config()) as sim:
        # Held 1 MiB in until the hub is killed; after the restart, held again three
        # times (each given up after the 2 s idle timeout of the test config): six
        # seconds for the device to rejoin mid-download, however busy the machine.
        sim.set_fault(kind="stall", path=url_path, after=1 << 20, seconds=30, attempts={0})
        sim.set_fault(kind="stall", path=url_path, after=100 << 10, attempts={1, 2, 3})
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            await sim.offer_update(DEVICE, v2.path)
            await sim.wait_for(
                lambda: [e for e in sim.http_log if e.bytes_sent >= 1 << 20], timeout=20
            )
            await sim.stop()
            await sim.start()
            rejoined = await sim.wait_for(
                lambda: record.connections == 2 and record.joined and record, timeout=20
            )
            assert rejoined.join_params is not None
            assert rejoined.join_params["currently_downloading_uuid"] == v2.uuid
            await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
            progress = [e["value"] for e in record.events("fwup_progress")]
            assert progress[-1] == 100 and progress == sorted(progress)
            assert _statuses(record)[-1] == "completed" and "failed" not in _statuses(record)
        finally:
            assert daemon.stop() == 0, daemon.text()
    # resumed at the byte it stopped at, each time
    ranges = [e.range for e in sim.http_log if e.path == url_path]
    assert ranges[0] is None and len(ranges) == 5, ranges
    starts = [int(r.removeprefix("bytes=").removesuffix("-")) for r in ranges[1:] if r]
    assert len(starts) == len(ranges) - 1 and starts[0] >= 1 << 20 and starts == sorted(starts)
    assert image.read_bytes() == reference


async def test_withheld_heartbeat_replies_reconnect_and_keep_the_question(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, v2, image = device_with_update(tmp_path)
    async with HubSim(sim_config()) as sim, LinkClient.connect() as ui:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 120000\n"
        )
        tune_config(cfg, heartbeat_interval_ms=200)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            await ui.wait_for_service(daemon)
            await sim.offer_update(DEVICE, v2.path)
            request_id, _info = await ui.wait_signal("UpdateAvailable")
            sim.config.reply_heartbeats = False
            (reason,) = await ui.wait_signal("Disconnected")
            assert reason == "heartbeat_timeout"
            assert await ui.pending() == [request_id]
            sim.config.reply_heartbeats = True
            await sim.wait_for(lambda: record.connections >= 2 and record.joined, timeout=20)
            assert "heartbeat unanswered" in daemon.text()
            reply = await ui.decide(request_id, "apply")
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
        finally:
            assert daemon.stop() == 0, daemon.text()


def _statuses(record: DeviceRecord) -> list[str]:
    return [str(s["status"]) for s in record.events("status_update")]


def _small_update(tmp_path: Path, rootfs_size: int) -> tuple[Firmware, Firmware, Path]:
    v1 = make_firmware(tmp_path, "1.0.0", rootfs_size)
    v2 = make_firmware(tmp_path, "2.0.0", rootfs_size)
    image = tmp_path / "disk.img"
    install_complete(image, v1)
    return v1, v2, image


async def test_a_slow_hub_inside_the_worst_case_timer_completes(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """1 KiB/s for a ~6 KiB firmware: the worst-case timer (60 s floor) is not reached."""
    _v1, v2, image = _small_update(tmp_path, 4 << 10)
    size = v2.path.stat().st_size
    assert size < 10 << 10
    sim, record, elapsed, _ = await _slow_update(tmp_path, system_bus, logind_mock, image, v2)
    assert elapsed >= size / 1024 * 0.8  # it was slow
    (request,) = sim.http_log
    assert request.completed and request.fault == "slow"
    assert _statuses(record)[-1] == "completed" and "failed" not in _statuses(record)


async def _slow_update(
    tmp_path: Path, bus: PrivateSystemBus, logind: LogindMock, image: Path, update: Firmware
) -> tuple[HubSim, DeviceRecord, float, list[int | bool]]:
    """Offer ``update`` from a hub sending 1 KiB/s, until a reboot or a ``failed`` status;
    (the sim, the device's record, the seconds it took, the Reboot calls after)."""
    async with HubSim(sim_config()) as sim:
        sim.set_fault(kind="slow", rate=1024)
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            started = time.monotonic()
            await sim.offer_update(DEVICE, update.path)
            await until(
                lambda: logind.reboot_calls() or "failed" in _statuses(record),
                120,
                "a reboot or a failed status",
                daemon,
            )
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.5)  # a reboot, were one to follow a failure, would be here
            reboots: list[int | bool] = list(logind.reboot_calls())
        finally:
            assert daemon.stop() == 0, daemon.text()
    return sim, record, elapsed, reboots


@pytest.mark.long
async def test_a_slow_hub_beyond_the_worst_case_timer_fails_cleanly(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """1 KiB/s for a ~100 KiB firmware: the worst-case timer (60 s) stops the download;
    the hub hears why, the running slot is untouched, nothing reboots. (Over a minute:
    ``make test-long``; tests/faults/test_slow_download.py shows the same on a fast clock.)"""
    _v1, v2, image = _small_update(tmp_path, 96 << 10)
    running = image.read_bytes()[A_START:B_START]
    _sim, record, elapsed, reboots = await _slow_update(
        tmp_path, system_bus, logind_mock, image, v2
    )
    assert reboots == []
    (failure,) = [s for s in record.events("status_update") if s["status"] == "failed"]
    assert failure["reason"] == "download failed: worst_case_download_speed_reached"
    assert 59 <= elapsed <= 90
    assert image.read_bytes()[A_START:B_START] == running


async def test_a_hub_clock_an_hour_ahead_is_followed(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """The device clock an hour behind the hub's: refused once (NH1 expired), then
    signed with the time the refusal's Date gave, and joined."""
    _v1, _v2, image = _small_update(tmp_path, 4 << 10)
    config = sim_config()
    config.clock = lambda: time.time() + HOUR
    async with HubSim(config) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
        finally:
            assert daemon.stop() == 0, daemon.text()
    assert [h.status for h in sim.handshakes] == [401, 101]
    assert record.auth is not None
    assert abs(int(record.auth.headers["x-nh-time"]) - (time.time() + HOUR)) < 60
    skew = re.search(r"the hub's clock is ([+-]\d+) s from this device's", daemon.text())
    assert skew is not None and abs(int(skew.group(1)) - HOUR) <= 2  # Date has whole seconds

"""Issue 4 end to end: the hub offers a signed update, the daemon streams it into
the inactive slot of an A/B disk image while holding a logind inhibitor, reports
fwup_progress 0..100, asks logind for exactly one Reboot(false), and -- restarted,
as after the reboot -- joins with the new firmware's UUID."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_dbus.names import INHIBIT_WHAT
from nhlink_devtools.ab_layout import AbLayout
from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    Daemon,
    device_with_update,
    sim_config,
    until,
    write_config,
)


@pytest.mark.parametrize("applier", ["builtin", "fwup"])
async def test_hub_update_applied_inhibited_rebooted_and_reported(
    applier: str, tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1, v2, image = device_with_update(tmp_path)
    layout = AbLayout()
    before = image.read_bytes()

    config = sim_config()
    async with HubSim(config) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image, applier=applier)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            assert record.join_params["nerves_fw_uuid"] == v1.uuid
            assert record.join_params["currently_downloading_uuid"] is None
            # Stall the download half way for a moment, to look at logind meanwhile.
            sim.set_fault(kind="stall", after=2 << 20, seconds=1.0, times=1)
            await sim.offer_update(DEVICE, v2.path)
            inhibitors = await until(
                lambda: [i for i in logind_mock.inhibitors() if i.what == INHIBIT_WHAT],
                15,
                "the inhibitor",
                daemon,
            )
            assert inhibitors[0].mode == "block"

            def progress_done() -> list[int] | None:
                values = [e["value"] for e in record.events("fwup_progress")]
                return values if values and values[-1] == 100 else None

            progress = await until(progress_done, 30, "fwup_progress 100", daemon)
            assert progress[0] == 0 and progress == sorted(set(progress))
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            await asyncio.sleep(0.5)
            assert logind_mock.reboot_calls() == [False]  # exactly one Reboot(false)
            assert not [i for i in logind_mock.inhibitors() if i.what == INHIBIT_WHAT]
            statuses = [s["status"] for s in record.events("status_update")]
            assert statuses == ["received", "started", "completed"]
            (started,) = [s for s in record.events("status_update") if s["status"] == "started"]
            assert started["downloader_network_interface"] == "lo"
        finally:
            assert daemon.stop() == 0, daemon.text()

        kv = read_kv(layout.kv_spec(image))
        assert kv["nerves_fw_active"] == "b"
        assert active_slot_metadata(kv)["nerves_fw_uuid"] == v2.uuid
        after = image.read_bytes()
        # Slot A (the running one) was not touched.
        a0, a1 = 4096 * 512, layout.rootfs_b * 512
        assert after[a0:a1] == before[a0:a1]

        # "After the reboot": the restarted daemon reports the new firmware.
        joins_before = len(record.joins)
        daemon = Daemon(cfg, tmp_path / "daemon2.log", system_bus.address)
        try:
            await sim.wait_for(lambda: len(record.joins) > joins_before, timeout=20)
            assert record.join_params["nerves_fw_uuid"] == v2.uuid
        finally:
            assert daemon.stop() == 0, daemon.text()

"""More of the daemon through its real faces: the hub's reboot event, a bad
configuration file, CheckForUpdate and InstallFile over the bus, the
reconnect_backoff callback (SetReconnectBackoff / Reconnect)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from nhlink_dbus import names
from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus, busctl
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
    PUBLIC_KEY,
    ROOT,
    Daemon,
    device_with_update,
    install_complete,
    make_firmware,
    sim_config,
    until,
    write_config,
)

NHLINKCTL = str(Path(sys.executable).parent / "nhlinkctl")


def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "nhlink.toml"
    bad.write_text(
        '[hub]\nurl = "wss://hub.example.com"\nidentifier = "d"\n'
        '[hub.shared_secret]\nkey = "nhp_k"\nsecret = "s"\n'
        '[firmware]\nkv = "file:/x"\napplier = "magic"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.daemon", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "firmware.applier" in lines[0]
    missing = subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.daemon", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 2 and "none.toml" in missing.stderr


async def test_shipped_example_runs_not_configured_and_installs_a_local_file(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    # examples/nhlink.toml is /etc/nhlink/nhlink.toml of the Debian package: no [hub].
    # Its KV location and device are pointed at a test image (the host's disks stay
    # untouched: the firmware's own KV names /dev/sda as its device).
    v1, v2, image = device_with_update(tmp_path, rootfs_size=1 << 20)
    shipped = (ROOT / "examples" / "nhlink.toml").read_text()
    edits = {
        'kv = "uboot-env:/dev/mmcblk0:0x100000:0x2000"': f'kv = "{LAYOUT.kv_spec(image)}"',
        '#: devpath = "/dev/mmcblk0"': f'devpath = "{image}"',
        "public_keys = []\n#: public_keys": f'public_keys = ["{PUBLIC_KEY}"]\n#: x',
        # Nothing of the host's: its state and archives folders, its udev.
        'dir = "/var/lib/nhlink/archives"': f'dir = "{tmp_path / "archives"}"',
        'state_dir = "/var/lib/nhlink"': f'state_dir = "{tmp_path / "state"}"',
        "[media]\n": "[media]\nenabled = false\n",
        "\nenabled = true\n": "\n",
    }
    for old, new in edits.items():
        assert shipped.count(old) == 1, old
        shipped = shipped.replace(old, new)
    cfg = tmp_path / "nhlink.toml"
    cfg.write_text(shipped)
    daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NHLINKCTL, "--json", *args],
            env=system_bus.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    try:
        await until(lambda: "not configured" in ctl("status").stdout, 20, "the face", daemon)
        status = json.loads(ctl("status").stdout)
        assert status["LastError"] == (
            f"not configured: {cfg} has no [hub] table, so no hub is contacted"
        )
        assert (status["Connected"], status["ServerUrl"], status["State"]) == (False, "", "idle")
        assert status["CurrentFirmware"]["uuid"] == v1.uuid
        for command in ("check", "reconnect"):
            refused = ctl(command)
            assert refused.returncode == 1 and "not configured" in refused.stderr, refused
        # Local firmware needs no hub: verified, applied, rebooted.
        result = await asyncio.to_thread(ctl, "install", str(v2.path))
        assert result.returncode == 0, result.stderr
        await until(logind_mock.reboot_calls, 30, "Reboot after InstallFile", daemon)
    finally:
        assert daemon.stop() == 0, daemon.text()
    assert "not configured" in daemon.text()
    assert active_slot_metadata(read_kv(LAYOUT.kv_spec(image)))["nerves_fw_uuid"] == v2.uuid


async def test_hub_reboot_event_pushes_rebooting_then_reboots(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1 = make_firmware(tmp_path, "1.0.0", rootfs_size=1 << 20)
    image = tmp_path / "disk.img"
    install_complete(image, v1)
    async with HubSim(sim_config()) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            await sim.push(DEVICE, "reboot", {})
            await until(lambda: record.events("rebooting"), 10, "the rebooting push", daemon)
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            assert logind_mock.reboot_calls() == [False]
        finally:
            assert daemon.stop() == 0, daemon.text()


async def test_check_install_and_backoff_over_the_bus(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1 = make_firmware(tmp_path, "1.0.0", rootfs_size=1 << 20)
    v2 = make_firmware(tmp_path, "2.0.0", rootfs_size=1 << 20)
    image = tmp_path / "disk.img"
    install_complete(image, v1)
    env = system_bus.env
    async with HubSim(sim_config()) as sim:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 60000\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)

            def ctl_sync(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [NHLINKCTL, "--json", *args],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )

            async def ctl(*args: str) -> subprocess.CompletedProcess[str]:
                # Off the loop: the simulator answers the hub side on this very loop.
                return await asyncio.to_thread(ctl_sync, *args)

            await until(lambda: ctl_sync("status").returncode == 0, 10, "the bus face", daemon)
            # CheckForUpdate: nothing yet, then the offered update enters the decision path.
            assert json.loads((await ctl("check")).stdout)["update_available"] in (0, False)
            await sim.offer_update(DEVICE, v2.path, push=False)
            answer = json.loads((await ctl("check")).stdout)
            assert answer["update_available"] in (1, True) and answer["uuid"] == v2.uuid
            pending = json.loads((await ctl("pending")).stdout)
            assert [p["info"]["uuid"] for p in pending] == [v2.uuid]
            # SetReconnectBackoff is the reconnect_backoff callback: the next reconnects
            # wait 150 ms then 300 ms (the last value repeats); Reconnect drops the link.
            await asyncio.to_thread(
                busctl,
                system_bus,
                "call",
                names.BUS_NAME,
                names.OBJECT_PATH,
                names.INTERFACE,
                "SetReconnectBackoff",
                "at",
                "2",
                "150",
                "300",
            )
            status = json.loads((await ctl("status")).stdout)
            assert status["ReconnectBackoff"] == [150, 300]
            connections = record.connections
            await asyncio.to_thread(
                busctl,
                system_bus,
                "call",
                names.BUS_NAME,
                names.OBJECT_PATH,
                names.INTERFACE,
                "Reconnect",
            )
            await sim.wait_for(
                lambda: record.connections > connections and record.joined, timeout=10
            )
            # InstallFile: a local .fw as an fd, verified, then applied (supersedes the
            # pending hub offer) and rebooted.
            bogus = tmp_path / "bogus.fw"
            bogus.write_bytes(b"not firmware")
            refused = await ctl("install", str(bogus))
            assert (
                refused.returncode != 0 and "not valid firmware" in refused.stderr + refused.stdout
            )
            result = await ctl("install", str(v2.path))
            assert result.returncode == 0, result.stderr
            await until(logind_mock.reboot_calls, 30, "Reboot after InstallFile", daemon)
        finally:
            assert daemon.stop() == 0, daemon.text()
    kv = read_kv(LAYOUT.kv_spec(image))
    assert kv["nerves_fw_active"] == "b"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == v2.uuid

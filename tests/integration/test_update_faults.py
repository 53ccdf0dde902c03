"""Issue 4 faults through the real daemon: failed updates are reported to the hub
(``status_update`` ``failed`` + reason) and never reboot or touch the running slot;
interrupted downloads resume with Range (or restart after a 200) and give the same
image."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.fw_builder import create_fw
from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
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


def _resigned_with_wrong_key(fw: Firmware, out: Path) -> Path:
    """Same content, signed with the test-only *wrong* key."""
    from nhlink_devtools.fw_builder import load_private_key  # noqa: PLC0415
    from tests.integration.daemon_helpers import FIXTURES  # noqa: PLC0415

    src = zipfile.ZipFile(fw.path)
    conf = src.read("meta.conf").decode()
    body = conf[conf.index('mbr "mbr-a"') :]
    meta = {}
    for line in conf.splitlines():
        if line.startswith("meta-"):
            key, _, value = line.partition("=")
            meta[key] = value.strip('"')
    key = load_private_key((FIXTURES / "test-only-wrong-key.priv").read_text())
    create_fw(out, meta, {"rootfs.img": src.read("data/rootfs.img")}, body, key, compresslevel=1)
    return out


def _corrupted(fw: Firmware, out: Path) -> Path:
    """One byte of rootfs.img flipped; the signature (over meta.conf) still verifies."""
    src = zipfile.ZipFile(fw.path)
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "data/rootfs.img":
                data = data[:3000000] + bytes([data[3000000] ^ 1]) + data[3000001:]
            dst.writestr(info.filename, data, info.compress_type)
    return out


async def test_failures_are_reported_and_never_reboot(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1, v2, image = device_with_update(tmp_path)
    running_slot = image.read_bytes()[A_START:B_START]
    cases = [
        (
            _resigned_with_wrong_key(v2, tmp_path / "wrong.fw"),
            "Firmware archive's meta.conf fails digital signature verification.",
            None,
        ),
        (
            _corrupted(v2, tmp_path / "corrupt.fw"),
            "raw_write detected blake2b mismatch on 'rootfs.img'",
            None,
        ),
        (v2.path, "download failed: http_error 503", {"kind": "status", "status": 503}),
        (v2.path, "download failed: http_error 416", {"kind": "416"}),
        (
            v2.path,
            "download failed: max_disconnects_reached",
            {"kind": "cut", "after": 1000},
        ),
    ]
    config = sim_config()
    async with HubSim(config) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            for n, (fw, reason, fault) in enumerate(cases, 1):
                sim.clear_faults()
                if fault:
                    sim.set_fault(**fault)
                await sim.offer_update(DEVICE, fw)

                def reported(count: int = n) -> list[str] | None:
                    statuses = record.events("status_update")
                    found = [e["reason"] for e in statuses if e["status"] == "failed"]
                    return found if len(found) >= count else None

                reasons = await until(reported, 30, f"failed status #{n}", daemon)
                assert reasons[n - 1] == reason
            # 2.9+ statuses: each offer received, then failed (penalty box on the hub).
            statuses = [e["status"] for e in record.events("status_update")]
            assert [s for s in statuses if s != "started"] == ["received", "failed"] * len(cases)
            await asyncio.sleep(0.5)
            assert logind_mock.reboot_calls() == []
        finally:
            assert daemon.stop() == 0, daemon.text()
    kv = read_kv(LAYOUT.kv_spec(image))
    assert kv["nerves_fw_active"] == "a"
    assert active_slot_metadata(kv)["nerves_fw_uuid"] == v1.uuid
    assert image.read_bytes()[A_START:B_START] == running_slot


async def test_interrupted_downloads_resume_to_the_same_image(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    v1 = make_firmware(tmp_path, "1.0.0")
    v2 = make_firmware(tmp_path, "2.0.0")
    reference = tmp_path / "reference.img"
    install_complete(reference, v1)
    import subprocess  # noqa: PLC0415

    from tests.integration.daemon_helpers import NHLINK_FWUP, PUBLIC_KEY  # noqa: PLC0415

    subprocess.run(
        [
            NHLINK_FWUP,
            "-a",
            "-q",
            "-d",
            str(reference),
            "-t",
            "upgrade",
            "-i",
            str(v2.path),
            "--public-key",
            PUBLIC_KEY,
        ],
        check=True,
    )
    config = sim_config()
    for scenario in ("cuts", "full-body-for-range"):
        image = tmp_path / f"disk-{scenario}.img"
        install_complete(image, v1)
        async with HubSim(config) as sim:
            url_path = "/firmware/" + v2.path.name
            if scenario == "cuts":
                for attempt, after in enumerate((1, 65536, 1_500_000)):
                    sim.set_fault(kind="cut", after=after, attempts=frozenset({attempt}))
            else:
                sim.set_fault(kind="cut", after=200_000, attempts=frozenset({0}))
                sim.set_fault(kind="200", attempts=frozenset({1}))
            cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
            daemon = Daemon(cfg, tmp_path / f"daemon-{scenario}.log", system_bus.address)
            try:
                await sim.wait_for_join(DEVICE, timeout=20)
                await sim.offer_update(DEVICE, v2.path)
                await until(logind_mock.reboot_calls, 30, "Reboot", daemon)
            finally:
                assert daemon.stop() == 0, daemon.text()
            ranges = [e.range for e in sim.http_log if e.path == url_path]
            if scenario == "cuts":
                assert ranges == [None, "bytes=1-", "bytes=65537-", "bytes=1565537-"]
            else:
                assert ranges[:2] == [None, "bytes=200000-"] and len(ranges) == 2
        logind_mock.clear_calls()
        assert image.read_bytes() == reference.read_bytes()

"""Local faults through the real daemon: a target too short or full, read-only or
vanishing mid-write; logind missing or refusing ``Reboot`` or ``Inhibit``.

Every failed write is reported to the hub (``status_update`` ``failed`` with fwup's words) and
on the bus (``UpdateFinished(..., false, ...)``), never reboots and never touches
the running slot. Loop devices are shared with other work on the machine: each
test takes a free one (``losetup -f --show``) and always detaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from dbus_next.constants import MessageType

from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.ab_layout import AbLayout
from nhlink_devtools.hubsim import DeviceRecord, HubSim
from tests.faults.helpers import LinkClient
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
    NHLINK_FWUP,
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
MiB = 1 << 20


@contextlib.contextmanager
def loop_device(backing: Path, *, read_only: bool = False) -> Iterator[Path]:
    """A free loop device on ``backing`` (``losetup -f --show``), always detached."""
    argv = ["losetup", "-f", "--show", *(["-r"] if read_only else []), str(backing)]
    device = Path(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)


@contextlib.contextmanager
def tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``folder``: a disk that fills up."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def _answer(ui: LinkClient, decision: str) -> None:
    request_id, _info = await ui.wait_signal("UpdateAvailable")
    reply = await ui.decide(request_id, decision)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body


async def _update_fails(
    tmp_path: Path,
    bus: PrivateSystemBus,
    logind: LogindMock,
    *,
    image: Path,
    kv_image: Path | None = None,
    firmware: Firmware,
    applier: str = "builtin",
    fwup_path: Path | None = None,
    during: object = None,
) -> str:
    """Offer ``firmware`` to a daemon writing ``image``; the failure the hub heard."""
    async with HubSim(sim_config()) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image, applier=applier)
        if kv_image is not None:
            cfg.write_text(cfg.read_text().replace(LAYOUT.kv_spec(image), LAYOUT.kv_spec(kv_image)))
        if fwup_path is not None:
            text = cfg.read_text().replace(
                f'fwup_path = "{NHLINK_FWUP}"', f'fwup_path = "{fwup_path}"'
            )
            cfg.write_text(text)
        daemon = Daemon(cfg, tmp_path / "daemon.log", bus.address, export_bus=True)
        try:
            async with LinkClient.connect() as ui:
                record = await sim.wait_for_join(DEVICE, timeout=20)
                await ui.wait_for_service(daemon)
                if during is not None:
                    sim.set_fault(kind="stall", after=1 * MiB, seconds=2, times=1)
                await sim.offer_update(DEVICE, firmware.path)
                await _answer(ui, "apply")
                if during is not None:
                    await sim.wait_for(lambda: [e for e in sim.http_log if e.bytes_sent >= MiB])
                    during()  # type: ignore[operator]
                failures = await sim.wait_for(lambda: _failures(record), timeout=60)
                _request_id, success, message = await ui.wait_signal("UpdateFinished")
                assert success is False and message in failures[0]
                assert await ui.get("State") == "failed"
                # Ten times the test config's reboot delay (300 ms): no reboot comes.
                await asyncio.sleep(3.0)
                assert logind.reboot_calls() == []
        finally:
            assert daemon.stop() == 0, daemon.text()
    assert "Traceback" not in daemon.text()
    (reason,) = failures
    return reason


def _failures(record: DeviceRecord) -> list[str]:
    """The reasons of the ``failed`` statuses the device sent (nerves_hub_link 2.9+)."""
    return [str(s["reason"]) for s in record.events("status_update") if s["status"] == "failed"]


def _running_slot(image: Path) -> bytes:
    with image.open("rb") as fh:
        fh.seek(A_START)
        return fh.read(B_START - A_START)


async def test_a_target_cut_short_by_max_size_fails_cleanly(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """fwup's --max-size: the device ends before slot B (external applier)."""
    _v1, v2, image = device_with_update(tmp_path)
    running = _running_slot(image)
    wrapper = tmp_path / "fwup-short"
    wrapper.write_text(
        f'#!/bin/sh\nexec "{NHLINK_FWUP}" --max-size {LAYOUT.rootfs_b + 1024} "$@"\n'
    )
    wrapper.chmod(0o755)
    status = await _update_fails(
        tmp_path,
        system_bus,
        logind_mock,
        image=image,
        firmware=v2,
        applier="fwup",
        fwup_path=wrapper,
    )
    assert "beyond" in status or "size" in status, status
    assert _running_slot(image) == running


async def test_a_short_block_device_fails_cleanly(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """A loop device that ends 1 MiB into slot B (built-in applier)."""
    _v1, v2, image = device_with_update(tmp_path)
    short = tmp_path / "short.img"
    with image.open("rb") as src, short.open("wb") as dst:
        dst.write(src.read(B_START + MiB))
    running = _running_slot(short)
    with loop_device(short) as device:
        reason = await _update_fails(tmp_path, system_bus, logind_mock, image=device, firmware=v2)
    assert reason.endswith("Check media size."), reason  # fwup's words past the end
    assert _running_slot(short) == running
    assert active_slot_metadata(read_kv(LAYOUT.kv_spec(short)))["nerves_fw_version"] == "1.0.0"


async def test_a_full_disk_fails_cleanly(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """The image lives on a file system that fills up while slot B is written."""
    v1, v2, _ = device_with_update(tmp_path)
    with tmpfs(tmp_path / "small", 7 * MiB) as folder:
        image = folder / "disk.img"
        install_complete(image, v1)  # slot A: 4 MiB of the 7
        running = _running_slot(image)
        status = await _update_fails(tmp_path, system_bus, logind_mock, image=image, firmware=v2)
        assert "Check media size" in status, status  # fwup's words for ENOSPC
        assert _running_slot(image) == running
        assert read_kv(LAYOUT.kv_spec(image))["nerves_fw_active"] == "a"


async def test_a_read_only_target_fails_and_stays_unchanged(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, v2, image = device_with_update(tmp_path)
    before = image.read_bytes()
    with loop_device(image, read_only=True) as device:
        status = await _update_fails(tmp_path, system_bus, logind_mock, image=device, firmware=v2)
    assert "Check media size" in status, status  # fwup's words for any failed write
    assert image.read_bytes() == before


async def test_a_target_vanishing_mid_write_fails_cleanly(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    """The medium goes away while slot B is written (the loop device's backing file
    is emptied and its capacity re-read: every later write fails)."""
    _v1, v2, image = device_with_update(tmp_path)
    with loop_device(image) as device:

        def vanish() -> None:
            image.write_bytes(b"")
            subprocess.run(["losetup", "-c", str(device)], check=True)

        # whatever reads or writes the gone medium first says why (a failed read, a
        # failed write, or no A/B layout found any more): any of them, reported
        await _update_fails(
            tmp_path, system_bus, logind_mock, image=device, firmware=v2, during=vanish
        )


# -- logind ------------------------------------------------------------------------------


async def _apply(
    tmp_path: Path,
    bus: PrivateSystemBus,
    *,
    reboot_command: list[str] | None = None,
    logind: LogindMock | None = None,
) -> tuple[Daemon, list[str], str, AbLayout]:
    """An update to completion, then the reboot: through ``logind`` when given, else
    through ``reboot_command``, else failed (an Error). Returns (daemon, Error
    signals, State after, layout)."""
    v1 = make_firmware(tmp_path, "1.0.0", 64 << 10)
    v2 = make_firmware(tmp_path, "2.0.0", 64 << 10)
    image = tmp_path / "disk.img"
    install_complete(image, v1)
    async with HubSim(sim_config()) as sim:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image)
        if reboot_command is not None:
            text = cfg.read_text().replace(
                "retries = 1\n", f"retries = 1\ncommand = {json.dumps(reboot_command)}\n"
            )
            cfg.write_text(text)
        daemon = Daemon(cfg, tmp_path / "daemon.log", bus.address, export_bus=True)
        try:
            async with LinkClient.connect() as ui:
                await sim.wait_for_join(DEVICE, timeout=20)
                await ui.wait_for_service(daemon)
                await sim.offer_update(DEVICE, v2.path)
                await _answer(ui, "apply")
                _request_id, success, _message = await ui.wait_signal("UpdateFinished")
                assert success is True
                await ui.wait_signal("RebootScheduled")
                if logind is not None:
                    await until(logind.reboot_calls, 30, "Reboot", daemon)
                elif reboot_command is None:
                    await ui.wait(
                        lambda: [e for e in ui.of("Error") if "reboot" in e[0]], 30, "Error"
                    )
                else:
                    await until(lambda: "reboot requested with" in daemon.text(), 30, "", daemon)
                errors = [str(e[0]) for e in ui.of("Error")]
                state = str(await ui.get("State"))
        finally:
            assert daemon.stop() == 0, daemon.text()
    assert active_slot_metadata(read_kv(LAYOUT.kv_spec(image)))["nerves_fw_uuid"] == v2.uuid
    return daemon, errors, state, LAYOUT


async def test_without_logind_the_update_applies_and_the_failed_reboot_is_reported(
    tmp_path: Path, system_bus: PrivateSystemBus
) -> None:
    daemon, errors, state, _ = await _apply(tmp_path, system_bus)
    assert "applying without it" in daemon.text()  # no inhibitor to be had
    (error,) = errors
    assert error.startswith("reboot failed: logind: org.freedesktop.DBus.Error.ServiceUnknown")
    assert state == "rebooting"  # never a second update into the slot that will boot


async def test_without_logind_the_fallback_command_reboots(
    tmp_path: Path, system_bus: PrivateSystemBus
) -> None:
    marker = tmp_path / "rebooted"
    daemon, errors, _state, _ = await _apply(
        tmp_path, system_bus, reboot_command=["/bin/touch", str(marker)]
    )
    assert marker.exists() and errors == []
    assert "falling back to /bin/touch" in daemon.text()


async def test_logind_refusing_reboot_is_retried_then_falls_back(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    logind_mock.fail_reboot()
    marker = tmp_path / "rebooted"
    _daemon, errors, _state, _ = await _apply(
        tmp_path, system_bus, reboot_command=["/bin/touch", str(marker)]
    )  # waits for the fallback
    assert logind_mock.reboot_calls() == [False, False]  # retries = 1 in the test config
    assert marker.exists() and errors == []


async def test_logind_refusing_reboot_without_fallback_is_reported(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    logind_mock.fail_reboot()
    _daemon, errors, state, _ = await _apply(tmp_path, system_bus)
    (error,) = errors
    assert error == (
        "reboot failed: logind: org.freedesktop.login1.OperationInProgress: "
        "mock logind refuses to reboot"
    )
    assert state == "rebooting"


async def test_logind_refusing_the_inhibitor_still_applies_and_reboots(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    logind_mock.fail_inhibit()
    daemon, errors, _state, _ = await _apply(tmp_path, system_bus, logind=logind_mock)
    assert (
        "logind refused the inhibitor lock: org.freedesktop.DBus.Error.AccessDenied: "
        "mock logind refuses the inhibitor lock; applying without it"
    ) in daemon.text()
    assert logind_mock.reboot_calls() == [False] and errors == []

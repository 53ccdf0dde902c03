"""Secrets never leave the daemon: the NH1 secret (and any NH1 token), the device's
private key, the firmware and archive URLs' signatures, and ``[firmware.fwup_env]``
values appear in no log line, no signal, no property, no error reply and no
``nhlinkctl`` output.

One full run exercises the paths of the fault suites: NH1 and mutual TLS
connections, a channel error, a hub restart, a closed socket, withheld heartbeats;
an update that fails (HTTP 503), one interrupted and resumed, rescheduled, then
applied and rebooted; an archive offered, downloaded and verified; ``InstallFile``
of a file that is not firmware; CheckForUpdate, Reconnect, SetReconnectBackoff and
refused calls. Recorded: the daemon's output at ``--log-level debug`` (what the
journal would hold), ``dbus-monitor --system`` of all traffic (signals,
properties, replies, errors), and the output of every ``nhlinkctl`` command.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from dbus_next.constants import MessageType

from nhlink_devtools.hubsim import HubSim, HubSimConfig
from nhlink_devtools.hubsim.certs import issue_device_cert, load_or_generate_pki
from tests.faults.helpers import LinkClient, tune_config
from tests.harness import LogindMock, PrivateSystemBus
from tests.integration.daemon_helpers import (
    DEVICE,
    PRODUCT_SECRET,
    PUBLIC_KEY,
    Daemon,
    device_with_update,
    make_firmware,
    sim_config,
    until,
    write_config,
)
from tests.integration.test_bus_e2e import Monitor

FWUP_ENV_SECRET = "fwupEnvSecretValue-8f3a1c"
NH1_TOKEN_PREFIX = "SFMyNTY."  # every NH1 signature starts so (core/nh1.py)
NHLINKCTL = [sys.executable, "-m", "nhlink_dbus.ctl"]


async def _ctl(bus: PrivateSystemBus, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *NHLINKCTL,
        *args,
        env=bus.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return out.decode(errors="replace")


async def _nh1_run(
    tmp_path: Path, bus: PrivateSystemBus, logind: LogindMock, outputs: list[str]
) -> tuple[Daemon, list[str]]:
    """Every path, with NH1; returns the daemon and what must not leak from it."""
    _v1, v2, image = device_with_update(tmp_path, rootfs_size=256 << 10)
    (tmp_path / "archive").mkdir()
    archive = make_firmware(tmp_path / "archive", "9.9.9", 8 << 10)
    config = sim_config()
    config.archive_public_keys = [PUBLIC_KEY]
    extra = (
        f'[firmware.fwup_env]\nNHLINK_TEST_SECRET = "{FWUP_ENV_SECRET}"\n'
        "[decisions]\ntimeout_ms = 60000\n"
    )
    (tmp_path / "archives").mkdir(exist_ok=True)  # write_config's [archives] dir
    watch = await asyncio.create_subprocess_exec(
        *NHLINKCTL,
        "--json",
        "watch",
        env=bus.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with HubSim(config) as sim, LinkClient.connect() as ui:
        cfg = write_config(tmp_path, ws_url=sim.ws_url, image=image, extra=extra)
        tune_config(cfg, heartbeat_interval_ms=300)
        daemon = Daemon(cfg, tmp_path / "daemon.log", bus.address, export_bus=True)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            await ui.wait_for_service(daemon)
            for args in (["status"], ["--json", "status"], ["pending"], ["check"]):
                outputs.append(await _ctl(bus, *args))
            outputs.append(await _ctl(bus, "backoff", "100", "200"))

            # a failed update (503), with its Error, LastError and hub status
            sim.set_fault(kind="status", status=503)
            await sim.offer_update(DEVICE, v2.path)
            request_id, _ = await ui.wait_signal("UpdateAvailable")
            outputs.append(await _ctl(bus, "--json", "pending"))
            outputs.append(await _ctl(bus, "decide", request_id, "apply"))
            await ui.wait_signal("UpdateFinished")
            outputs.append(await _ctl(bus, "status"))
            sim.clear_faults()

            # connection trouble: channel error, closed socket, a hub restart, no heartbeats
            await sim.channel_error(DEVICE, "phx_error")
            await sim.wait_for(lambda: len(record.joins) >= 2, timeout=20)
            await sim.close_device(DEVICE, 1000)
            await sim.wait_for(lambda: record.connections >= 2 and record.joined, timeout=20)
            await sim.stop()
            await sim.start()
            await sim.wait_for(lambda: record.connections >= 3 and record.joined, timeout=20)
            sim.config.reply_heartbeats = False
            await ui.wait(lambda: any("heartbeat" in s[0] for s in ui.of("Disconnected")), 20, "")
            sim.config.reply_heartbeats = True
            await sim.wait_for(lambda: record.connections >= 4 and record.joined, timeout=20)
            outputs.append(await _ctl(bus, "reconnect"))
            await sim.wait_for(lambda: record.connections >= 5 and record.joined, timeout=20)

            # an archive: offered, downloaded (cut once, resumed), verified, ready
            sim.set_fault(kind="cut", after=2000, times=1)
            await sim.offer_archive(DEVICE, archive.path)
            archive_id, _ = await ui.wait_signal("ArchiveAvailable")
            outputs.append(await _ctl(bus, "decide", archive_id, "download"))
            await ui.wait_signal("ArchiveReady", timeout=60)

            # refused calls and a file that is not firmware
            outputs.append(await _ctl(bus, "decide", "u-nope-1", "apply"))
            outputs.append(await _ctl(bus, "decide", request_id, "apply"))  # decided already
            junk = tmp_path / "junk.fw"
            junk.write_bytes(b"PK\x03\x04 not really")
            outputs.append(await _ctl(bus, "install", str(junk)))

            # the update again: interrupted and resumed, rescheduled, then applied
            sim.set_fault(kind="cut", after=100_000, times=1)  # of ~260 KB
            await sim.offer_update(DEVICE, v2.path)
            request_id, _ = await ui.wait_signal("UpdateAvailable", count=2)
            outputs.append(await _ctl(bus, "decide", request_id, "reschedule", "--delay", "300"))
            await ui.wait_signal("UpdateAvailable", count=3)
            reply = await ui.decide(request_id, "apply")
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            assert (await ui.wait_signal("UpdateFinished", count=2, timeout=60))[1] is True
            await until(logind.reboot_calls, 30, "Reboot", daemon)
            outputs.append(await _ctl(bus, "--json", "status"))
            token = sim.files.token
        finally:
            assert daemon.stop() == 0, daemon.text()
            watch.terminate()
            outputs.append((await watch.communicate())[0].decode(errors="replace"))
    failed = [s for s in record.events("status_update") if s["status"] == "failed"]
    assert len(failed) == 1  # the 503, and only it
    secrets = [PRODUCT_SECRET, NH1_TOKEN_PREFIX, token, "X-Amz-", FWUP_ENV_SECRET]
    return daemon, [*secrets, sim.http_url]  # the last: for the bus only (logs may say it)


async def _tls_run(tmp_path: Path, bus: PrivateSystemBus) -> tuple[Daemon, list[str]]:
    """Mutual TLS: connect, join, be dropped, reconnect."""
    pki = load_or_generate_pki(tmp_path / "pki")
    device = issue_device_cert(pki.device_ca, DEVICE, tmp_path / "device")
    (tmp_path / "tls").mkdir()
    _v1, _v2, image = device_with_update(tmp_path / "tls", rootfs_size=64 << 10)
    async with HubSim(HubSimConfig(tls=True, cert_dir=pki.folder, health_check=False)) as sim:
        cfg = write_config(tmp_path / "tls", ws_url=sim.ws_url, image=image)
        text = cfg.read_text()
        start = text.index("[hub.shared_secret]")
        end = text.index("[firmware]")
        cfg.write_text(
            text[:start]
            + f'[hub.tls]\ncertfile = "{device.cert}"\nkeyfile = "{device.key}"\n'
            + f'cafile = "{pki.ca.cert}"\n\n'
            + text[end:]
        )
        daemon = Daemon(cfg, tmp_path / "tls" / "daemon.log", bus.address)
        try:
            record = await sim.wait_for_join(DEVICE, timeout=20)
            sim.break_connection(DEVICE)
            await sim.wait_for(lambda: record.connections >= 2 and record.joined, timeout=20)
        finally:
            assert daemon.stop() == 0, daemon.text()
    key_lines = device.key.read_text().splitlines()[1:-1]  # the base64 body of the PEM
    return daemon, [line for line in key_lines if len(line) >= 16]


async def test_no_secret_in_logs_signals_properties_replies_or_nhlinkctl(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    monitor = Monitor(system_bus, tmp_path / "bus.txt", "")  # every message on the bus
    outputs: list[str] = []
    try:
        nh1, nh1_secrets = await _nh1_run(tmp_path, system_bus, logind_mock, outputs)
        tls, tls_secrets = await _tls_run(tmp_path, system_bus)
    finally:
        monitor.stop()
    recording = monitor.text()
    ctl = "\n".join(outputs)
    # the run did what it says (so the greps below look at something)
    for member in ("UpdateFinished", "ArchiveReady", "Error", "Disconnected", "DecisionMade"):
        assert f"member={member}" in recording, member
    assert "Error.UnknownRequest" in recording and "Error.InvalidArgument" in recording
    assert "the file is not valid firmware" in ctl and '"State"' in ctl
    assert json.loads(outputs[1])["DeviceIdentifier"] == DEVICE
    for name, text in (
        ("daemon log (NH1)", nh1.text()),
        ("daemon log (mutual TLS)", tls.text()),
        ("dbus-monitor recording", recording),
        ("nhlinkctl output", ctl),
    ):
        for secret in [*nh1_secrets[:-1], *tls_secrets]:
            assert secret not in text, f"{secret!r} in the {name}"
    # The bus carries no download URL at all, not even without its query.
    for text in (recording, ctl):
        assert nh1_secrets[-1] not in text and "/firmware/" not in text

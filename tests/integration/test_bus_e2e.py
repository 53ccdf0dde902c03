"""Issue 5 end to end: the daemon on a private system bus that loads the shipped
policy, nhlink-hub-sim, python-dbusmock's logind, and real busctl/dbus-monitor/gdbus.

An update pushed by the hub appears as ``UpdateAvailable``; uid 65534 is refused;
a reschedule re-offers the same request; ``Decide apply`` by root applies it
(progress, ``UpdateFinished`` true, ``RebootScheduled``, logind ``Reboot``); two
listeners see ``DecisionMade``; without an answer the default applies after
``DecisionTimeout``; the whole bus recording holds no URL, query or secret; the
live introspection equals the committed file."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from nhlink_dbus import names
from nhlink_devtools.hubsim import HubSim
from tests.bus.test_introspection import CONTRACT, canonical
from tests.harness import LogindMock, PrivateSystemBus, busctl
from tests.integration.daemon_helpers import (
    DEVICE,
    PRODUCT_SECRET,
    Daemon,
    device_with_update,
    sim_config,
    until,
    write_config,
)

NOBODY = 65534


class Monitor:
    """``dbus-monitor --system`` for our interface's signals (root may monitor)."""

    def __init__(self, bus: PrivateSystemBus, path: Path, match: str | None = None) -> None:
        # match "" = every message on the bus (dbus-monitor becomes a monitor)
        rule = [] if match == "" else [match or f"type='signal',interface='{names.INTERFACE}'"]
        self.path = path
        self._fh = path.open("wb")
        self.proc = subprocess.Popen(
            ["dbus-monitor", "--system", *rule],
            env=bus.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self._fh.close()


def _call(
    bus: PrivateSystemBus, method: str, *args: str, as_user: int | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return busctl(
        bus,
        "call",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
        method,
        *args,
        as_user=as_user,
        check=check,
        json=True,
    )


def _decide_error(bus: PrivateSystemBus, rid: str, decision: str, delay: int = 0) -> str:
    """dbus-send prints the error name (busctl shows only the message)."""
    result = subprocess.run(
        [
            "dbus-send",
            "--system",
            "--print-reply",
            f"--dest={names.BUS_NAME}",
            names.OBJECT_PATH,
            f"{names.INTERFACE}.Decide",
            f"string:{rid}",
            f"string:{decision}",
            f"uint64:{delay}",
        ],
        env=bus.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    return result.stderr


def _pending(bus: PrivateSystemBus) -> list[list[object]]:
    return json.loads(_call(bus, "GetPendingRequests").stdout)["data"][0]  # type: ignore[no-any-return]


async def test_decisions_over_the_bus(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, v2, image = device_with_update(tmp_path)
    config = sim_config()
    record_all = Monitor(system_bus, tmp_path / "all.txt", "")  # all traffic
    listener_a = Monitor(system_bus, tmp_path / "a.txt")
    listener_b = Monitor(system_bus, tmp_path / "b.txt")
    async with HubSim(config) as sim:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 60000\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            await sim.wait_for_join(DEVICE, timeout=20)
            await until(
                lambda: _call(system_bus, "GetPendingRequests", check=False).returncode == 0,
                10,
                "the service on the bus",
                daemon,
            )
            live = subprocess.run(
                [
                    "gdbus",
                    "introspect",
                    "--system",
                    "--dest",
                    names.BUS_NAME,
                    "--object-path",
                    names.OBJECT_PATH,
                    "--xml",
                ],
                env=system_bus.env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert canonical(live) == canonical(CONTRACT.read_text())

            http_url = sim.http_url
            payload = await sim.offer_update(DEVICE, v2.path)
            assert "X-Amz-Signature" in payload["firmware_url"]
            await until(
                lambda: "member=UpdateAvailable" in listener_a.text(), 10, "UpdateAvailable", daemon
            )
            pending = _pending(system_bus)
            assert len(pending) == 1 and pending[0][1] == "update"
            rid = str(pending[0][0])
            assert pending[0][2]["uuid"]["data"] == v2.uuid  # type: ignore[index]

            refused = _call(
                system_bus, "Decide", "sst", rid, "apply", "0", as_user=NOBODY, check=False
            )
            assert refused.returncode != 0 and "Access denied" in refused.stderr + refused.stdout
            assert [str(p[0]) for p in _pending(system_bus)] == [rid]  # nothing changed

            assert "org.nerveshub.Link1.Error.InvalidDecision" in _decide_error(
                system_bus, rid, "download"
            )
            assert "org.nerveshub.Link1.Error.InvalidArgument" in _decide_error(
                system_bus, rid, "apply", 5
            )
            assert "org.nerveshub.Link1.Error.UnknownRequest" in _decide_error(
                system_bus, "nope", "apply"
            )

            _call(system_bus, "Decide", "sst", rid, "reschedule", "400")
            await until(
                lambda: listener_a.text().count("member=UpdateAvailable") >= 2,
                10,
                "the re-offer after the reschedule",
                daemon,
            )
            assert [str(p[0]) for p in _pending(system_bus)] == [rid]  # same request id

            _call(system_bus, "Decide", "sst", rid, "apply", "0")
            await until(
                lambda: "member=UpdateFinished" in listener_a.text(), 30, "UpdateFinished", daemon
            )
            await until(logind_mock.reboot_calls, 10, "Reboot", daemon)
            assert logind_mock.reboot_calls() == [False]
            # the first decision won
            assert "Error.UnknownRequest" in _decide_error(system_bus, rid, "apply")
        finally:
            assert daemon.stop() == 0, daemon.text()
            for m in (record_all, listener_a, listener_b):
                m.stop()
    a, b = listener_a.text(), listener_b.text()
    for text in (a, b):
        assert text.count("member=DecisionMade") == 2  # reschedule, then apply
    assert "member=FwupProgress" in a and "uint32 100" in a
    assert "member=RebootScheduled" in a
    finished = a[a.index("member=UpdateFinished") :]
    assert "boolean true" in finished.split("signal", 1)[0]
    everything = record_all.text()
    assert "member=Decide" in everything and "member=FwupProgress" in everything
    # No download URL (host of the file server, path, signed query) and no secret.
    for secret in (http_url, "/firmware/", "X-Amz", "Signature=", PRODUCT_SECRET):
        assert secret not in everything, secret


async def test_no_answer_applies_the_default_after_the_timeout(
    tmp_path: Path, system_bus: PrivateSystemBus, logind_mock: LogindMock
) -> None:
    _v1, v2, image = device_with_update(tmp_path)
    config = sim_config()
    monitor = Monitor(system_bus, tmp_path / "signals.txt")
    async with HubSim(config) as sim:
        cfg = write_config(
            tmp_path, ws_url=sim.ws_url, image=image, extra="[decisions]\ntimeout_ms = 700\n"
        )
        daemon = Daemon(cfg, tmp_path / "daemon.log", system_bus.address, export_bus=True)
        try:
            await sim.wait_for_join(DEVICE, timeout=20)
            await sim.offer_update(DEVICE, v2.path)
            await until(logind_mock.reboot_calls, 30, "Reboot after the default", daemon)
        finally:
            assert daemon.stop() == 0, daemon.text()
            monitor.stop()
    text = monitor.text()
    decided = text[text.index("member=DecisionMade") :].split("signal", 1)[0]
    assert 'string "apply"' in decided and 'string "timeout"' in decided

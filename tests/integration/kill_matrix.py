"""The kill matrix's harness: one device, its hub, its kiosk and its daemon, across
SIGKILLs and restarts (tests/integration/test_kill_matrix.py).

A :class:`KillState` is one row of the matrix: how to bring the daemon to the
state (``reach``, which returns the request id in flight) and what it promises
after a SIGKILL there and a restart (``promise``). Every state is reached by
something the test can see happen, never by waiting a while: a D-Bus signal,
a status the hub received, the hub's file server holding a download at a known
byte (a ``stall`` fault), the applier's progress, logind's ``Reboot`` call, or
the marker of :func:`hold_ok_applier` (an fwup that finished and holds its
``OK`` back).

Adding a state is one ``KillState`` in ``test_kill_matrix.STATES`` and, if no
existing one fits, a ``reach`` and a ``promise``: the archive download row
(``archive_downloading``, ``archive_never_partial``) is one. A copy from media
would be the same with the copy held instead of the download (a pause hook of
the media path, as ``tests/media/removal_scenario.py`` holds it in-process).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nhlink_dbus.core import recovery as rec
from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.kv_store import read_kv
from nhlink_devtools.hubsim import HubSim
from nhlink_devtools.hubsim.sim import DeviceRecord
from tests.harness import LogindMock
from tests.integration.daemon_helpers import (
    DEVICE,
    LAYOUT,
    NHLINK_FWUP,
    RUNNING_SLOT,
    Daemon,
    Firmware,
    until,
    write_config,
)
from tests.integration.device_api_helpers import Kiosk

FOREVER_MS = 600_000  # a delay no test waits out


@dataclass
class Device:
    """The device under test: its image, hub, kiosk, logind and the daemon's starts."""

    tmp: Path
    sim: HubSim
    kiosk: Kiosk
    logind: LogindMock
    bus_address: str
    v1: Firmware
    v2: Firmware
    image: Path
    applier: str
    running_slot: bytes = b""  # slot A's bytes before anything happened
    daemon: Daemon | None = None
    starts: int = 0
    kills: int = 0
    reboots_at_kill: int = 0  # logind Reboot calls when the daemon was last killed
    fwup_path: str = NHLINK_FWUP
    holder: Path | None = None  # the marker of hold_ok_applier, when it is the fwup
    archive: tuple[Path, str] | None = None  # an archive the hub offers: (file, uuid)
    # Where each start began in the hub's frames and in the kiosk's signals.
    marks: list[tuple[int, int]] = field(default_factory=list)

    @property
    def record(self) -> DeviceRecord:
        return self.sim.devices[DEVICE]

    @property
    def journal(self) -> Path:
        return self.tmp / "state" / rec.JOURNAL_FILE

    def config(self, **options: Any) -> Path:
        return write_config(
            self.tmp,
            ws_url=self.sim.ws_url,
            image=self.image,
            applier=self.applier,
            fwup_path=self.fwup_path,
            extra="[decisions]\ntimeout_ms = 600000\n",
            idle_timeout_ms=FOREVER_MS,  # a held download stays held
            **options,
        )

    async def start(self, **options: Any) -> DeviceRecord:
        """Start the daemon; return once its bus face is up and it joined the hub."""
        frames = len(self.record.frames_received) if DEVICE in self.sim.devices else 0
        joins = len(self.record.joins) if DEVICE in self.sim.devices else 0
        self.marks.append((frames, len(self.kiosk.signals)))
        self.starts += 1
        log = self.tmp / f"daemon-{self.starts}.log"
        self.daemon = Daemon(self.config(**options), log, self.bus_address, export_bus=True)
        await self.kiosk.wait_signal(
            "NameOwnerChanged", self.starts, where=lambda _name, _old, new: bool(new)
        )

        def joined() -> DeviceRecord | None:
            device = self.sim.devices.get(DEVICE)
            return device if device and len(device.joins) > joins and device.joined else None

        return await until(joined, 30, "the join", self.daemon)

    async def kill(self) -> None:
        """SIGKILL the daemon, nothing else: a child (an external fwup) is left to its
        fate, which is to end with its input. Returns once the children are gone and the
        bus has dropped the daemon's name."""
        daemon = self.daemon
        assert daemon is not None and daemon.proc.poll() is None, "the daemon died early"
        children, ended = _children(daemon.proc.pid), len(self.record.disconnects)
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        daemon.close()
        if self.holder is not None and self.holder.exists():
            # The held fwup goes with the rest of the old service: it would hold forever.
            os.killpg(int(self.holder.read_text()), signal.SIGKILL)
        await self._gone(daemon, children, ended)

    async def terminate(self) -> None:
        """Stop the daemon as systemd does (SIGTERM; it exits 0); as :meth:`kill` after."""
        daemon = self.daemon
        assert daemon is not None
        children, ended = _children(daemon.proc.pid), len(self.record.disconnects)
        assert daemon.stop() == 0, daemon.text()
        await self._gone(daemon, children, ended)

    async def _gone(self, daemon: Daemon, children: list[int], ended: int) -> None:
        """The ended daemon's children are gone, the bus dropped its name, and the hub
        has read everything it sent (the connection ended there too)."""
        self.kills += 1
        self.reboots_at_kill = len(self.logind.reboot_calls())
        for pid in children:
            await until(lambda pid=pid: _gone(pid), 30, f"the daemon's child {pid} to end", daemon)
        await self.kiosk.wait_signal(
            "NameOwnerChanged", self.kills, where=lambda _name, _old, new: not new
        )
        await self.sim.wait_for(lambda: len(self.record.disconnects) > ended, 30)

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            assert self.daemon.stop() == 0, self.daemon.text()

    # -- what happened since a start ------------------------------------------------------

    def hub_frames(self, start: int = 0) -> list[tuple[str, Any]]:
        """(event, payload) the device sent on ``device`` since start ``start`` (0: all)."""
        first = self.marks[start - 1][0] if start else 0
        return [
            (f.event, f.payload) for f in self.record.frames_received[first:] if f.topic == "device"
        ]

    def statuses(self, start: int = 0) -> list[dict[str, Any]]:
        return [p for e, p in self.hub_frames(start) if e == "status_update"]

    def signals(self, member: str, start: int = 0) -> list[list[Any]]:
        first = self.marks[start - 1][1] if start else 0
        return [args for name, args in self.kiosk.signals[first:] if name == member]

    def running_slot_untouched(self) -> bool:
        return self.image.read_bytes()[RUNNING_SLOT] == self.running_slot

    def active(self) -> tuple[str, str]:
        """The KV store's active slot and its firmware UUID."""
        kv = read_kv(LAYOUT.kv_spec(self.image))
        return kv["nerves_fw_active"], active_slot_metadata(kv)["nerves_fw_uuid"]

    def text(self) -> str:
        return "" if self.daemon is None else self.daemon.text()


@dataclass(frozen=True)
class KillState:
    """One row of the kill matrix (see the module docstring)."""

    name: str
    applier: str  # builtin | fwup
    reach: Callable[[Device], Awaitable[str]]
    promise: Callable[[Device, str], Awaitable[None]]
    first: dict[str, Any] = field(default_factory=dict)  # options of the first start
    hold_ok: bool = False  # the fwup holds its OK back (hold_ok_applier)
    reboot: bool = False  # the device rebooted while the daemon was dead (a new boot id)
    terminate: bool = False  # stopped with SIGTERM (systemd's stop), not killed

    @property
    def id(self) -> str:
        return f"{self.name}-{self.applier}"


def hold_ok_applier(folder: Path) -> tuple[Path, Path]:
    """An fwup that applies with nhlink-fwup, then holds the ``OK`` back: the KV store
    is switched and fwup has exited, but the daemon has not heard. Returns (program,
    marker): the marker appears, holding the program's pid, once it holds."""
    program = folder / "fwup-holding-ok"
    marker = folder / "fwup-holds-ok"
    program.write_text(
        f"""#!{sys.executable}
import os, signal, struct, subprocess, sys
child = subprocess.Popen([{NHLINK_FWUP!r}, *sys.argv[1:]], stdout=subprocess.PIPE)
while len(head := child.stdout.read(4)) == 4:
    body = child.stdout.read(struct.unpack(">I", head)[0])
    if body[:2] == b"OK":
        child.wait()
        with open({str(marker) + ".tmp"!r}, "w") as fh:
            fh.write(str(os.getpid()))
        os.rename({str(marker) + ".tmp"!r}, {str(marker)!r})
        while True:
            signal.pause()
    os.write(1, head + body)
os.write(1, head + child.stdout.read())
sys.exit(child.wait())
"""
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, marker


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            continue  # a worker thread that ended meanwhile
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")

"""Issue 12 end to end: the reference prompts in real windows (Xvfb, no window
manager, no session bus) with the real daemon on a private system bus,
nhlink-hub-sim and dbusmock's logind; keys typed with xdotool (XTEST); the
prompts run as the package runs them (Debian's python3 and its python3-gi,
python3-gbulb, python3-pyqt5, python3-dbus-next), as a member of group nhlink,
or as a user outside it. Screenshots: tests/kiosk/gui.py SCREENSHOTS."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_devtools.hubsim import HubSim
from tests.bus.helpers import SignalRecorder
from tests.harness import LogindMock, PrivateSystemBus, busctl, system_bus_connection
from tests.harness.users import NOBODY, GroupMember
from tests.integration.daemon_helpers import (
    DEVICE,
    Daemon,
    Firmware,
    device_with_update,
    sim_config,
    write_config,
)
from tests.kiosk.gui import HANG_GUARD_S, REPO, DecideCalls, KioskPrompt, PromptRun, XServer

TITLE_OFFER = "^Software update — update available$"
OWNER_LINE = r"org\.nerveshub\.Link is (:\S+)$"


@dataclass
class Stage:
    """The real service with a device that has an update to offer; its signals."""

    sim: HubSim
    daemon: Daemon
    config: Path
    signals: SignalRecorder
    v2: Firmware

    async def next(self, member: str) -> Message:
        """The next ``member`` signal of the service (others are skipped)."""
        return await self.signals.next(member, HANG_GUARD_S)

    async def offer(self) -> str:
        """Push the update from the hub; its request id (from UpdateAvailable)."""
        await self.sim.offer_update(DEVICE, self.v2.path)
        return str((await self.next("UpdateAvailable")).body[0])


@asynccontextmanager
async def stage(
    folder: Path,
    bus: PrivateSystemBus,
    group: str = "nhlink",
    reboot_delay_ms: int = 300,
    extra: str = "",
) -> AsyncIterator[Stage]:
    """The daemon on ``bus``, deciding for root and ``group`` (the policy file and the
    service), with nhlink-hub-sim; a recorder of its signals."""
    if group != "nhlink":
        policy = (REPO / "dbus-policy" / "org.nerveshub.Link.conf").read_text()
        assert 'group="nhlink"' in policy
        bus.add_policy(f"zz-{group}.conf", policy.replace('group="nhlink"', f'group="{group}"'))
    _v1, v2, image = device_with_update(folder)
    async with HubSim(sim_config()) as sim, system_bus_connection() as client:
        signals = await SignalRecorder(client).start()
        config = write_config(
            folder,
            ws_url=sim.ws_url,
            image=image,
            extra=f'[decisions]\ntimeout_ms = 300000\ngroup = "{group}"\n{extra}',
            reboot_delay_ms=reboot_delay_ms,
        )
        daemon = Daemon(config, folder / "daemon.log", bus.address, export_bus=True)
        s = Stage(sim, daemon, config, signals, v2)
        try:
            await sim.wait_for_join(DEVICE, timeout=30)
            yield s
        finally:
            assert s.daemon.stop() == 0, s.daemon.text()


@asynccontextmanager
async def running(*prompts: KioskPrompt) -> AsyncIterator[None]:
    """Prompts that follow the service's owner; each must stop cleanly (status 0)."""
    try:
        for prompt in prompts:
            await prompt.wait_log(OWNER_LINE)
        yield
    finally:
        for prompt in prompts:
            assert prompt.stop() == 0, prompt.text()


async def decided(s: Stage, rid: str, decision: str, delay_ms: int, uid: int) -> None:
    """The next DecisionMade answers ``rid`` so, decided by a caller of ``uid``."""
    body = (await s.next("DecisionMade")).body
    assert body[:3] == [rid, decision, delay_ms]
    assert body[3].startswith(f"uid={uid} :"), body


async def test_gtk_return_installs_and_the_bar_reaches_100(
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
    xserver: XServer,
    kiosk_path: Path,
    kiosk_member: GroupMember,
) -> None:
    async with stage(tmp_path, system_bus, kiosk_member.group, reboot_delay_ms=120_000) as s:
        how = PromptRun(uid=kiosk_member.uid, pythonpath=kiosk_path)
        gtk = KioskPrompt("gtk", xserver, system_bus, tmp_path / "gtk.log", how)
        async with running(gtk):
            assert "event loop: gbulb 0.6.3 (PyGObject 3.42" in gtk.text()
            rid = await s.offer()
            window = await gtk.wait_window(TITLE_OFFER)
            gtk.screenshot(window, "nhlink-kiosk-gtk-offer.png")
            await gtk.type_keys(window, "Return")
            await decided(s, rid, "apply", 0, kiosk_member.uid)
            while (await s.next("FwupProgress")).body != [100]:
                pass
            assert (await s.next("UpdateFinished")).body[:2] == [rid, True]
            await s.next("RebootScheduled")
            await gtk.wait_title(window, r"^Software update — restarting in \d+ s$")
            await gtk.wait_log(
                r"window shown: Software update — restarting in \d+ s \| progress bar 100 %"
            )
            gtk.screenshot(window, "nhlink-kiosk-gtk-restarting.png")


async def test_qt_escape_reschedules_and_the_offer_comes_back(
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
    xserver: XServer,
    kiosk_path: Path,
    kiosk_member: GroupMember,
) -> None:
    async with stage(tmp_path, system_bus, kiosk_member.group) as s:
        how = PromptRun(uid=kiosk_member.uid, pythonpath=kiosk_path)
        qt = KioskPrompt(
            "qt", xserver, system_bus, tmp_path / "qt.log", how, ["--later-delay", "3"]
        )
        async with running(qt):
            assert "Qt binding: PyQt5 (Qt 5.15" in qt.text()
            rid = await s.offer()
            window = await qt.wait_window(TITLE_OFFER)
            qt.screenshot(window, "nhlink-kiosk-qt-offer.png")
            await qt.type_keys(window, "Escape")
            await decided(s, rid, "reschedule", 3000, kiosk_member.uid)
            await qt.wait_hidden()
            assert (await s.next("UpdateAvailable")).body[0] == rid  # offered again
            window = await qt.wait_window(TITLE_OFFER)
            await qt.type_keys(window, "alt+s")
            await decided(s, rid, "ignore", 0, kiosk_member.uid)
            await qt.wait_hidden()


async def test_both_prompts_follow_a_service_restart(
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
    xserver: XServer,
    kiosk_path: Path,
    kiosk_member: GroupMember,
) -> None:
    decides = DecideCalls(system_bus, tmp_path / "decide-calls.txt")
    async with stage(tmp_path, system_bus, kiosk_member.group) as s:
        how = PromptRun(uid=kiosk_member.uid, pythonpath=kiosk_path)
        prompts = [
            KioskPrompt(kit, xserver, system_bus, tmp_path / f"{kit}.log", how, screen=screen)
            for screen, kit in enumerate(("gtk", "qt"))
        ]
        gtk, qt = prompts
        async with running(*prompts):
            first = {(await p.wait_log(OWNER_LINE)).group(1) for p in prompts}
            rid1 = await s.offer()
            for p in prompts:
                await p.wait_window(TITLE_OFFER)

            record = s.sim.devices[DEVICE]
            joins = len(record.joins)
            assert s.daemon.stop() == 0, s.daemon.text()
            for p in prompts:
                await p.wait_hidden()  # the offer died with its service
                await p.wait_log(r"org\.nerveshub\.Link is not running; waiting for it$")
            s.daemon = Daemon(s.config, tmp_path / "daemon2.log", system_bus.address, True)
            second = {(await p.wait_log(OWNER_LINE, count=2)).group(1) for p in prompts}
            assert len(first) == len(second) == 1 and first != second
            await s.sim.wait_for(lambda: len(record.joins) > joins, timeout=30)
            for p in prompts:
                assert not xserver.windows(p.pid)  # nothing from before the restart

            rid2 = await s.offer()
            assert rid2 != rid1
            # Both windows first: a window that appears takes the keyboard focus.
            windows = [await p.wait_window(TITLE_OFFER) for p in prompts]
            xserver.key(windows[1], "Return")  # the Qt prompt installs
            qt_name = (await qt.wait_log(r"connected to the system bus as (:\S+)$")).group(1)
            decided = await s.next("DecisionMade")
            assert decided.body == [rid2, "apply", 0, f"uid={kiosk_member.uid} {qt_name}"]
            # The GTK prompt's dialog closes: it shows the update being installed instead.
            await gtk.wait_title(windows[0], r"^Software update — (installing|installed|restart)")
            await gtk.wait_log(rf"{rid2}: apply \(by uid={kiosk_member.uid} {qt_name}\)$")
            await s.next("UpdateFinished")
            assert decides.request_ids() == [rid2]  # never an id from before the restart
    decides.stop()


async def test_both_prompts_say_when_they_are_not_allowed(
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
    xserver: XServer,
    kiosk_path: Path,
) -> None:
    async with stage(tmp_path, system_bus) as s:
        how = PromptRun(uid=NOBODY, init_groups=False, pythonpath=kiosk_path)
        prompts = [
            KioskPrompt(kit, xserver, system_bus, tmp_path / f"{kit}.log", how, screen=screen)
            for screen, kit in enumerate(("gtk", "qt"))
        ]
        async with running(*prompts):
            line = "Not allowed to decide: user nobody (uid 65534) may not answer update requests"
            for p in prompts:
                await p.wait_log(rf"^nhlink-kiosk-{p.toolkit}: {re.escape(line)}")
            rid = await s.offer()
            # Both windows first: a window that appears takes the keyboard focus.
            title = "^Software update — not allowed to decide$"
            windows = [await p.wait_window(title) for p in prompts]
            for p, window in zip(prompts, windows, strict=True):
                p.screenshot(window, f"nhlink-kiosk-{p.toolkit}-not-allowed.png")
                # The buttons are disabled (Return finds none); Escape reaches the prompt:
                xserver.key(window, "Return", "Escape")
                await p.wait_log(r"pressed later \(nothing to ask\)$")
                assert "Decide" not in p.text()
            while not s.signals.queue.empty():
                assert s.signals.queue.get_nowait().member != "DecisionMade"
            pending = busctl(
                system_bus,
                "call",
                names.BUS_NAME,
                names.OBJECT_PATH,
                names.INTERFACE,
                "GetPendingRequests",
                json=True,
            )
            assert [r[0] for r in json.loads(pending.stdout)["data"][0]] == [rid]


async def test_gtk_on_pygobjects_own_loop_picks_up_pending_and_archives(
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
    xserver: XServer,
) -> None:
    async with stage(tmp_path, system_bus) as s:  # archives in tmp_path / "archives"
        rid = await s.offer()  # before the prompt starts
        # The venv's PyGObject (>= 3.50, no gbulb) as root, from the checkout.
        how = PromptRun(python=sys.executable)
        gtk = KioskPrompt("gtk", xserver, system_bus, tmp_path / "gtk.log", how)
        async with running(gtk):
            window = await gtk.wait_window(TITLE_OFFER)
            assert re.search(r"event loop: PyGObject 3\.\d+\.\d+'s gi\.events", gtk.text())
            await gtk.type_keys(window, "alt+s")
            await decided(s, rid, "ignore", 0, 0)
            await gtk.wait_hidden()

            await s.sim.offer_archive(DEVICE, s.v2.path)
            archive = str((await s.next("ArchiveAvailable")).body[0])
            window = await gtk.wait_window("^Software update — archive available$")
            await gtk.type_keys(window, "Return")
            assert (await s.next("DecisionMade")).body[:2] == [archive, "download"]
            ready = await s.next("ArchiveReady")
            window = await gtk.wait_window("^Software update — archive ready$")
            gtk.screenshot(window, "nhlink-kiosk-gtk-archive-ready.png")
            await gtk.wait_log(rf"{archive} ready: {re.escape(ready.body[2])}$")
            await gtk.type_keys(window, "Return")
            await gtk.wait_hidden()

"""Issue 14 item 1, the kill matrix: the real daemon is SIGKILLed at every state of an
update, started again, and held to what it promises (README, "What happens when the
daemon is killed at …"; core/recovery.py has the rules).

Every row: the running slot (A) is byte-for-byte untouched; an update that did not
finish never gets ``UpdateFinished(…, true, …)``, ``fwup_progress 100`` or
``completed``; the hub hears what became of the update after the next join; a
question is asked again under a new id when the hub offers again, and its old id is
refused; the next offer of the same firmware applies cleanly; an update applied but
not yet rebooted into is found, reported as what it is (the join names the firmware
that runs, never the new one) and rebooted — and after that reboot the new firmware
is what the hub sees. An archive cut short mid-download is never presented as ready.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from nhlink_dbus import names
from nhlink_dbus.core import recovery as rec
from nhlink_devtools.hubsim import HubSim
from tests.harness import LogindMock, PrivateSystemBus, system_bus_connection
from tests.integration.archive_helpers import make_archive, sha256
from tests.integration.daemon_helpers import (
    DEVICE,
    RUNNING_SLOT,
    Firmware,
    device_with_update,
    reboot_happened,
    sim_config,
    until,
)
from tests.integration.device_api_helpers import Kiosk
from tests.integration.kill_matrix import FOREVER_MS, Device, KillState, hold_ok_applier

MIB = 1 << 20
UNKNOWN_REQUEST = names.ERROR_PREFIX + "UnknownRequest"


# -- reaching a state ------------------------------------------------------------------------


async def offered(d: Device) -> str:
    """The hub offers v2; the kiosk is asked. Returns the request id."""
    since = len(d.kiosk.signals)
    await d.sim.offer_update(DEVICE, d.v2.path)
    ((request_id, info),) = await d.kiosk.wait_signal("UpdateAvailable", since=since)
    assert info["uuid"] == d.v2.uuid
    return str(request_id)


async def decide(d: Device, request_id: str, decision: str = "apply", delay_ms: int = 0) -> None:
    await d.kiosk.call("Decide", "sst", [request_id, decision, delay_ms])


async def awaiting_decision(d: Device) -> str:
    d.sim.config.push_update_on_join = True  # as nerves_hub_web: offered again after a join
    return await offered(d)


async def rescheduled(d: Device) -> str:
    d.sim.config.push_update_on_join = True
    request_id = await offered(d)
    await decide(d, request_id, "reschedule", FOREVER_MS)
    await d.sim.wait_for(lambda: [s for s in d.statuses() if s["status"] == "rescheduled"], 30)
    return request_id


def downloading_at(offset: int):  # type: ignore[no-untyped-def]
    """Applied, with the hub's file server holding the download after ``offset`` bytes."""

    async def reach(d: Device) -> str:
        d.sim.set_fault(kind="stall", path=f"/firmware/{d.v2.path.name}", after=offset, times=1)
        request_id = await offered(d)
        await decide(d, request_id)

        def held() -> bool:
            return any(e.stalled and e.bytes_sent == offset for e in d.sim.http_log)

        await d.sim.wait_for(held, 30)
        # The request goes out while the update journal is being written; the hub hears
        # "started" once it is on disk, and from then on a restart tells how it ended.
        # (Killed before, nothing has reached the target, the hub heard "received" only,
        # and the restart knows nothing of the update, as when awaiting a decision.)
        await d.sim.wait_for(lambda: [s for s in d.statuses() if s["status"] == "started"], 30)
        assert journal_phase(d) == rec.UPDATING
        return request_id

    return reach


def writing_at(offset: int):  # type: ignore[no-untyped-def]
    """As :func:`downloading_at`, once the applier has written into slot B (progress)."""
    download = downloading_at(offset)

    async def reach(d: Device) -> str:
        request_id = await download(d)
        await d.kiosk.wait_signal("FwupProgress", where=lambda percent: percent >= 1)
        return request_id

    return reach


async def applier_finished_unseen(d: Device) -> str:
    """fwup wrote everything and switched the KV store; its OK is held back."""
    request_id = await offered(d)
    await decide(d, request_id)
    await until((d.tmp / "fwup-holds-ok").exists, 60, "fwup to hold its OK", d.daemon)
    return request_id


async def reboot_delay(d: Device) -> str:
    """UpdateFinished(true) and RebootScheduled were sent, the journal says so; the
    delay runs. (Killed between the signals and the journal's fsync, the daemon would
    send UpdateFinished(true) again after the restart, as in applier_finished_unseen.)"""
    request_id = await offered(d)
    await decide(d, request_id)
    await d.kiosk.wait_signal("RebootScheduled", timeout=60)
    await until(lambda: journal_phase(d) == rec.APPLIED, 30, "the journal", d.daemon)
    return request_id


def journal_phase(d: Device) -> str | None:
    try:
        return rec.decode(d.journal.read_bytes()).phase
    except FileNotFoundError:
        return None


async def reboot_requested(d: Device) -> str:
    """logind was asked to reboot (the mock does not reboot)."""
    request_id = await offered(d)
    await decide(d, request_id)
    await until(d.logind.reboot_calls, 60, "the Reboot call", d.daemon)
    return request_id


async def archive_downloading(d: Device) -> str:
    """An archive decided ``download``, the hub's file server holding it after 512 KiB."""
    path, uuid = d.archive = make_archive(d.tmp, "content", size=MIB)
    d.sim.set_fault(kind="stall", path=f"/archives/{uuid}.fw", after=512 << 10, times=1)
    since = len(d.kiosk.signals)
    await d.sim.offer_archive(DEVICE, path)
    ((request_id, info),) = await d.kiosk.wait_signal("ArchiveAvailable", since=since)
    assert info["uuid"] == uuid
    await decide(d, str(request_id), "download")
    await d.sim.wait_for(lambda: any(e.stalled for e in d.sim.http_log), 30)
    part = d.tmp / "archives" / f"{uuid}.fw.part"
    await until(lambda: part.exists() and part.stat().st_size > 0, 30, "the .part", d.daemon)
    return str(request_id)


# -- what the daemon promises after the restart ------------------------------------------------


async def applies_cleanly(d: Device, request_id: str | None = None) -> None:
    """The next offer of v2 (or ``request_id``, asked already) applies and reboots."""
    d.sim.clear_faults()
    frames, signals = len(d.record.frames_received), len(d.kiosk.signals)
    reboots = len(d.logind.reboot_calls())
    if request_id is None:
        request_id = await offered(d)
    await decide(d, request_id)
    ((_, ok, message),) = await d.kiosk.wait_signal(
        "UpdateFinished", since=signals, timeout=60, where=lambda rid, *_: rid == request_id
    )
    assert ok, message
    await until(lambda: len(d.logind.reboot_calls()) > reboots, 30, "the Reboot", d.daemon)

    def sent() -> list[tuple[str, Any]]:
        return [(f.event, f.payload) for f in d.record.frames_received[frames:]]

    await d.sim.wait_for(lambda: ("status_update", {"status": "completed"}) in sent(), 30)
    statuses = [p["status"] for e, p in sent() if e == "status_update"]
    assert statuses[-2:] == ["started", "completed"], statuses
    assert [p["value"] for e, p in sent() if e == "fwup_progress"][-1] == 100
    assert d.active() == ("b", d.v2.uuid)
    assert d.running_slot_untouched()


def never_succeeded(d: Device, request_id: str) -> None:
    """Nothing ever said the update ``request_id`` (unfinished) succeeded."""
    assert not [s for s in d.signals("UpdateFinished") if s[0] == request_id and s[1]]
    sent = d.hub_frames()
    assert not [p for e, p in sent if e == "fwup_progress" and p["value"] == 100]
    assert not [p for e, p in sent if e == "status_update" and p["status"] == "completed"]


async def hub_fence(d: Device) -> dict[str, Any]:
    """Every frame the daemon sent so far has reached the hub: CheckForUpdate asks the
    hub over the same connection, and the hub handles frames in order."""
    (answer,) = await d.kiosk.call("CheckForUpdate")
    assert isinstance(answer, dict)
    return answer


async def refused(d: Device, request_id: str) -> None:
    with pytest.raises(RuntimeError) as err:
        await decide(d, request_id)
    assert err.value.args[0] == UNKNOWN_REQUEST


async def asked_again(d: Device, request_id: str) -> None:
    """A question dies with the daemon; the hub's next offer asks it under a new id."""
    since = d.marks[-1][1]
    ((again, info),) = await d.kiosk.wait_signal("UpdateAvailable", since=since)
    assert again != request_id and info["uuid"] == d.v2.uuid
    await refused(d, request_id)
    never_succeeded(d, request_id)
    await hub_fence(d)  # (its answer is the offer again: received again, same question)
    assert d.signals("UpdateFinished", d.starts) == []
    told = d.statuses(d.starts)
    assert told[0] == {"status": "received"} and all(s == told[0] for s in told), told
    await applies_cleanly(d, again)


async def held_by_the_hub(d: Device, request_id: str) -> None:
    """Rescheduled: the hub holds the offer until the delay it was told has passed."""
    since = d.marks[-1][1]
    await d.sim.push(DEVICE, "identify")  # a fence: the daemon handled the join's pushes
    await d.kiosk.wait_signal("Identify", since=since)
    assert await hub_fence(d) == {"update_available": 0}  # held, as the hub says too
    assert d.signals("UpdateAvailable", d.starts) == []
    assert d.statuses(d.starts) == []
    await refused(d, request_id)
    never_succeeded(d, request_id)
    d.record.api.blocked_until = None  # the delay has passed
    again = await offered(d)
    assert again != request_id
    await applies_cleanly(d, again)


def interrupted(reason: str):  # type: ignore[no-untyped-def]
    async def promise(d: Device, request_id: str) -> None:
        """UpdateFinished(false) for the old id, ``failed`` + reason to the hub."""
        since = d.marks[-1][1]
        finished = await d.kiosk.wait_signal("UpdateFinished", since=since)
        assert finished == [[request_id, False, reason]]
        await d.sim.wait_for(lambda: d.statuses(d.starts), 30)
        assert d.statuses(d.starts) == [{"status": "failed", "reason": reason}]
        await until(lambda: not d.journal.exists(), 30, "the journal to go", d.daemon)
        assert await d.kiosk.prop("State") == "failed"
        assert await d.kiosk.prop("LastError") == f"firmware update failed: {reason}"
        assert d.record.join_params["nerves_fw_uuid"] == d.v1.uuid
        assert d.active() == ("a", d.v1.uuid)
        never_succeeded(d, request_id)
        await refused(d, request_id)
        await applies_cleanly(d)

    return promise


async def stopped_mid_update(d: Device, request_id: str) -> None:
    """SIGTERM while writing: the update ends before the exit, the hub hears it after."""
    reason = "the service stopped during the update"
    assert d.signals("UpdateFinished") == [[request_id, False, reason]]  # sent by the old one
    await d.sim.wait_for(lambda: d.statuses(d.starts), 30)
    assert d.statuses(d.starts) == [{"status": "failed", "reason": reason}]
    assert d.signals("UpdateFinished", d.starts) == []  # not twice
    await until(lambda: not d.journal.exists(), 30, "the journal to go", d.daemon)
    assert await d.kiosk.prop("LastError") == f"firmware update failed: {reason}"
    assert d.active() == ("a", d.v1.uuid)
    never_succeeded(d, request_id)
    await applies_cleanly(d)


async def archive_never_partial(d: Device, request_id: str) -> None:
    """No partial archive is ever presented as ready; the hub's next offer downloads it."""
    assert d.archive is not None
    path, uuid = d.archive
    folder = d.tmp / "archives"
    # The hub sends the archive after every join: asked anew under a new id.
    ((again, _),) = await d.kiosk.wait_signal("ArchiveAvailable", since=d.marks[-1][1])
    assert again != request_id
    assert list(folder.iterdir()) == []  # the .part went at the start, nothing is ready
    await refused(d, request_id)
    d.sim.clear_faults()
    await decide(d, str(again), "download")
    ((_, info, ready),) = await d.kiosk.wait_signal(
        "ArchiveReady", since=d.marks[-1][1], timeout=60
    )
    assert (ready, info["uuid"]) == (str(folder / f"{uuid}.fw"), uuid)
    assert sha256(Path(ready)) == sha256(path)
    assert [a for a in d.signals("ArchiveReady") if a[0] == request_id] == []
    assert d.active() == ("a", d.v1.uuid) and d.signals("UpdateFinished") == []


def rebooted(*, outcome_seen: bool):  # type: ignore[no-untyped-def]
    async def promise(d: Device, request_id: str) -> None:
        """Applied, not rebooted: found, reported as it is, and rebooted."""
        since = d.marks[-1][1]
        # The trap: the KV store already names v2, but v1 runs; the hub hears v1.
        assert d.active() == ("b", d.v2.uuid)
        assert d.record.join_params["nerves_fw_uuid"] == d.v1.uuid
        assert d.record.join_params["currently_downloading_uuid"] is None
        await d.kiosk.wait_signal("RebootScheduled", since=since)
        await until(
            lambda: len(d.logind.reboot_calls()) > d.reboots_at_kill, 30, "the Reboot", d.daemon
        )
        assert await d.kiosk.prop("State") == "rebooting"  # also a fence for the signals
        assert (await d.kiosk.prop("CurrentFirmware"))["uuid"] == d.v1.uuid
        assert d.signals("RebootScheduled", d.starts) == [[300]]
        await hub_fence(d)  # (an offer now is ignored: nothing is written before the reboot)
        finished = d.signals("UpdateFinished", d.starts)
        told = d.statuses(d.starts)
        if outcome_seen:  # UpdateFinished and completed went out before the kill
            assert finished == [] and told == []
        else:
            assert finished == [[request_id, True, rec.APPLIED_UNSEEN]]
            await d.sim.wait_for(lambda: d.statuses(d.starts), 30)
            sent = d.hub_frames(d.starts)
            assert [e for e, _ in sent if e in ("fwup_progress", "status_update")] == [
                "fwup_progress",
                "status_update",
            ]
            assert d.statuses(d.starts) == [{"status": "completed"}]
        assert not [s for s in d.statuses() if s["status"] == "failed"]
        assert [s for s in d.signals("UpdateFinished") if s[0] == request_id and s[1]]
        # Marking the running firmware valid now would validate v2 before it ran.
        with pytest.raises(RuntimeError) as err:
            await d.kiosk.call("MarkValid")
        assert err.value.args[0] == names.ERROR_PREFIX + "NotPossible"
        assert rec.decode(d.journal.read_bytes()).phase == rec.APPLIED
        # The reboot happens: v2 runs and is what the hub sees; nothing is left to do.
        await d.terminate()  # as systemd stops services for the reboot
        reboot_happened(d.tmp)
        reboots_now = len(d.logind.reboot_calls())
        await d.start()
        assert d.record.join_params["nerves_fw_uuid"] == d.v2.uuid
        await until(lambda: not d.journal.exists(), 30, "the journal to go", d.daemon)
        assert await d.kiosk.prop("State") == "idle"
        assert d.signals("RebootScheduled", d.starts) == []
        assert d.signals("UpdateFinished", d.starts) == []
        assert len(d.logind.reboot_calls()) == reboots_now
        assert d.running_slot_untouched()

    return promise


# -- the matrix ------------------------------------------------------------------------------

# Where the hub's file server holds the download. Bytes reach the applier a verified
# 1 MiB part at a time (partials_checksums): before 1 MiB it has nothing to write.
OFFSETS = {
    "0": 0,
    "512KiB": 512 << 10,
    "1MiB+64KiB": MIB + (64 << 10),
    "3MiB+64KiB": 3 * MIB + (64 << 10),
}

STATES = [
    KillState("awaiting-decision", "builtin", awaiting_decision, asked_again),
    KillState("rescheduled", "builtin", rescheduled, held_by_the_hub),
    *[
        KillState(f"downloading-{name}", "builtin", downloading_at(OFFSETS[name]),
                  interrupted(rec.INTERRUPTED))
        for name in ("0", "512KiB")
    ],
    KillState("downloading-512KiB", "fwup", downloading_at(OFFSETS["512KiB"]),
              interrupted(rec.INTERRUPTED)),
    *[
        KillState(f"writing-{name}", applier, writing_at(OFFSETS[name]),
                  interrupted(rec.INTERRUPTED))
        for name in ("1MiB+64KiB", "3MiB+64KiB")
        for applier in ("builtin", "fwup")
    ],
    KillState("writing-3MiB+64KiB-power-cut", "builtin", writing_at(OFFSETS["3MiB+64KiB"]),
              interrupted(rec.INTERRUPTED_BY_REBOOT), reboot=True),
    KillState("writing-3MiB+64KiB-sigterm", "fwup", writing_at(OFFSETS["3MiB+64KiB"]),
              stopped_mid_update, terminate=True),
    KillState("applier-ok-unseen", "fwup", applier_finished_unseen,
              rebooted(outcome_seen=False), hold_ok=True),
    *[
        KillState("reboot-delay", applier, reboot_delay, rebooted(outcome_seen=True),
                  first={"reboot_delay_ms": FOREVER_MS})
        for applier in ("builtin", "fwup")
    ],
    KillState("reboot-requested", "builtin", reboot_requested, rebooted(outcome_seen=True),
              first={"reboot_delay_ms": 0}),
    KillState("archive-downloading-512KiB", "builtin", archive_downloading,
              archive_never_partial),
]  # fmt: skip


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> tuple[Firmware, Firmware, Path]:
    """v1, v2 and an image running v1, built once for the matrix (read, never written)."""
    return device_with_update(tmp_path_factory.mktemp("firmware"))


@pytest.mark.parametrize("state", STATES, ids=[s.id for s in STATES])
async def test_killed_at(
    state: KillState,
    firmware: tuple[Firmware, Firmware, Path],
    tmp_path: Path,
    system_bus: PrivateSystemBus,
    logind_mock: LogindMock,
) -> None:
    v1, v2, template = firmware
    image = tmp_path / "disk.img"
    shutil.copyfile(template, image)
    async with HubSim(sim_config()) as sim, system_bus_connection() as bus:
        kiosk = Kiosk(bus)
        await kiosk.subscribe()
        await kiosk.watch_owner()
        d = Device(tmp_path, sim, kiosk, logind_mock, system_bus.address, v1, v2, image,
                   state.applier, running_slot=image.read_bytes()[RUNNING_SLOT])  # fmt: skip
        if state.hold_ok:
            program, d.holder = hold_ok_applier(tmp_path)
            d.fwup_path = str(program)
        try:
            await d.start(**state.first)
            request_id = await state.reach(d)
            await (d.terminate() if state.terminate else d.kill())
            assert d.running_slot_untouched()
            if state.reboot:
                reboot_happened(tmp_path)
            await d.start()
            await state.promise(d, request_id)
            assert d.running_slot_untouched()
        finally:
            d.stop()

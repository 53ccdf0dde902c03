"""LinkCore: hub events and face requests in, the root's effects out (core/link.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import link
from nhlink_dbus.core import recovery as rec
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.archive_manager import FetchResult, StartArchiveDownload
from nhlink_dbus.core.recovery import SaveJournal
from nhlink_dbus.core.update_manager import (
    Finished,
    Offer,
    PushRebooting,
    RebootNow,
    RebootScheduled,
    ReportError,
    ReportProgress,
    StartUpdate,
)
from nhlink_dbus.errors import NotPossible, UnknownRequest

RUNNING = {"nerves_fw_uuid": "running", "nerves_fw_version": "1.0.0"}


def link_settings(**settings: object) -> link.LinkSettings:
    values: dict[str, object] = {
        "decision_timeout_ms": 30_000,
        "default_update": "apply",
        "default_archive": "ignore",
        "ignore_same_uuid": True,
        "reboot_delay_ms": 2000,
        "fwup_keys": ("fwkey",),
    }
    values.update(settings)
    return link.LinkSettings(**values)  # type: ignore[arg-type]


def core(deciders: int = 1, **settings: object) -> link.LinkCore:
    c = link.LinkCore(link_settings(**settings), RUNNING, "tok")
    c.set_deciders(deciders)
    return c


def update(
    uuid: str = "new", url: str = "https://files/fw?X-Amz-Signature=secret"
) -> hm.UpdateInfo:
    return hm.UpdateInfo(url, hm.FirmwareMetadata(uuid=uuid, version="2.0.0"), deployment_id=7)


def archive(uuid: str = "arch") -> hm.ArchiveInfo:
    return hm.ArchiveInfo(10, uuid, "0.1", "https://files/a.fw?token=secret")


def of(kind: type, effects: list[link.Effect]) -> list[object]:
    return [e for e in effects if isinstance(e, kind)]


def test_update_from_offer_to_reboot() -> None:
    c = core()
    out = c.hub_event(update(), now=0.0)
    (ask,) = of(link.Announce, out)
    assert ask == link.Announce(
        "update",
        "u-tok-1",
        {"source": "hub", "uuid": "new", "version": "2.0.0", "deployment_id": 7},
    )
    assert "secret" not in repr(out)
    assert c.state == "awaiting-decision"
    assert c.pending_requests() == [("u-tok-1", "update", ask.info)]  # type: ignore[attr-defined]
    out = c.decide("u-tok-1", "apply", 0, "uid=0 :1.4", now=1.0)
    assert of(link.DecisionMade, out) == [
        link.DecisionMade("update", "u-tok-1", "apply", 0, "uid=0 :1.4")
    ]
    (start,) = of(StartUpdate, out)
    assert start.request_id == "u-tok-1"  # type: ignore[attr-defined]
    assert link.Downloading("new") in out
    assert link.PropertiesChanged({"State": "updating"}) in out
    assert of(ReportProgress, c.apply_progress(40, 2.0)) == [ReportProgress(40)]
    assert c.progress == 40
    out = c.update_done("u-tok-1", True, "", now=5.0, applier_error=True)
    assert [type(e) for e in out if not isinstance(e, link.PropertiesChanged)] == [
        link.Downloading,
        SaveJournal,  # applied: before the outcome and the reboot
        us.HubPush,  # fwup_progress updating 100
        us.HubPush,  # completed
        Finished,
        RebootScheduled,
    ]
    assert c.state == "rebooting" and c.next_deadline() == 7.0
    assert c.tick(7.0) == [RebootNow()]
    assert c.hub_event(update("newer"), now=8.0) == []  # no second write before the reboot


def test_no_decider_applies_at_once_and_same_uuid_is_ignored_by_policy() -> None:
    c = core(deciders=0)
    out = c.hub_event(update(), now=0.0)
    assert of(link.DecisionMade, out)[0].decided_by == "policy"  # type: ignore[attr-defined]
    assert of(StartUpdate, out)
    c = core()
    out = c.hub_event(update("running"), now=0.0)
    (made,) = of(link.DecisionMade, out)
    assert (made.decision, made.decided_by) == ("ignore", "policy")  # type: ignore[attr-defined]
    assert c.state == "idle"


def test_timeout_applies_the_default_from_the_engine_deadline() -> None:
    c = core(decision_timeout_ms=30_000, default_update="ignore")
    c.hub_event(update(), now=100.0)
    assert c.next_deadline() == 130.0
    out = c.tick(130.0)
    (made,) = of(link.DecisionMade, out)
    assert (made.decision, made.decided_by) == ("ignore", "timeout")  # type: ignore[attr-defined]
    assert c.state == "idle"


def test_reschedule_state_and_reoffer() -> None:
    c = core()
    c.hub_event(update(), now=0.0)
    c.decide("u-tok-1", "reschedule", 5000, "me", now=1.0)
    assert c.state == "rescheduled" and c.pending_requests() == []
    out = c.tick(6.0)
    assert of(link.Announce, out)[0].request_id == "u-tok-1"  # type: ignore[attr-defined]
    assert c.state == "awaiting-decision"


def test_newer_offer_supersedes_and_the_old_id_is_gone() -> None:
    c = core()
    c.hub_event(update("a"), now=0.0)
    out = c.hub_event(update("b"), now=1.0)
    assert link.RequestGone("u-tok-1") in out
    with pytest.raises(UnknownRequest):
        c.decide("u-tok-1", "apply", 0, "me", now=2.0)


def test_failure_then_ignore_returns_to_idle() -> None:
    c = core()
    c.hub_event(update(), now=0.0)
    c.decide("u-tok-1", "apply", 0, "me", now=0.0)
    out = c.update_done("u-tok-1", False, "bad", now=1.0, applier_error=True)
    assert us.failed("bad") in out and c.state == "failed"
    assert c.last_error == "firmware update failed: bad"
    c.hub_event(update("other"), now=2.0)
    c.decide("u-tok-2", "ignore", 0, "me", now=3.0)
    assert c.state == "idle"


def test_keys() -> None:
    c = core(fwup_keys=())
    out = c.hub_event(update(), now=0.0)
    assert of(ReportError, out) and not of(link.Announce, out)
    c.hub_event(hm.FwupPublicKeys(("pushed",)), now=0.0)
    assert c.fwup_keys == ("pushed",)
    # archives: configured archive keys, else configured firmware keys, else pushed
    c = core(fwup_keys=(), archive_keys=())
    out = c.hub_event(archive(), now=0.0)
    assert of(ReportError, out) and not of(link.Announce, out)
    c.hub_event(hm.ArchivePublicKeys(("apushed",)), now=0.0)
    assert c.archive_keys == ("apushed",)
    assert core(fwup_keys=("fw",)).archive_keys == ("fw",)
    assert core(fwup_keys=("fw",), archive_keys=("ar",)).archive_keys == ("ar",)


def test_archive_download_and_ready() -> None:
    c = core()
    out = c.hub_event(archive(), now=0.0)
    (ask,) = of(link.Announce, out)
    assert ask.kind == "archive" and "url" not in ask.info  # type: ignore[attr-defined]
    out = c.decide(ask.request_id, "download", 0, "me", now=1.0)  # type: ignore[attr-defined]
    (start,) = of(StartArchiveDownload, out)
    assert c.hub_event(archive(), now=2.0) == []  # the same file is on its way
    path = "/var/lib/nhlink/archives/arch.fw"
    out = c.archive_done(start.request_id, FetchResult(path), now=3.0)  # type: ignore[attr-defined]
    assert [type(e) for e in out] == [link.ArchiveReady]
    assert c.archive_done(start.request_id, FetchResult(error="late"), now=4.0) == []  # type: ignore[attr-defined]


def test_archive_failure_is_reported() -> None:
    c = core()
    rid = of(link.Announce, c.hub_event(archive(), now=0.0))[0].request_id  # type: ignore[attr-defined]
    c.decide(rid, "download", 0, "me", now=0.0)
    out = c.archive_done(rid, FetchResult(error="bad signature"), now=1.0)
    assert of(ReportError, out) == [ReportError("archive arch: bad signature")]


def test_hub_reboot_withdraws_questions_and_pushes_rebooting() -> None:
    c = core()
    c.hub_event(update(), now=0.0)
    out = c.hub_event(hm.Reboot(), now=1.0)
    assert link.RequestGone("u-tok-1") in out
    assert [e for e in out if isinstance(e, PushRebooting | RebootNow)] == [
        PushRebooting(),
        RebootNow(),
    ]
    assert c.state == "rebooting"


def test_connection_events() -> None:
    c = core()
    assert c.hub_event(hs.Connected(), now=0.0) == [link.PropertiesChanged({"Connected": True})]
    out = c.hub_event(hs.Disconnected("closed 1006", 1000), now=1.0)
    assert out[0] == link.ConnectionLost("closed 1006")
    assert c.connected is False and c.last_error == "hub connection: closed 1006"
    assert of(link.IdentifyRequested, c.hub_event(hm.Identify(), now=2.0))


def test_install_file_is_decided_by_its_caller() -> None:
    c = core()
    info = hm.UpdateInfo("file:", hm.FirmwareMetadata(uuid="running"))
    rid, out = c.offer_file(Offer(info, ("fwkey",), "file"), "uid=0 :1.9", now=0.0)
    (made,) = of(link.DecisionMade, out)
    assert (made.request_id, made.decided_by) == (rid, "uid=0 :1.9")  # type: ignore[attr-defined]
    assert of(StartUpdate, out)  # no same-UUID policy for an explicit request
    with pytest.raises(NotPossible):
        c.install_keys()  # updating now
    with pytest.raises(NotPossible):
        core(fwup_keys=()).install_keys()


def test_every_effect_is_a_dataclass_with_a_distinct_type() -> None:
    types = get_args(link.Effect)
    assert len(types) == len(set(types)) >= 15


# -- the update journal (core/recovery.py) ---------------------------------------------------

AB_KV = {"nerves_fw_active": "a", "a.nerves_fw_uuid": "running", "nerves_fw_validated": "1"}


def journaled(found: rec.Recovery | None = None) -> link.LinkCore:
    kv = AB_KV if found is None else found.kv
    c = link.LinkCore(
        link_settings(),
        {"nerves_fw_uuid": kv[f"{kv['nerves_fw_active']}.nerves_fw_uuid"]},
        "tok",
        kv=kv,
        recovery=found,
        boot_id="boot-1",
    )
    c.set_deciders(0)  # applied at once
    return c


def saved(effects: list[link.Effect]) -> list[rec.JournalRecord | None]:
    return [e.record for e in effects if isinstance(e, rec.SaveJournal)]


def test_the_journal_is_written_before_the_update_starts_and_at_its_outcome() -> None:
    c = journaled()
    c.hub_event(hs.Joined({}), now=0.0)
    out = c.hub_event(update(), now=0.0)
    (start,) = saved(out)
    assert start == rec.updating(
        "u-tok-1", "new", "2.0.0", "hub", "boot-1", rec.RunningFirmware("a", "running", True)
    )
    assert out.index(rec.SaveJournal(start)) < next(
        i for i, e in enumerate(out) if isinstance(e, StartUpdate)
    )
    out = c.update_done("u-tok-1", True, "", now=1.0, applier_error=True)
    (done,) = saved(out)
    assert done == rec.applied(start, told=True)  # joined: completed went out now
    first_signal = next(i for i, e in enumerate(out) if isinstance(e, Finished))
    assert out.index(rec.SaveJournal(done)) < first_signal
    # Applied: validation describes the running firmware until the reboot.
    assert c.device_api.validation.frozen
    with pytest.raises(NotPossible):
        c.device_api.validation.check_markable()


def test_an_outcome_the_hub_missed_is_told_after_the_next_join() -> None:
    c = journaled()
    c.hub_event(update(), now=0.0)  # never joined
    out = c.update_done("u-tok-1", False, "http_error 503", now=1.0, applier_error=False)
    (failed,) = saved(out)
    assert failed is not None and failed.report == "failed"
    out = c.hub_event(hs.Joined({}), now=2.0)
    assert us.failed("download failed: http_error 503") in out
    assert saved(out) == [None]
    assert saved(c.hub_event(hs.Joined({}), now=3.0)) == []  # once
    # Success while away: completed after the join, the record kept for the reboot.
    c = journaled()
    c.hub_event(update(), now=0.0)
    (applied,) = saved(c.update_done("u-tok-1", True, "", now=1.0, applier_error=True))
    assert applied is not None and applied.report == "completed"
    out = c.hub_event(hs.Joined({}), now=2.0)
    assert [e for e in out if isinstance(e, us.HubPush)][:2] == [
        us.progress("updating", 100),
        us.completed(),
    ]
    assert saved(out) == [rec.told(applied)]


def test_a_failure_told_at_once_leaves_no_journal() -> None:
    c = journaled()
    c.hub_event(hs.Joined({}), now=0.0)
    c.hub_event(update(), now=0.0)
    out = c.update_done("u-tok-1", False, "ER text", now=1.0, applier_error=True)
    assert saved(out) == [None] and us.failed("ER text") in out


def test_a_restart_after_an_interrupted_update() -> None:
    interrupted = rec.updating("u-old-3", "new", "2.0.0", "hub", "boot-1",
                               rec.RunningFirmware("a", "running", True))  # fmt: skip
    c = journaled(rec.recover(interrupted, "boot-1", AB_KV))
    out = c.start(now=0.0)
    assert Finished("u-old-3", False, rec.INTERRUPTED) in out
    assert c.state == "failed" and c.last_error.endswith(rec.INTERRUPTED)
    assert not [e for e in out if isinstance(e, us.HubPush)]  # not joined yet
    out = c.hub_event(hs.Joined({}), now=1.0)
    assert us.failed(rec.INTERRUPTED) in out and saved(out) == [None]
    assert of(StartUpdate, c.hub_event(update(), now=2.0))  # offered again: applied again


def test_a_restart_with_a_reboot_pending() -> None:
    running = rec.RunningFirmware("a", "running", True)
    applied = rec.applied(rec.updating("u-old-3", "new", "2.0.0", "hub", "boot-1", running),
                          told=True)  # fmt: skip
    switched = AB_KV | {"nerves_fw_active": "b", "b.nerves_fw_uuid": "new",
                        "nerves_fw_validated": "0"}  # fmt: skip
    found = rec.recover(applied, "boot-1", switched)
    c = journaled(found)
    assert c.slot == {"nerves_fw_uuid": "running"}  # not the new one
    assert c.device_api.validation.validated and c.device_api.validation.frozen
    out = c.start(now=10.0)
    assert saved(out) == [applied]
    assert RebootScheduled(2000) in out and not of(Finished, out)
    assert c.state == "rebooting" and c.next_deadline() == 12.0
    assert c.hub_event(update("newer"), now=11.0) == []  # nothing is written before it
    assert not [e for e in c.hub_event(hs.Joined({}), 11.0) if isinstance(e, us.HubPush)
                and e.event == "status_update"]  # fmt: skip
    assert c.tick(12.0) == [RebootNow()]


def test_a_restart_after_the_reboot_clears_the_journal() -> None:
    running = rec.RunningFirmware("a", "running", True)
    applied = rec.applied(rec.updating("u-old-3", "new", "2.0.0", "hub", "boot-1", running),
                          told=True)  # fmt: skip
    booted = AB_KV | {"nerves_fw_active": "b", "b.nerves_fw_uuid": "new"}
    c = journaled(rec.recover(applied, "boot-2", booted))
    assert c.slot == {"nerves_fw_uuid": "new"}
    out = c.start(now=0.0)
    assert saved(out) == [None] and c.state == "idle" and not of(Finished, out)


def test_an_unreadable_journal_is_an_error_and_nothing_else() -> None:
    c = journaled(rec.unreadable(AB_KV, "bad JSON"))
    out = c.start(now=0.0)
    assert saved(out) == [None] and c.state == "idle" and "bad JSON" in c.last_error

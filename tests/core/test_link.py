"""LinkCore: hub events and face requests in, the root's effects out (core/link.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import link
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.archive_manager import FetchResult, StartArchiveDownload
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


def core(deciders: int = 1, **settings: object) -> link.LinkCore:
    values: dict[str, object] = {
        "decision_timeout_ms": 30_000,
        "default_update": "apply",
        "default_archive": "ignore",
        "ignore_same_uuid": True,
        "reboot_delay_ms": 2000,
        "fwup_keys": ("fwkey",),
    }
    values.update(settings)
    c = link.LinkCore(link.LinkSettings(**values), RUNNING, "tok")  # type: ignore[arg-type]
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

"""The update manager's rules (protocol.md §6.1-6.2, §6.7; DESIGN §3), synchronously."""

from __future__ import annotations

import pytest

from nhlink_dbus.core.hub_messages import FirmwareMetadata, UpdateInfo
from nhlink_dbus.core.update_manager import (
    AskDecision,
    Decided,
    Decision,
    Finished,
    PushStatus,
    ReportError,
    ReportProgress,
    RequestReboot,
    StartUpdate,
    StateChanged,
    Superseded,
    UpdateManager,
    UpdateState,
)
from nhlink_dbus.errors import StateError

KEYS = ("key",)


def info(uuid: str = "u1") -> UpdateInfo:
    return UpdateInfo("https://hub/fw?X-Amz-Signature=s", FirmwareMetadata(uuid=uuid))


def kinds(effects: list[object]) -> list[type]:
    return [type(e) for e in effects]


def test_apply_path_reports_and_reboots_once() -> None:
    m = UpdateManager(reboot_delay_ms=3000)
    out = m.offer(info(), KEYS)
    assert kinds(out) == [StateChanged, AskDecision]
    rid = out[-1].offer.request_id  # type: ignore[attr-defined]
    out = m.decide(rid, Decision.APPLY, 0, "policy", now=0)
    assert kinds(out) == [Decided, StateChanged, StartUpdate]
    assert m.state is UpdateState.UPDATING
    seen = [e for p in (0, 0, 5, 3, 50, 100, 100) for e in m.progress_report(p)]
    assert [e.percent for e in seen if isinstance(e, ReportProgress)] == [0, 5, 50, 100]
    out = m.finished(True, "")
    assert out[0] == Finished(rid, True, "")
    assert RequestReboot(3000, announce=False) in out
    assert m.state is UpdateState.REBOOTING
    assert m.finished(False, "late") == []  # exactly one outcome
    assert m.offer(info("u2"), KEYS) == []  # never a second write before the reboot


def test_offers_while_updating_are_ignored() -> None:
    m = UpdateManager()
    rid = m.offer(info(), KEYS)[-1].offer.request_id  # type: ignore[attr-defined]
    m.decide(rid, Decision.APPLY, 0, "policy", now=0)
    assert m.offer(info("other"), KEYS) == []
    assert m.state is UpdateState.UPDATING


def test_failure_is_pushed_to_the_hub_and_new_offers_are_accepted() -> None:
    m = UpdateManager()
    rid = m.offer(info(), KEYS)[-1].offer.request_id  # type: ignore[attr-defined]
    m.decide(rid, Decision.APPLY, 0, "policy", now=0)
    out = m.finished(False, "raw_write detected blake2b mismatch on 'rootfs.img'")
    assert PushStatus("fwup error raw_write detected blake2b mismatch on 'rootfs.img'") in out
    assert any(isinstance(e, ReportError) for e in out)
    assert m.state is UpdateState.FAILED
    assert m.last_error.startswith("raw_write")
    assert kinds(m.offer(info("u3"), KEYS))[-1] is AskDecision


def test_download_failure_status_names_the_download() -> None:
    m = UpdateManager()
    rid = m.offer(info(), KEYS)[-1].offer.request_id  # type: ignore[attr-defined]
    m.decide(rid, Decision.APPLY, 0, "policy", now=0)
    out = m.finished(False, "http_error 503", applier_error=False)
    assert PushStatus("fwup error download failed: http_error 503") in out


def test_reschedule_reoffers_same_request_after_delay() -> None:
    m = UpdateManager()
    offer = m.offer(info(), KEYS)[-1].offer  # type: ignore[attr-defined]
    m.decide(offer.request_id, Decision.RESCHEDULE, 500, "uid=0", now=1000)
    assert m.state is UpdateState.RESCHEDULED
    assert m.next_deadline() == 1500
    assert m.tick(1499) == []
    out = m.tick(1500)
    assert out[-1] == AskDecision(offer)  # same id, same info, same keys
    assert m.state is UpdateState.AWAITING_DECISION


def test_newer_offer_cancels_reschedule_and_supersedes_pending() -> None:
    m = UpdateManager()
    first = m.offer(info("a"), KEYS)[-1].offer  # type: ignore[attr-defined]
    m.decide(first.request_id, Decision.RESCHEDULE, 500, "x", now=0)
    out = m.offer(info("b"), KEYS)
    assert Superseded(first.request_id) in out
    assert m.next_deadline() is None
    second = out[-1].offer  # type: ignore[attr-defined]
    assert second.request_id != first.request_id
    with pytest.raises(StateError):
        m.decide(first.request_id, Decision.APPLY, 0, "x", now=0)


def test_no_keys_refused() -> None:
    m = UpdateManager()
    out = m.offer(info(), ())
    assert kinds(out) == [ReportError]
    assert m.state is UpdateState.IDLE


def test_illegal_transitions_raise_and_change_nothing() -> None:
    m = UpdateManager()
    with pytest.raises(StateError):
        m.decide("u1", Decision.APPLY, 0, "x", now=0)
    with pytest.raises(StateError):
        m.progress_report(5)
    assert m.state is UpdateState.IDLE
    rid = m.offer(info(), KEYS)[-1].offer.request_id  # type: ignore[attr-defined]
    with pytest.raises(StateError):
        m.decide(rid, Decision.RESCHEDULE, 0, "x", now=0)
    assert m.state is UpdateState.AWAITING_DECISION


def test_hub_reboot() -> None:
    m = UpdateManager()
    assert m.hub_reboot()[-1] == RequestReboot(0, announce=True)
    m2 = UpdateManager()
    rid = m2.offer(info(), KEYS)[-1].offer.request_id  # type: ignore[attr-defined]
    m2.decide(rid, Decision.APPLY, 0, "p", now=0)
    assert kinds(m2.hub_reboot()) == [ReportError]
    assert m2.state is UpdateState.UPDATING


def test_repeated_offer_keeps_the_question_and_its_id() -> None:
    m = UpdateManager()
    first = m.offer(info("same"), KEYS)[-1].offer  # type: ignore[attr-defined]
    fresher = UpdateInfo("https://hub/fw?X-Amz-Signature=new", FirmwareMetadata(uuid="same"))
    assert m.offer(fresher, KEYS) == []  # still awaiting the same decision
    assert m.pending is not None and m.pending.request_id == first.request_id
    assert m.pending.info.firmware_url.endswith("new")  # the fresher URL is kept
    m.decide(first.request_id, Decision.RESCHEDULE, 1000, "x", now=0)
    out = m.offer(info("same"), KEYS)  # during a reschedule: asked afresh, same id
    assert not any(isinstance(e, Superseded) for e in out)
    assert out[-1].offer.request_id == first.request_id  # type: ignore[attr-defined]
    assert m.next_deadline() is None

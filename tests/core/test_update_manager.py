"""The update lifecycle's rules (protocol.md §6.1-6.2, §6.7; DESIGN §3), synchronously."""

from __future__ import annotations

import pytest

from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.hub_messages import FirmwareMetadata, UpdateInfo
from nhlink_dbus.core.update_manager import (
    Finished,
    Offer,
    PushRebooting,
    RebootNow,
    RebootScheduled,
    ReportError,
    ReportProgress,
    StartUpdate,
    UpdateManager,
    UpdateState,
)
from nhlink_dbus.errors import StateError


def offer(uuid: str = "fw1", source: str = "file") -> Offer:
    return Offer(
        UpdateInfo("https://hub/fw?X-Amz-Signature=s", FirmwareMetadata(uuid=uuid)),
        ("k",),
        source,
    )


def test_apply_path_reports_and_reboots_once_after_the_delay() -> None:
    m = UpdateManager(reboot_delay_ms=3000)
    assert m.start("u-1", offer()) == [StartUpdate("u-1", offer())]
    assert m.state is UpdateState.UPDATING and not m.accepts_offers
    steps = ((0.0, 0), (0.1, 0), (0.2, 5), (0.3, 3), (0.4, 50), (0.5, 100), (0.6, 100), (0.7, 101))
    seen = [e for now, p in steps for e in m.progress_report(p, now)]
    assert seen == [ReportProgress(p) for p in (0, 5, 50, 100)]
    assert m.finished("u-1", True, "", now=10.0, applier_error=True) == [
        Finished("u-1", True, ""),
        RebootScheduled(3000),
    ]
    assert m.state is UpdateState.REBOOTING and not m.accepts_offers
    assert m.finished("u-1", False, "late", now=11.0, applier_error=True) == []  # one outcome
    assert m.next_deadline() == 13.0
    assert m.tick(12.9) == []
    assert m.tick(13.0) == [RebootNow()]
    assert m.tick(14.0) == [] and m.next_deadline() is None
    with pytest.raises(StateError):
        m.start("u-2", offer("fw2"))  # never a second write before the reboot


def test_bus_progress_at_most_every_100_ms_and_never_lost() -> None:
    """A percent that comes sooner than 100 ms after the last one shown is held back and
    shown when the 100 ms are over (unless a higher one replaced it); 100 at once; a
    percent held back when the update ends is shown before its outcome."""
    m = UpdateManager(reboot_delay_ms=3000)
    m.start("u-1", offer())
    assert m.progress_report(0, 1.0) == [ReportProgress(0)]
    assert m.next_deadline() is None
    assert m.progress_report(1, 1.01) == []  # held back
    assert m.progress_report(2, 1.05) == []  # replaces 1
    assert m.next_deadline() == pytest.approx(1.1)
    assert m.tick(1.09) == []
    assert m.tick(1.1) == [ReportProgress(2)]
    assert m.next_deadline() is None and m.tick(1.3) == []
    assert m.progress_report(3, 1.35) == [ReportProgress(3)]  # 250 ms after the last one
    assert m.progress_report(4, 1.36) == []
    assert m.progress_report(100, 1.37) == [ReportProgress(100)]  # at once; 4 is passed over
    assert m.next_deadline() is None
    m = UpdateManager(reboot_delay_ms=3000)
    m.start("u-2", offer())
    m.progress_report(10, 2.0)
    assert m.progress_report(20, 2.01) == []
    out = m.finished("u-2", False, "bad", now=2.02, applier_error=True)
    assert out[:2] == [ReportProgress(20), Finished("u-2", False, "bad")]
    assert m.next_deadline() is None


def test_outcome_of_another_request_is_dropped() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    assert m.finished("u-9", True, "", now=0.0, applier_error=True) == []
    assert m.state is UpdateState.UPDATING


def test_failure_is_reported_and_new_offers_are_accepted() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    out = m.finished("u-1", False, "bad signature", now=0.0, applier_error=True)
    assert out == [
        Finished("u-1", False, "bad signature"),
        ReportError("firmware update failed: bad signature"),
    ]
    assert m.state is UpdateState.FAILED and m.accepts_offers
    m.settle()
    assert m.state is UpdateState.IDLE


def test_download_failure_status_names_the_download() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer(source="hub"))
    out = m.finished("u-1", False, "HTTP 503", now=0.0, applier_error=False)
    assert out[0] == us.failed("download failed: HTTP 503")


def test_hub_offers_tell_the_hub_started_progress_and_completed() -> None:
    """2.9+ statuses (core/update_status.py): only for the hub's own offers; progress
    increasing, 500 ms apart, a final 100 before completed."""
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer(source="hub"))
    assert m.download_started("u-9", "eth0") == []  # another request
    assert m.download_started("u-1", "eth0") == [us.started("eth0")]
    pushes = [
        e
        for now, p in ((0.0, 0), (0.1, 10), (0.6, 20), (0.7, 30), (1.2, 40), (1.3, 99))
        for e in m.progress_report(p, now)
        if isinstance(e, us.HubPush)
    ]
    assert [e.payload["value"] for e in pushes] == [0, 20, 40]
    out = m.finished("u-1", True, "", now=2.0, applier_error=True)
    assert out[:3] == [us.progress("updating", 100), us.completed(), Finished("u-1", True, "")]
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-2", offer(source="file"))
    assert m.download_started("u-2", "eth0") == []
    assert [type(e) for e in m.progress_report(5, 0.0)] == [ReportProgress]
    assert m.finished("u-2", True, "", now=1.0, applier_error=True)[0] == Finished("u-2", True, "")


def test_progress_outside_an_update_is_dropped() -> None:
    assert UpdateManager(reboot_delay_ms=5000).progress_report(5, 0.0) == []


def test_illegal_transitions_raise_and_change_nothing() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    with pytest.raises(StateError):
        m.start("u-2", offer())
    with pytest.raises(StateError):
        m.settle()
    assert m.state is UpdateState.UPDATING and m.current == ("u-1", offer())


def test_hub_reboot() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    (refused,) = m.hub_reboot()
    assert isinstance(refused, ReportError) and m.state is UpdateState.UPDATING
    m = UpdateManager(reboot_delay_ms=5000)
    assert m.hub_reboot() == [PushRebooting(), RebootScheduled(0), RebootNow()]
    assert m.state is UpdateState.REBOOTING


def test_offer_key_tells_sources_apart() -> None:
    assert offer(source="hub").key == "hub:fw1"
    assert Offer(offer().info, ("k",), "file").key == "file:fw1"


def test_after_a_restart() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    assert m.resume_reboot(100.0) == [RebootScheduled(5000)]
    assert m.state is UpdateState.REBOOTING and m.next_deadline() == 105.0
    assert m.tick(105.0) == [RebootNow()]
    with pytest.raises(StateError):
        m.resume_reboot(106.0)  # only from idle
    with pytest.raises(StateError):
        m.recovered_failure("x")
    m = UpdateManager(reboot_delay_ms=5000)
    m.recovered_failure("interrupted")
    assert (m.state, m.last_error, m.accepts_offers) == (UpdateState.FAILED, "interrupted", True)

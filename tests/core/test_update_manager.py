"""The update lifecycle's rules (protocol.md §6.1-6.2, §6.7; DESIGN §3), synchronously."""

from __future__ import annotations

import pytest

from nhlink_dbus.core.hub_messages import FirmwareMetadata, UpdateInfo
from nhlink_dbus.core.update_manager import (
    Finished,
    Offer,
    PushRebooting,
    PushStatus,
    RebootNow,
    RebootScheduled,
    ReportError,
    ReportProgress,
    StartUpdate,
    UpdateManager,
    UpdateState,
)
from nhlink_dbus.errors import StateError


def offer(uuid: str = "fw1") -> Offer:
    return Offer(
        UpdateInfo("https://hub/fw?X-Amz-Signature=s", FirmwareMetadata(uuid=uuid)), ("k",)
    )


def test_apply_path_reports_and_reboots_once_after_the_delay() -> None:
    m = UpdateManager(reboot_delay_ms=3000)
    assert m.start("u-1", offer()) == [StartUpdate("u-1", offer())]
    assert m.state is UpdateState.UPDATING and not m.accepts_offers
    seen = [e for p in (0, 0, 5, 3, 50, 100, 100, 101) for e in m.progress_report(p)]
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


def test_outcome_of_another_request_is_dropped() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    assert m.finished("u-9", True, "", now=0.0, applier_error=True) == []
    assert m.state is UpdateState.UPDATING


def test_failure_is_pushed_to_the_hub_and_new_offers_are_accepted() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    out = m.finished("u-1", False, "bad signature", now=0.0, applier_error=True)
    assert out == [
        Finished("u-1", False, "bad signature"),
        PushStatus("fwup error bad signature"),
        ReportError("firmware update failed: bad signature"),
    ]
    assert m.state is UpdateState.FAILED and m.accepts_offers
    m.settle()
    assert m.state is UpdateState.IDLE


def test_download_failure_status_names_the_download() -> None:
    m = UpdateManager(reboot_delay_ms=5000)
    m.start("u-1", offer())
    out = m.finished("u-1", False, "HTTP 503", now=0.0, applier_error=False)
    assert PushStatus("fwup error download failed: HTTP 503") in out


def test_progress_outside_an_update_is_dropped() -> None:
    assert UpdateManager(reboot_delay_ms=5000).progress_report(5) == []


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
    assert offer().key == "hub:fw1"
    assert Offer(offer().info, ("k",), "file").key == "file:fw1"

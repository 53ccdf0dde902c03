"""What a restart finds of an update in flight (core/recovery.py): the rules table,
the records written along an update, and the journal file's format."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import recovery as rec
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.records import replace as replace_record
from nhlink_dbus.errors import JournalError

BOOT = "6f2d3c1e-0000-4000-8000-000000000001"
LATER = "6f2d3c1e-0000-4000-8000-000000000002"
RUNNING = rec.RunningFirmware("a", "v1", True)
BEFORE = {  # running v1 in slot a; slot b holds something older
    "nerves_fw_active": "a",
    "a.nerves_fw_uuid": "v1",
    "b.nerves_fw_uuid": "v0",
    "nerves_fw_validated": "1",
}
SWITCHED = BEFORE | {"nerves_fw_active": "b", "b.nerves_fw_uuid": "v2", "nerves_fw_validated": "0"}
PARTLY = BEFORE | {"b.nerves_fw_uuid": "v2"}  # slot b's metadata written, not switched


def record(phase: str = rec.UPDATING, **changes: object) -> rec.JournalRecord:
    base = rec.updating("u-tok-1", "v2", "2.0.0", "hub", BOOT, RUNNING)
    return replace_record(base, phase=phase, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("phase", "boot", "kv", "found", "outcome"),
    [
        (rec.UPDATING, BOOT, BEFORE, rec.Found.INTERRUPTED, (False, rec.INTERRUPTED)),
        (rec.UPDATING, BOOT, PARTLY, rec.Found.INTERRUPTED, (False, rec.INTERRUPTED)),
        (rec.UPDATING, BOOT, SWITCHED, rec.Found.PENDING_REBOOT, (True, rec.APPLIED_UNSEEN)),
        (rec.APPLIED, BOOT, SWITCHED, rec.Found.PENDING_REBOOT, None),
        (rec.APPLIED, BOOT, BEFORE, rec.Found.PENDING_REBOOT, None),  # a task that switches not
        (rec.UPDATING, LATER, BEFORE, rec.Found.INTERRUPTED, (False, rec.INTERRUPTED_BY_REBOOT)),
        (rec.UPDATING, LATER, SWITCHED, rec.Found.BOOTED, None),
        (rec.APPLIED, LATER, SWITCHED, rec.Found.BOOTED, None),
        (rec.APPLIED, LATER, BEFORE, rec.Found.REVERTED, None),
        (rec.UPDATING, "", SWITCHED, rec.Found.BOOTED, None),  # no boot id: a reboot
        (rec.APPLIED, "", BEFORE, rec.Found.REVERTED, None),
    ],
)
def test_the_rules_table(
    phase: str,
    boot: str,
    kv: dict[str, str],
    found: rec.Found,
    outcome: tuple[bool, str] | None,
) -> None:
    got = rec.recover(record(phase), boot, kv)
    assert got.found is found
    assert got.outcome == (None if outcome is None else ("u-tok-1", *outcome))
    if found is rec.Found.PENDING_REBOOT:
        # The running firmware is the recorded slot's, whatever the store switched to.
        assert (
            got.kv["nerves_fw_active"] == "a"
            and got.kv["b.nerves_fw_uuid"] == kv["b.nerves_fw_uuid"]
        )
        assert got.record is not None and got.record.phase == rec.APPLIED
        # Told already (phase applied, nothing pending) or not (never saw the OK).
        assert got.record.report == (None if phase == rec.APPLIED else "completed")
        assert got.error == ""
    elif found is rec.Found.BOOTED:
        assert (got.record, got.error, got.kv) == (None, "", kv)
    else:
        assert got.record is not None and got.record.phase == rec.FAILED
        assert got.record.report == "failed" and got.record.reason == got.error
        assert rec.hub_report(got.record) == [us.failed(got.error)]


def test_nothing_in_flight() -> None:
    got = rec.recover(None, BOOT, BEFORE)
    assert (got.found, got.record, got.outcome, got.kv) == (rec.Found.NOTHING, None, None, BEFORE)


def test_an_untold_failure_is_kept_until_told() -> None:
    failed = rec.failed(record(), "download failed: http_error 503")
    assert failed is not None
    got = rec.recover(failed, LATER, BEFORE)
    assert (got.found, got.record, got.error) == (
        rec.Found.UNTOLD,
        failed,
        "download failed: http_error 503",
    )
    assert rec.hub_report(failed) == [us.failed("download failed: http_error 503")]
    assert rec.told(failed) is None


def test_a_local_file_tells_the_hub_nothing() -> None:
    local = record(source="file")
    got = rec.recover(local, BOOT, BEFORE)
    assert got.found is rec.Found.INTERRUPTED and got.record is None
    assert got.outcome == ("u-tok-1", False, rec.INTERRUPTED)
    assert rec.hub_report(rec.applied(local, told=False)) == []


def test_reinstalling_the_running_firmware_is_never_taken_for_applied() -> None:
    same = replace_record(record(), uuid="v1")
    assert not rec.installed(same, BEFORE)  # same slot, same UUID: cannot tell
    assert rec.recover(same, LATER, BEFORE).found is rec.Found.INTERRUPTED
    # Into the other slot it can be told (the active slot changed).
    moved = BEFORE | {"nerves_fw_active": "b", "b.nerves_fw_uuid": "v1"}
    assert rec.installed(same, moved)
    # Single-slot systems: only a changed UUID says so.
    single = replace_record(record(), running=rec.RunningFirmware(None, "v1", True))
    assert rec.installed(single, {"nerves_fw_uuid": "v2"})
    assert not rec.installed(single, {"nerves_fw_uuid": "v1"})


def test_records_along_an_update() -> None:
    start = record()
    assert (start.phase, start.report) == (rec.UPDATING, None)
    assert rec.running_firmware(BEFORE, True) == RUNNING
    told = rec.applied(start, told=True)
    assert (told.phase, told.report, rec.hub_report(told)) == (rec.APPLIED, None, [])
    untold = rec.applied(start, told=False)
    assert rec.hub_report(untold) == [us.progress("updating", 100), us.completed()]
    assert rec.told(untold) == told  # the reboot is still to come: kept
    assert rec.hub_report(None) == [] and rec.told(None) is None


def test_an_unreadable_journal_is_said() -> None:
    got = rec.unreadable(BEFORE, "not JSON")
    assert got.found is rec.Found.UNREADABLE and got.record is None
    assert "not JSON" in got.error


# -- the file --------------------------------------------------------------------------------

texts = st.text(max_size=40)
records = st.builds(
    rec.JournalRecord,
    phase=st.sampled_from(rec.PHASES),
    request_id=texts,
    uuid=texts,
    version=st.none() | texts,
    source=st.sampled_from(("hub", "file", "removable")),
    boot_id=texts,
    running=st.builds(rec.RunningFirmware, st.none() | texts, st.none() | texts, st.booleans()),
    report=st.none() | st.sampled_from(rec.REPORTS),
    reason=texts,
)


@given(records)
def test_records_round_trip(value: rec.JournalRecord) -> None:
    assert rec.decode(rec.encode(value)) == value


@given(st.binary(max_size=400))
def test_any_bytes_give_a_record_or_a_journal_error(data: bytes) -> None:
    with contextlib.suppress(JournalError):
        assert isinstance(rec.decode(data), rec.JournalRecord)


@given(records, st.data())
def test_a_damaged_record_gives_a_record_or_a_journal_error(
    value: rec.JournalRecord, data: st.DataObject
) -> None:
    raw = bytearray(rec.encode(value))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(JournalError):
        assert isinstance(rec.decode(bytes(raw)), rec.JournalRecord)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "not a journal record"),
        (b"[]", "a journal record is a JSON object"),
        (b'{"version": 2}', "journal version 2 is not 1"),
        (b'{"version": true}', "'version' must be a int"),
        (b'{"version": 1, "phase": "done"}', "'phase' must be one of updating"),
    ],
)
def test_refusals(text: bytes, problem: str) -> None:
    with pytest.raises(JournalError, match=problem):
        rec.decode(text)

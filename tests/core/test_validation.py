"""Firmware validation as Nerves.Runtime reads and writes it, and the policy around it
(core/validation.py), synchronously."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import validation as val

AB = {"nerves_fw_active": "a", "a.nerves_fw_uuid": "A", "b.nerves_fw_uuid": "B"}


@pytest.mark.parametrize(
    ("kv", "status"),
    [
        ({}, val.Status.UNKNOWN),
        ({"upgrade_available": "0", "nerves_fw_validated": "0"}, val.Status.VALIDATED),
        ({"upgrade_available": "1", "nerves_fw_validated": "1"}, val.Status.UNVALIDATED),
        ({"upgrade_available": "x", "nerves_fw_validated": "1"}, val.Status.VALIDATED),
        (AB | {"a.nerves_fw_validated": "0", "nerves_fw_validated": "1"}, val.Status.UNVALIDATED),
        (AB | {"b.nerves_fw_validated": "0", "nerves_fw_validated": "1"}, val.Status.VALIDATED),
        (AB | {"nerves_fw_validated": "0"}, val.Status.UNVALIDATED),
        (AB | {"a.nerves_fw_validated": "yes"}, val.Status.UNKNOWN),
    ],
)
def test_status_as_nerves_runtime_reads_it(kv: dict[str, str], status: val.Status) -> None:
    assert val.validation_status(kv) is status
    assert val.firmware_validated(kv) == (status is not val.Status.UNVALIDATED)


def test_auto_revert_is_the_other_slot_unvalidated_with_platform_and_architecture() -> None:
    other = {"b.nerves_fw_platform": "rpi4", "b.nerves_fw_architecture": "arm"}
    assert val.auto_revert_detected(AB | other | {"b.nerves_fw_validated": "0"})
    assert not val.auto_revert_detected(AB | other | {"b.nerves_fw_validated": "1"})
    assert not val.auto_revert_detected(AB | other)  # unknown counts as "1"
    assert not val.auto_revert_detected(  # prevent-revert clears platform and architecture
        AB | {"b.nerves_fw_validated": "0", "b.nerves_fw_platform": ""}
    )
    kv = AB | other | {"b.nerves_fw_validated": "0", "b.nerves_fw_version": "2.0.0"}
    assert val.reverted_firmware(kv) == {
        "uuid": "B",
        "platform": "rpi4",
        "architecture": "arm",
        "validated": "0",
        "version": "2.0.0",
    }


kv_values = st.sampled_from(["0", "1", "", "x"])


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "nerves_fw_active": st.sampled_from(["a", "b", ""]),
            "upgrade_available": kv_values,
            "bootcount": kv_values,
            "nerves_fw_validated": kv_values,
            "a.nerves_fw_validated": kv_values,
            "b.nerves_fw_validated": kv_values,
        },
    )
)
def test_marking_valid_always_reads_back_validated(kv: dict[str, str]) -> None:
    changes = val.mark_valid_changes(kv)
    assert val.validation_status(kv | changes) is val.Status.VALIDATED
    # Only the scheme in use is touched: no upgrade_available appears from nothing.
    assert ("upgrade_available" in changes) == ("upgrade_available" in kv)
    assert set(changes) <= {
        "upgrade_available",
        "bootcount",
        "nerves_fw_validated",
        f"{kv.get('nerves_fw_active')}.nerves_fw_validated",
    }


def test_mark_valid_writes_what_ops_fw_or_the_fallback_writes() -> None:
    assert val.mark_valid_changes(AB) == {"a.nerves_fw_validated": "1"}  # ops.fw validate
    assert val.mark_valid_changes(AB | {"nerves_fw_validated": "0"}) == {"nerves_fw_validated": "1"}
    assert val.mark_valid_changes({"upgrade_available": "1", "bootcount": "2"}) == {
        "upgrade_available": "0",
        "bootcount": "0",
        "nerves_fw_validated": "1",
    }


def test_policy_manual_rechecks_every_10_s_and_pushes_once_validated() -> None:
    v = val.FirmwareValidation(AB | {"nerves_fw_validated": "0"})
    assert v.meta() == {"firmware_validated": False, "firmware_auto_revert_detected": False}
    assert v.joined(100.0) == []
    assert v.next_deadline() == 110.0
    assert v.tick(109.0) == []
    assert v.tick(110.0) == [val.ReadValidation()] and v.next_deadline() == 120.0
    assert v.observed(False, 110.5) == []
    assert v.observed(True, 111.0) == [val.ValidationChanged(True), val.PushFirmwareValidated()]
    assert v.next_deadline() is None and v.observed(True, 112.0) == []


def test_validated_at_join_pushes_nothing_and_meta_covers_a_change_while_away() -> None:
    v = val.FirmwareValidation(AB | {"nerves_fw_validated": "1"})
    assert v.joined(0.0) == [] and v.next_deadline() is None
    v = val.FirmwareValidation(AB | {"nerves_fw_validated": "0"})
    v.joined(0.0)
    v.left()
    # Validated while disconnected: the next join's meta says so, no push.
    assert v.observed(True, 5.0) == [val.ValidationChanged(True)]
    assert v.joined(6.0) == [] and v.meta()["firmware_validated"] is True


def test_policy_on_connect_marks_valid_after_the_delay_once() -> None:
    v = val.FirmwareValidation(
        AB | {"nerves_fw_validated": "0"}, policy="on-connect", validate_after_ms=30_000
    )
    v.joined(10.0)
    assert v.next_deadline() == 20.0  # the 10 s re-check comes first
    assert v.tick(20.0) == [val.ReadValidation()]
    v.observed(False, 20.0)
    assert v.tick(40.0) == [val.MarkValidNow("policy"), val.ReadValidation()]
    v.left()
    v.joined(50.0)
    assert val.MarkValidNow("policy") not in v.tick(1000.0)  # once per start
    immediate = val.FirmwareValidation(AB | {"nerves_fw_validated": "0"}, policy="on-connect")
    assert immediate.joined(0.0) == [val.MarkValidNow("policy")]
    with pytest.raises(ValueError, match="manual, on-connect"):
        val.FirmwareValidation({}, policy="sometimes")

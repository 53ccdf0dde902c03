"""core.hub_messages: typed server events and device payloads (protocol.md §3.1, §4.1, §5)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.errors import ProtocolError

META = {
    "architecture": "x86_64",
    "author": "me",
    "description": "d",
    "misc": None,
    "platform": "kiosk",
    "product": "p",
    "uuid": "f00d",
    "vcs_identifier": "abc",
    "version": "0.2.0",
}
UPDATE = {
    "update_available": True,
    "deployment_id": 12,
    "firmware_url": "https://s3/fw.fw?X-Amz-Signature=secret",
    "firmware_meta": META,
}
ARCHIVE = {
    "size": 1024,
    "uuid": "a-uuid",
    "version": "1.0.0",
    "description": None,
    "platform": "kiosk",
    "architecture": "x86_64",
    "uploaded_at": "2024-10-01T12:34:56",
    "url": "https://s3/archives/a-uuid.fw?sig=secret",
}


def test_update_parses_and_hides_url_from_repr() -> None:
    info = hm.parse_server_message("update", UPDATE)
    assert isinstance(info, hm.UpdateInfo)
    assert info.firmware_url == UPDATE["firmware_url"]
    assert info.deployment_id == 12
    assert info.firmware_meta == hm.FirmwareMetadata(**META)  # type: ignore[arg-type]
    assert "secret" not in repr(info)


def test_update_rules() -> None:
    # update_available is not examined; deployment_id null or odd is informational
    info = hm.parse_update({"firmware_url": "u", "firmware_meta": {}, "deployment_id": "7"})
    assert info.deployment_id is None and info.firmware_meta == hm.FirmwareMetadata()
    for bad in (
        {"firmware_meta": META},
        {"firmware_url": "u"},
        {"firmware_url": "u", "firmware_meta": []},
        {"firmware_url": None, "firmware_meta": META},
        {"firmware_url": "u", "firmware_meta": {"uuid": 5}},
        [],
    ):
        with pytest.raises(ProtocolError):
            hm.parse_update(bad)


def test_update_check_reply() -> None:
    none = {"update_available": False, "firmware_url": None, "firmware_meta": None}
    assert hm.parse_update_check(none | {"deployment_id": None}) is None
    assert isinstance(hm.parse_update_check(UPDATE), hm.UpdateInfo)
    with pytest.raises(ProtocolError):
        hm.parse_update_check("nothing")


def test_archive() -> None:
    info = hm.parse_server_message("archive", ARCHIVE)
    assert isinstance(info, hm.ArchiveInfo)
    assert (info.size, info.uuid, info.uploaded_at) == (1024, "a-uuid", "2024-10-01T12:34:56")
    assert "secret" not in repr(info)
    for key, value in (("size", "1"), ("size", -1), ("size", True), ("url", None), ("uuid", 3)):
        with pytest.raises(ProtocolError):
            hm.parse_archive(ARCHIVE | {key: value})


def test_keys_reboot_identify_scripts_and_tolerated_events() -> None:
    assert hm.parse_server_message("fwup_public_keys", {"keys": ["k1"]}) == hm.FwupPublicKeys(
        ("k1",)
    )
    assert hm.parse_server_message("archive_public_keys", {"keys": []}) == hm.ArchivePublicKeys(())
    with pytest.raises(ProtocolError):
        hm.parse_server_message("fwup_public_keys", {"keys": [1]})
    assert hm.parse_server_message("reboot", {}) == hm.Reboot()
    assert hm.parse_server_message("identify", {}) == hm.Identify()
    run = hm.parse_server_message("scripts/run", {"text": "IO.puts(1)", "ref": "abc"})
    assert run == hm.ScriptRun("IO.puts(1)", "abc")
    assert hm.script_run_reply(run) == {
        "ref": "abc",
        "output": hm.SCRIPTS_UNSUPPORTED_OUTPUT,
        "return": "nil",
    }
    for event in ("check_health", "extensions:get", "phx_close", "something_new"):
        assert hm.parse_server_message(event, {"x": 1}) is None


def test_device_payloads() -> None:
    assert hm.fwup_progress(42) == {"value": 42}
    for bad in (-1, 101, True, 4.5):
        with pytest.raises(ValueError):
            hm.fwup_progress(bad)  # type: ignore[arg-type]
    assert hm.status_update("fwup error boom") == {"status": "fwup error boom"}


def test_join_params() -> None:
    kv = {"nerves_fw_uuid": "u1", "nerves_fw_version": "0.1.0", "fwup_version": "shadowed"}
    params = hm.device_join_params(
        kv,
        "1.10.2",
        fwup_keys_configured=False,
        archive_keys_configured=False,
        currently_downloading_uuid=None,
    )
    assert params == {
        "nerves_fw_uuid": "u1",
        "nerves_fw_version": "0.1.0",
        "fwup_version": "1.10.2",
        "device_api_version": "2.4.0",
        "console_version": "2.0.0",
        "fwup_public_keys": "on_connect",
        "archive_public_keys": "on_connect",
        "currently_downloading_uuid": None,
    }
    with_keys = hm.device_join_params(
        kv,
        "1.10.2",
        fwup_keys_configured=True,
        archive_keys_configured=True,
        currently_downloading_uuid="f00d",
    )
    assert "fwup_public_keys" not in with_keys and "archive_public_keys" not in with_keys
    assert with_keys["currently_downloading_uuid"] == "f00d"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=10,
)
event_names = st.sampled_from(
    ["update", "archive", "fwup_public_keys", "archive_public_keys", "reboot", "scripts/run"]
)


partial_known = st.fixed_dictionaries(
    {}, optional={k: st.just(v) | json_values for k, v in (UPDATE | ARCHIVE).items()}
)


@given(event_names, json_values | partial_known)
def test_parsers_return_value_or_protocol_error(event: str, payload: Any) -> None:
    with contextlib.suppress(ProtocolError):
        hm.parse_server_message(event, payload)
    with contextlib.suppress(ProtocolError):
        hm.parse_update_check(payload)

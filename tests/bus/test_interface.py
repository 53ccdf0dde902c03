"""The org.nerveshub.Link1 object through a real (private) system bus, as root.

Every method is called through the bus: a dbus-next method called directly
returns None. The service behind it is tests/bus/fake_service.py.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageFlag
from dbus_next.signature import Variant

from nhlink_dbus import names
from nhlink_dbus.bus.interface import INTERNAL_MESSAGE
from nhlink_dbus.bus.server import BusFace
from nhlink_dbus.errors import (
    AccessDenied,
    DownloadError,
    FirmwareError,
    NotPossible,
)
from nhlink_dbus.service_api import LinkListener
from tests.bus.fake_service import UPDATE_INFO, FakeLinkService
from tests.bus.helpers import SignalRecorder, body_of, call, error_of
from tests.harness import system_bus_connection

E = names.ERROR_PREFIX
URLISH = ("http://", "https://", "X-Amz-Signature", "token")


def listener(service: FakeLinkService) -> LinkListener:
    (face_listener,) = service.listeners
    return face_listener


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# --- methods --------------------------------------------------------------------------


async def test_decide_reaches_the_service_with_the_caller(
    client: MessageBus, service: FakeLinkService
) -> None:
    body_of(await call(client, "Decide", "sst", ["u-1", "apply", 0]))
    ((_, request_id, decision, delay, caller),) = service.calls
    assert (request_id, decision, delay) == ("u-1", "apply", 0)
    assert caller.uid == 0
    assert caller.unique_name == client.unique_name


async def test_reschedule_with_a_delay(client: MessageBus, service: FakeLinkService) -> None:
    body_of(await call(client, "Decide", "sst", ["a-1", "reschedule", 60_000]))
    assert service.calls[0][1:4] == ("a-1", "reschedule", 60_000)


async def test_get_pending_requests_types_every_value(client: MessageBus) -> None:
    [requests] = body_of(await call(client, "GetPendingRequests"))
    by_id = {rid: (kind, info) for rid, kind, info in requests}
    kind, info = by_id["u-1"]
    assert kind == "update"
    assert info["size"] == Variant("x", UPDATE_INFO["size"])
    assert info["deployment_id"] == Variant("x", 42)
    assert info["version"] == Variant("s", "1.2.0")
    assert info["misc"] == Variant("s", "")
    assert by_id["a-1"][0] == "archive"


async def test_check_for_update_never_returns_a_url(
    client: MessageBus, service: FakeLinkService
) -> None:
    service.check_result = {
        "version": "2.0.0",
        "url": "https://fw.example.com/a.fw?X-Amz-Signature=abc",
        "firmware_url": "https://fw.example.com/b.fw",
        "download_url": "https://fw.example.com/c.fw",
        "misc": "https://fw.example.com/d.fw?token=x",
        "size": 10,
    }
    [info] = body_of(await call(client, "CheckForUpdate"))
    assert info == {"version": Variant("s", "2.0.0"), "size": Variant("x", 10)}


async def test_check_for_update_nothing_available(client: MessageBus) -> None:
    assert body_of(await call(client, "CheckForUpdate")) == [{}]


async def test_install_file_passes_the_open_file_and_closes_ours(
    client: MessageBus, service: FakeLinkService
) -> None:
    with tempfile.TemporaryFile() as fw:
        fw.write(b"PK\x03\x04 not really a firmware")
        fw.seek(0)
        before = open_fds()
        reply = await call(
            client,
            "InstallFile",
            "ha{sv}",
            [0, {"note": Variant("s", "from a test")}],
            unix_fds=[fw.fileno()],
        )
        assert body_of(reply) == ["file-1"]
        assert open_fds() == before  # the message's fd (and the service's dup) are closed
    assert service.installed == [b"PK\x03\x04 not really a firmware"]
    _, options, caller = service.calls[0]
    assert options == {"note": "from a test"}
    assert caller.uid == 0


async def test_install_file_without_a_descriptor_is_an_invalid_argument(
    client: MessageBus, service: FakeLinkService
) -> None:
    name, text = error_of(await call(client, "InstallFile", "ha{sv}", [0, {}]))
    assert name == E + "InvalidArgument"
    assert "file descriptor" in text
    assert service.calls == []


async def test_reconnect(client: MessageBus, service: FakeLinkService) -> None:
    body_of(await call(client, "Reconnect"))
    assert service.calls == [("reconnect",)]


async def test_set_reconnect_backoff_announces_the_property(
    client: MessageBus, service: FakeLinkService
) -> None:
    signals = await SignalRecorder(client).start()
    body_of(await call(client, "SetReconnectBackoff", "at", [[1000, 2000, 5000]]))
    assert service.calls == [("backoff", [1000, 2000, 5000])]
    changed = await signals.next("PropertiesChanged")
    assert changed.body == [
        names.INTERFACE,
        {"ReconnectBackoff": Variant("at", [1000, 2000, 5000])},
        [],
    ]
    body_of(await call(client, "SetReconnectBackoff", "at", [[]]))
    assert service.reconnect_backoff == []


async def test_a_call_without_reply_is_still_performed(
    client: MessageBus, service: FakeLinkService
) -> None:
    assert await call(client, "Reconnect", flags=MessageFlag.NO_REPLY_EXPECTED) is None
    body_of(await call(client, "GetPendingRequests"))  # after the first one, in order
    assert service.calls == [("reconnect",)]


async def test_a_call_must_name_the_interface(client: MessageBus, service: FakeLinkService) -> None:
    # The policy's send_interface rules: even root must name org.nerveshub.Link1.
    name, _ = error_of(await call(client, "Reconnect", interface=None))
    assert name == names.DBUS_ERROR_ACCESS_DENIED
    assert service.calls == []


async def test_unknown_signature_is_unknown_method(client: MessageBus) -> None:
    name, _ = error_of(await call(client, "Decide", "ss", ["u-1", "apply"]))
    assert name == "org.freedesktop.DBus.Error.UnknownMethod"


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nope", "apply", 0], "UnknownRequest"),
        (["u-1", "download", 0], "InvalidDecision"),
        (["a-1", "apply", 0], "InvalidDecision"),
        (["u-1", "apply", 5000], "InvalidArgument"),
    ],
)
async def test_refused_decisions_map_to_link1_errors_and_change_nothing(
    client: MessageBus, service: FakeLinkService, args: list[object], error: str
) -> None:
    signals = await SignalRecorder(client).start()
    name, text = error_of(await call(client, "Decide", "sst", args))
    assert name == E + error
    assert text and "Traceback" not in text
    assert service.calls == []
    assert set(service.pending) == {"u-1", "a-1"}
    assert signals.queue.empty()


async def test_first_decision_wins(client: MessageBus) -> None:
    body_of(await call(client, "Decide", "sst", ["u-1", "ignore", 0]))
    name, text = error_of(await call(client, "Decide", "sst", ["u-1", "apply", 0]))
    assert name == E + "UnknownRequest"
    assert "u-1" in text


@pytest.mark.parametrize("member", ["Reconnect", "CheckForUpdate", "GetPendingRequests"])
@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (NotPossible("not while updating"), "NotPossible"),
        (AccessDenied("no"), "AccessDenied"),
        (FirmwareError("signature verification failed"), "Failed"),
    ],
)
async def test_service_errors_map_by_class(
    client: MessageBus, service: FakeLinkService, member: str, exc: Exception, error: str
) -> None:
    service.fail_with = exc
    name, text = error_of(await call(client, member))
    assert (name, text) == (E + error, str(exc))


async def test_urls_in_error_messages_lose_their_credentials(
    client: MessageBus, service: FakeLinkService
) -> None:
    service.fail_with = DownloadError(
        "HTTP 403 from https://user:pw@fw.example.com/fw/a.fw?X-Amz-Signature=abc&token=t"
    )
    name, text = error_of(await call(client, "CheckForUpdate"))
    assert name == E + "Failed"
    assert text == "HTTP 403 from https://fw.example.com/fw/a.fw"


@pytest.mark.parametrize("member", ["Reconnect", "CheckForUpdate"])
async def test_a_bug_is_internal_with_a_generic_message_and_a_logged_traceback(
    client: MessageBus,
    service: FakeLinkService,
    caplog: pytest.LogCaptureFixture,
    member: str,
) -> None:
    service.fail_with = RuntimeError("secret detail /etc/nhlink/secret")
    name, text = error_of(await call(client, member))
    assert (name, text) == (names.ERROR_INTERNAL, INTERNAL_MESSAGE)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "nhlink_dbus.bus.interface"
    assert record.exc_info is not None and "secret detail" in str(record.exc_info[1])
    caplog.clear()  # the one expected ERROR record
    # The connection and the object still work afterwards.
    body_of(await call(client, "GetPendingRequests"))


# --- properties ------------------------------------------------------------------------


async def test_get_all_properties(client: MessageBus, service: FakeLinkService) -> None:
    service.server_url = "wss://dev:pw@devices.example.com/socket?key=nhd_x"
    service.last_error = "download failed: https://fw.example.com/a.fw?sig=1"
    [props] = body_of(
        await call(client, "GetAll", "s", [names.INTERFACE], interface=names.DBUS_PROPERTIES)
    )
    assert props == {
        "State": Variant("s", "awaiting-decision"),
        "Connected": Variant("b", True),
        "Progress": Variant("u", 0),
        "CurrentFirmware": Variant(
            "a{ss}", {"uuid": "running-uuid", "version": "1.1.0", "product": "kiosk"}
        ),
        "DeviceIdentifier": Variant("s", "kiosk-0042"),
        "ServerUrl": Variant("s", "wss://devices.example.com/socket"),
        "LastError": Variant("s", "download failed: https://fw.example.com/a.fw"),
        "ReconnectBackoff": Variant("at", []),
        "DecisionTimeout": Variant("t", 30000),
        "DefaultDecision": Variant("s", "apply"),
        "Version": Variant("s", "0.1.0"),
        "FirmwareValidated": Variant("b", False),
        "AutoRevertDetected": Variant("b", False),
        "UpdateMode": Variant("s", "automatic"),
        "ManagedUpdatesAllowed": Variant("b", True),
        "Extensions": Variant("as", ["health"]),
        "NetworkInterface": Variant("s", "eth0"),
    }


async def test_properties_are_read_only(client: MessageBus) -> None:
    name, _ = error_of(
        await call(
            client,
            "Set",
            "ssv",
            [names.INTERFACE, "State", Variant("s", "idle")],
            interface=names.DBUS_PROPERTIES,
        )
    )
    assert name == names.DBUS_ERROR_ACCESS_DENIED  # the policy; the object refuses too


async def test_a_failing_property_is_internal_without_details(
    client: MessageBus, service: FakeLinkService, caplog: pytest.LogCaptureFixture
) -> None:
    service.current_firmware = None  # type: ignore[assignment]  # .items() fails
    name, text = error_of(
        await call(
            client,
            "Get",
            "ss",
            [names.INTERFACE, "CurrentFirmware"],
            interface=names.DBUS_PROPERTIES,
        )
    )
    assert (name, text) == (names.ERROR_INTERNAL, INTERNAL_MESSAGE)
    assert any(r.name == "nhlink_dbus.bus.interface" for r in caplog.records)
    caplog.clear()


async def test_property_changes_are_announced(
    client: MessageBus, service: FakeLinkService, caplog: pytest.LogCaptureFixture
) -> None:
    signals = await SignalRecorder(client).start()
    listener(service).properties_changed({"State": "updating", "Progress": 250, "Bogus": 1})
    changed = await signals.next("PropertiesChanged")
    assert changed.body == [
        names.INTERFACE,
        {"State": Variant("s", "updating"), "Progress": Variant("u", 100)},
        [],
    ]
    assert "Bogus" in caplog.text


# --- signals ---------------------------------------------------------------------------


async def test_every_signal_with_its_arguments(
    client: MessageBus, service: FakeLinkService
) -> None:
    signals = await SignalRecorder(client).start()
    face = listener(service)
    info = {**UPDATE_INFO, "url": "https://fw.example.com/x.fw?sig=1"}
    face.update_available("u-9", info)
    face.archive_available("a-9", {"uuid": "a", "firmware_url": "https://x/y"})
    face.archive_ready("a-9", {"uuid": "a"}, "/var/lib/nhlink/archives/a.fw")
    face.decision_made("u-9", "apply", 0, "timeout")
    face.fwup_progress(42)
    face.fwup_message("warning", 3, "slow media")
    face.update_finished("u-9", False, "fwup: https://fw.example.com/x.fw?sig=1 failed")
    face.error("connection refused")
    face.identify()
    face.disconnected("heartbeat timeout")
    face.reboot_scheduled(5000)
    got = [await signals.next() for _ in range(11)]
    expected_info = {k: v for k, v in got[0].body[1].items()}
    assert "url" not in expected_info and expected_info["version"] == Variant("s", "1.2.0")
    assert [(m.member, m.signature) for m in got] == [
        ("UpdateAvailable", "sa{sv}"),
        ("ArchiveAvailable", "sa{sv}"),
        ("ArchiveReady", "sa{sv}s"),
        ("DecisionMade", "ssts"),
        ("FwupProgress", "u"),
        ("FwupMessage", "sus"),
        ("UpdateFinished", "sbs"),
        ("Error", "s"),
        ("Identify", ""),
        ("Disconnected", "s"),
        ("RebootScheduled", "t"),
    ]
    assert got[1].body == ["a-9", {"uuid": Variant("s", "a")}]
    assert got[2].body == ["a-9", {"uuid": Variant("s", "a")}, "/var/lib/nhlink/archives/a.fw"]
    assert got[3].body == ["u-9", "apply", 0, "timeout"]
    assert got[4].body == [42]
    assert got[5].body == ["warning", 3, "slow media"]
    assert got[6].body == ["u-9", False, "fwup: https://fw.example.com/x.fw failed"]
    assert got[7].body == ["connection refused"]
    assert got[9].body == ["heartbeat timeout"]
    assert got[10].body == [5000]
    for msg in got:
        text = repr(msg.body)
        assert not any(marker in text for marker in URLISH[2:]), text
        assert "x.fw?" not in text


async def test_two_clients_both_see_decision_made(
    client: MessageBus, service: FakeLinkService, face: BusFace
) -> None:
    async with system_bus_connection() as other:
        first = await SignalRecorder(client).start()
        second = await SignalRecorder(other).start()
        body_of(await call(other, "Decide", "sst", ["u-1", "ignore", 0]))
        for signals in (first, second):
            msg = await signals.next("DecisionMade")
            assert msg.body == ["u-1", "ignore", 0, f"uid=0 {other.unique_name}"]


async def test_signals_after_close_do_not_reach_the_service(
    system_bus: object, service: FakeLinkService, face: BusFace
) -> None:
    await face.close()
    listener(service).error("after close")  # no bus: nothing happens, nothing raises
    await face.close()  # twice is harmless


def test_policy_file_is_the_one_in_the_repository() -> None:
    conf = Path(__file__).resolve().parents[2] / "dbus-policy" / "org.nerveshub.Link.conf"
    text = conf.read_text()
    assert '<allow own="org.nerveshub.Link"/>' in text
    assert 'send_interface="org.nerveshub.Link1"' in text

"""Properties calls that must fail get dbus-next's error, and no traceback in the log
(bus/properties.py; found by ``make fuzz``: every ``Get`` of an unknown interface
logged "got unexpected error processing a message" with a traceback, and everyone
may call ``Get``). The autouse fixture of this folder fails a test on any ERROR log."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from nhlink_dbus import names
from nhlink_dbus.bus.properties import properties_guard

CASES = [
    ("Get", "ss", ["org.example.Nope", "State"], "org.freedesktop.DBus.Error.UnknownInterface"),
    ("Get", "ss", [names.INTERFACE, "Nope"], "org.freedesktop.DBus.Error.UnknownProperty"),
    ("Get", "ss", ["org.freedesktop.DBus.Peer", "x"], "org.freedesktop.DBus.Error.UnknownProperty"),
    ("GetAll", "s", ["org.example.Nope"], "org.freedesktop.DBus.Error.UnknownInterface"),
    ("GetAll", "s", [""], "org.freedesktop.DBus.Error.NotSupported"),
    ("Get", "s", [names.INTERFACE], "org.freedesktop.DBus.Error.UnknownMethod"),
    ("Set", "ssv", [names.INTERFACE, "State", Variant("s", "idle")],
     "org.freedesktop.DBus.Error.PropertyReadOnly"),
]  # fmt: skip


async def _properties(client: MessageBus, member: str, signature: str, body: list[Any]) -> Message:
    reply = await client.call(
        Message(
            destination=names.BUS_NAME,
            path=names.OBJECT_PATH,
            interface=names.DBUS_PROPERTIES,
            member=member,
            signature=signature,
            body=body,
        )
    )
    assert reply is not None
    return reply


@pytest.mark.parametrize(("member", "signature", "body", "error"), CASES)
async def test_failing_properties_calls_are_answered_without_a_traceback(
    client: MessageBus, member: str, signature: str, body: list[Any], error: str
) -> None:
    reply = await _properties(client, member, signature, body)
    if member == "Set":
        # the shipped policy lets nobody call Set: the bus answers before we would
        assert reply.error_name == names.DBUS_ERROR_ACCESS_DENIED
        return
    assert reply.message_type == MessageType.ERROR and reply.error_name == error, reply.body


async def test_valid_properties_calls_still_work(client: MessageBus) -> None:
    got = await _properties(client, "Get", "ss", [names.INTERFACE, "State"])
    assert got.message_type == MessageType.METHOD_RETURN
    everything = await _properties(client, "GetAll", "s", [names.INTERFACE])
    assert "State" in everything.body[0]
    standard = await _properties(client, "GetAll", "s", ["org.freedesktop.DBus.Peer"])
    assert standard.body == [{}]


def test_set_would_be_refused_as_read_only_if_a_policy_let_it_through() -> None:
    guard = properties_guard(names.INTERFACE, {"State"})
    call = Message(
        destination=names.BUS_NAME,
        path=names.OBJECT_PATH,
        interface=names.DBUS_PROPERTIES,
        member="Set",
        signature="ssv",
        body=[names.INTERFACE, "State", Variant("s", "idle")],
        serial=7,
    )
    reply = guard(call)
    assert reply is not None
    assert reply.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"

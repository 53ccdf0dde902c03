"""``org.freedesktop.DBus.Properties`` calls on our object that must fail, answered here.

dbus-next answers them itself by raising ``DBusError`` inside its default handler;
the error reply goes out, but its reply helper does not swallow the exception
(``SendReply.__exit__`` drops ``_exit``'s verdict), so every such call also logs
``ERROR ... got unexpected error processing a message`` with a traceback. Since
everyone may call ``Get``/``GetAll`` (DESIGN §2), anyone could fill the journal
that way (found by ``make fuzz``). :func:`properties_guard` answers those calls
first, with the error dbus-next would give, and leaves the valid ones to it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from dbus_next.constants import ErrorType, MessageType
from dbus_next.message import Message

from nhlink_dbus import names

_SIGNATURES = {"Get": "ss", "GetAll": "s", "Set": "ssv"}
# Interfaces every object has, without properties (what dbus-next answers for them).
_STANDARD = frozenset(
    {
        names.DBUS_PROPERTIES,
        names.DBUS_INTROSPECTABLE,
        "org.freedesktop.DBus.Peer",
        "org.freedesktop.DBus.ObjectManager",
    }
)


def properties_guard(
    interface: str, properties: Collection[str], path: str = names.OBJECT_PATH
) -> Callable[[Message], Message | None]:
    """A message handler (add it before exporting): the error reply for a Properties
    call on ``path`` that would fail, else None (dbus-next answers it)."""

    def guard(msg: Message) -> Message | None:
        if (
            msg.message_type != MessageType.METHOD_CALL
            or msg.path != path
            or msg.interface != names.DBUS_PROPERTIES
        ):
            return None
        member, body = msg.member, msg.body
        if _SIGNATURES.get(member) != msg.signature:
            return _error(msg, ErrorType.UNKNOWN_METHOD, f"no method {member}({msg.signature})")
        name = body[0]
        if name == "":
            return _error(msg, ErrorType.NOT_SUPPORTED, "an empty interface name is not supported")
        if name in _STANDARD:
            if member == "GetAll":
                return None  # dbus-next answers {} for these
            return _error(msg, ErrorType.UNKNOWN_PROPERTY, f"{name} has no property {body[1]}")
        if name != interface:
            return _error(msg, ErrorType.UNKNOWN_INTERFACE, f"no interface {name} at {path}")
        if member == "GetAll":
            return None
        if body[1] not in properties:
            return _error(msg, ErrorType.UNKNOWN_PROPERTY, f"{name} has no property {body[1]}")
        if member == "Set":
            return _error(msg, ErrorType.PROPERTY_READ_ONLY, f"{body[1]} is read-only")
        return None

    return guard


def _error(msg: Message, error: ErrorType, text: str) -> Message:
    return Message.new_error(msg, error.value, text)

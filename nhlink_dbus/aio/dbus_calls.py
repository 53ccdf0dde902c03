"""Plain method calls, property reads and signal matches on another service (dbus-next).

The clients of other system services (GeoClue2, NetworkManager) talk through
these three helpers: every call has a deadline, an error reply becomes
:class:`CallError` (with the D-Bus error name), and a bus that is gone is
refused at once (dbus-next would queue the call and never answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from nhlink_dbus import names

CALL_TIMEOUT_S: Final = 25.0  # the reference implementation's default


class CallError(Exception):
    """The call failed: an error reply (``name`` is its D-Bus error name), no answer
    in time, or no bus."""

    def __init__(self, name: str, text: str = "") -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


async def call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Sequence[Any] = (),
    *,
    timeout: float = CALL_TIMEOUT_S,
) -> list[Any]:
    """The reply's body; raises :class:`CallError`."""
    if not bus.connected:
        raise CallError("nhlink.NoBus", "the system bus connection is closed")
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(message)
    except TimeoutError:
        raise CallError("nhlink.Timeout", f"no answer within {timeout:g} s") from None
    except (OSError, EOFError) as exc:
        raise CallError("nhlink.NoBus", f"bus connection lost: {exc}") from exc
    assert reply is not None  # a method call always gets a reply
    if reply.message_type is MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CallError(str(reply.error_name), text)
    return list(reply.body)


async def get_property(
    bus: MessageBus, destination: str, path: str, interface: str, name: str, **kw: float
) -> Any:
    """``org.freedesktop.DBus.Properties.Get``, unwrapped from its variant."""
    (value,) = await call(
        bus, destination, path, names.DBUS_PROPERTIES, "Get", "ss", [interface, name], **kw
    )
    return value.value if isinstance(value, Variant) else value


async def set_property(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    name: str,
    signature: str,
    value: Any,
    **kw: float,
) -> None:
    """``org.freedesktop.DBus.Properties.Set``."""
    body = [interface, name, Variant(signature, value)]
    await call(bus, destination, path, names.DBUS_PROPERTIES, "Set", "ssv", body, **kw)


class SignalWatch:
    """Signals ``member`` of ``interface`` from ``sender`` at ``path``, handed to
    ``on_signal(body)`` from the moment :meth:`start` returns until :meth:`stop`.

    Only broadcasts from the name's owner count: a signal sent *to* us by anyone
    else (unicast skips match rules) is ignored."""

    def __init__(
        self,
        bus: MessageBus,
        *,
        sender: str,
        path: str,
        interface: str,
        member: str,
        on_signal: Callable[[list[Any]], None],
    ) -> None:
        self._bus = bus
        self._rule = (
            f"type='signal',sender='{sender}',path='{path}',"
            f"interface='{interface}',member='{member}'"
        )
        self._path, self._interface, self._member = path, interface, member
        self._on_signal = on_signal
        self._added = False
        self._sender = sender
        self._owner: str | None = None

    def _handler(self, msg: Message) -> None:
        if (
            msg.message_type is MessageType.SIGNAL
            and msg.sender == self._owner
            and not msg.destination
            and msg.path == self._path
            and msg.interface == self._interface
            and msg.member == self._member
        ):
            self._on_signal(list(msg.body))

    async def start(self) -> None:
        (owner,) = await call(
            self._bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE,
            "GetNameOwner", "s", [self._sender],
        )  # fmt: skip
        self._owner = str(owner)
        self._bus.add_message_handler(self._handler)
        try:
            await call(
                self._bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE,
                "AddMatch", "s", [self._rule],
            )  # fmt: skip
        except BaseException:
            self._bus.remove_message_handler(self._handler)
            raise
        self._added = True

    async def stop(self) -> None:
        self._bus.remove_message_handler(self._handler)
        if self._added and self._bus.connected:
            self._added = False
            with contextlib.suppress(CallError):
                await call(
                    self._bus, names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE,
                    "RemoveMatch", "s", [self._rule],
                )  # fmt: skip

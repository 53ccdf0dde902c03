"""Client-side helpers for the bus face's tests (dbus-next, low level)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageFlag, MessageType
from dbus_next.message import Message

from nhlink_dbus import names


async def call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: Sequence[Any] = (),
    *,
    interface: str | None = names.INTERFACE,
    unix_fds: Sequence[int] = (),
    flags: MessageFlag = MessageFlag.NONE,
) -> Message | None:
    """Call ``member`` on the service; the reply (an error reply is returned, not raised)."""
    return await bus.call(
        Message(
            destination=names.BUS_NAME,
            path=names.OBJECT_PATH,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
            unix_fds=list(unix_fds),
            flags=flags,
        )
    )


def error_of(reply: Message | None) -> tuple[str, str]:
    assert reply is not None
    assert reply.message_type == MessageType.ERROR, reply.body
    return str(reply.error_name), str(reply.body[0])


def body_of(reply: Message | None) -> list[Any]:
    assert reply is not None
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return list(reply.body)


class SignalRecorder:
    """Every signal of the service that reaches one client connection."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[Message] = asyncio.Queue()

    async def start(self) -> SignalRecorder:
        self.bus.add_message_handler(self._on_message)
        for interface in (names.INTERFACE, names.DBUS_PROPERTIES):
            rule = f"type='signal',sender='{names.BUS_NAME}',interface='{interface}'"
            reply = await self.bus.call(
                Message(
                    destination=names.DBUS_NAME,
                    path=names.DBUS_PATH,
                    interface=names.DBUS_INTERFACE,
                    member="AddMatch",
                    signature="s",
                    body=[rule],
                )
            )
            body_of(reply)
        return self

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.path == names.OBJECT_PATH:
            self.queue.put_nowait(msg)

    async def next(self, member: str | None = None, timeout: float = 5.0) -> Message:
        """The next signal (named ``member``, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.queue.get()
                if member is None or msg.member == member:
                    return msg

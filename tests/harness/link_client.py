"""A test client of org.nerveshub.Link1 on the private bus: every signal recorded,
methods called, waits that wake on the signal itself (no polling of logs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.bus.info import unwrap


class CallFailed(Exception):
    def __init__(self, error_name: str, text: str) -> None:
        super().__init__(f"{error_name}: {text}")
        self.error_name = error_name


class LinkClient:
    """Records the service's signals from the moment :meth:`start` returns."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: list[tuple[str, list[Any]]] = []
        self._changed = asyncio.Event()

    async def start(self) -> LinkClient:
        self.bus.add_message_handler(self._on_message)
        rule = f"type='signal',path='{names.OBJECT_PATH}',interface='{names.INTERFACE}'"
        await self._call(
            names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE, "AddMatch", "s", [rule]
        )
        return self

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.interface == names.INTERFACE:
            self.signals.append((msg.member or "", [unwrap(v) for v in msg.body]))
            self._changed.set()

    def named(self, member: str) -> list[list[Any]]:
        return [body for name, body in self.signals if name == member]

    async def wait_for(
        self,
        member: str,
        predicate: Callable[[list[Any]], bool] = lambda _body: True,
        *,
        count: int = 1,
        timeout: float = 60,
        log: Callable[[], str] = lambda: "",
    ) -> list[list[Any]]:
        """The first ``count`` bodies of ``member`` signals that satisfy ``predicate``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = [b for b in self.named(member) if predicate(b)]
                    if len(found) >= count:
                        return found[:count]
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {member} signal (got {self.signals!r})\n{log()[-4000:]}"
            ) from None

    async def call(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> list[Any]:
        return await self._call(
            names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE, member, signature, body
        )

    async def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str,
        body: Sequence[Any],
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            raise CallFailed(reply.error_name or "", str(text))
        return [unwrap(v) for v in reply.body]

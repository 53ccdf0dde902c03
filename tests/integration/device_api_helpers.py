"""Helpers for the device-API tests of the real daemon: a kiosk on the private bus
(dbus-next), and firmware pairs with a delta between them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.bus.info import unwrap
from nhlink_dbus.core.fwup_meta import meta_uuid
from nhlink_devtools.ab_layout import build_ab_firmware
from nhlink_devtools.fw_builder import load_private_key
from tests.integration.daemon_helpers import FIXTURES, LAYOUT, Firmware


class Kiosk:
    """A kiosk app on the bus: calls methods, reads properties, records our signals."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: list[tuple[str, list[Any]]] = []
        self._changed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        ours = msg.interface == names.INTERFACE or (
            msg.member == "PropertiesChanged" and msg.body and msg.body[0] == names.INTERFACE
        )
        if ours or msg.member == "NameOwnerChanged":
            self.signals.append((str(msg.member), [unwrap(v) for v in msg.body]))
            self._changed.set()

    async def wait_for_service(self, timeout: float = 30.0) -> None:
        """Until ``org.nerveshub.Link`` has an owner (NameOwnerChanged, no polling)."""
        rule = f"type='signal',member='NameOwnerChanged',arg0='{names.BUS_NAME}'"
        dbus = {"destination": names.DBUS_NAME, "path": names.DBUS_PATH}
        await self.call("AddMatch", "s", [rule], interface=names.DBUS_INTERFACE, **dbus)
        (has,) = await self.call("NameHasOwner", "s", [names.BUS_NAME], **dbus,
                                 interface=names.DBUS_INTERFACE)  # fmt: skip
        if not has:
            await self.wait_signal(
                "NameOwnerChanged", timeout=timeout, where=lambda name, _old, new: bool(new)
            )

    async def subscribe(self) -> None:
        """Our signals and property changes (from now on)."""
        for rule in (
            f"type='signal',interface='{names.INTERFACE}'",
            f"type='signal',interface='{names.DBUS_PROPERTIES}',path='{names.OBJECT_PATH}'",
        ):
            await self.call("AddMatch", "s", [rule], destination=names.DBUS_NAME,
                            path=names.DBUS_PATH, interface=names.DBUS_INTERFACE)  # fmt: skip

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = names.BUS_NAME,
        path: str = names.OBJECT_PATH,
        interface: str = names.INTERFACE,
    ) -> list[Any]:
        """The reply body; an error reply raises ``RuntimeError(name, text)``."""
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(reply.error_name, reply.body[0] if reply.body else "")
        return [unwrap(v) for v in reply.body]

    async def prop(self, name: str) -> Any:
        (value,) = await self.call(
            "Get", "ss", [names.INTERFACE, name], interface=names.DBUS_PROPERTIES
        )
        return value

    def named(self, member: str) -> list[list[Any]]:
        return [args for name, args in self.signals if name == member]

    async def wait_signal(
        self,
        member: str,
        count: int = 1,
        timeout: float = 30.0,
        where: Callable[..., bool] = lambda *_: True,
    ) -> list[list[Any]]:
        async with asyncio.timeout(timeout):
            while True:
                found = [a for a in self.named(member) if where(*a)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()


@dataclass
class FirmwarePair:
    v1: Firmware
    v2: Firmware
    delta: Path  # v2 as a delta from v1's rootfs
    v2_rootfs: bytes


def firmware_with_delta(folder: Path, rootfs_size: int = 4 << 20) -> FirmwarePair:
    """v1, v2 (a fifth of v1's 64 KiB blocks changed) and the delta from v1 to v2."""
    key = load_private_key((FIXTURES / "test-only-fwup-key.priv").read_text())
    rootfs1 = bytearray(os.urandom(rootfs_size))
    rootfs2 = bytearray(rootfs1)
    for offset in range(0, rootfs_size, 5 * 65536):
        rootfs2[offset : offset + 65536] = os.urandom(65536)
    blocks = rootfs_size // 512
    made = []
    for version, rootfs in (("1.0.0", rootfs1), ("2.0.0", rootfs2)):
        path = folder / f"pair-{version}.fw"
        conf = build_ab_firmware(
            path, version, bytes(rootfs), key, layout=LAYOUT, compresslevel=1,
            delta_source_blocks=blocks,
        )  # fmt: skip
        made.append(Firmware(path, meta_uuid(conf), version))
    delta = folder / "pair-2.0.0-delta.fw"
    conf = build_ab_firmware(
        delta, "2.0.0", bytes(rootfs2), key, layout=LAYOUT, compresslevel=1,
        delta_source_blocks=blocks, delta_from=bytes(rootfs1),
    )  # fmt: skip
    assert meta_uuid(conf) == made[1].uuid  # the same firmware, delivered as a patch
    assert delta.stat().st_size < made[1].path.stat().st_size // 2
    return FirmwarePair(made[0], made[1], delta, bytes(rootfs2))

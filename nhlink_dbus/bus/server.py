"""Putting the ``org.nerveshub.Link1`` object on the system bus.

:func:`serve` exports the object at ``/org/nerveshub/Link``, registers it as a
listener of the service, then requests the name ``org.nerveshub.Link`` (in that
order, so the name only appears once everything behind it answers). Without a
bus of its own it connects to the system bus (``DBUS_SYSTEM_BUS_ADDRESS``
honoured, as every libdbus/sd-bus client does) with fd passing on, which
``InstallFile`` needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import NameFlag, RequestNameReply
from dbus_next.errors import DBusError
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.aio.dbus_compat import disconnect_and_close, system_bus
from nhlink_dbus.bus.interface import LinkInterface
from nhlink_dbus.bus.properties import properties_guard
from nhlink_dbus.errors import BusNameError
from nhlink_dbus.service_api import LinkService

logger = logging.getLogger(__name__)


class BusFace:
    """The exported service object and its bus; :meth:`close` takes it off the bus."""

    def __init__(
        self,
        bus: MessageBus,
        interface: LinkInterface,
        owns_bus: bool,
        guard: Callable[[Message], Message | None] | None = None,
    ) -> None:
        self.bus = bus
        self.interface = interface
        self._owns_bus = owns_bus
        self._guard = guard
        self._closed = False

    async def close(self) -> None:
        """Release the name, unexport, and disconnect if :func:`serve` connected."""
        if self._closed:
            return
        self._closed = True
        if self.bus.connected:
            try:
                await self.bus.release_name(names.BUS_NAME)
            except Exception as exc:  # the bus went away meanwhile
                logger.debug("could not release %s: %s", names.BUS_NAME, exc)
        await self.interface.detach()
        if self._guard is not None:
            self.bus.remove_message_handler(self._guard)
        if self._owns_bus:
            await close_connection(self.bus)

    async def wait_closed(self) -> None:
        """Return when the bus connection ends (e.g. the bus daemon stopped)."""
        await self.bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


async def close_connection(bus: MessageBus) -> None:
    """Disconnect ``bus`` and close its socket.

    dbus-next 0.2.3's ``disconnect()`` only shuts the socket down; the socket
    object stays open until garbage collection (``ResourceWarning``).
    """
    await disconnect_and_close(bus)


async def serve(
    service: LinkService,
    bus: MessageBus | None = None,
    *,
    group: str = names.DEFAULT_ACCESS_GROUP,
) -> BusFace:
    """Export ``service`` as ``org.nerveshub.Link``; methods open to root and ``group``.

    ``bus`` (connected with ``negotiate_unix_fd=True``) is used as given and
    left connected by :meth:`BusFace.close`; without it the system bus is
    connected here. Raises :class:`BusNameError` if the name cannot be owned.
    """
    owns_bus = bus is None
    if bus is None:
        try:
            bus = await system_bus().connect()
        except (OSError, DBusError) as exc:
            raise BusNameError(f"cannot connect to the system bus: {exc}") from exc
    interface = LinkInterface(service, group)
    guard = properties_guard(names.INTERFACE, {p.name for p in interface.introspect().properties})
    bus.add_message_handler(guard)  # before the interface: failing Properties calls
    interface.attach(bus)
    face = BusFace(bus, interface, owns_bus, guard)
    try:
        service.add_listener(interface, decides=True)
        try:
            reply = await bus.request_name(names.BUS_NAME, NameFlag.DO_NOT_QUEUE)
        except DBusError as exc:
            if exc.type == names.DBUS_ERROR_ACCESS_DENIED:
                raise BusNameError(
                    f"not permitted to own {names.BUS_NAME} on the system bus "
                    "(the policy lets only root own it; is dbus-policy/"
                    f"{names.BUS_NAME}.conf installed?)"
                ) from exc
            raise BusNameError(f"cannot own {names.BUS_NAME}: {exc.text}") from exc
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise BusNameError(
                f"{names.BUS_NAME} is already owned by another process "
                "(is another nhlink-dbus running?)"
            )
    except BaseException:
        await face.close()
        raise
    logger.info("exported %s at %s as %s", names.INTERFACE, names.OBJECT_PATH, names.BUS_NAME)
    return face

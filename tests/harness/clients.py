"""dbus-next connections to the private system bus, opened and closed cleanly.

dbus-next 0.2.3's ``disconnect()`` shuts its socket down but never closes it,
so a dropped ``MessageBus`` warns ``ResourceWarning: unclosed <socket ...>`` at
garbage collection (an error under ``filterwarnings = error``).
:func:`close_dbus_next` finishes the job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType

from nhlink_dbus.aio.dbus_compat import disconnect_and_close


@contextlib.asynccontextmanager
async def system_bus_connection(*, negotiate_unix_fd: bool = True) -> AsyncIterator[MessageBus]:
    """A connected dbus-next bus (DBUS_SYSTEM_BUS_ADDRESS), closed on exit."""
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=negotiate_unix_fd).connect()
    try:
        yield bus
    finally:
        await close_dbus_next(bus)


async def close_dbus_next(bus: MessageBus) -> None:
    """Disconnect (if still connected), wait for it, then close the socket itself."""
    await disconnect_and_close(bus)

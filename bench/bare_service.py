"""The anchor of the start-up and idle benchmarks: a bare dbus-next service.

It does what any small D-Bus service written with the same libraries does: imports
dbus-next, connects to the system bus (``DBUS_SYSTEM_BUS_ADDRESS``), exports one
object with one property, owns a name (the first argument; ``org.nerveshub.Link`` by
default), then imports websockets (the
other library an idle nhlink-dbus holds) and waits. PyGObject is kept out of it, as
nhlink-dbus keeps it out of itself (dbus-next would import it when installed).
Run it as ``python bench/bare_service.py``; SIGTERM ends it.
"""

# No `from __future__ import annotations`: dbus-next reads the signature annotations.
import asyncio
import signal
import sys

sys.modules.setdefault("gi", None)  # type: ignore[arg-type]  # as nhlink-dbus does

from dbus_next.aio import MessageBus  # noqa: E402
from dbus_next.constants import BusType, NameFlag, PropertyAccess  # noqa: E402
from dbus_next.service import ServiceInterface, dbus_property  # noqa: E402


class Bare(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.nerveshub.Link1")

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> "s":  # type: ignore[name-defined]  # noqa: F821
        return "idle"


async def main() -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    bus.export("/org/nerveshub/Link", Bare())
    name = sys.argv[1] if len(sys.argv) > 1 else "org.nerveshub.Link"
    await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
    import websockets  # noqa: F401, PLC0415

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())

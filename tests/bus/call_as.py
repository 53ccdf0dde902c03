"""A client run as another uid (by Debian's /usr/bin/python3 under setpriv).

call_as.py methods     call every Link1 method; print {member: "ok" | error name}
call_as.py own         try to serve org.nerveshub.Link; print {"error": message}
call_as.py listen      print "ready", then the first DecisionMade as JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.bus.server import close_connection, serve
from nhlink_dbus.errors import BusNameError

CALLS: list[tuple[str, str, list[Any]]] = [
    ("Decide", "sst", ["u-1", "ignore", 0]),
    ("GetPendingRequests", "", []),
    ("CheckForUpdate", "", []),
    ("InstallFile", "ha{sv}", [0, {}]),
    ("Reconnect", "", []),
    ("SetReconnectBackoff", "at", [[1000]]),
]


async def methods(bus: MessageBus) -> dict[str, str]:
    results: dict[str, str] = {}
    for member, signature, body in CALLS:
        fds = [os.open("/dev/null", os.O_RDONLY)] if "h" in signature else []
        reply = await bus.call(
            Message(
                destination=names.BUS_NAME,
                path=names.OBJECT_PATH,
                interface=names.INTERFACE,
                member=member,
                signature=signature,
                body=body,
                unix_fds=fds,
            )
        )
        for fd in fds:
            os.close(fd)
        assert reply is not None
        ok = reply.message_type == MessageType.METHOD_RETURN
        results[member] = "ok" if ok else str(reply.error_name)
    return results


async def own() -> dict[str, str]:
    class Service:
        def add_listener(self, listener: object, decides: bool = False) -> None:
            pass

    try:
        face = await serve(Service())  # type: ignore[arg-type]
    except BusNameError as exc:
        return {"error": str(exc)}
    await face.close()
    return {"error": ""}


async def listen(bus: MessageBus) -> dict[str, Any]:
    got: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def handler(msg: Message) -> None:
        if msg.member == "DecisionMade" and not got.done():
            got.set_result(msg.body)

    bus.add_message_handler(handler)
    rule = f"type='signal',sender='{names.BUS_NAME}',interface='{names.INTERFACE}'"
    await bus.call(
        Message(
            destination=names.DBUS_NAME,
            path=names.DBUS_PATH,
            interface=names.DBUS_INTERFACE,
            member="AddMatch",
            signature="s",
            body=[rule],
        )
    )
    print("ready", flush=True)
    return {"DecisionMade": await asyncio.wait_for(got, 20)}


async def main(mode: str) -> None:
    if mode == "own":
        result: Any = await own()
    else:
        bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
        try:
            result = await (methods(bus) if mode == "methods" else listen(bus))
        finally:
            await close_connection(bus)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

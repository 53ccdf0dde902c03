"""A minimal kiosk-side answerer for org.nerveshub.Link (dbus-next).

It shows the integration a kiosk UI does: subscribe to ``UpdateAvailable``
first, then read the requests already pending (a UI that starts late), and
answer with ``Decide``. A real UI would ask the person in front of the screen;
this one applies updates and ignores archives, and prints what it sees.

    python3 examples/kiosk_answer.py [--once] [--decision apply|ignore]

Run it as root or as a member of the ``nhlink`` group (the bus policy allows
method calls only to those).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType

BUS_NAME = "org.nerveshub.Link"
OBJECT_PATH = "/org/nerveshub/Link"
INTERFACE = "org.nerveshub.Link1"


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in info.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="exit after the first answer")
    parser.add_argument("--decision", default="apply", choices=["apply", "ignore"])
    args = parser.parse_args()

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    node = await bus.introspect(BUS_NAME, OBJECT_PATH)
    link = bus.get_proxy_object(BUS_NAME, OBJECT_PATH, node).get_interface(INTERFACE)
    answered = asyncio.Event()
    seen: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(request_id: str, kind: str, info: dict[str, Any]) -> None:
        task = asyncio.ensure_future(answer(request_id, kind, info))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def answer(request_id: str, kind: str, info: dict[str, Any]) -> None:
        if request_id in seen:
            return
        seen.add(request_id)
        decision = args.decision if kind == "update" else "ignore"
        meta = _plain(info)
        print(
            f"kiosk: {kind} {request_id} offered: version {meta.get('version')} "
            f"({meta.get('uuid')}); answering '{decision}'",
            flush=True,
        )
        await link.call_decide(request_id, decision, 0)  # type: ignore[attr-defined]
        answered.set()

    def on_update(request_id: str, info: dict[str, Any]) -> None:
        seen.discard(request_id)  # a rescheduled request comes back with the same id
        spawn(request_id, "update", info)

    def on_archive(request_id: str, info: dict[str, Any]) -> None:
        spawn(request_id, "archive", info)

    # Subscribe first, then look at what is already pending (no request is missed).
    link.on_update_available(on_update)  # type: ignore[attr-defined]
    link.on_archive_available(on_archive)  # type: ignore[attr-defined]
    for request_id, kind, info in await link.call_get_pending_requests():  # type: ignore[attr-defined]
        await answer(request_id, kind, info)
    if args.once:
        await answered.wait()
    else:
        await asyncio.Event().wait()
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())

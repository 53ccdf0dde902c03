"""Flood ``Decide`` with bad calls at a steady rate; print what came back as JSON.

    python3 flood.py RATE SECONDS

Run by tests/faults/test_flood.py as root (an allowed caller) and, with Debian's
python under setpriv, as uid 65534 (a caller nobody allows). Every call names a
request that does not exist; the calls are sent without waiting for their
replies (as a runaway client would), and the replies are counted by error name.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import time

from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.aio.dbus_compat import system_bus

TICK_S = 0.005


async def flood(rate: float, seconds: float) -> dict[str, object]:
    # (a plain dbus-next bus would drop the connection once the bus daemon
    # throttles us and the socket fills: aio/dbus_compat.py)
    bus = await system_bus(negotiate_unix_fd=False).connect()
    answers: collections.Counter[str] = collections.Counter()
    done = asyncio.Event()
    sent = 0

    def on_message(msg: Message) -> bool:
        if msg.message_type == MessageType.ERROR:
            answers[str(msg.error_name)] += 1
        elif msg.message_type == MessageType.METHOD_RETURN:
            answers["ok"] += 1
        else:
            return False
        if sum(answers.values()) >= sent and stopped:
            done.set()
        return True

    bus.add_message_handler(on_message)
    stopped = False
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            bus.send(
                Message(
                    destination=names.BUS_NAME,
                    path=names.OBJECT_PATH,
                    interface=names.INTERFACE,
                    member="Decide",
                    signature="sst",
                    body=[f"u-flood-{sent}", "apply", 0],
                )
            )
            sent += 1
        await asyncio.sleep(TICK_S)
    elapsed = time.monotonic() - start
    stopped = True
    if sum(answers.values()) < sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 15)
    bus.disconnect()
    return {"sent": sent, "seconds": elapsed, "answers": dict(answers)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(flood(float(sys.argv[1]), float(sys.argv[2])))))

"""A bus daemon that stops reading for a moment (busy, stopped, swapped out) fills
the service's socket. dbus-next's own writer takes the resulting ``EAGAIN`` for a
broken connection and closes it: the service would drop off the bus for good
(python-dbus-next issue #153). ``dbus_compat.system_bus()`` waits instead; this
shows both, with the private bus daemon stopped (SIGSTOP) while 2 MB of signals
are sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
from importlib.metadata import version

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message

from nhlink_dbus.aio import dbus_compat
from nhlink_dbus.aio.dbus_compat import disconnect_and_close
from tests.harness import PrivateSystemBus, system_bus_connection

SIGNALS = 1000
PAYLOAD = "x" * 2000  # 1000 x ~2 KB: far more than a socket buffer holds


def _signal(n: int) -> Message:
    return Message.new_signal("/org/example/Flood", "org.example.Flood", "Tick", "us", [n, PAYLOAD])


async def _burst_while_stopped(bus_daemon: PrivateSystemBus, sender: MessageBus) -> list[object]:
    """Send the burst with the bus daemon stopped, resume it; each send's result
    (``None``, its exception, or ``"pending"`` if it has not ended when the
    connection did, or after 20 s)."""
    os.kill(bus_daemon.process.pid, signal.SIGSTOP)
    try:
        futures = [sender.send(_signal(n)) for n in range(SIGNALS)]
        await asyncio.sleep(0.5)  # the writer runs into the full socket meanwhile
    finally:
        os.kill(bus_daemon.process.pid, signal.SIGCONT)
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while sender.connected and not all(f.done() for f in futures) and loop.time() < end:
        await asyncio.sleep(0.05)
    return [
        "pending" if not f.done() else f.exception() if f.exception() else f.result()
        for f in futures
    ]


async def test_a_stopped_bus_daemon_does_not_cut_the_service_off(
    system_bus: PrivateSystemBus,
) -> None:
    received: list[int] = []
    done = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "Tick":
            received.append(msg.body[0])
            if len(received) == SIGNALS:
                done.set()

    async with system_bus_connection() as listener:
        listener.add_message_handler(on_message)
        await listener.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',interface='org.example.Flood'"],
            )
        )
        sender = await dbus_compat.system_bus().connect()
        try:
            results = await _burst_while_stopped(system_bus, sender)
            assert results == [None] * SIGNALS
            await asyncio.wait_for(done.wait(), 30)
            assert sender.connected
        finally:
            await disconnect_and_close(sender)
    assert received == list(range(SIGNALS))  # all of them, in order


async def test_dbus_next_alone_would_drop_the_connection(system_bus: PrivateSystemBus) -> None:
    """The bug the patient writer works around; if this fails, dbus-next fixed #153
    and ``dbus_compat.system_bus`` may go back to a plain MessageBus."""
    sender = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        results = await _burst_while_stopped(system_bus, sender)
        failures = [r for r in results if r is not None]
        assert failures and isinstance(failures[0], BlockingIOError), (
            f"dbus-next {version('dbus-next')} survived a full socket"
        )
        assert not sender.connected
    finally:
        await disconnect_and_close(sender)

"""What the daemon-level fault tests share: a D-Bus client of ``org.nerveshub.Link1``
that records every signal, and small edits of the integration tests' config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from nhlink_dbus import names
from tests.bus.conftest import OTHER_UID_ROOT, SYSTEM_PYTHON, as_user_argv
from tests.harness import PrivateSystemBus, system_bus_connection
from tests.integration.daemon_helpers import ROOT, Daemon

T = TypeVar("T")
FLOOD_SCRIPT = Path(__file__).with_name("flood.py")
_BUS_DAEMON = (names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE)
_LINK1 = (names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE)
_PROPERTIES = (names.BUS_NAME, names.OBJECT_PATH, names.DBUS_PROPERTIES)


class LinkClient:
    """A dbus-next client of the daemon: calls, properties, and every signal it sent."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.signals: list[tuple[float, str, list[Any]]] = []  # (monotonic, member, body)
        self._changed = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls) -> AsyncIterator[LinkClient]:
        async with system_bus_connection() as bus:
            client = cls(bus)
            rule = f"type='signal',sender='{names.BUS_NAME}'"
            await client._dbus("AddMatch", "s", [rule])
            yield client

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.path == names.OBJECT_PATH:
            self.signals.append((time.monotonic(), str(msg.member), list(msg.body)))
            self._changed.set()

    async def _call(
        self, target: tuple[str, str, str], member: str, signature: str, body: Sequence[Any]
    ) -> Message:
        destination, path, interface = target
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        reply = await self.bus.call(message)
        assert reply is not None
        return reply

    async def _dbus(self, member: str, signature: str, body: list[Any]) -> Message:
        return await self._call(_BUS_DAEMON, member, signature, body)

    def of(self, member: str) -> list[list[Any]]:
        """Bodies of the signals ``member`` so far."""
        return [body for _, name, body in self.signals if name == member]

    async def wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait until ``predicate()`` (re-checked on every signal and every 50 ms)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() > end:
                raise AssertionError(f"timed out waiting for {what}; signals: {self.signals}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)

    async def wait_signal(self, member: str, count: int = 1, timeout: float = 30) -> list[Any]:
        """The ``count``-th signal ``member``'s body (waited for)."""
        found = await self.wait(
            lambda: (bodies := self.of(member)) and len(bodies) >= count and bodies,
            timeout,
            f"{count} x {member}",
        )
        return found[count - 1]

    async def call(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> Message:
        """Call a Link1 method; the reply, error replies included."""
        return await self._call(_LINK1, member, signature, body)

    async def decide(self, request_id: str, decision: str, delay_ms: int = 0) -> Message:
        return await self.call("Decide", "sst", [request_id, decision, delay_ms])

    async def pending(self) -> list[str]:
        reply = await self.call("GetPendingRequests")
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        return [str(row[0]) for row in reply.body[0]]

    async def get(self, prop: str) -> Any:
        reply = await self._call(_PROPERTIES, "Get", "ss", [names.INTERFACE, prop])
        assert reply.message_type == MessageType.METHOD_RETURN, reply
        value = reply.body[0]
        return value.value if isinstance(value, Variant) else value

    async def wait_for_service(self, daemon: Daemon, timeout: float = 20) -> None:
        """Until the daemon answers on the bus."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            reply = await self.call("GetPendingRequests")
            if reply.message_type == MessageType.METHOD_RETURN:
                return
            if loop.time() > end or daemon.proc.poll() is not None:
                raise AssertionError(f"the service did not appear\n{daemon.text()[-4000:]}")
            await asyncio.sleep(0.05)


async def start_flooder(
    bus: PrivateSystemBus, uid: int | None, rate: int, seconds: float
) -> asyncio.subprocess.Process:
    """tests/faults/flood.py as root (``uid`` None) or as ``uid`` (Debian's python)."""
    if uid is None:
        argv = [sys.executable, str(FLOOD_SCRIPT)]
        env = {**bus.env, "PYTHONPATH": str(ROOT)}
    else:
        script = OTHER_UID_ROOT / FLOOD_SCRIPT.name
        shutil.copyfile(FLOOD_SCRIPT, script)
        script.chmod(0o644)
        argv = [*as_user_argv(uid), SYSTEM_PYTHON, str(script)]
        env = {**bus.env, "PYTHONPATH": str(OTHER_UID_ROOT), "HOME": "/nonexistent"}
    return await asyncio.create_subprocess_exec(
        *argv,
        str(rate),
        str(seconds),
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd="/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def flooder_result(process: asyncio.subprocess.Process) -> dict[str, object]:
    """What flood.py printed: {sent, seconds, answers by error name}."""
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


async def timed_calls(ui: LinkClient, until_s: float) -> list[float]:
    """Latencies of another UI's calls, one every 20 ms, until ``until_s`` (monotonic)."""
    latencies: list[float] = []
    while time.monotonic() < until_s:
        started = time.monotonic()
        if len(latencies) % 2:
            await ui.get("State")
        else:
            await ui.pending()
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.02)
    return latencies


def tune_config(path: Path, **values: int | str) -> None:
    """Set ``key = value`` lines of an integration-test config (first match of each)."""
    text = path.read_text()
    for key, value in values.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        text, count = re.subn(
            rf"^{key} = .*$", f"{key} = {rendered}", text, count=1, flags=re.MULTILINE
        )
        assert count == 1, f"{key} is not in {path}"
    path.write_text(text)

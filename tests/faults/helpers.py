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

from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from tests.bus.conftest import OTHER_UID_ROOT, SYSTEM_PYTHON, as_user_argv
from tests.harness import PrivateSystemBus, system_bus_connection
from tests.harness import link_client as harness_link_client
from tests.integration.daemon_helpers import ROOT, Daemon

T = TypeVar("T")
FLOOD_SCRIPT = Path(__file__).with_name("flood.py")


class LinkClient(harness_link_client.LinkClient):
    """tests/harness/link_client.py's client, plus what the fault tests need: replies
    as messages (error replies too, to look at their names), the n-th signal of a
    kind, waits on any condition, and the service's properties and pending ids."""

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls) -> AsyncIterator[LinkClient]:
        async with system_bus_connection() as bus:
            client = cls(bus)
            await client.start()
            yield client

    def of(self, member: str) -> list[list[Any]]:
        """Bodies of the signals ``member`` so far (values unwrapped)."""
        return self.named(member)

    async def wait_signal(self, member: str, count: int = 1, timeout: float = 30) -> list[Any]:
        """The ``count``-th signal ``member``'s body (waited for)."""
        return (await self.wait_for(member, count=count, timeout=timeout))[count - 1]

    async def wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Until ``predicate()`` holds (checked on every signal and every 50 ms)."""
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

    async def reply(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> Message:
        """Call a Link1 method; its reply as it came (an error reply too)."""
        message = Message(
            destination=names.BUS_NAME,
            path=names.OBJECT_PATH,
            interface=names.INTERFACE,
            member=member,
            signature=signature,
            body=list(body),
        )
        reply = await self.bus.call(message)
        assert reply is not None
        return reply

    async def decide(self, request_id: str, decision: str, delay_ms: int = 0) -> Message:
        return await self.reply("Decide", "sst", [request_id, decision, delay_ms])

    async def pending(self) -> list[str]:
        (rows,) = await self.call("GetPendingRequests")
        return [str(row[0]) for row in rows]

    async def get(self, prop: str) -> Any:
        (value,) = await self._call(
            names.BUS_NAME, names.OBJECT_PATH, names.DBUS_PROPERTIES, "Get", "ss",
            [names.INTERFACE, prop],
        )  # fmt: skip
        return value

    async def wait_property(self, prop: str, value: Any, timeout: float = 30) -> None:
        """Until the service's property ``prop`` reads ``value`` (asked every 50 ms)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while (now := await self.get(prop)) != value:
            if loop.time() > end:
                raise AssertionError(f"{prop} is still {now!r}, not {value!r}")
            await asyncio.sleep(0.05)

    async def wait_for_service(self, daemon: Daemon, timeout: float = 20) -> None:
        """Until the daemon answers on the bus."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            reply = await self.reply("GetPendingRequests")
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

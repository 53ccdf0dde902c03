"""An update starts side by side (aio/update_runner.run_update): the download's request
goes out while logind answers for the inhibitor and the update journal is written, and
the applier starts meanwhile; but no byte reaches the applier before the lock is held
and the journal is on disk. A download that fails before then aborts the applier once
its start is over."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import pytest

from nhlink_dbus.aio import downloader, update_runner
from nhlink_dbus.aio.appliers import ApplyOutcome, ApplyRequest
from nhlink_dbus.aio.update_runner import UpdateJob, UpdateOutcome, run_update
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.errors import FirmwareError
from nhlink_devtools.hubsim import HubSim
from tests.harness.fresh import run_fresh

FAST = RetryPolicy(idle_timeout_ms=2000, time_between_retries_ms=50, max_disconnects=1)
REQUEST = ApplyRequest("/dev/null", "upgrade", ("a-key",))


class Gates:
    """logind's answer and the journal's write, each held until the test opens it."""

    def __init__(self) -> None:
        self.lock = asyncio.Event()
        self.journal: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def open(self) -> bool:
        return self.lock.is_set() and self.journal.done()


class Lock:
    def release(self) -> None:
        pass


class Logind:
    def __init__(self, gates: Gates) -> None:
        self.gates = gates

    async def inhibit(self) -> Lock:
        await self.gates.lock.wait()
        return Lock()


class Applier:
    """Records what happens to it, and whether the gates were open at each write."""

    takes_parts = False

    def __init__(
        self,
        gates: Gates,
        start_gate: asyncio.Event | None = None,
        start_error: Exception | None = None,
    ) -> None:
        self.gates = gates
        self.start_gate = start_gate
        self.start_error = start_error
        self.aborted = asyncio.Event()
        self.events: list[str] = []
        self.data = bytearray()
        self.closed_gate_writes = 0

    async def start(self) -> None:
        self.events.append("start")
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.start_error is not None:
            raise self.start_error
        self.events.append("started")

    async def write(self, chunk: bytes) -> None:
        self.closed_gate_writes += not self.gates.open()
        self.data += chunk

    async def restart(self) -> None:
        self.data.clear()

    async def finish(self) -> ApplyOutcome:
        self.events.append("finish")
        return ApplyOutcome(True, "")

    async def abort(self, reason: str) -> None:
        self.events.append(f"abort: {reason}")
        self.aborted.set()


def use(monkeypatch: pytest.MonkeyPatch, applier: Applier) -> None:
    monkeypatch.setattr(update_runner, "_load", lambda url: lambda *a, **k: applier)


def update(url: str, gates: Gates, **job: Any) -> Coroutine[Any, Any, UpdateOutcome]:
    """run_update for ``url``, its journal and logind held by ``gates``."""
    request = UpdateJob(REQUEST, "fwup", FAST, url, before_first_byte=gates.journal, **job)
    return run_update(request, cast(Any, Logind(gates)), lambda p: None, lambda *m: None)


@pytest.mark.parametrize("first", ["lock", "journal"])
async def test_the_request_goes_ahead_and_the_bytes_wait_for_lock_and_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    data = os.urandom(300_000)
    (tmp_path / "x.fw").write_bytes(data)
    gates = Gates()
    applier = Applier(gates)
    use(monkeypatch, applier)
    answered = asyncio.Event()
    async with HubSim() as sim:
        running = asyncio.create_task(
            update(sim.add_file(tmp_path / "x.fw"), gates, on_connected=answered.set)
        )
        # The server answered while logind and the journal are still pending.
        await asyncio.wait_for(answered.wait(), 60)
        assert not gates.open() and applier.data == b""
        for gate in (first, "journal" if first == "lock" else "lock"):
            if gate == "lock":
                gates.lock.set()
            else:
                gates.journal.set_result(None)
            # Turns of the loop for a runner that waited for one gate only to write (the
            # bytes are in the socket already); a write then counts in closed_gate_writes.
            for _ in range(200):
                await asyncio.sleep(0)
        outcome = await asyncio.wait_for(running, 60)
    assert outcome.success
    assert bytes(applier.data) == data
    assert applier.closed_gate_writes == 0
    assert applier.events == ["start", "started", "finish"]


def fail_download_then(monkeypatch: pytest.MonkeyPatch, then: asyncio.Event) -> None:
    """The download (a 404) fails, and ``then`` is set when it has."""
    real_download = downloader.download

    async def download(*args: Any, **kwargs: Any) -> None:
        try:
            await real_download(*args, **kwargs)
        finally:
            then.set()

    monkeypatch.setattr(downloader, "download", download)


def missing_file(sim: HubSim) -> str:
    return sim.add_file(b"firmware", "/firmware/x.fw").replace("/x.fw", "/missing.fw")


async def test_a_failed_download_aborts_the_applier_after_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gates = Gates()
    start_gate = asyncio.Event()
    applier = Applier(gates, start_gate)
    use(monkeypatch, applier)
    fail_download_then(monkeypatch, start_gate)  # the start ends once the download failed
    async with HubSim() as sim:
        outcome = await asyncio.wait_for(update(missing_file(sim), gates), 60)
    assert not outcome.success and not outcome.applier_error
    assert applier.events[:2] == ["start", "started"]
    assert applier.events[2:] == [f"abort: {outcome.message}"]
    assert applier.data == b""


async def test_a_stop_while_the_applier_starts_still_aborts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gates = Gates()
    start_gate = asyncio.Event()
    applier = Applier(gates, start_gate)
    use(monkeypatch, applier)
    failed = asyncio.Event()
    fail_download_then(monkeypatch, failed)
    async with HubSim() as sim:
        running = asyncio.create_task(update(missing_file(sim), gates))
        await asyncio.wait_for(failed.wait(), 60)  # the runner now waits for the start
        running.cancel()  # the service stops
        with pytest.raises(asyncio.CancelledError):
            await running
        start_gate.set()
        await asyncio.wait_for(applier.aborted.wait(), 60)
    assert applier.events[:2] == ["start", "started"]
    assert len(applier.events) == 3 and applier.events[2].startswith("abort: ")


async def test_an_applier_that_fails_to_start_is_the_outcome_not_the_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gates = Gates()
    start_gate = asyncio.Event()
    applier = Applier(gates, start_gate, start_error=FirmwareError("no such device"))
    use(monkeypatch, applier)
    fail_download_then(monkeypatch, start_gate)
    async with HubSim() as sim:
        outcome = await asyncio.wait_for(update(missing_file(sim), gates), 60)
    assert (outcome.success, outcome.message, outcome.applier_error) == (
        False,
        "no such device",
        True,
    )
    assert applier.events[0] == "start" and applier.events[-1].startswith("abort: ")


def test_preload_leaves_nothing_for_the_first_plain_download_to_load(tmp_path: Path) -> None:
    # In a fresh interpreter: what the first update would load is loaded by preload()
    # (run by the service once it is on the bus), but not the system trust store, which
    # only an https:// download needs.
    code = (
        "import sys\n"
        "from nhlink_dbus.aio import update_runner as ur\n"
        "before = (ur._loaded(None), ur._loaded('http://hub/fw'), 'httpx' in sys.modules)\n"
        "ur.preload()\n"
        "from nhlink_dbus.aio import downloader\n"
        "print(before, ur._loaded(None) is not None, ur._loaded('http://hub/fw') is not None,\n"
        "      ur._loaded('https://hub/fw'), downloader.system_tls_context.cache_info().currsize)"
    )
    expected = ["(None,", "None,", "False)", "True", "True", "None", "0"]
    assert run_fresh(code, tmp_path).split() == expected

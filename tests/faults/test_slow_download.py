"""A slow hub (1 KiB/s, the simulator's ``slow`` fault) against the downloader's
worst-case timer (protocol.md §6.4: ``max(60 s, length * 8 / speed)``).

The downloader takes its clock as an argument: here one that runs 30 times faster
than the wall clock, so the 60 s floor passes in 2 s while the bytes still come at
1 KiB/s from a real server. (The daemon-level test with real time is
``tests/faults/test_network_daemon.py``, ``make test-long``.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from nhlink_dbus.aio.downloader import download
from nhlink_dbus.core.download_policy import WORST_CASE_REACHED, RetryPolicy
from nhlink_dbus.errors import ConfigError, DownloadError
from nhlink_devtools.hubsim import Fault, HubSim
from tests.harness.sinks import MemorySink

SPEED_UP = 30.0


def fast_clock() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: start + (time.monotonic() - start) * SPEED_UP


async def test_inside_the_worst_case_timer_the_download_completes(sim: HubSim) -> None:
    body = os.urandom(1200)  # ~1.2 s at 1 KiB/s = 35 s on the fast clock: inside 60 s
    url = sim.add_file(body, "/firmware/small.fw")
    sim.set_fault(kind="slow", rate=1024)
    clock = fast_clock()
    sink = MemorySink()
    started = time.monotonic()
    stats = await download(url, sink, RetryPolicy(), clock=clock)
    assert bytes(sink.data) == body and stats.received == len(body)
    assert time.monotonic() - started >= 1.0  # it was slow
    assert sim.http_log[0].fault == "slow"


async def test_beyond_the_worst_case_timer_the_download_stops(sim: HubSim) -> None:
    body = os.urandom(8 << 10)  # 8 s at 1 KiB/s = 240 s on the fast clock: beyond 60 s
    url = sim.add_file(body, "/firmware/big.fw")
    sim.set_fault(kind="slow", rate=1024)
    clock = fast_clock()
    sink = MemorySink()
    started = time.monotonic()
    with pytest.raises(DownloadError) as failure:
        await download(url, sink, RetryPolicy(), clock=clock)
    elapsed = (time.monotonic() - started) * SPEED_UP
    assert str(failure.value) == WORST_CASE_REACHED
    assert 59 <= elapsed <= 90  # the 60 s floor, on the download's clock
    assert 0 < len(sink.data) < len(body)
    assert len(sim.http_log) == 1  # given up, not retried


def test_the_slow_fault_through_the_control_api_shape() -> None:
    fault = Fault.from_json({"kind": "slow", "rate": 1024, "path": "/firmware/x.fw"})
    assert fault.to_json()["rate"] == 1024
    assert Fault.from_json(fault.to_json()) == fault
    with pytest.raises(ConfigError, match="rate"):
        Fault.from_json({"kind": "slow"})

"""Work that takes tens of milliseconds stays off the event loop while the service
answers the bus: building a download's HTTP client (a trust store to load, httpx's
first client importing its backends) took 50-500 ms of loop time at every download
start on a busy machine (seen as bus calls answered that much later)."""

from __future__ import annotations

import threading

import httpx

from nhlink_dbus.aio.downloader import download
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_devtools.hubsim import HubSim
from tests.harness.sinks import MemorySink


async def test_every_client_is_built_off_the_loop(sim: HubSim) -> None:
    url = sim.add_file(b"x" * 5000, "/firmware/small.fw")
    sim.set_fault(kind="cut", after=1000, times=1)  # two attempts, two clients
    built_on: list[threading.Thread] = []

    def factory() -> httpx.AsyncClient:
        built_on.append(threading.current_thread())
        return httpx.AsyncClient(trust_env=False)

    sink = MemorySink()
    await download(url, sink, RetryPolicy(time_between_retries_ms=0), client_factory=factory)
    assert bytes(sink.data) == b"x" * 5000
    assert len(built_on) == 2
    assert threading.main_thread() not in built_on

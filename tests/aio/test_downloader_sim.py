"""aio.downloader against nhlink-hub-sim's file server: the "must show" of issue 4.

Real HTTP on 127.0.0.1 with injected faults and short policy values. Runs on
httpx 0.28 and on Debian 12's 0.23.3 (``make pytest-deb12``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from nhlink_dbus import __version__
from nhlink_dbus.aio.downloader import (
    CONNECT_ERROR,
    PROTOCOL_ERROR,
    USER_AGENT,
    download,
    system_tls_context,
)
from nhlink_dbus.aio.http_transport import BUFFER, FirmwareTransport
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.errors import DownloadError
from nhlink_devtools.hubsim import HubSim, HubSimConfig
from tests.harness.sinks import MemorySink

SIZE = 200_000
DATA = os.urandom(SIZE)
PATH = "/firmware/x.fw"
FAST = RetryPolicy(idle_timeout_ms=300, time_between_retries_ms=50, max_disconnects=10)


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


@pytest.fixture
async def sim() -> AsyncIterator[HubSim]:
    async with HubSim() as running:
        yield running


def ranges(sim: HubSim) -> list[str | None]:
    return [e.range for e in sim.http_log]


def retry_numbers(sim: HubSim) -> list[str | None]:
    return [e.retry_number for e in sim.http_log]


async def test_clean_download(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sink = MemorySink()
    stats = await download(url, sink, FAST)
    assert bytes(sink.data) == DATA
    assert (stats.received, stats.requests, stats.disconnects) == (SIZE, 1, 0)
    (entry,) = sim.http_log
    assert entry.token_ok  # the pre-signed query string went out intact
    assert entry.range is None
    assert entry.retry_number == "0"
    assert entry.user_agent == USER_AGENT == f"nhlink-dbus/{__version__}"
    assert entry.status == 200


async def test_cuts_resume_with_range_and_same_bytes(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    cuts = [1, 1000, 65_536, SIZE - 1]  # absolute offsets where the connection drops
    start = 0
    for attempt, cut in enumerate(cuts):
        sim.set_fault(kind="cut", path=PATH, after=cut - start, attempts=[attempt])
        start = cut
    errors: list[str] = []
    sink = MemorySink()
    stats = await download(url, sink, FAST, on_error=errors.append)
    assert bytes(sink.data) == DATA
    assert ranges(sim) == [None, "bytes=1-", "bytes=1000-", "bytes=65536-", f"bytes={SIZE - 1}-"]
    assert retry_numbers(sim) == ["0", "1", "2", "3", "4"]
    assert [e.status for e in sim.http_log] == [200, 206, 206, 206, 206]
    assert errors == ["protocol_error"] * 4  # body shorter than its Content-Length
    assert (stats.requests, stats.disconnects, stats.restarts) == (5, 4, 0)
    assert sink.restarts == 0


async def test_stall_past_idle_timeout_retries(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="stall", path=PATH, after=70_000, seconds=None, attempts=[0])
    errors: list[str] = []
    sink = MemorySink()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await download(url, sink, FAST, on_error=errors.append)
    assert loop.time() - began >= 0.3
    assert bytes(sink.data) == DATA
    assert errors == ["idle_timeout"]
    assert ranges(sim) == [None, "bytes=70000-"]
    assert retry_numbers(sim) == ["0", "1"]


async def test_idle_timeout_closes_the_old_connection(sim: HubSim) -> None:
    """The stalled response is abandoned: the server sees its client hang up."""
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="stall", path=PATH, after=10, seconds=None, attempts=[0])
    await download(url, MemorySink(), FAST)
    first = sim.http_log[0]
    assert (first.fault, first.completed, first.bytes_sent) == ("stall", False, 10)
    # The stall (seconds=None) only ends when the peer closes the socket; a leaked
    # connection would keep the sim's handler, and its open writer, alive forever.
    open_writers = sim._http._writers  # the sim's open server-side connections
    async with asyncio.timeout(60):  # guards a hang only
        while open_writers:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_fails_with_reason_and_no_more_requests(sim: HubSim, status: int) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="status", path=PATH, status=status)
    errors: list[str] = []
    with pytest.raises(DownloadError, match=rf"^http_error {status}$"):
        await download(url, MemorySink(), FAST, on_error=errors.append)
    await asyncio.sleep(0.1)
    assert len(sim.http_log) == 1
    assert errors == []


async def test_416_fails(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="cut", path=PATH, after=5000, attempts=[0])
    sim.set_fault(kind="416", path=PATH, attempts=[1])
    sink = MemorySink()
    with pytest.raises(DownloadError, match=r"^http_error 416$"):
        await download(url, sink, FAST)
    assert ranges(sim) == [None, "bytes=5000-"]
    assert [e.status for e in sim.http_log] == [200, 416]


async def test_redirect_followed_with_query_string(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    cdn_url = sim.add_file(DATA, "/cdn/x.fw")
    query = cdn_url.partition("?")[2]
    sim.set_fault(kind="redirect", path=PATH, location=f"/cdn/x.fw?{query}&extra=1")
    sim.set_fault(kind="cut", path="/cdn/x.fw", after=4096, attempts=[0])
    sink = MemorySink()
    stats = await download(url, sink, FAST)
    assert bytes(sink.data) == DATA
    log = sim.http_log
    assert [e.path for e in log] == [PATH, "/cdn/x.fw", "/cdn/x.fw"]
    assert all(e.token_ok for e in log)
    assert [e.status for e in log] == [302, 200, 206]
    # X-Retry-Number starts again at 0 after a redirect; retries go to the new URL
    assert retry_numbers(sim) == ["0", "0", "1"]
    assert ranges(sim) == [None, None, "bytes=4096-"]
    assert stats.redirects == 1


async def test_redirect_loop_is_bounded(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="redirect", path=PATH, location=PATH)
    with pytest.raises(DownloadError, match=r"^too_many_redirects$"):
        await download(url, MemorySink(), RetryPolicy(max_redirects=3))
    assert len(sim.http_log) == 4


async def test_200_for_range_restarts_cleanly(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="cut", path=PATH, after=70_000, attempts=[0])
    sim.set_fault(kind="200", path=PATH, attempts=[1])
    sink = MemorySink()
    stats = await download(url, sink, FAST)
    assert sink.restarts == 1
    assert bytes(sink.data) == DATA
    assert ranges(sim) == [None, "bytes=70000-"]
    assert [e.status for e in sim.http_log] == [200, 200]
    assert stats.restarts == 1


async def test_max_disconnects_exhausted(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="cut", path=PATH, after=100)  # every attempt
    errors: list[str] = []
    policy = RetryPolicy(idle_timeout_ms=300, time_between_retries_ms=10, max_disconnects=3)
    sink = MemorySink()
    with pytest.raises(DownloadError, match=r"^max_disconnects_reached$"):
        await download(url, sink, policy, on_error=errors.append)
    await asyncio.sleep(0.1)
    assert len(sim.http_log) == 3
    assert retry_numbers(sim) == ["0", "1", "2"]
    assert ranges(sim) == [None, "bytes=100-", "bytes=200-"]
    assert errors == ["protocol_error"] * 3
    assert bytes(sink.data) == DATA[:300]


async def test_connection_refused_counts_as_disconnect() -> None:
    # downloader_test.exs "max_disconnects": unreachable URL, two errors, then the stop
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        errors: list[str] = []
        policy = RetryPolicy(max_disconnects=2, time_between_retries_ms=1)
        with pytest.raises(DownloadError, match=r"^max_disconnects_reached$"):
            await download(
                f"http://127.0.0.1:{port}/x.fw?sig=1", MemorySink(), policy, on_error=errors.append
            )
    assert errors == ["connect_error", "connect_error"]


class FakeTime:
    """A clock the sink and the sleeper move forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.mark.parametrize(("seconds_per_4k", "fails"), [(1.0, False), (1.2, True)])
async def test_worst_case_timer_with_fake_clock(
    sim: HubSim, seconds_per_4k: float, fails: bool
) -> None:
    """16 MiB at 30 000 bit/s: 4473.9 s of active time allowed; waits do not count."""
    data = (DATA * (1 + (16 << 20) // len(DATA)))[: 16 << 20]
    url = sim.add_file(data, PATH)
    sim.set_fault(kind="cut", path=PATH, after=500_000, attempts=[0])
    fake = FakeTime()

    def advance(chunk: bytes) -> None:
        fake.now += len(chunk) / 4096 * seconds_per_4k

    sink = MemorySink(on_write=advance)
    policy = RetryPolicy(idle_timeout_ms=2000, time_between_retries_ms=5_000_000)
    if fails:
        with pytest.raises(DownloadError, match=r"^worst_case_download_speed_reached$"):
            await download(url, sink, policy, clock=fake, sleep=fake.sleep)
        # 4473.9 s / 1.2 s per 4 KiB ≈ 15 270 900 bytes, give or take one read
        assert 15_270_900 - BUFFER < len(sink.data) < 15_270_900 + BUFFER
    else:
        await download(url, sink, policy, clock=fake, sleep=fake.sleep)
        assert bytes(sink.data) == data
    assert fake.now > 1000.0 + 5000.0  # the 5000 s retry wait happened and was not counted


async def test_max_timeout_with_fake_clock(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)
    sim.set_fault(kind="cut", path=PATH, after=10, attempts=[0])
    fake = FakeTime()
    errors: list[str] = []
    policy = RetryPolicy(max_timeout_ms=10_000, time_between_retries_ms=60_000)
    with pytest.raises(DownloadError, match=r"^max_timeout_reached$"):
        await download(
            url, MemorySink(), policy, clock=fake, sleep=fake.sleep, on_error=errors.append
        )
    assert errors == ["protocol_error"]
    assert len(sim.http_log) == 1


class CountingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, counter: list[int]) -> None:
        self.inner = inner
        self.counter = counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.counter[0] += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingTransport(httpx.AsyncBaseTransport):
    """The default transport, counting body bytes as the downloader pulls them."""

    def __init__(self, counter: list[int]) -> None:
        self.inner = FirmwareTransport(system_tls_context())
        self.counter = counter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=CountingStream(response.stream, self.counter),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_back_pressure_one_chunk_at_a_time(sim: HubSim) -> None:
    data = (DATA * 40)[:8_000_000]  # several reads of the transport's BUFFER
    url = sim.add_file(data, PATH)
    sim.set_fault(kind="cut", path=PATH, after=250_000, attempts=[0])
    pulled = [0]
    written = [0]
    ahead: list[int] = []

    def on_write(chunk: bytes) -> None:
        # bytes taken from the connection but not yet written, this chunk included
        ahead.append(pulled[0] - written[0] - len(chunk))
        written[0] += len(chunk)

    def factory() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=CountingTransport(pulled), follow_redirects=False)

    sink = MemorySink(delay=0.002, on_write=on_write)
    await download(url, sink, FAST, client_factory=factory)
    assert bytes(sink.data) == data
    assert len(ahead) > 5
    assert ahead == [0] * len(ahead)  # never a chunk read ahead of the sink
    assert pulled[0] == written[0] == len(data)


async def test_sink_errors_propagate_unchanged(sim: HubSim) -> None:
    url = sim.add_file(DATA, PATH)

    class Boom(MemorySink):
        async def write(self, chunk: bytes) -> None:
            raise TimeoutError("applier too slow")

    with pytest.raises(TimeoutError, match="applier too slow"):
        await download(url, Boom(), FAST)
    assert len(sim.http_log) == 1


async def test_logs_never_contain_the_query_string(
    sim: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = sim.add_file(DATA, PATH)
    cdn_url = sim.add_file(DATA, "/cdn/x.fw")
    sim.set_fault(kind="redirect", path=PATH, location="/cdn/x.fw")  # the sim keeps the query
    sim.set_fault(kind="cut", path="/cdn/x.fw", after=1000, attempts=[0])
    sim.set_fault(kind="200", path="/cdn/x.fw", attempts=[1])
    sim.set_fault(kind="status", path="/cdn/x.fw", status=503, attempts=[2])
    await download(url, MemorySink(), FAST)
    with pytest.raises(DownloadError):
        await download(cdn_url, MemorySink(), FAST)
    token = sim.files.token
    lines = [record.getMessage() for record in caplog.records]
    mine = [line for line in lines if line.startswith("download:")]
    assert any("redirected to http://127.0.0.1" in line for line in mine)
    assert any("nonfatal error" in line for line in mine)
    assert any("failed" in line and "http_error 503" in line for line in mine)
    if httpx.__version__ >= "0.24":
        assert any(line.startswith("HTTP Request:") for line in lines)  # httpx's own, redacted
    for line in lines:
        assert token not in line
        assert "X-Amz" not in line


async def test_https_body_verified_against_the_given_ca(tmp_path: Path) -> None:
    """TLS through the default transport: the configured CA is trusted, the system's
    store alone does not know the simulator's CA (every attempt is a connect error)."""
    async with HubSim(HubSimConfig(http_tls=True, cert_dir=tmp_path)) as tls:
        assert tls.pki is not None
        data = (DATA * 20)[:3_000_000]
        url = tls.add_file(data, PATH)
        assert url.startswith("https://")
        sink = MemorySink()
        await download(url, sink, FAST, verify=str(tls.pki.ca.cert))
        assert bytes(sink.data) == data
        errors: list[str] = []
        policy = RetryPolicy(idle_timeout_ms=2000, time_between_retries_ms=10, max_disconnects=2)
        with pytest.raises(DownloadError, match=r"^max_disconnects_reached$"):
            await download(url, MemorySink(), policy, on_error=errors.append)
        assert errors and set(errors) == {CONNECT_ERROR}


async def test_a_body_cut_short_is_a_protocol_error_then_resumed(sim: HubSim) -> None:
    data = (DATA * 20)[:3_000_000]
    url = sim.add_file(data, PATH)
    sim.set_fault(kind="cut", path=PATH, after=1_500_000, attempts=[0])
    errors: list[str] = []
    sink = MemorySink()
    await download(url, sink, FAST, on_error=errors.append)
    assert bytes(sink.data) == data
    assert errors == [PROTOCOL_ERROR]
    assert [entry.range for entry in sim.http_log] == [None, "bytes=1500000-"]

"""The firmware/archive file server: Range semantics, signed URLs, every fault kind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.errors import ConfigError
from nhlink_devtools.hubsim import Fault, HubSim
from nhlink_devtools.hubsim.files import UNSATISFIABLE, ByteRange, firmware_meta, parse_range

BODY = bytes(range(256)) * 40  # 10 240 bytes
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fwup"


def serve(sim: HubSim) -> str:
    return sim.add_file(BODY, "/firmware/x.fw")


async def fetch(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url, headers=headers)


async def test_full_get_and_headers(sim: HubSim) -> None:
    response = await fetch(serve(sim), **{"X-Retry-Number": "0", "User-Agent": "NHL/"})
    assert response.status_code == 200
    assert response.content == BODY
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(BODY))
    entry = sim.http_log[-1]
    assert (entry.method, entry.path, entry.range) == ("GET", "/firmware/x.fw", None)
    assert (entry.retry_number, entry.user_agent, entry.status) == ("0", "NHL/", 200)
    assert entry.completed and entry.bytes_sent == len(BODY) and entry.token_ok


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=1000-", 1000, 10239),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=1000-10240", 1000, 10239),  # nerves_hub_link 2.5.2: end = total length
        ("bytes=-240", 10000, 10239),
    ],
)
async def test_range(sim: HubSim, header: str, start: int, end: int) -> None:
    response = await fetch(serve(sim), Range=header)
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(BODY)}"
    assert response.content == BODY[start : end + 1]


async def test_range_past_end_is_416(sim: HubSim) -> None:
    response = await fetch(serve(sim), Range="bytes=10240-")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BODY)}"


async def test_head(sim: HubSim) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.head(serve(sim))
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(BODY))


async def test_signed_url_required(sim: HubSim) -> None:
    url = serve(sim)
    assert (await fetch(url.split("?")[0])).status_code == 403
    assert sim.http_log[-1].token_ok is False
    sim.files.require_token = False
    assert (await fetch(url.split("?")[0])).status_code == 200
    assert (await fetch(f"{sim.http_url}/firmware/missing.fw")).status_code == 404


async def test_fault_cut(sim: HubSim) -> None:
    url = serve(sim)
    sim.set_fault(kind="cut", path="/firmware/x.fw", after=3000, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await fetch(url)
    assert sim.http_log[-1].bytes_sent == 3000
    assert sim.http_log[-1].fault == "cut"
    # times=1: the next attempt is clean; a resumed range is cut relative to its start.
    assert (await fetch(url)).content == BODY
    sim.set_fault(Fault("cut", after=10))
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", url, headers={"Range": "bytes=5000-"}) as response,
    ):
        assert response.status_code == 206
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in response.aiter_bytes():
                received += chunk
    assert received == BODY[5000:5010]


async def test_fault_stall(sim: HubSim) -> None:
    url = serve(sim)
    sim.set_fault(kind="stall", after=100, seconds=0.5)
    started = time.monotonic()
    response = await fetch(url)
    assert response.content == BODY
    assert time.monotonic() - started >= 0.5
    # A stall without end: the client's read timeout fires.
    sim.clear_faults()
    sim.set_fault(kind="stall", after=100)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url)
    await sim.wait_for(lambda: sim.http_log[-1].bytes_sent == 100)


@pytest.mark.parametrize("status", [500, 503])
async def test_fault_status(sim: HubSim, status: int) -> None:
    url = serve(sim)
    sim.set_fault(kind="status", status=status, attempts={0})
    assert (await fetch(url)).status_code == status
    assert (await fetch(url)).status_code == 200
    assert [e.attempt for e in sim.http_log] == [0, 1]


async def test_fault_416(sim: HubSim) -> None:
    url = serve(sim)
    sim.set_fault(kind="416")
    response = await fetch(url, Range="bytes=0-")
    assert response.status_code == 416


async def test_fault_redirect_keeps_signature(sim: HubSim) -> None:
    url = serve(sim)
    sim.add_file(b"other", "/firmware/other.fw")
    sim.set_fault(kind="redirect", path="/firmware/x.fw", location="/firmware/other.fw")
    response = await fetch(url)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{sim.http_url}/firmware/other.fw?")
    async with httpx.AsyncClient(follow_redirects=True) as client:
        followed = await client.get(url)
    assert followed.content == b"other"
    assert [e.path for e in sim.http_log[-2:]] == ["/firmware/x.fw", "/firmware/other.fw"]


async def test_fault_200_for_range(sim: HubSim) -> None:
    url = serve(sim)
    sim.set_fault(kind="200")
    response = await fetch(url, Range="bytes=1000-")
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert response.content == BODY


async def test_fw_dir_files(sim: HubSim, tmp_path: Path) -> None:
    sim.files.fw_dir = tmp_path
    (tmp_path / "y.fw").write_bytes(b"abc")
    response = await fetch(sim.files.url_for("/firmware/y.fw"), Range="bytes=1-")
    assert response.content == b"bc"
    assert (await fetch(sim.files.url_for("/firmware/..%2Fy.fw"))).status_code == 404


def test_fault_validation() -> None:
    with pytest.raises(ConfigError):
        Fault("explode")
    with pytest.raises(ConfigError):
        Fault("redirect")
    fault = Fault.from_json({"kind": "cut", "after": 5, "attempts": [1, 2], "times": 1})
    assert Fault.from_json(fault.to_json()) == fault


def test_parse_range_cases() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == ByteRange(0, 9)
    assert parse_range("bytes=3-5", 10) == ByteRange(3, 5)
    assert parse_range("bytes=3-10", 10) == ByteRange(3, 9)
    assert parse_range("bytes=-3", 10) == ByteRange(7, 9)
    assert parse_range("bytes=-30", 10) == ByteRange(0, 9)
    assert parse_range("bytes=10-", 10) is UNSATISFIABLE
    assert parse_range("bytes=-0", 10) is UNSATISFIABLE
    assert parse_range("bytes=5-3", 10) is None
    assert parse_range("bytes=0-1,3-4", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=x-", 10) is None


@given(st.text(max_size=30), st.integers(min_value=0, max_value=1000))
def test_parse_range_never_out_of_bounds(header: str, size: int) -> None:
    result = parse_range(header, size)
    if isinstance(result, ByteRange):
        assert 0 <= result.start <= result.end < size


def test_firmware_meta_from_fixture() -> None:
    path = FIXTURES / "ab.fw"
    meta = firmware_meta(path)
    assert meta["uuid"] == "bb2fee49-58a0-5cce-0e76-15d7a5a130b6"
    assert meta["version"] == "2.0.0"
    assert meta["product"] == "nhlink-test"


def test_firmware_meta_of_other_files(tmp_path: Path) -> None:
    path = tmp_path / "plain.bin"
    path.write_bytes(b"plain")
    assert firmware_meta(path)["uuid"] is not None


async def test_stop_aborts_stalled_download(sim: HubSim) -> None:
    url = serve(sim)
    sim.set_fault(kind="stall", after=10)
    task = asyncio.ensure_future(fetch(url))
    await sim.wait_for(lambda: sim.http_log and sim.http_log[-1].bytes_sent == 10)
    await sim.stop()
    with pytest.raises(httpx.HTTPError):
        await task

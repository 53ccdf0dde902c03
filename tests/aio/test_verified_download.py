"""A download the hub described (size, checksum, partials_checksums) through the real
downloader and nhlink-hub-sim's file server: a 1 MiB part corrupted on the wire is
caught by its checksum, never reaches the sink, and is fetched again from its offset
(aio/update_runner.VerifiedSink, core/partials.py, download_policy ``refetch``)."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any, cast

import pytest

from nhlink_dbus.aio.downloader import download
from nhlink_dbus.aio.update_runner import VerifiedSink
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.partials import PART_SIZE, PartVerifier
from nhlink_dbus.errors import DownloadError
from nhlink_devtools.hubsim import HubSim
from nhlink_devtools.hubsim.files import file_checksums
from tests.aio.test_downloader_sim import MemorySink

FAST = RetryPolicy(idle_timeout_ms=2000, time_between_retries_ms=50, max_disconnects=5)


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


async def fetch(sim: HubSim, path: Path, verifier: PartVerifier) -> tuple[MemorySink, list[int]]:
    url = sim.add_file(path)
    sink = MemorySink()
    seen: list[int] = []

    def check(chunk: bytes) -> None:
        # A byte reaches the sink only once the part that holds it has been verified.
        assert sum(seen) + len(chunk) <= verifier.verified
        seen.append(len(chunk))

    sink.on_write = check
    verified = VerifiedSink(cast(Any, sink), verifier)
    await download(url, verified, FAST)
    await verified.finish()
    return sink, seen


async def test_a_corrupted_part_is_caught_and_fetched_again(tmp_path: Path) -> None:
    data = os.urandom(3 * PART_SIZE + 12_345)
    path = tmp_path / "x.fw"
    path.write_bytes(data)
    size, checksum, partials = file_checksums(path)
    assert len(partials) == 4 and checksum == checksum.upper()
    async with HubSim() as sim:
        # Bytes inside the second 1 MiB part arrive inverted, on the first request only.
        sim.set_fault(kind="corrupt", path="/firmware/x.fw", after=PART_SIZE + 777, times=1)
        verifier = PartVerifier(size, checksum, partials)
        sink, writes = await fetch(sim, path, verifier)
        log = [(e.range, e.retry_number, e.fault) for e in sim.http_log]
    assert bytes(sink.data) == data
    # Only verified parts reached the sink (checked at each write), as the pieces they came
    # in: every part boundary is a write boundary, and the corrupted bytes never came.
    assert sum(writes) == len(data)
    assert {PART_SIZE, 2 * PART_SIZE, 3 * PART_SIZE} <= set(itertools.accumulate(writes))
    assert verifier.refetched == 1 and verifier.failures == {1: 1}
    # The re-fetch asked from the bad part's first byte on; the first part was kept.
    assert log == [(None, "0", "corrupt"), (f"bytes={PART_SIZE}-", "1", None)]


async def test_a_part_that_never_matches_fails_the_download(tmp_path: Path) -> None:
    path = tmp_path / "x.fw"
    path.write_bytes(os.urandom(2 * PART_SIZE))
    size, checksum, partials = file_checksums(path)
    async with HubSim() as sim:
        sim.set_fault(kind="corrupt", path="/firmware/x.fw", after=10)  # every time
        sink = MemorySink()
        verified = VerifiedSink(cast(Any, sink), PartVerifier(size, checksum, partials))
        with pytest.raises(DownloadError, match="part 1 of 2 failed its checksum 3 times"):
            await download(sim.add_file(path), verified, FAST)
        assert len(sim.http_log) == 3
    assert sink.data == b""

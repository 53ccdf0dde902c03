"""aio/archive_store.py on a real folder: verify before rename, modes, leftovers, the
present-and-valid shortcut, bounds, staged copies, and cancellation mid-download.

The downloader is replaced through the constructor by one that streams a local file
(the real downloader meets nhlink-hub-sim in tests/aio/test_downloader_sim.py and the
end-to-end tests)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from nhlink_dbus.aio.archive_store import ArchiveStore
from nhlink_dbus.core.archive_manager import ArchiveOffer, ShelfBounds
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.errors import FirmwareError, TargetError
from tests.integration.archive_helpers import WRONG_KEY, make_archive, sha256
from tests.integration.daemon_helpers import PUBLIC_KEY

KEYS = (PUBLIC_KEY,)
ROOMY = ShelfBounds(max_bytes=1 << 40, max_count=100, keep_ready_ms=0)


class LocalDownloader:
    """Streams ``files[url]`` into the sink; counts calls; may stop after one chunk."""

    def __init__(self, files: dict[str, Path], hang_after_first: bool = False) -> None:
        self.files = files
        self.calls: list[str] = []
        self.hang_after_first = hang_after_first
        self.started = asyncio.Event()

    async def __call__(self, url: str, sink: object, policy: RetryPolicy) -> None:
        self.calls.append(url)
        data = self.files[url].read_bytes()
        for start in range(0, len(data), 65536):
            await sink.write(data[start : start + 65536])  # type: ignore[attr-defined]
            self.started.set()
            if self.hang_after_first:
                await asyncio.Event().wait()


def offer(path: Path, uuid: str, keys: tuple[str, ...] = KEYS) -> ArchiveOffer:
    return ArchiveOffer(ArchiveInfo(path.stat().st_size, uuid, "1.0.0", f"https://x/{uuid}"), keys)


def store(folder: Path, downloader: LocalDownloader, bounds: ShelfBounds = ROOMY) -> ArchiveStore:
    return ArchiveStore(str(folder), bounds, RetryPolicy(), gid=os.getgid(), downloader=downloader)


async def test_download_verified_renamed_with_modes_then_present(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "a")
    folder = tmp_path / "archives"
    down = LocalDownloader({f"https://x/{uuid}": archive})
    s = store(folder, down)
    assert s.prepare() == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    result = await s.obtain(offer(archive, uuid))
    assert result.path == str(folder / f"{uuid}.fw") and result.error == ""
    assert sha256(Path(result.path)) == sha256(archive)
    assert stat.S_IMODE(Path(result.path).stat().st_mode) == 0o640
    assert os.listdir(folder) == [f"{uuid}.fw"]
    # present and valid: not downloaded again (also by a new store: it verifies the file)
    again = await store(folder, down).obtain(offer(archive, uuid))
    assert again.path == result.path and len(down.calls) == 1
    # a recheck finds it too
    assert (await s.obtain(offer(archive, uuid), recheck=True)).path == result.path


async def test_a_changed_file_is_verified_again_and_replaced(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "a")
    folder = tmp_path / "archives"
    down = LocalDownloader({f"https://x/{uuid}": archive})
    s = store(folder, down)
    s.prepare()
    path = Path((await s.obtain(offer(archive, uuid))).path or "")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt the resource, keep the size
    path.write_bytes(bytes(data))
    # A file verified in this run is known by its size, mtime and inode: a later write
    # changes the mtime (pinned here: two writes in one clock tick share one).
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    result = await s.obtain(offer(archive, uuid))
    assert len(down.calls) == 2  # the corrupt file was deleted and fetched again
    assert sha256(Path(result.path or "")) == sha256(archive)
    # gone, and only a recheck: missing, nothing fetched
    path.unlink()
    gone = await s.obtain(offer(archive, uuid), recheck=True)
    assert gone.missing and gone.path is None and len(down.calls) == 2


async def test_a_wrongly_signed_download_is_deleted(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "w", key=WRONG_KEY)
    folder = tmp_path / "archives"
    s = store(folder, LocalDownloader({f"https://x/{uuid}": archive}))
    s.prepare()
    result = await s.obtain(offer(archive, uuid))
    assert result.path is None and "failed verification" in result.error
    assert "digital signature verification" in result.error
    assert os.listdir(folder) == []


async def test_cancelled_mid_download_leaves_no_part_file(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "a")
    folder = tmp_path / "archives"
    down = LocalDownloader({f"https://x/{uuid}": archive}, hang_after_first=True)
    s = store(folder, down)
    s.prepare()
    task = asyncio.create_task(s.obtain(offer(archive, uuid)))
    await down.started.wait()
    assert os.listdir(folder) == [f"{uuid}.fw.part"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert os.listdir(folder) == []


def test_prepare_removes_leftovers_and_lists_what_is_ready(tmp_path: Path) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    archive, uuid = make_archive(folder, "x")
    archive.rename(folder / f"{uuid}.fw")
    for leftover in (f"{uuid}.fw.part", f"{uuid}.fw.sdb1.copy", f"{uuid}.fw.sdb1.staged"):
        (folder / leftover).write_bytes(b"partial")
    (folder / "notes.txt").write_text("kept")
    (folder / "0000-bad.fw").write_bytes(b"not an archive")
    found = store(folder, LocalDownloader({})).prepare()
    assert [(u, p) for u, p, _ in found] == [(uuid, str(folder / f"{uuid}.fw"))]
    info = found[0][2]
    assert info["version"] == "1.0.0" and info["product"] == "kiosk-content"
    assert sorted(os.listdir(folder)) == sorted(["0000-bad.fw", f"{uuid}.fw", "notes.txt"])


async def test_bounds_remove_the_oldest_and_keep_recent_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "archives"
    files = {}
    uuids = []
    for name in ("a", "b", "c"):
        archive, uuid = make_archive(tmp_path, name, size=4096)
        files[f"https://x/{uuid}"] = archive
        uuids.append(uuid)
    down = LocalDownloader(files)
    hour = 3_600_000
    s = store(folder, down, ShelfBounds(max_bytes=1 << 40, max_count=2, keep_ready_ms=hour))
    s.prepare()
    now = s.wall_clock()
    for age, uuid in zip((5, 3), uuids[:2], strict=True):  # hours old
        await s.obtain(offer(files[f"https://x/{uuid}"], uuid))
        os.utime(folder / f"{uuid}.fw", (now - age * 3600, now - age * 3600))
    result = await s.obtain(offer(files[f"https://x/{uuids[2]}"], uuids[2]))
    assert result.evicted == (uuids[0],)  # the oldest
    assert sorted(os.listdir(folder)) == sorted(f"{u}.fw" for u in uuids[1:])
    # everything else recent: the bound is exceeded, with a warning
    os.utime(folder / f"{uuids[1]}.fw")
    fourth, uuid4 = make_archive(tmp_path, "d", size=4096)
    down.files[f"https://x/{uuid4}"] = fourth
    with caplog.at_level(logging.WARNING):
        result = await s.obtain(offer(fourth, uuid4))
    assert result.evicted == ()
    assert len(os.listdir(folder)) == 3
    assert "exceeds its bounds" in caplog.text


async def chunks_of(path: Path) -> AsyncGenerator[bytes, None]:
    data = path.read_bytes()
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


async def test_stage_copies_verifies_and_moves_on_download(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "m")
    folder = tmp_path / "archives"
    down = LocalDownloader({})
    s = store(folder, down)
    s.prepare()
    staged = await s.stage(uuid, "sdb1", lambda: chunks_of(archive), KEYS)
    assert staged == str(folder / f"{uuid}.fw.sdb1.staged")
    assert stat.S_IMODE(Path(staged).stat().st_mode) == 0o640
    o = ArchiveOffer(offer(archive, uuid).info, KEYS, "removable", staged=staged)
    result = await s.obtain(o)
    assert result.path == str(folder / f"{uuid}.fw") and down.calls == []
    assert os.listdir(folder) == [f"{uuid}.fw"]
    # the same archive again: nothing copied
    assert await s.stage(uuid, "sdc1", lambda: chunks_of(archive), KEYS) is None


async def test_a_copy_that_fails_verification_leaves_nothing(tmp_path: Path) -> None:
    archive, uuid = make_archive(tmp_path, "w", key=WRONG_KEY)
    folder = tmp_path / "archives"
    s = store(folder, LocalDownloader({}))
    s.prepare()
    with pytest.raises(FirmwareError, match="the copy failed verification"):
        await s.stage(uuid, "sdb1", lambda: chunks_of(archive), KEYS)
    assert os.listdir(folder) == []
    with pytest.raises(TargetError):
        s.discard(str(tmp_path / "elsewhere.staged"))

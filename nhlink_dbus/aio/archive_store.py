"""The archives folder (protocol.md §7; DESIGN §1.4): downloads, copies from media, bounds.

Files in ``[archives] dir`` (created if missing; ``root:<decisions.group>`` 0750,
every file 0640):

* ``<uuid>.fw`` — a verified archive, ready (what ``ArchiveReady`` names);
* ``<uuid>.fw.part`` — a download in progress, with the downloader and retry
  policy of firmware (Range resume, retries, idle timeout);
* ``<uuid>.fw.<device>.copy`` / ``<uuid>.fw.<device>.staged`` — an archive being
  copied from a medium / copied and verified, waiting for its decision.

A file becomes ``<uuid>.fw`` only once it verified like ``fwup -V`` with the
archive keys (signature and every resource); one that fails is deleted. An
archive already in place and valid is ready again without a download or copy
(a file verified earlier in this run is recognised by its size, mtime and inode,
not read again). Leftovers of a previous run (``.part``, ``.copy``, ``.staged``)
are deleted at start-up. The folder's bounds are the core's
(:func:`~nhlink_dbus.core.archive_manager.plan_eviction`), applied each time an
archive becomes ready.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import stat
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from nhlink_dbus.aio.blocking import run_blocking
from nhlink_dbus.core.archive_manager import (
    ArchiveOffer,
    FetchResult,
    Info,
    ShelfBounds,
    ShelfItem,
    plan_eviction,
)
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.fwup_meta import ArchiveInspector, firmware_metadata
from nhlink_dbus.errors import FirmwareError, NhlinkError, TargetError
from nhlink_dbus.fwup.local_firmware import LocalFirmwareError, inspect_fd

logger = logging.getLogger(__name__)

FOLDER_MODE = 0o750
FILE_MODE = 0o640
_SAFE_UUID = re.compile(r"[0-9A-Za-z-]{1,64}")
_READY = re.compile(r"([0-9A-Za-z-]{1,64})\.fw")
_LEFTOVER = re.compile(r"[0-9A-Za-z-]{1,64}\.fw(\.part|\.[A-Za-z0-9_.:+-]+\.(copy|staged))")
_HEAD_CHUNK = 64 * 1024


class Downloader(Protocol):
    async def __call__(self, url: str, sink: _PartFile, policy: RetryPolicy) -> object: ...


async def _lazy_download(url: str, sink: _PartFile, policy: RetryPolicy) -> object:
    """The firmware downloader, imported in a thread (not on the loop) when the service
    loads the update path or the first archive needs it, whichever comes first. Through
    the import system, not ``sys.modules``: there the module is while it is still being
    imported by the other thread."""
    global _firmware_download
    if _firmware_download is None:
        module = await asyncio.to_thread(importlib.import_module, "nhlink_dbus.aio.downloader")
        _firmware_download = module.download
    return await _firmware_download(url, sink, policy)


_firmware_download: Callable[..., Awaitable[object]] | None = None  # once imported


def check_uuid(uuid: str) -> str:
    if not _SAFE_UUID.fullmatch(uuid):
        raise FirmwareError("archive uuid is not a plain UUID")
    return uuid


class _PartFile:
    """A ChunkSink writing a new file (0640); ``restart`` truncates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.fd = os.open(path, flags, FILE_MODE)
        except OSError as exc:
            raise TargetError(f"cannot create {path}: {exc.strerror}") from exc
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        try:
            await run_blocking(_write_all, self.fd, chunk)
        except OSError as exc:  # a full archives folder, above all
            raise TargetError(f"writing {self.path} failed: {exc.strerror}") from exc
        self.size += len(chunk)

    async def restart(self) -> None:
        await run_blocking(os.ftruncate, self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.size = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _verify(path: Path, keys: Sequence[str]) -> dict[str, str]:
    """The archive's metadata once it verified with ``keys``; FirmwareError if not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise TargetError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return inspect_fd(fd, keys)
    except LocalFirmwareError as exc:
        raise FirmwareError(f"failed verification: {exc}") from exc
    finally:
        os.close(fd)


def read_head(path: Path) -> dict[str, str]:
    """The metadata of an archive's ``meta.conf`` (signature not checked)."""
    inspector = ArchiveInspector([], lambda *_: False)
    with path.open("rb") as fh:
        while inspector.info is None:
            data = fh.read(_HEAD_CHUNK)
            if not data:
                inspector.finish()
                break
            inspector.feed(data)
    assert inspector.info is not None
    return firmware_metadata(inspector.info.meta_conf)


def _shelf_info(uuid: str, meta: dict[str, str], size: int) -> Info:
    """What a restarted service knows of an archive: its file's metadata."""
    info: Info = {"uuid": uuid, "size": size}
    for key in ("version", "description", "platform", "architecture", "product", "author"):
        if key in meta:
            info[key] = meta[key]
    return info


class ArchiveStore:
    """The archives folder; see the module docstring. Everything through the constructor."""

    def __init__(
        self,
        folder: str,
        bounds: ShelfBounds,
        policy: RetryPolicy,
        *,
        gid: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        downloader: Downloader = _lazy_download,
    ) -> None:
        self.folder = Path(folder)
        self.bounds = bounds
        self.policy = policy
        self.gid = gid
        self.wall_clock = wall_clock
        self.downloader = downloader
        self._verified: dict[Path, tuple[int, int, int]] = {}

    # -- start-up (blocking: run off the loop) -----------------------------------------------

    def prepare(self) -> list[tuple[str, str, Info]]:
        """Create the folder, delete leftovers, list what is ready: (uuid, path, info)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._own(self.folder, FOLDER_MODE)
        except OSError as exc:
            raise TargetError(f"cannot create {self.folder}: {exc.strerror}") from exc
        found = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if _LEFTOVER.fullmatch(entry.name):
                logger.info("removing %s, left by an earlier run", entry.path)
                Path(entry.path).unlink(missing_ok=True)
                continue
            match = _READY.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                meta = read_head(Path(entry.path))
            except (OSError, NhlinkError, UnicodeDecodeError) as exc:
                logger.warning("ignoring %s: %s", entry.path, exc)
                continue
            size = entry.stat(follow_symlinks=False).st_size
            found.append((match.group(1), entry.path, _shelf_info(match.group(1), meta, size)))
        return found

    # -- a decided archive into place --------------------------------------------------------

    async def obtain(self, offer: ArchiveOffer, *, recheck: bool = False) -> FetchResult:
        """``<uuid>.fw`` for a decided offer: the valid file already there, else the staged
        copy moved into place, else (unless ``recheck``) a download."""
        uuid = check_uuid(offer.info.uuid)
        final = self.folder / f"{uuid}.fw"
        try:
            if await self._valid(final, offer.public_keys):
                if offer.staged:
                    self.discard(offer.staged)
                logger.info("archive %s: already present and valid, not fetched again", uuid)
                return FetchResult(str(final), await run_blocking(self._make_room, final))
            if recheck:
                return FetchResult(error="not in the archives folder any more", missing=True)
            if offer.staged:
                await run_blocking(os.replace, offer.staged, final)
            else:
                await self._download(offer, final)
            await run_blocking(os.utime, final)  # its mtime says when it became ready
            self._remember(final)
            return FetchResult(str(final), await run_blocking(self._make_room, final))
        except NhlinkError as exc:
            return FetchResult(error=str(exc))
        except OSError as exc:
            return FetchResult(error=f"{exc.strerror or exc} ({self.folder})")

    async def _download(self, offer: ArchiveOffer, final: Path) -> None:
        async def fill(sink: _PartFile) -> None:
            await self.downloader(offer.info.url, sink, self.policy)

        part = final.with_name(final.name + ".part")
        await self._write_verified(part, final, fill, offer.public_keys, "the downloaded file")

    # -- archives from removable media ------------------------------------------------------

    async def stage(
        self,
        uuid: str,
        device: str,
        chunks: Callable[[], AsyncGenerator[bytes, None]],
        keys: Sequence[str],
    ) -> str | None:
        """Copy an archive from a medium and verify the copy: the staged path, or None when
        the same archive is in place and valid already (nothing copied)."""
        check_uuid(uuid)
        if await self._valid(self.folder / f"{uuid}.fw", keys):
            return None

        async def fill(sink: _PartFile) -> None:
            async for chunk in chunks():
                await sink.write(chunk)

        staged = self.folder / f"{uuid}.fw.{device}.staged"
        copy = self.folder / f"{uuid}.fw.{device}.copy"
        await self._write_verified(copy, staged, fill, keys, "the copy")
        return str(staged)

    async def _write_verified(
        self,
        temp: Path,
        target: Path,
        fill: Callable[[_PartFile], Awaitable[None]],
        keys: Sequence[str],
        what: str,
    ) -> None:
        """Write ``temp`` (0640, ours) with ``fill``, verify it, then rename it to
        ``target``; ``temp`` never outlives this call (failure or cancellation)."""
        sink = _PartFile(temp)
        try:
            await fill(sink)
            await run_blocking(self._own_fd, sink.fd)
            sink.close()
            try:
                await run_blocking(_verify, temp, keys)
            except FirmwareError as exc:
                raise FirmwareError(f"{what} {exc}") from exc
            await run_blocking(os.replace, temp, target)
        finally:
            sink.close()
            temp.unlink(missing_ok=True)

    def discard(self, path: str) -> None:
        """Delete a staged copy (only files of this folder)."""
        target = Path(path)
        if target.parent != self.folder:
            raise TargetError(f"{path} is not in {self.folder}")
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot delete {path}: {exc.strerror}") from exc

    # -- internals ---------------------------------------------------------------------------

    async def _valid(self, path: Path, keys: Sequence[str]) -> bool:
        """Whether ``path`` is a regular file that verifies with ``keys`` (one that does not
        is deleted)."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise TargetError(f"{path} is not a regular file")
        if self._verified.get(path) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return True
        try:
            await run_blocking(_verify, path, keys)
        except FirmwareError as exc:
            logger.warning("%s %s: deleted", path, exc)
            path.unlink(missing_ok=True)
            return False
        self._remember(path)
        return True

    def _remember(self, path: Path) -> None:
        st = path.lstat()
        self._verified[path] = (st.st_size, st.st_mtime_ns, st.st_ino)

    def _make_room(self, newcomer: Path) -> tuple[str, ...]:
        """Apply the folder's bounds for ``newcomer``: the uuids removed (blocking)."""
        items = []
        for entry in os.scandir(self.folder):
            match = _READY.fullmatch(entry.name)
            if match is not None and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                items.append(ShelfItem(match.group(1), st.st_size, st.st_mtime))
        mine = next((i for i in items if f"{i.uuid}.fw" == newcomer.name), None)
        if mine is None:
            return ()
        evict, exceeded = plan_eviction(items, mine, self.bounds, self.wall_clock())
        for uuid in evict:
            logger.info("archive %s removed: the archives folder is full", uuid)
            path = self.folder / f"{uuid}.fw"
            self._verified.pop(path, None)
            path.unlink(missing_ok=True)
        if exceeded:
            logger.warning(
                "the archives folder exceeds its bounds (max_bytes %d, max_count %d) for %s: "
                "every other archive became ready less than %d ms ago",
                self.bounds.max_bytes,
                self.bounds.max_count,
                newcomer.name,
                self.bounds.keep_ready_ms,
            )
        return tuple(evict)

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if self.gid is not None:
            os.chown(path, 0, self.gid)

    def _own_fd(self, fd: int) -> None:
        os.fchmod(fd, FILE_MODE)
        if self.gid is not None:
            os.fchown(fd, 0, self.gid)

"""One removable medium, from insertion to removal: open it, list, verify, copy.

A :class:`MediumSession` runs as one task per medium (under the service's
Supervisor). It finds the medium's mount (or mounts it, :mod:`media_mounts`),
lists the candidate files of the configured folders, and judges each in turn:
the head of its ``meta.conf`` says what it is (the core's
:func:`~nhlink_dbus.core.media.classify`), then the whole file is verified with
the keys of that kind (signature, every resource's length and hash) — an
archive while it is copied into the archives folder, and its copy again there
(:meth:`ArchiveStore.stage`). Every result goes to the core as one
:data:`~nhlink_dbus.core.media.MediaInput`. Nothing reads a file by path twice
the same way: every component is opened with ``O_NOFOLLOW`` relative to the
one before (``openat``), so nothing can lead outside the medium.

Two readers:

* :class:`MountedMedium` — a mounted file system, read with ``pread`` off the
  event loop;
* :class:`FatMedium` — a FAT file system the kernel cannot mount, read with
  mtools straight from the device node (``mdir`` lists, ``mcopy ... -``
  streams a file).

Removal (:meth:`MediumSession.close`) marks the reader gone — a read in
progress (a copy, a firmware being applied) fails at its next chunk with
"the medium was removed" — cancels the session task (a partial copy is
deleted) and undoes a mount of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from nhlink_dbus.aio.archive_store import ArchiveStore
from nhlink_dbus.aio.blocking import run_blocking
from nhlink_dbus.aio.media_mounts import MediaMounts, owned
from nhlink_dbus.core import media
from nhlink_dbus.core.fwup_meta import ArchiveInspector, FwArchiveHead, firmware_metadata
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError, NhlinkError, TargetError
from nhlink_dbus.fwup.fat import FatFilesystem, mtools_environment
from nhlink_dbus.fwup.signature import check_signature, parse_public_key

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
_FEED = 16384  # what the archive inspector is fed at a time
REMOVED = "the medium was removed"
# mtools reads these as wildcards; FAT long names may hold the last two.
_MTOOLS_SPECIAL = frozenset("*?[]")

Report = Callable[[media.MediaInput], None]
KeysFor = Callable[[media.Kind], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Candidate:
    path: str  # relative to the medium's root, "/"-separated
    size: int


Skipped = tuple[str, str]  # (path, why)


class MediumReader(Protocol):
    gone: bool

    def scan(
        self, folders: Sequence[str], max_bytes: int
    ) -> tuple[list[Candidate], list[Skipped]]: ...

    def chunks(self, path: str) -> AsyncGenerator[bytes, None]: ...


def _judge_entry(rel: str, name: str, mode: int, size: int, max_bytes: int) -> str | None:
    """Why a directory entry is skipped (None: a candidate). Names not ending in .fw are
    skipped silently (empty reason)."""
    problem = media.name_problem(name)
    if problem is not None:
        return "" if problem == "not a .fw file" else problem
    if stat.S_ISLNK(mode):
        return "a symlink (never followed)"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if size > max_bytes:
        return f"{size} bytes, over [media] max_bytes ({max_bytes})"
    return None


class MountedMedium:
    """A medium mounted at ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.gone = False

    def _open_dir(self, parts: Sequence[str]) -> int:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                next_fd = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def scan(self, folders: Sequence[str], max_bytes: int) -> tuple[list[Candidate], list[Skipped]]:
        """The candidate files of ``folders`` (blocking)."""
        found: list[Candidate] = []
        skipped: list[Skipped] = []
        for folder in folders:
            parts = media.folder_parts(folder)
            try:
                fd = self._open_dir(parts)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    skipped.append((folder, "not a folder (a symlink is never followed)"))
                continue
            try:
                for name in sorted(os.listdir(fd)):
                    rel = "/".join((*parts, name))
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    why = _judge_entry(rel, name, st.st_mode, st.st_size, max_bytes)
                    if why is None:
                        found.append(Candidate(rel, st.st_size))
                    elif why:
                        skipped.append((rel, why))
            finally:
                os.close(fd)
        return found, skipped

    async def chunks(self, path: str) -> AsyncGenerator[bytes, None]:
        """The file's bytes (every component opened without following a symlink)."""
        parts = path.split("/")
        try:
            dir_fd = await run_blocking(self._open_dir, parts[:-1])
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                fd = os.open(parts[-1], flags, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise TargetError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TargetError(f"{path} is not a regular file")
            offset = 0
            while True:
                if self.gone:
                    raise TargetError(REMOVED)
                try:
                    data = await run_blocking(os.pread, fd, CHUNK, offset)
                except OSError as exc:
                    raise TargetError(f"cannot read {path}: {exc.strerror}") from exc
                if not data:
                    return
                offset += len(data)
                yield data
        finally:
            os.close(fd)


class FatMedium:
    """A FAT file system on ``devnode`` read through mtools (no mount needed)."""

    def __init__(self, devnode: str) -> None:
        self.devnode = devnode
        self.fs = FatFilesystem(devnode, 0)
        self.gone = False

    def scan(self, folders: Sequence[str], max_bytes: int) -> tuple[list[Candidate], list[Skipped]]:
        found: list[Candidate] = []
        skipped: list[Skipped] = []
        for folder in folders:
            parts = media.folder_parts(folder)
            entries = self.fs.entries("/".join(parts))
            for name, is_dir, size in sorted(entries or []):
                rel = "/".join((*parts, name))
                mode = stat.S_IFDIR if is_dir else stat.S_IFREG
                why = _judge_entry(rel, name, mode, size, max_bytes)
                if why is None and _MTOOLS_SPECIAL & set(name):
                    why = "a name mtools would read as a pattern"
                if why is None:
                    found.append(Candidate(rel, size))
                elif why:
                    skipped.append((rel, why))
        return found, skipped

    async def chunks(self, path: str) -> AsyncGenerator[bytes, None]:
        try:
            proc = await asyncio.create_subprocess_exec(
                "mcopy",
                "-n",
                "-i",
                self.devnode,
                f"::/{path}",
                "-",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=mtools_environment(),
            )
        except OSError as exc:
            raise TargetError(f"cannot run mcopy: {exc.strerror}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while True:
                if self.gone:
                    raise TargetError(REMOVED)
                data = await proc.stdout.read(CHUNK)
                if not data:
                    break
                yield data
            problem = (await proc.stderr.read()).decode("utf-8", "replace").strip()
            if await proc.wait() != 0:
                raise TargetError(f"cannot read {path}: {problem or 'mcopy failed'}")
        finally:
            if proc.returncode is None:
                proc.kill()
                # Drain what is left in the pipes: a paused pipe never sees its end,
                # and wait() would wait for it.
                await proc.communicate()


class _Inspection:
    """An archive inspector fed off the event loop (hashing is CPU work)."""

    def __init__(self, keys: Sequence[str], verify: bool) -> None:
        public = [parse_public_key(k) for k in keys]
        self.inspector = ArchiveInspector(public, check_signature, verify)

    def _feed(self, data: bytes) -> None:
        for start in range(0, len(data), _FEED):
            self.inspector.feed(data[start : start + _FEED])

    async def feed(self, data: bytes) -> bool:
        """Feed ``data``; True once the inspection is complete."""
        await run_blocking(self._feed, data)
        return self.inspector.complete

    async def finish(self) -> FwArchiveHead:
        if not self.inspector.complete:
            await run_blocking(self.inspector.finish)
        assert self.inspector.info is not None
        return self.inspector.info


async def inspect(
    chunks: AsyncGenerator[bytes, None], keys: Sequence[str], *, verify: bool
) -> FwArchiveHead:
    """The archive's head (``verify``: once every resource checked out with ``keys``);
    reading stops as soon as that is known. FirmwareError if it is not valid."""
    inspection = _Inspection(keys, verify)
    async with contextlib.aclosing(chunks):
        async for data in chunks:
            if await inspection.feed(data):
                break
    return await inspection.finish()


async def verified(
    chunks: AsyncGenerator[bytes, None], keys: Sequence[str]
) -> AsyncGenerator[bytes, None]:
    """``chunks``, each passed on once it was fed to a verification with ``keys``; a file
    that is not valid raises FirmwareError (at the latest after its last chunk)."""
    inspection = _Inspection(keys, verify=True)
    async with contextlib.aclosing(chunks):
        async for data in chunks:
            await inspection.feed(data)
            yield data
    await inspection.finish()


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """What a session needs of ``[media]`` and ``[firmware]``."""

    folders: tuple[str, ...]
    max_bytes: int
    mount: bool
    task: str  # [firmware] task: which files are firmware


ReaderFactory = Callable[[str], MediumReader]


class MediumSession:
    """One medium; see the module docstring. ``run`` is its task."""

    def __init__(
        self,
        device: media.BlockDevice,
        settings: MediaSettings,
        *,
        mounts: MediaMounts,
        store: ArchiveStore,
        keys_for: KeysFor,
        running: dict[str, str],
        report: Report,
        mounted_reader: ReaderFactory = MountedMedium,
    ) -> None:
        self.device = device
        self.settings = settings
        self.mounts = mounts
        self.store = store
        self.keys_for = keys_for
        self.running = running
        self.report = report
        self.mounted_reader = mounted_reader
        self.reader: MediumReader | None = None
        self.task: asyncio.Task[None] | None = None
        self.gone = False

    def chunks(self, path: str) -> AsyncGenerator[bytes, None]:
        """A file of this medium (firmware being applied)."""
        if self.gone or self.reader is None:
            raise TargetError(REMOVED)
        return self.reader.chunks(path)

    async def run(self) -> None:
        dev = self.device
        try:
            reader, mount_point = await self._open()
        except TargetError as exc:
            self.report(media.MediumFailed(dev.sys_path, f"{dev.devnode}: {exc}"))
            return
        self.reader = reader
        reader.gone = self.gone
        try:
            found, skipped = await run_blocking(
                reader.scan, self.settings.folders, self.settings.max_bytes
            )
        except NhlinkError as exc:
            self.report(media.MediumFailed(dev.sys_path, f"{dev.devnode}: {exc}"))
            return
        for path, why in skipped:
            logger.info("%s: %s skipped: %s", dev.devnode, path, why)
        is_ours = bool(mount_point) and owned(self.mounts, mount_point)
        self.report(media.MediumAttached(dev.sys_path, mount_point, is_ours, len(found)))
        seen: set[str] = set()
        for candidate in found:
            result = await self._judge(reader, candidate, seen)
            if reader.gone:
                return  # removed: the core forgot the medium; close() ends this task
            if result is not None:
                self.report(result)
        self.report(media.MediumDone(dev.sys_path))

    async def close(self) -> None:
        """The medium was removed: stop reading, end the task, undo our mount."""
        self.gone = True
        if self.reader is not None:
            self.reader.gone = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.mounts.unmount(self.device)

    async def _open(self) -> tuple[MediumReader, str]:
        dev = self.device
        mount_point = await run_blocking(self.mounts.find, dev)
        if mount_point is not None:
            logger.info("%s is mounted at %s: reading it there", dev.devnode, mount_point)
            return self.mounted_reader(mount_point), mount_point
        if not self.settings.mount:
            logger.info("%s: waiting for it to be mounted ([media] mount = false)", dev.devnode)
            mount_point = await self.mounts.wait_for_mount(dev)
            logger.info("%s was mounted at %s: reading it there", dev.devnode, mount_point)
            return self.mounted_reader(mount_point), mount_point
        try:
            mount_point = await self.mounts.mount(dev)
        except TargetError as exc:
            if dev.fs_type not in media.FAT_TYPES or shutil.which("mcopy") is None:
                raise
            logger.info("%s; reading the FAT file system with mtools instead", exc)
            return FatMedium(dev.devnode), ""
        return self.mounted_reader(mount_point), mount_point

    async def _judge(
        self, reader: MediumReader, candidate: Candidate, seen: set[str]
    ) -> media.MediaInput | None:
        file = media.MediaFile(self.device.sys_path, self.device.devnode, candidate.path)
        try:
            head = await inspect(reader.chunks(candidate.path), (), verify=False)
            meta = firmware_metadata(head.meta_conf)
            tasks = {task.name for task in head.conf.tasks}
            kind, refusal = media.classify(meta, tasks, self.running, self.settings.task)
            if refusal is not None:
                return media.CandidateRefused(file, refusal)
            keys = self.keys_for(kind)
            if not keys:
                return media.CandidateRefused(
                    file,
                    f"no {kind.value} signing keys are configured or were received from the hub",
                )
            uuid = meta["uuid"]
            if uuid in seen:
                logger.info("%s: %s: a second copy of %s, skipped", file.device, file.path, uuid)
                return None
            if kind is media.Kind.FIRMWARE:
                await inspect(reader.chunks(candidate.path), keys, verify=True)
                seen.add(uuid)
                return media.FirmwareFound(file, meta, candidate.size)
            # An archive is verified while it is copied (one read of the medium), and its
            # copy again; when the folder holds it already, this file is verified alone.
            staged = await self.store.stage(
                uuid, self.device.name, lambda: verified(reader.chunks(candidate.path), keys), keys
            )
            if staged is None:
                await inspect(reader.chunks(candidate.path), keys, verify=True)
            seen.add(uuid)
            return media.ArchiveFound(file, meta, candidate.size, staged)
        except (FirmwareError, TargetError) as exc:
            return media.CandidateRefused(file, str(exc))
        except (NhlinkError, UnicodeDecodeError) as exc:
            return media.CandidateRefused(file, f"not a valid .fw archive: {exc}")

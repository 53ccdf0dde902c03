"""Mounting removable media read-only, and the mount table (``/proc/self/mountinfo``).

The rules (where, which options, which existing mount counts) are the core's
(:mod:`nhlink_dbus.core.media`); this adapter runs ``mount``/``umount`` with a
fixed, minimal environment (nothing of the daemon's own environment reaches
them) and reads the mount table. A ``mount`` or ``umount`` that was started is
always awaited to its end, also when its caller is cancelled, so no mount is
made behind the service's back.

:meth:`MediaMounts.wait_for_mount` waits for someone else (the desktop) to
mount a medium: the kernel flags the mount table file with ``POLLPRI`` when it
changes (proc(5)); a private epoll set watches for that and its own descriptor
is watched by the event loop (``add_reader``): no thread, no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from nhlink_dbus.core.media import (
    BlockDevice,
    MountEntry,
    find_mount,
    mount_options,
    parse_mountinfo,
)
from nhlink_dbus.errors import TargetError

logger = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
TOOL_ENV: Mapping[str, str] = MappingProxyType(
    {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
)


class MediaMounts:
    """Mount points under ``mount_dir`` (mode 0755), one per medium."""

    def __init__(
        self,
        mount_dir: str,
        *,
        mountinfo: str = MOUNTINFO,
        env: Mapping[str, str] = TOOL_ENV,
    ) -> None:
        self.mount_dir = Path(mount_dir)
        self.mountinfo = mountinfo
        self.env = dict(env)

    def table(self) -> list[MountEntry]:
        try:
            with open(self.mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
                return parse_mountinfo(fh.read())
        except OSError as exc:
            raise TargetError(f"cannot read {self.mountinfo}: {exc.strerror}") from exc

    def find(self, device: BlockDevice) -> str | None:
        """Where the device's file system is mounted already, if anywhere."""
        entry = find_mount(self.table(), device)
        return None if entry is None else entry.mount_point

    async def wait_for_mount(self, device: BlockDevice) -> str:
        """The device's mount point, once it is mounted (now, or when it happens)."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        try:
            fd = os.open(self.mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise TargetError(f"cannot watch {self.mountinfo}: {exc.strerror}") from exc
        poller = select.epoll()

        def on_change() -> None:
            poller.poll(0)  # take the event, so the set is quiet until the next change
            changed.set()

        try:
            poller.register(fd, select.EPOLLPRI | select.EPOLLERR)
            loop.add_reader(poller.fileno(), on_change)
            try:
                while True:
                    changed.clear()
                    found = self.find(device)
                    if found is not None:
                        return found
                    await changed.wait()
            finally:
                loop.remove_reader(poller.fileno())
        finally:
            poller.close()
            os.close(fd)

    def mount_point(self, device: BlockDevice) -> Path:
        return self.mount_dir / device.name

    async def mount(self, device: BlockDevice) -> str:
        """Mount read-only at :meth:`mount_point`; TargetError with mount's words if not."""
        target = self.mount_point(device)
        try:
            self.mount_dir.mkdir(parents=True, exist_ok=True)
            target.mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot create {target}: {exc.strerror}") from exc
        options = mount_options(device.fs_type)
        argv = ["mount", "-t", device.fs_type, "-o", options, device.devnode, str(target)]
        code, text = await self._run(argv)
        if code != 0:
            with contextlib.suppress(OSError):
                target.rmdir()
            raise TargetError(f"cannot mount {device.devnode}: {text or f'mount exit {code}'}")
        logger.info("mounted %s at %s (%s)", device.devnode, target, options)
        return str(target)

    async def unmount(self, device: BlockDevice) -> None:
        """Undo our mount of ``device`` if it is there (lazily: open files keep working
        until they are closed), and remove its mount point."""
        target = self.mount_point(device)
        mounted = any(e.mount_point == str(target) for e in self.table())
        if mounted:
            code, text = await self._run(["umount", "-l", str(target)])
            if code != 0:
                logger.warning("cannot unmount %s: %s", target, text)
                return
            logger.info("unmounted %s", target)
        with contextlib.suppress(OSError):
            target.rmdir()

    async def _run(self, argv: Sequence[str]) -> tuple[int, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
            )
        except OSError as exc:
            raise TargetError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        done = asyncio.ensure_future(proc.communicate())
        try:
            out, _ = await asyncio.shield(done)
        except asyncio.CancelledError:
            await done  # the mount table must not change behind our back
            raise
        text = out.decode("utf-8", "replace").strip().replace("\n", " ")
        return proc.returncode or 0, text


def owned(mounts: MediaMounts, mount_point: str) -> bool:
    """Whether ``mount_point`` is one of ours (under ``mount_dir``)."""
    return Path(mount_point).parent == mounts.mount_dir and os.path.isabs(mount_point)

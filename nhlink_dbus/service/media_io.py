"""The root's half for archives and removable media: the archives folder, the udev
monitor, and one :class:`~nhlink_dbus.aio.media_files.MediumSession` per medium.

Like the rest of the root this only wires: which devices are media, which files
are candidates and what happens to them are ``core/media.py``'s and
``core/archive_manager.py``'s rules. A medium's reading and copying run under the
service's supervisor and report each result back into the core.
"""

from __future__ import annotations

import functools
import grp
import logging
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from nhlink_dbus.aio.archive_store import ArchiveStore
from nhlink_dbus.aio.media_files import MediaSettings, MediumSession, ReaderFactory
from nhlink_dbus.aio.media_mounts import MediaMounts
from nhlink_dbus.aio.supervisor import Supervisor
from nhlink_dbus.aio.udev_monitor import UdevMonitor
from nhlink_dbus.config import Config
from nhlink_dbus.core import archive_manager as am
from nhlink_dbus.core import link, media
from nhlink_dbus.core.update_manager import Offer
from nhlink_dbus.errors import NhlinkError, NotPossible
from nhlink_dbus.service.listeners import Listeners

logger = logging.getLogger(__name__)

MonitorFactory = Callable[[Callable[[str, media.BlockDevice], None]], UdevMonitor]


def archive_store_for(config: Config) -> ArchiveStore:
    """The archives folder as configured: files owned by root and ``decisions.group``."""
    archives = config.archives
    gid = None
    if os.geteuid() == 0:
        try:
            gid = grp.getgrnam(config.decisions.group).gr_gid
        except KeyError:
            logger.warning(
                "group %s does not exist: archives are readable by root only",
                config.decisions.group,
            )
    bounds = am.ShelfBounds(archives.max_bytes, archives.max_count, archives.keep_ready_ms)
    return ArchiveStore(archives.dir, bounds, config.retry_policy(), gid=gid)


class MediaWiring:
    """The archives-and-media half of :class:`~nhlink_dbus.service.root.NhlinkService`."""

    config: Config
    core: link.LinkCore
    listeners: Listeners
    tasks: Supervisor
    clock: Callable[[], float]
    store: ArchiveStore
    mounts: MediaMounts
    media_sessions: dict[str, MediumSession]  # by sysfs path
    _udev_monitor: MonitorFactory
    _media_reader: ReaderFactory

    def perform(self, effects: Sequence[link.Effect]) -> None:
        raise NotImplementedError  # the root's

    def _discard_staged(self, effect: am.DiscardStaged) -> None:
        # Best effort: the decision is made; a copy that cannot be deleted stays a leftover,
        # deleted at the next start. An effect handler never raises into the caller.
        try:
            self.store.discard(effect.path)
        except NhlinkError as exc:
            logger.warning("staged archive not deleted: %s", exc)

    def media_effects(self) -> dict[type[Any], Callable[[Any], object]]:
        """This half's rows of the root's one effect table."""
        return {
            am.StartArchiveDownload: lambda e: self.tasks.spawn("archive", self._archive(e)),
            am.DiscardStaged: self._discard_staged,
            media.AttachMedium: self._attach_medium,
            media.DetachMedium: self._detach_medium,
            media.MediaAdded: self._media_added,
            media.MediaRemoved: lambda e: self.listeners.media_removed(e.device),
        }

    def watch_media(self) -> UdevMonitor | None:
        """Start watching udev for media (and take the media present now)."""
        if not self.config.media.enabled:
            return None
        monitor = self._udev_monitor(self._udev_event)
        try:
            present = monitor.start()
        except NhlinkError as exc:
            logger.error("removable media are not watched: %s", exc)
            return None
        for device in present:
            self._udev_event("add", device)
        return monitor

    async def close_media(self, monitor: UdevMonitor | None) -> None:
        """Stop watching; our mounts do not outlive the service."""
        if monitor is not None:
            monitor.close()
        for session in list(self.media_sessions.values()):
            await session.close()

    def medium_chunks(self, offer: Offer) -> Callable[[], AsyncGenerator[bytes, None]] | None:
        """The reader of a removable offer's file (None for other sources)."""
        if offer.medium is None:
            return None
        session = self.media_sessions.get(offer.medium.sys_path)
        if session is None:
            raise NotPossible(f"{offer.medium.device}: the medium was removed")
        return functools.partial(session.chunks, offer.medium.path)

    def _udev_event(self, action: str, device: media.BlockDevice) -> None:
        if action == "add":
            event: media.MediaInput = media.MediumAdded(device)
        elif action == "change":
            event = media.MediumChanged(device)
        elif action == "remove":
            event = media.MediumRemovedEvent(device.sys_path)
        else:
            return
        self.perform(self.core.media_event(event, self.clock()))

    def _media_added(self, e: media.MediaAdded) -> None:
        where = f"at {e.mount_point}" if e.mount_point else "read with mtools"
        logger.info("medium %s %s: %d candidate file(s)", e.device, where, e.candidates)
        self.listeners.media_added(e.device, e.mount_point, e.candidates)

    def _attach_medium(self, e: media.AttachMedium) -> None:
        logger.info("removable medium %s (%s)", e.device.devnode, e.device.fs_type)
        config = self.config
        session = MediumSession(
            e.device,
            MediaSettings(
                config.media.folders,
                config.media.max_bytes,
                config.media.mount,
                config.firmware.task,
            ),
            mounts=self.mounts,
            store=self.store,
            keys_for=lambda kind: (
                self.core.fwup_keys if kind is media.Kind.FIRMWARE else self.core.archive_keys
            ),
            running=dict(self.core.slot),
            report=lambda event: self.perform(self.core.media_event(event, self.clock())),
            mounted_reader=self._media_reader,
        )
        self.media_sessions[e.device.sys_path] = session
        session.task = self.tasks.spawn(f"medium {e.device.devnode}", session.run())

    def _detach_medium(self, e: media.DetachMedium) -> None:
        session = self.media_sessions.pop(e.sys_path, None)
        if session is not None:
            logger.info("removable medium %s removed", session.device.devnode)
            self.tasks.spawn(f"detach {session.device.devnode}", session.close())

    async def _archive(self, e: am.StartArchiveDownload) -> None:
        result = am.FetchResult(error="the service stopped")
        try:
            result = await self.store.obtain(e.offer, recheck=e.recheck)
        except Exception as exc:  # the supervisor logs it; the request still ends here
            result = am.FetchResult(error=f"internal error: {type(exc).__name__}")
            raise
        finally:
            self.perform(self.core.archive_done(e.request_id, result, self.clock()))

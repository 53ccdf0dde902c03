"""The composition root: builds the adapters, feeds the core, performs its effects.

Decisions are the core's (:class:`~nhlink_dbus.core.link.LinkCore`); this module
only wires. Hub events, udev events and face requests go into the core with the
time; what comes out is performed through one table (effect type → handler).
Long-running work — an update, an archive fetch, a medium, a reboot — runs under one
:class:`~nhlink_dbus.aio.supervisor.Supervisor`, and the core is woken at its
next deadline by one :class:`~nhlink_dbus.aio.supervisor.DeadlineTimer`.
:meth:`NhlinkService.create` does the start-up I/O (the KV store, ``fwup
--version``, the archives folder, the update journal and the boot id) off the
event loop. The halves beside this one: ``device_io`` (the newer device API),
``media_io`` (archives and media), ``journal_io`` (the update journal), ``faces``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nhlink_dbus
from nhlink_dbus.aio import update_runner
from nhlink_dbus.aio.archive_store import ArchiveStore
from nhlink_dbus.aio.hub_client import HubClient, NoHub
from nhlink_dbus.aio.journal_store import JournalStore
from nhlink_dbus.aio.logind import Logind
from nhlink_dbus.aio.media_files import MediumSession, MountedMedium, ReaderFactory
from nhlink_dbus.aio.media_mounts import MediaMounts
from nhlink_dbus.aio.supervisor import DeadlineTimer, Supervisor
from nhlink_dbus.aio.udev_monitor import UdevMonitor
from nhlink_dbus.config import Config
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import link
from nhlink_dbus.core import recovery as rec
from nhlink_dbus.core import update_manager as um
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.kv_format import KVError, active_slot_metadata
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.kv_store import read_kv
from nhlink_dbus.service.device_io import DeviceIO, DeviceRequests
from nhlink_dbus.service.faces import FaceRequests
from nhlink_dbus.service.journal_io import JournalWiring, load_recovery
from nhlink_dbus.service.listeners import Listeners
from nhlink_dbus.service.media_io import MediaWiring, MonitorFactory, archive_store_for
from nhlink_dbus.service.update_io import UpdateWiring

if TYPE_CHECKING:
    from nhlink_dbus.service.update_io import UpdateRunner

logger = logging.getLogger(__name__)


class NhlinkService(DeviceRequests, MediaWiring, JournalWiring, UpdateWiring, FaceRequests):
    """The running service; implements ``service_api.LinkService`` (see ``faces``,
    ``device_io``)."""

    def __init__(
        self,
        config: Config,
        kv: Mapping[str, str],
        *,
        fwup_version: str = update_runner.FWUP_COMPAT_VERSION,
        logind: Logind | None = None,
        hub_factory: Callable[..., HubClient] = HubClient,
        clock: Callable[[], float] = time.monotonic,
        boot_token: str | None = None,
        run_update: UpdateRunner = update_runner.run_update,
        device_io: DeviceIO | None = None,
        archive_store: ArchiveStore | None = None,
        udev_monitor: MonitorFactory = UdevMonitor,
        media_mounts: MediaMounts | None = None,
        media_reader: ReaderFactory = MountedMedium,
        journal: JournalStore | None = None,
        recovery: rec.Recovery | None = None,
        boot_id: str = "",
    ) -> None:
        self.config = config
        self.kv = dict(kv)
        self.logind = logind
        self.clock = clock
        self._run_update = run_update
        self.store = archive_store or archive_store_for(config)
        self._udev_monitor = udev_monitor
        self.mounts = media_mounts or MediaMounts(config.media.mount_dir)
        self._media_reader = media_reader
        self.media_sessions: dict[str, MediumSession] = {}  # by sysfs path
        self.journal = journal  # None: nothing is journaled (tests of the root)
        self.listeners = Listeners()
        found = recovery or rec.Recovery(rec.Found.NOTHING, self.kv)
        # The running firmware's: while an applied update waits for its reboot, the
        # KV store's active slot is already the next one (core/recovery.py).
        slot = active_slot_metadata(found.kv)
        # Request ids carry a token of this start: none names a request of another one.
        self.core = link.LinkCore(
            config.link_settings(),
            slot,
            # os.urandom, not secrets: the token only tells starts apart, and secrets
            # would load hmac and OpenSSL's hashes at every start.
            boot_token or os.urandom(4).hex(),
            kv=found.kv,
            device_api=config.device_api_settings(),
            recovery=found,
            boot_id=boot_id,
        )
        serial = self.kv.get("nerves_serial_number")
        self.device_io = device_io or DeviceIO.from_config(config)
        device = hs.DeviceInfo(
            kv=slot,
            fwup_version=fwup_version,
            fwup_keys_configured=bool(config.firmware.public_keys),
            archive_keys_configured=bool(config.archives.public_keys),
            meta=self.core.device_api.validation.meta(),
            extensions=self.core.device_api.offered_extensions,
        )
        self.backoff_override: list[int] | None = None
        self.hub: HubClient | NoHub
        not_configured = config.not_configured()
        if not_configured is not None:  # no [hub] table: run, answer, connect nowhere
            self.identifier = serial or ""
            self.hub = NoHub(not_configured)
        else:
            settings = config.hub_settings(serial)
            self.identifier = settings.identifier
            self.hub = hub_factory(
                settings,
                device,
                on_event=lambda event: self.perform(self.core.hub_event(event, self.clock())),
                reconnect_backoff=lambda: list(self.backoff_override or []) or None,
            )
        self.local_fds: dict[str, int] = {}  # InstallFile request id -> fd (owned)
        self.tasks = Supervisor(on_failure=self._task_failed)
        self._timer = DeadlineTimer(lambda now: self.perform(self.core.tick(now)), clock)
        self._effects: Mapping[type[Any], Callable[[Any], object]] = {
            link.Announce: self._announce,
            link.DecisionMade: self._decision_made,
            link.RequestGone: lambda e: self._close_local(e.request_id),
            link.ArchiveReady: self._archive_ready,
            link.Downloading: lambda e: self.hub.set_downloading(e.uuid),
            link.PropertiesChanged: lambda e: self.listeners.properties_changed(e.changed),
            link.IdentifyRequested: lambda e: self.listeners.identify(),
            link.ConnectionLost: lambda e: self.listeners.disconnected(e.reason),
            um.StartUpdate: lambda e: self.tasks.spawn("update", self._update(e)),
            um.ReportProgress: lambda e: self.listeners.fwup_progress(e.percent),
            us.HubPush: lambda e: self.hub.push(e.event, dict(e.payload)),
            um.PushRebooting: lambda e: self.hub.push_rebooting(),
            um.Finished: self._finished,
            um.RebootScheduled: self._reboot_scheduled,
            um.RebootNow: lambda e: self.tasks.spawn("reboot", self._reboot()),
            um.ReportError: self._error,
            rec.SaveJournal: self.save_journal,
            **self.device_effects(),
            **self.media_effects(),
        }

    @classmethod
    async def create(cls, config: Config, **adapters: Any) -> NhlinkService:
        """Read the KV store, the update journal and the boot id and ask fwup its
        version off the loop; decide what the journal means now; then build."""
        try:
            kv = await asyncio.to_thread(read_kv, config.firmware.kv)
        except (KVError, NhlinkError) as exc:
            logger.error("cannot read the firmware KV store (%s): %s", config.firmware.kv, exc)
            kv = {}
        fw = config.firmware
        version = await update_runner.fwup_version(fw.applier, fw.fwup_path)
        system_bus = adapters.pop("system_bus", None)
        if "device_io" not in adapters:
            adapters["device_io"] = DeviceIO.from_config(config, system_bus)
        journal, recovery, boot_id = await load_recovery(config, kv)
        service = cls(
            config,
            kv,
            fwup_version=version,
            journal=journal,
            recovery=recovery,
            boot_id=boot_id,
            **adapters,
        )
        try:
            service.core.archives_found(await asyncio.to_thread(service.store.prepare))
        except NhlinkError as exc:
            logger.error("archives folder: %s", exc)
        return service

    async def run(self) -> None:
        """Run until cancelled; every task of the service ends with it."""
        logger.info(
            "nhlink-dbus %s starting; hub %s, running firmware %s",
            nhlink_dbus.__version__,
            self.server_url or "none",
            self.core.slot.get("nerves_fw_uuid", "?"),
        )
        not_configured = self.config.not_configured()
        if not_configured is not None:  # logged, LastError, Error signal
            self.perform(self.core.error(not_configured))
        try:
            async with self.tasks:
                self.perform(self.core.start(self.clock()))
                self.announce_start()
                self.tasks.spawn("preload", self.preload_updates())
                monitor = self.watch_media()
                try:
                    await self.hub.run()
                finally:
                    self._timer.stop()
                    self.core.hub_stopped()
                    await self.close_media(monitor)
        finally:
            self.sync_journal_now()

    def perform(self, effects: Sequence[link.Effect]) -> None:
        """Carry out the core's effects, then wake it at its next deadline."""
        for effect in effects:
            self._effects[type(effect)](effect)
        self._timer.arm(self.core.next_deadline())

    # -- effect handlers ----------------------------------------------------------------------

    def _announce(self, e: link.Announce) -> None:
        if e.kind == link.UPDATE:
            self.listeners.update_available(e.request_id, e.info)
        else:
            self.listeners.archive_available(e.request_id, e.info)

    def _decision_made(self, e: link.DecisionMade) -> None:
        logger.info("%s %s: %s (by %s)", e.kind, e.request_id, e.decision, e.decided_by)
        self.listeners.decision_made(e.request_id, e.decision, e.delay_ms, e.decided_by)
        if e.decision != "apply":
            self._close_local(e.request_id)

    def _finished(self, e: um.Finished) -> None:
        result = "success" if e.success else "failure"
        logger.info("update %s finished: %s %s", e.request_id, result, e.message)
        self.listeners.update_finished(e.request_id, e.success, e.message)

    def _reboot_scheduled(self, e: um.RebootScheduled) -> None:
        logger.info("reboot in %d ms", e.delay_ms)
        self.listeners.reboot_scheduled(e.delay_ms)

    def _archive_ready(self, e: link.ArchiveReady) -> None:
        logger.info("archive %s ready at %s", e.request_id, e.path)
        self.listeners.archive_ready(e.request_id, e.info, e.path)

    def _error(self, e: um.ReportError) -> None:
        logger.warning("%s", e.message)
        self.listeners.error(e.message)

    def _close_local(self, request_id: str) -> None:
        fd = self.local_fds.pop(request_id, None)
        if fd is not None:
            os.close(fd)

    def _task_failed(self, name: str, exc: BaseException) -> None:
        self.perform(self.core.error(f"internal error in the {name} task: {type(exc).__name__}"))

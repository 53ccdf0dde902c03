"""The composition root: builds the adapters, feeds the core, performs its effects.

Decisions are the core's (:class:`~nhlink_dbus.core.link.LinkCore`); this module
only wires. Hub events and face requests go into the core with the time; what
comes out is performed through one table (effect type → handler). Long-running
work — an update, an archive fetch, a reboot — runs under one
:class:`~nhlink_dbus.aio.supervisor.Supervisor`, and the core is woken at its
next deadline by one :class:`~nhlink_dbus.aio.supervisor.DeadlineTimer`.
:meth:`NhlinkService.create` does the start-up I/O (the KV store, ``fwup
--version``) off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nhlink_dbus
from nhlink_dbus.aio import update_runner
from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.aio.logind import Logind
from nhlink_dbus.aio.supervisor import DeadlineTimer, Supervisor
from nhlink_dbus.config import Config
from nhlink_dbus.core import archive_manager as am
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import link
from nhlink_dbus.core import update_manager as um
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.core.kv_format import KVError, active_slot_metadata
from nhlink_dbus.errors import LogindError, NhlinkError, NotPossible
from nhlink_dbus.kv_store import read_kv
from nhlink_dbus.service.faces import FaceRequests
from nhlink_dbus.service.listeners import Listeners

if TYPE_CHECKING:
    from nhlink_dbus.aio.appliers import OnMessage, OnProgress

    UpdateRunner = Callable[
        [update_runner.UpdateJob, Logind | None, OnProgress, OnMessage],
        Awaitable[update_runner.UpdateOutcome],
    ]
    ArchiveFetcher = Callable[[ArchiveInfo, Sequence[str], str, RetryPolicy], Awaitable[str]]

logger = logging.getLogger(__name__)


class NhlinkService(FaceRequests):
    """The running service; implements ``service_api.LinkService`` (see ``faces``)."""

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
        fetch_archive: ArchiveFetcher | None = None,
    ) -> None:
        self.config = config
        self.kv = dict(kv)
        self.logind = logind
        self.clock = clock
        self._run_update = run_update
        self._fetch_archive = fetch_archive or _fetch_archive
        self.listeners = Listeners()
        slot = active_slot_metadata(self.kv)
        # Request ids carry a token of this start: none names a request of another one.
        # os.urandom, not secrets: the token only tells starts apart, and secrets would load
        # hmac and OpenSSL's hashes at every start.
        token = boot_token or os.urandom(4).hex()
        self.core = link.LinkCore(config.link_settings(), slot, token)
        self.settings = config.hub_settings(self.kv.get("nerves_serial_number"))
        device = hs.DeviceInfo(
            kv=slot,
            fwup_version=fwup_version,
            fwup_keys_configured=bool(config.firmware.public_keys),
            archive_keys_configured=bool(config.archives.public_keys),
        )
        self.backoff_override: list[int] | None = None
        self.hub = hub_factory(
            self.settings,
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
            um.ReportProgress: self._progress,
            um.PushStatus: lambda e: self.hub.push_status_update(e.status),
            um.PushRebooting: lambda e: self.hub.push_rebooting(),
            um.Finished: self._finished,
            um.RebootScheduled: self._reboot_scheduled,
            um.RebootNow: lambda e: self.tasks.spawn("reboot", self._reboot()),
            um.ReportError: self._error,
            am.StartArchiveDownload: lambda e: self.tasks.spawn("archive", self._archive(e)),
        }

    @classmethod
    async def create(cls, config: Config, **adapters: Any) -> NhlinkService:
        """Read the KV store and ask fwup its version off the loop, then build."""
        try:
            kv = await asyncio.to_thread(read_kv, config.firmware.kv)
        except (KVError, NhlinkError) as exc:
            logger.error("cannot read the firmware KV store (%s): %s", config.firmware.kv, exc)
            kv = {}
        fw = config.firmware
        version = await update_runner.fwup_version(fw.applier, fw.fwup_path)
        return cls(config, kv, fwup_version=version, **adapters)

    async def run(self) -> None:
        """Run until cancelled; every task of the service ends with it."""
        logger.info(
            "nhlink-dbus %s starting; hub %s, running firmware %s",
            nhlink_dbus.__version__,
            self.server_url,
            self.core.slot.get("nerves_fw_uuid", "?"),
        )
        async with self.tasks:
            try:
                await self.hub.run()
            finally:
                self._timer.stop()

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

    def _progress(self, e: um.ReportProgress) -> None:
        self.hub.push_fwup_progress(e.percent)
        self.listeners.fwup_progress(e.percent)

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

    # -- long-running work (under self.tasks) ------------------------------------------------

    async def _update(self, e: um.StartUpdate) -> None:
        outcome = update_runner.UpdateOutcome(False, "the service stopped during the update", True)
        try:
            outcome = await self._run_update(
                self._update_job(e),
                self.logind,
                lambda percent: self.perform(self.core.apply_progress(percent)),
                self.listeners.fwup_message,
            )
        except NhlinkError as exc:
            outcome = update_runner.UpdateOutcome(False, str(exc), True)
        except Exception as exc:  # the supervisor logs it; the update still ends here
            outcome = update_runner.UpdateOutcome(
                False, f"internal error: {type(exc).__name__}", True
            )
            raise
        finally:
            done = self.core.update_done(
                e.request_id,
                outcome.success,
                outcome.message,
                self.clock(),
                applier_error=outcome.applier_error,
            )
            self.perform(done)

    def _update_job(self, e: um.StartUpdate) -> update_runner.UpdateJob:
        fw = self.config.firmware
        devpath = fw.devpath or self.kv.get("nerves_fw_devpath")
        fd = self.local_fds.pop(e.request_id, None)
        if not devpath:
            if fd is not None:
                os.close(fd)
            raise NotPossible("no destination: set firmware.devpath or KV nerves_fw_devpath")
        from nhlink_dbus.aio.appliers import ApplyRequest  # noqa: PLC0415  (not at start-up)

        request = ApplyRequest(devpath, fw.task, e.offer.public_keys, fw.fwup_env)
        url = e.offer.info.firmware_url
        policy = self.config.retry_policy()
        return update_runner.UpdateJob(request, fw.applier, policy, url, fd, fw.fwup_path)

    async def _archive(self, e: am.StartArchiveDownload) -> None:
        folder, policy = self.config.archives.dir, self.config.retry_policy()
        path, error = None, "the service stopped"
        try:
            path = await self._fetch_archive(e.offer.info, e.offer.public_keys, folder, policy)
        except NhlinkError as exc:
            error = str(exc)
        except Exception as exc:  # the supervisor logs it; the request still ends here
            error = f"internal error: {type(exc).__name__}"
            raise
        finally:
            self.perform(self.core.archive_done(e.request_id, path, error))

    async def _reboot(self) -> None:
        if self.logind is None:
            self.perform(self.core.error("reboot failed: no connection to logind"))
            return
        reboot = self.config.reboot
        try:
            await self.logind.reboot(
                retries=reboot.retries,
                retry_delay=reboot.retry_delay_ms / 1000,
                fallback_command=reboot.command or None,
            )
        except LogindError as exc:
            self.perform(self.core.error(str(exc)))


async def _fetch_archive(
    info: ArchiveInfo, keys: Sequence[str], folder: str, policy: RetryPolicy
) -> str:
    """:func:`~nhlink_dbus.aio.archive_store.fetch_archive`, imported by the first archive
    (it brings the downloader and the archive reader: an idle daemon needs neither)."""
    from nhlink_dbus.aio.archive_store import fetch_archive  # noqa: PLC0415

    return await fetch_archive(info, keys, folder, policy)

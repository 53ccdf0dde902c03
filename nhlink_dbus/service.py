"""The composition root: the running nhlink-dbus service.

It owns one hub connection (:class:`~nhlink_dbus.aio.hub_client.HubClient`),
the update manager (:mod:`nhlink_dbus.core.update_manager`), the logind
adapter, and its listeners (the D-Bus face, logging). Hub events become
manager inputs; the manager's effects are performed here:

* an offer needs a decision: offers for the running firmware are ignored by
  policy; otherwise, when a face that can decide is attached, the listeners get
  ``UpdateAvailable`` and the configured default applies after
  ``decisions.timeout_ms``; with no such face the default client policy of
  nerves_hub_link 2.5.2 decides at once (apply);
* ``apply`` runs :meth:`_run_update`: a logind block-inhibitor is held while
  the firmware streams from the download into the applier; progress goes to the
  hub (``fwup_progress``) and the listeners; exactly one outcome is reported;
* success → ``RebootScheduled``, wait, logind ``Reboot(false)`` (retried, then
  the fallback command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import nhlink_dbus
from nhlink_dbus.aio.appliers import ApplyRequest, make_applier
from nhlink_dbus.aio.downloader import download
from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.aio.logind import Logind
from nhlink_dbus.config import Config
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core.archive_manager import (
    ArchiveDecided,
    ArchiveDecision,
    ArchiveDropped,
    ArchiveEffect,
    ArchiveManager,
    ArchiveOffer,
    AskArchive,
    StartArchiveDownload,
)
from nhlink_dbus.core.backoff import delay_list
from nhlink_dbus.core.hub_settings import loggable_url
from nhlink_dbus.core.kv_format import KVError, active_slot_metadata
from nhlink_dbus.core.update_manager import (
    AskDecision,
    Decided,
    Decision,
    Effect,
    Finished,
    Offer,
    PushStatus,
    ReportError,
    ReportProgress,
    RequestReboot,
    StartUpdate,
    StateChanged,
    Superseded,
    UpdateManager,
    UpdateState,
)
from nhlink_dbus.errors import (
    DownloadError,
    InvalidArgument,
    InvalidDecision,
    LogindError,
    NhlinkError,
    NotPossible,
    StateError,
    UnknownRequest,
)
from nhlink_dbus.fwup.local_firmware import LocalFirmwareError, inspect_fd, read_fd_chunks
from nhlink_dbus.kv_store import read_kv
from nhlink_dbus.service_api import Caller, Info, LinkListener, PendingRequest

logger = logging.getLogger(__name__)

FWUP_COMPAT_VERSION = "1.16.0"


def update_info_dict(offer: Offer) -> dict[str, str | int]:
    """The a{sv} info of an update: firmware metadata, never the URL."""
    meta = offer.info.firmware_meta
    out: dict[str, str | int] = {"source": offer.source}
    for key in (
        "uuid",
        "version",
        "product",
        "platform",
        "architecture",
        "author",
        "description",
        "misc",
        "vcs_identifier",
    ):
        value = getattr(meta, key)
        if value is not None:
            out[key] = value
    if offer.info.deployment_id is not None:
        out["deployment_id"] = offer.info.deployment_id
    return out


def archive_info_dict(offer: ArchiveOffer) -> dict[str, str | int]:
    """The a{sv} info of an archive: its metadata, never the URL."""
    info = offer.info
    out: dict[str, str | int] = {
        "source": "hub",
        "uuid": info.uuid,
        "version": info.version,
        "size": info.size,
    }
    for key in ("description", "platform", "architecture", "uploaded_at"):
        value = getattr(info, key)
        if value is not None:
            out[key] = value
    return out


class _Listeners:
    """Fan-out to every listener; one failing listener never breaks the service."""

    def __init__(self) -> None:
        self.items: list[LinkListener] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for listener in list(self.items):
                try:
                    getattr(listener, name)(*args)
                except Exception:
                    logger.exception("listener %r failed in %s", listener, name)

        return call


class NhlinkService:
    """The service; see the module docstring. Implements ``service_api.LinkService``."""

    def __init__(
        self,
        config: Config,
        *,
        logind: Logind | None = None,
        hub_factory: Callable[..., HubClient] = HubClient,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.logind = logind
        self._monotonic = monotonic
        self.listeners = _Listeners()
        self.deciders = 0  # faces that answer UpdateAvailable (the bus face)
        self.manager = UpdateManager(reboot_delay_ms=config.reboot.delay_ms)
        self.archives = ArchiveManager()
        self._local_fds: dict[str, int] = {}  # InstallFile request id -> fd (owned)
        self.fwup_keys: tuple[str, ...] = tuple(config.firmware.public_keys)
        self.archive_keys: tuple[str, ...] = tuple(config.archives.public_keys)
        self.kv: dict[str, str] = {}
        self.slot: dict[str, str] = {}
        self._read_kv()
        self._backoff_override: list[int] | None = None
        self._progress = 0
        self._connected = False
        self._last_error = ""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.settings = config.hub_settings(self.kv.get("nerves_serial_number"))
        self.hub = hub_factory(
            self.settings,
            self._device_info(),
            on_event=self._on_hub_event,
            reconnect_backoff=self._backoff_hook,
        )

    # -- set-up ------------------------------------------------------------------------------

    def _read_kv(self) -> None:
        try:
            self.kv = read_kv(self.config.firmware.kv)
        except (KVError, NhlinkError) as exc:
            logger.error("cannot read the firmware KV store (%s): %s", self.config.firmware.kv, exc)
            self.kv = {}
        self.slot = active_slot_metadata(self.kv)

    def _fwup_version(self) -> str:
        if self.config.firmware.applier != "builtin":
            fwup = self.config.firmware.fwup_path or shutil.which("fwup")
            if fwup:
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    out = subprocess.run(
                        [fwup, "--version"], capture_output=True, text=True, timeout=10, check=False
                    ).stdout.strip()
                    if out:
                        return out
        return FWUP_COMPAT_VERSION

    def _device_info(self) -> hs.DeviceInfo:
        return hs.DeviceInfo(
            kv=self.slot,
            fwup_version=self._fwup_version(),
            fwup_keys_configured=bool(self.config.firmware.public_keys),
            archive_keys_configured=bool(self.config.archives.public_keys),
        )

    def _backoff_hook(self) -> list[int] | None:
        return list(self._backoff_override) if self._backoff_override else None

    def add_listener(self, listener: LinkListener, decides: bool = False) -> None:
        self.listeners.items.append(listener)
        if decides:
            self.deciders += 1

    def _archive_keys(self) -> tuple[str, ...]:
        # §7.6: archive keys, else the firmware keys.
        return self.archive_keys or self.fwup_keys

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        logger.info(
            "nhlink-dbus %s starting; hub %s, running firmware %s",
            nhlink_dbus.__version__,
            self.server_url,
            self.slot.get("nerves_fw_uuid", "?"),
        )
        try:
            await self.hub.run()
        finally:
            for handle in self._timers.values():
                handle.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _now_ms(self) -> float:
        return self._monotonic() * 1000

    # -- hub events ----------------------------------------------------------------------------

    def _on_hub_event(self, event: hs.SessionEvent) -> None:
        if isinstance(event, hm.UpdateInfo):
            logger.info("hub offers firmware %s", event.firmware_meta.uuid)
            self._perform(self.manager.offer(event, self.fwup_keys))
        elif isinstance(event, hm.FwupPublicKeys):
            self.fwup_keys = tuple(self.config.firmware.public_keys) or tuple(event.keys)
            if not event.keys:
                logger.warning("the hub sent an empty firmware key list")
        elif isinstance(event, hm.ArchivePublicKeys):
            self.archive_keys = tuple(self.config.archives.public_keys) or tuple(event.keys)
        elif isinstance(event, hm.Reboot):
            logger.info("the hub asked for a reboot")
            self._perform(self.manager.hub_reboot())
        elif isinstance(event, hm.Identify):
            self.listeners.identify()
        elif isinstance(event, hm.ArchiveInfo):
            logger.info(
                "hub offers archive %s (%s); archives are not handled yet, ignored",
                event.uuid,
                event.version,
            )
        elif isinstance(event, hs.Connected):
            self._set_connected(True)
        elif isinstance(event, hs.Disconnected):
            was = self._connected
            self._set_connected(False)
            if was:
                self.listeners.disconnected(event.reason)
            self._error(f"hub connection: {event.reason}")
        elif isinstance(event, hs.ChannelDown):
            self._error(f"hub channel: {event.reason}")

    def _set_connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self.listeners.properties_changed({"Connected": value})

    def _error(self, message: str) -> None:
        logger.warning("%s", message)
        self._last_error = message
        self.listeners.error(message)
        self.listeners.properties_changed({"LastError": message})

    # -- effects -------------------------------------------------------------------------------

    def _announce(self, kind: str, request_id: str, decision: str, delay_ms: int, by: str) -> None:
        """A decision was taken: stop its timeout and tell every listener (DecisionMade)."""
        self._cancel_timer(request_id)
        logger.info("%s %s: %s (by %s)", kind, request_id, decision, by)
        self.listeners.decision_made(request_id, decision, delay_ms, by)

    def _perform(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, AskDecision):
                self._ask(effect.offer)
            elif isinstance(effect, Decided):
                self._announce(
                    "update",
                    effect.offer.request_id,
                    effect.decision.value,
                    effect.delay_ms,
                    effect.decided_by,
                )
                if effect.decision is Decision.RESCHEDULE:
                    self._arm_reschedule(effect.offer.request_id)
            elif isinstance(effect, Superseded):
                self._cancel_timer(effect.request_id)
                self._close_local(effect.request_id)
            elif isinstance(effect, StartUpdate):
                self._spawn(self._run_update(effect.offer))
            elif isinstance(effect, ReportProgress):
                self._progress = effect.percent
                self.hub.push_fwup_progress(effect.percent)
                self.listeners.fwup_progress(effect.percent)
                self.listeners.properties_changed({"Progress": effect.percent})
            elif isinstance(effect, PushStatus):
                self.hub.push_status_update(effect.status)
            elif isinstance(effect, Finished):
                self.hub.set_downloading(None)
                logger.info(
                    "update %s finished: %s %s",
                    effect.request_id,
                    "success" if effect.success else "failure",
                    effect.message,
                )
                self.listeners.update_finished(effect.request_id, effect.success, effect.message)
            elif isinstance(effect, RequestReboot):
                self._spawn(self._reboot(effect.delay_ms, effect.announce))
            elif isinstance(effect, ReportError):
                self._error(effect.message)
            elif isinstance(effect, StateChanged):
                if effect.state is UpdateState.UPDATING:
                    self._progress = 0
                self.listeners.properties_changed({"State": effect.state.value})

    def _close_local(self, request_id: str) -> None:
        fd = self._local_fds.pop(request_id, None)
        if fd is not None:
            os.close(fd)

    def _ask(self, offer: Offer) -> None:
        running = self.slot.get("nerves_fw_uuid")
        uuid = offer.info.firmware_meta.uuid
        if self.config.decisions.ignore_same_uuid and uuid is not None and uuid == running:
            self._decide(offer.request_id, Decision.IGNORE, 0, "policy")
            return
        if self.deciders == 0:
            # No UI attached: nerves_hub_link's default client applies.
            self._decide(offer.request_id, Decision.APPLY, 0, "policy")
            return
        self.listeners.update_available(offer.request_id, update_info_dict(offer))
        self._cancel_timer(offer.request_id)
        timeout = self.config.decisions.timeout_ms / 1000
        loop = asyncio.get_running_loop()
        default = Decision(self.config.decisions.default_update)
        self._timers[offer.request_id] = loop.call_later(
            timeout, self._decide, offer.request_id, default, 0, "timeout"
        )

    def _decide(self, request_id: str, decision: Decision, delay_ms: int, by: str) -> None:
        try:
            self._perform(self.manager.decide(request_id, decision, delay_ms, by, self._now_ms()))
        except StateError as exc:
            logger.warning("decision %s for %s dropped: %s", decision.value, request_id, exc)

    def _arm_reschedule(self, request_id: str) -> None:
        deadline = self.manager.next_deadline()
        if deadline is None:
            return
        delay = max(0.0, (deadline - self._now_ms()) / 1000)
        self._timers[request_id] = asyncio.get_running_loop().call_later(
            delay, lambda: self._perform(self.manager.tick(self._now_ms() + 1))
        )

    def _cancel_timer(self, request_id: str) -> None:
        handle = self._timers.pop(request_id, None)
        if handle is not None:
            handle.cancel()

    # -- archives ---------------------------------------------------------------------------

    def _perform_archive(self, effects: Sequence[ArchiveEffect]) -> None:
        for effect in effects:
            if isinstance(effect, AskArchive):
                self._ask_archive(effect.offer)
            elif isinstance(effect, ArchiveDecided):
                self._announce(
                    "archive",
                    effect.offer.request_id,
                    effect.decision.value,
                    effect.delay_ms,
                    effect.decided_by,
                )
                if effect.decision is ArchiveDecision.RESCHEDULE:
                    self._arm_archive_reschedule(effect.offer.request_id, effect.delay_ms)
            elif isinstance(effect, ArchiveDropped):
                self._cancel_timer(effect.request_id)
            elif isinstance(effect, StartArchiveDownload):
                self._spawn(self._download_archive(effect.offer))

    def _ask_archive(self, offer: ArchiveOffer) -> None:
        default = ArchiveDecision(self.config.decisions.default_archive)
        if self.deciders == 0:
            self._decide_archive(offer.request_id, default, "policy")
            return
        self.listeners.archive_available(offer.request_id, archive_info_dict(offer))
        self._timers[offer.request_id] = asyncio.get_running_loop().call_later(
            self.config.decisions.timeout_ms / 1000,
            self._decide_archive,
            offer.request_id,
            default,
            "timeout",
        )

    def _decide_archive(self, request_id: str, decision: ArchiveDecision, by: str) -> None:
        try:
            self._perform_archive(self.archives.decide(request_id, decision, 0, by, self._now_ms()))
        except StateError as exc:
            logger.warning("archive decision for %s dropped: %s", request_id, exc)

    def _arm_archive_reschedule(self, request_id: str, delay_ms: int) -> None:
        self._timers[request_id] = asyncio.get_running_loop().call_later(
            delay_ms / 1000,
            lambda: self._perform_archive(self.archives.tick(self._now_ms() + 1)),
        )

    async def _download_archive(self, offer: ArchiveOffer) -> None:
        from nhlink_dbus.aio.archive_store import fetch_archive  # noqa: PLC0415

        try:
            path = await fetch_archive(
                offer.info, offer.public_keys, self.config.archives.dir, self.config.retry_policy()
            )
        except NhlinkError as exc:
            self._error(f"archive {offer.info.uuid}: {exc}")
            return
        except Exception as exc:
            logger.exception("archive download failed")
            self._error(f"archive {offer.info.uuid}: internal error: {exc.__class__.__name__}")
            return
        finally:
            self.archives.done(offer.request_id)
        logger.info("archive %s ready at %s", offer.info.uuid, path)
        self.listeners.archive_ready(offer.request_id, archive_info_dict(offer), path)

    # -- applying ------------------------------------------------------------------------------

    def _devpath(self) -> str:
        devpath = self.config.firmware.devpath or self.kv.get("nerves_fw_devpath")
        if not devpath:
            raise NotPossible("no destination: set firmware.devpath or KV nerves_fw_devpath")
        return devpath

    @contextlib.asynccontextmanager
    async def _inhibitor(self) -> AsyncIterator[None]:
        if self.logind is None:
            logger.warning("no logind connection: applying without a shutdown inhibitor")
            yield
            return
        try:
            lock = await self.logind.inhibit()
        except LogindError as exc:
            logger.warning("%s; applying without it", exc)
            yield
            return
        async with lock:
            yield

    async def _run_update(self, offer: Offer) -> None:
        """Download and apply one update; always ends with exactly one outcome."""
        success, message, applier_error = False, "internal error", True
        try:
            self.hub.set_downloading(offer.info.firmware_meta.uuid)
            fw = self.config.firmware
            request = ApplyRequest(self._devpath(), fw.task, offer.public_keys, dict(fw.fwup_env))
            async with self._inhibitor():
                applier = make_applier(
                    fw.applier,
                    request,
                    self._on_apply_progress,
                    self._on_apply_message,
                    fwup_path=fw.fwup_path,
                )
                await applier.start()
                try:
                    local_fd = self._local_fds.pop(offer.request_id, None)
                    if local_fd is not None:
                        try:
                            async for chunk in read_fd_chunks(local_fd):
                                await applier.write(chunk)
                        finally:
                            os.close(local_fd)
                    else:
                        await download(
                            offer.info.firmware_url,
                            applier,
                            self.config.retry_policy(),
                            on_error=lambda reason: logger.warning("download: %s", reason),
                        )
                except DownloadError as exc:
                    await applier.abort(str(exc))
                    success, message, applier_error = False, str(exc), False
                    return
                except BaseException:
                    await applier.abort("cancelled")
                    raise
                outcome = await applier.finish()
                success, message = outcome.success, outcome.message
        except asyncio.CancelledError:
            message = "the service stopped during the update"
            raise
        except NhlinkError as exc:
            message = str(exc)
        except Exception as exc:
            logger.exception("update worker failed")
            message = f"internal error: {exc.__class__.__name__}"
        finally:
            self._perform(self.manager.finished(success, message, applier_error=applier_error))

    def _on_apply_progress(self, percent: int) -> None:
        if self.manager.state is UpdateState.UPDATING:
            self._perform(self.manager.progress_report(percent))

    def _on_apply_message(self, kind: str, code: int, text: str) -> None:
        self.listeners.fwup_message(kind, code, text)

    async def _reboot(self, delay_ms: int, announce: bool) -> None:
        if announce:
            self.hub.push_rebooting()
        self.listeners.reboot_scheduled(delay_ms)
        logger.info("reboot in %d ms", delay_ms)
        await asyncio.sleep(delay_ms / 1000)
        if self.logind is None:
            self._error("reboot failed: no connection to logind")
            return
        try:
            await self.logind.reboot(
                retries=self.config.reboot.retries,
                fallback_command=self.config.reboot.command or None,
            )
        except LogindError as exc:
            self._error(str(exc))

    # -- LinkService -------------------------------------------------------------------------

    def decide(self, request_id: str, decision: str, delay_ms: int, caller: Caller) -> None:
        if request_id in self.archives.pending:
            try:
                archive_choice = ArchiveDecision(decision)
            except ValueError:
                raise InvalidDecision(
                    f"{decision!r} is not a decision for an archive (download, ignore, reschedule)"
                ) from None
            self._check_delay(archive_choice.value, delay_ms)
            self._perform_archive(
                self.archives.decide(
                    request_id, archive_choice, delay_ms, caller.describe(), self._now_ms()
                )
            )
            return
        offer = self.manager.pending
        if (
            offer is None
            or offer.request_id != request_id
            or (self.manager.state is not UpdateState.AWAITING_DECISION)
        ):
            raise UnknownRequest(f"no pending request {request_id!r}")
        try:
            choice = Decision(decision)
        except ValueError:
            raise InvalidDecision(
                f"{decision!r} is not a decision for an update (apply, ignore, reschedule)"
            ) from None
        self._check_delay(choice.value, delay_ms)
        self._perform(
            self.manager.decide(request_id, choice, delay_ms, caller.describe(), self._now_ms())
        )

    @staticmethod
    def _check_delay(decision: str, delay_ms: int) -> None:
        if decision == "reschedule" and delay_ms <= 0:
            raise InvalidArgument("reschedule needs a delay_ms > 0")
        if decision != "reschedule" and delay_ms != 0:
            raise InvalidArgument("delay_ms must be 0 unless the decision is reschedule")

    def pending_requests(self) -> Sequence[PendingRequest]:
        out: list[PendingRequest] = []
        offer = self.manager.pending
        if offer is not None and self.manager.state is UpdateState.AWAITING_DECISION:
            out.append(PendingRequest(offer.request_id, "update", update_info_dict(offer)))
        for rid, aoffer in self.archives.pending.items():
            out.append(PendingRequest(rid, "archive", archive_info_dict(aoffer)))
        return out

    async def check_for_update(self) -> Info:
        update = await self.hub.check_update_available()
        if update is None:
            return {"update_available": 0}
        self._perform(self.manager.offer(update, self.fwup_keys))
        meta = update.firmware_meta
        out: dict[str, str | int] = {"update_available": 1}
        for key in ("uuid", "version", "product"):
            value = getattr(meta, key)
            if value is not None:
                out[key] = value
        return out

    async def install_file(self, fd: int, options: Mapping[str, object], caller: Caller) -> str:
        """Install a local ``.fw`` given as an open fd (owned by us from here on).

        The archive is verified first (signature with the firmware keys, every
        resource's hash); then it goes the same apply/progress/reboot way as a hub
        update, decided by the caller.
        """
        try:
            if options:
                raise InvalidArgument(
                    f"unknown InstallFile option(s): {', '.join(sorted(options))}"
                )
            if self.manager.state in (UpdateState.UPDATING, UpdateState.REBOOTING):
                raise NotPossible(f"an update is {self.manager.state.value}: try again later")
            if not self.fwup_keys:
                raise NotPossible("no firmware signing keys are configured or were received")
            try:
                meta = await asyncio.to_thread(inspect_fd, fd, self.fwup_keys)
            except LocalFirmwareError as exc:
                raise InvalidArgument(f"the file is not valid firmware: {exc}") from None
            info = hm.UpdateInfo("file:", hm.FirmwareMetadata(**meta))
            effects = self.manager.offer(info, self.fwup_keys, source="file")
            asks = [e for e in effects if isinstance(e, AskDecision)]
            if not asks:
                raise NotPossible("the update manager did not accept the file")
            rid = asks[0].offer.request_id
            self._local_fds[rid] = fd
            fd = -1  # owned by the request now
            self._perform([e for e in effects if not isinstance(e, AskDecision)])
            self._perform(
                self.manager.decide(rid, Decision.APPLY, 0, caller.describe(), self._now_ms())
            )
            return rid
        finally:
            if fd >= 0:
                os.close(fd)

    def reconnect(self) -> None:
        self.hub.reconnect()

    def set_reconnect_backoff(self, delays_ms: Sequence[int]) -> None:
        if any(d <= 0 for d in delays_ms):
            raise InvalidArgument("reconnect delays must be positive milliseconds")
        self._backoff_override = list(delays_ms) or None
        self.hub.set_backoff(self._backoff_override)
        self.listeners.properties_changed({"ReconnectBackoff": self.reconnect_backoff})

    # -- properties ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.manager.state.value

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def progress(self) -> int:
        return self._progress

    @property
    def current_firmware(self) -> Mapping[str, str]:
        return {k.removeprefix("nerves_fw_"): v for k, v in self.slot.items()}

    @property
    def device_identifier(self) -> str:
        return self.settings.identifier

    @property
    def server_url(self) -> str:
        return loggable_url(self.hub.url)

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def reconnect_backoff(self) -> Sequence[int]:
        if self._backoff_override:
            return list(self._backoff_override)
        return delay_list(1000, 60000, 0)

    @property
    def decision_timeout_ms(self) -> int:
        return int(self.config.decisions.timeout_ms)

    @property
    def default_decision(self) -> str:
        return str(self.config.decisions.default_update)

    @property
    def version(self) -> str:
        return nhlink_dbus.__version__

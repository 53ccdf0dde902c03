"""The root's half for the update itself: one update run (download or a local file or a
medium's file → applier, ``aio/update_runner.py``) and the reboot, each under the
service's supervisor; the outcome goes back into the core, which says what follows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from nhlink_dbus.aio import update_runner
from nhlink_dbus.aio.logind import Logind
from nhlink_dbus.config import Config
from nhlink_dbus.core import link
from nhlink_dbus.core import update_manager as um
from nhlink_dbus.core.partials import PartVerifier
from nhlink_dbus.core.update_manager import Offer
from nhlink_dbus.errors import LogindError, NhlinkError, NotPossible
from nhlink_dbus.service.listeners import Listeners

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the applier is loaded by the first update, not at start-up
    from nhlink_dbus.aio.appliers import OnMessage, OnProgress

    UpdateRunner = Callable[
        [update_runner.UpdateJob, Logind | None, OnProgress, OnMessage],
        Awaitable[update_runner.UpdateOutcome],
    ]


class UpdateWiring:
    """The update half of :class:`~nhlink_dbus.service.root.NhlinkService`."""

    config: Config
    core: link.LinkCore
    kv: dict[str, str]
    logind: Logind | None
    listeners: Listeners
    clock: Callable[[], float]
    local_fds: dict[str, int]  # InstallFile request id -> fd (owned)
    _run_update: UpdateRunner

    def perform(self, effects: Sequence[link.Effect]) -> None:
        raise NotImplementedError  # the root's

    # the other halves' (declared here for the type checker)
    sync_journal: Callable[[], Awaitable[None]]
    download_verifier: Callable[[Offer], PartVerifier | None]
    download_connected: Callable[[str, str, Awaitable[None]], None]
    medium_chunks: Callable[[Offer], Callable[[], AsyncGenerator[bytes, None]] | None]

    async def preload_updates(self) -> None:
        """What the first update would import on its way, loaded now in a thread
        (:func:`~nhlink_dbus.aio.update_runner.preload`); with a runner of a test's, nothing."""
        if self._run_update is not update_runner.run_update:
            return
        start = time.monotonic()
        try:
            await asyncio.to_thread(update_runner.preload)
        except Exception as exc:  # a broken install: said now (Error, LastError), not at
            # the first update (which tries again, and fails with the same)
            logger.exception("loading the update path failed")
            self.perform(self.core.error(f"cannot load the update path: {exc!r}"))
        else:
            logger.debug("update path loaded in %.0f ms", (time.monotonic() - start) * 1000)

    async def _update(self, e: um.StartUpdate) -> None:
        outcome = update_runner.UpdateOutcome(False, "the service stopped during the update", True)
        # A restart must know of the update before a byte of it is written: the journal is
        # written while the update starts (the applier, logind, the request), and the
        # runner waits for it before the first byte reaches the applier.
        synced = asyncio.ensure_future(self.sync_journal())
        view = asyncio.shield(synced)  # what the runner waits on: its cancel stops not the write
        view.add_done_callback(_retrieved)
        try:
            outcome = await self._run_update(
                self._update_job(e, view),
                self.logind,
                lambda percent: self.perform(self.core.apply_progress(percent, self.clock())),
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
            # The outcome is told even when a stop comes while the journal is still being
            # written (the stop goes on afterwards).
            stopped: asyncio.CancelledError | None = None
            try:
                await asyncio.shield(synced)  # a JournalError is reported by sync_journal
            except asyncio.CancelledError as exc:
                stopped = exc
            except Exception:
                logger.exception("writing the update journal failed")
            done = self.core.update_done(
                e.request_id,
                outcome.success,
                outcome.message,
                self.clock(),
                applier_error=outcome.applier_error,
            )
            self.perform(done)
            if stopped is not None:
                raise stopped

    def _update_job(
        self, e: um.StartUpdate, journal_synced: Awaitable[None]
    ) -> update_runner.UpdateJob:
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
        return update_runner.UpdateJob(
            request,
            fw.applier,
            policy,
            url,
            fd,
            fw.fwup_path,
            verifier=self.download_verifier(e.offer),
            on_connected=lambda: self.download_connected(e.request_id, url, journal_synced),
            chunks=self.medium_chunks(e.offer),
            before_first_byte=journal_synced,
        )

    async def _reboot(self) -> None:
        await self.sync_journal()  # "applied, awaiting the reboot" first
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


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark the outcome of a future nobody else may read as read (the writer reports its
    own failure; this keeps asyncio from logging it a second time)."""
    if not future.cancelled():
        future.exception()

"""The root's half for the update journal (``core/recovery.py`` has its rules).

At start the journal and the boot id are read off the loop and judged by the
core; while the service runs, what the core asks the journal to say
(:class:`~nhlink_dbus.core.recovery.SaveJournal`) is written on a worker thread
(``aio/journal_store.py``), and an update or a reboot starts only once it is on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from nhlink_dbus.aio.journal_store import JournalStore, read_boot_id
from nhlink_dbus.aio.supervisor import Supervisor
from nhlink_dbus.config import Config
from nhlink_dbus.core import link
from nhlink_dbus.core import recovery as rec
from nhlink_dbus.errors import JournalError

logger = logging.getLogger(__name__)


async def load_recovery(
    config: Config, kv: Mapping[str, str]
) -> tuple[JournalStore, rec.Recovery, str]:
    """The journal, what it means now, and this boot's id."""
    journal = JournalStore(config.service.journal_path)
    boot_id = await asyncio.to_thread(read_boot_id, config.service.boot_id_file)
    try:
        record = await asyncio.to_thread(journal.load)
    except JournalError as exc:
        logger.error("%s", exc)
        recovery = rec.unreadable(kv, str(exc))
    else:
        recovery = rec.recover(record, boot_id, kv)
    if recovery.found is not rec.Found.NOTHING:
        logger.warning("update journal: %s", recovery.found.value)
    return journal, recovery, boot_id


class JournalWiring:
    """The journal half of :class:`~nhlink_dbus.service.root.NhlinkService`."""

    core: link.LinkCore
    tasks: Supervisor
    journal: JournalStore | None  # None: nothing is journaled (tests of the root)

    def perform(self, effects: Sequence[link.Effect]) -> None:
        raise NotImplementedError  # the root's

    def save_journal(self, e: rec.SaveJournal) -> None:
        if self.journal is None:
            return
        self.journal.want(e.record)
        if not self.tasks.closing:
            self.tasks.spawn("journal", self.sync_journal())

    async def sync_journal(self) -> None:
        """What the core asked the journal to say, on disk (a failure is reported)."""
        if self.journal is None:
            return
        try:
            await self.journal.sync()
        except JournalError as exc:
            self.perform(self.core.error(f"update journal: {exc}"))

    def sync_journal_now(self) -> None:
        """At the very end: what the last moments asked for (the tasks are gone)."""
        if self.journal is None:
            return
        try:
            self.journal.sync_now()
        except JournalError as exc:
            logger.error("%s", exc)

"""The update journal on disk, and the kernel's boot id (``core/recovery.py`` says what
they mean).

One file, ``<service.state_dir>/update-journal.json``, mode 0600, replaced
atomically: the record goes to a temporary file in the same folder, which is
fsync'ed and renamed over the journal; then the folder is fsync'ed, so that
after a power cut the journal is the old record or the new one, never a mix or
nothing. Removing it is an unlink and a folder fsync.

The service asks for a record with :meth:`JournalStore.want` (at once, in the
order of the core's effects) and has it written with :meth:`JournalStore.sync`
(on a worker thread: an fsync on a device that is busy with a firmware write
can take seconds, never on the event loop). Only the newest wanted record is
written; ``sync`` returns once it, or a newer one, is on disk.
:meth:`JournalStore.sync_now` does the same without a loop, at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading

from nhlink_dbus.core import recovery as rec
from nhlink_dbus.errors import JournalError

logger = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024  # a record is a few hundred bytes: anything bigger is not ours


class JournalStore:
    """The journal file at ``path`` (its folder is created on the first write)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._wanted: rec.JournalRecord | None = None
        self._asked = 0  # how many records were wanted so far
        self._written = 0  # the newest of them that is on disk (or failed)
        self._thread_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None

    def load(self) -> rec.JournalRecord | None:
        """The record on disk, or None (blocking). Raises :class:`JournalError`."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise JournalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if len(data) > MAX_BYTES:
            raise JournalError(f"{self.path} is too large to be a journal record")
        try:
            return rec.decode(data)
        except JournalError as exc:
            raise JournalError(f"{self.path}: {exc}") from None

    def want(self, record: rec.JournalRecord | None) -> None:
        """The journal must say ``record`` (None: no journal) once synced."""
        self._wanted = record
        self._asked += 1

    @property
    def pending(self) -> bool:
        return self._written < self._asked

    async def sync(self) -> None:
        """Write what is wanted, unless it is on disk already. Raises :class:`JournalError`
        (the wanted record counts as done: the next ``want`` tries again)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.pending:
                await asyncio.to_thread(self.sync_now)

    def sync_now(self) -> None:
        """:meth:`sync` without an event loop (blocking)."""
        with self._thread_lock:
            if not self.pending:
                return
            asked, record = self._asked, self._wanted
            try:
                if record is None:
                    self._remove()
                else:
                    self._replace(rec.encode(record))
            finally:
                self._written = asked

    # -- the file ------------------------------------------------------------------------

    def _replace(self, data: bytes) -> None:
        folder = os.path.dirname(self.path) or "."
        tmp = f"{self.path}.tmp"
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a leftover of a write cut short
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            _fsync_dir(folder)
        except OSError as exc:
            raise JournalError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise JournalError(f"cannot remove {self.path}: {exc.strerror or exc}") from None
        try:
            _fsync_dir(os.path.dirname(self.path) or ".")
        except OSError as exc:
            raise JournalError(f"cannot sync the folder of {self.path}: {exc}") from None


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_boot_id(path: str) -> str:
    """The kernel's boot id (a new one every boot); "" when it cannot be read (blocking)."""
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read(128).strip()
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning(
            "cannot read the boot id (%s): %s; a restart of the service will look like a "
            "reboot of the device",
            path,
            exc,
        )
        return ""
    return text

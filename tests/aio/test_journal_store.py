"""The update journal on disk (aio/journal_store.py): atomic replacement, removal,
what a damaged or unreadable file gives, and the boot id."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from nhlink_dbus.aio.journal_store import JournalStore, read_boot_id
from nhlink_dbus.core import recovery as rec
from nhlink_dbus.errors import JournalError

RUNNING = rec.RunningFirmware("a", "v1", True)
RECORD = rec.updating("u-tok-1", "v2", "2.0.0", "hub", "boot-1", RUNNING)


async def test_records_are_written_atomically_in_order_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "state" / rec.JOURNAL_FILE
    store = JournalStore(str(path))
    assert store.load() is None and not store.pending
    store.want(RECORD)
    assert store.pending and not path.exists()  # asked, not written yet
    await store.sync()
    assert not store.pending and store.load() == RECORD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == [rec.JOURNAL_FILE]  # no temporary file left
    # Several wishes before a sync: the newest is what is written.
    applied = rec.applied(RECORD, told=False)
    store.want(None)
    store.want(applied)
    await asyncio.gather(store.sync(), store.sync())
    assert store.load() == applied
    store.want(None)
    store.sync_now()
    assert not path.exists() and store.load() is None
    store.want(None)
    store.sync_now()  # removing what is not there is fine


def test_a_leftover_temporary_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / rec.JOURNAL_FILE
    (tmp_path / f"{rec.JOURNAL_FILE}.tmp").write_text("half a record")
    store = JournalStore(str(path))
    store.want(RECORD)
    store.sync_now()
    assert store.load() == RECORD and os.listdir(tmp_path) == [rec.JOURNAL_FILE]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "not a journal record"),
        (b'{"version": 7}', "journal version 7 is not 1"),
        (b"x" * 70_000, "too large to be a journal record"),
    ],
)
def test_a_damaged_journal_is_a_journal_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / rec.JOURNAL_FILE
    path.write_bytes(content)
    with pytest.raises(JournalError, match=problem) as err:
        JournalStore(str(path)).load()
    assert str(path) in str(err.value)


def test_an_unwritable_folder_is_a_journal_error_and_the_wish_counts_as_done(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = JournalStore(str(blocker / rec.JOURNAL_FILE))
    store.want(RECORD)
    with pytest.raises(JournalError, match="cannot write"):
        store.sync_now()
    assert not store.pending  # nobody waits forever on a journal that cannot be written
    (tmp_path / "dir").mkdir()
    symlink = tmp_path / "dir" / rec.JOURNAL_FILE
    symlink.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(JournalError, match="cannot read"):
        JournalStore(str(symlink)).load()  # never followed


def test_boot_id(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text("6f2d3c1e-1111-4000-8000-000000000001\n")
    assert read_boot_id(str(path)) == "6f2d3c1e-1111-4000-8000-000000000001"
    assert read_boot_id(str(tmp_path / "missing")) == ""
    real = read_boot_id("/proc/sys/kernel/random/boot_id")
    assert len(real) == 36 and real == read_boot_id("/proc/sys/kernel/random/boot_id")

"""One apply onto one device, wired the way ``nhlink-fwup`` does it.

The core :class:`~nhlink_dbus.core.fwup_apply.ApplyEngine` performs no I/O of its
own; this module binds it to the real pieces: the target file or block device,
the block cache, the hash thread, FAT through mtools, host actions (only with
``unsafe``) and the Ed25519 check. The CLI and the in-process applier of the
daemon (``aio/appliers.py``) both use it, so they behave the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nhlink_dbus.core.block_cache import BlockCache
from nhlink_dbus.core.fwup_apply import (
    ApplyEngine,
    ApplyListener,
    ApplyOptions,
    FatOps,
    SectorCipher,
)
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup import signature
from nhlink_dbus.fwup.hash_worker import HashWorker
from nhlink_dbus.fwup.host import HostActions
from nhlink_dbus.fwup.target import FileTarget

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, cast
else:
    from nhlink_dbus.core.lean import cast

READ_SIZE = 16384  # fwup hands the archive reader at most 16 KiB at a time
REBOOT_PARAM_PLACES = ("/run/systemd/reboot-param", "/run/reboot-param")


def _open_cipher(args: Sequence[str]) -> SectorCipher:
    # Loaded on first use, as the FAT code below: few archives encrypt, and every
    # import is paid at the start of every apply.
    from nhlink_dbus.fwup.disk_crypto import open_cipher  # noqa: PLC0415

    return open_cipher(args)


class _FatOnDemand:
    """The FAT operations (:class:`~nhlink_dbus.fwup.fat_adapter.MtoolsFat` through the
    cache), loaded at the first FAT action or check."""

    through_cache = True

    def __init__(self, device: str, cache: BlockCache) -> None:
        self._args = (device, cache)
        self._fat: FatOps | None = None

    def __getattr__(self, name: str) -> Any:
        if self._fat is None:
            from nhlink_dbus.fwup.fat_adapter import MtoolsFat  # noqa: PLC0415

            self._fat = MtoolsFat(*self._args)
        return getattr(self._fat, name)


def error_text(exc: Exception) -> str:
    """The text of fwup's ``ER`` packet for a failure: ours verbatim, anything else named."""
    if isinstance(exc, NhlinkError):
        return str(exc)
    return f"unexpected error: {exc.__class__.__name__}: {exc}"


class ApplySession:
    """Open the target and a hash thread; feed the archive; close both.

    ``feed`` returns True once the archive is complete (fwup stops reading at
    the ZIP central directory); ``finish`` ends the input and syncs the
    target; ``close`` releases everything and is safe to call at any point
    (an unfinished apply leaves its cached writes unwritten, as a killed fwup).
    """

    def __init__(
        self,
        device: str,
        task: str,
        public_keys: Sequence[bytes],
        listener: ApplyListener,
        environ: Mapping[str, str],
        *,
        max_size_blocks: int | None = None,
        unsafe: bool = False,
        verbose: bool = False,
        verify_writes: bool | None = None,
        progress_range: tuple[int, int] = (0, 100),
        reboot_param_path: str | None = None,
        archive_name: str = "(null)",
    ) -> None:
        if public_keys:
            signature.load()  # now, not when meta.conf arrives
        self.target = FileTarget(device, max_size_blocks, verify_writes)
        self._reboot_param_path = reboot_param_path
        try:
            self.worker = HashWorker()
        except BaseException:
            self.target.close()
            raise
        # A writer thread for block devices, as fwup's (an O_DIRECT write waits for the
        # device); a regular file's writes land in the page cache at once, and handing
        # them to a thread cost more in GIL hand-offs than it saved (strace: ~14 futex
        # calls per segment).
        cache = BlockCache(
            self.target,
            self.target.hard_end,
            self.target.allocate,
            self.target.pwrite_streamed if self.target.is_block_device else None,
            soft_end=self.target.soft_end,
        )
        try:
            self.applier = ApplyEngine(
                ApplyOptions(
                    task=task,
                    public_keys=public_keys,
                    unsafe=unsafe,
                    verbose=verbose,
                    total_blocks=self.target.total_blocks,
                    progress_low=progress_range[0],
                    progress_high=progress_range[1],
                    reboot_param=self._write_reboot_param,
                    archive_name=archive_name,
                ),
                cache,
                listener,
                signature.check_signature,
                fat=cast(FatOps, _FatOnDemand(device, cache)),  # through the cache, as fwup's
                host=HostActions(),  # writes and commands only with unsafe (the engine checks)
                environ=environ,
                digests=self.worker.digest,
                disk_crypto=_open_cipher,
            )
        except BaseException:
            self.close()
            raise

    @property
    def consumed(self) -> int:
        """Archive bytes read so far."""
        return self.applier.reader.consumed

    @property
    def units(self) -> tuple[int, int]:
        """(progress units done, total): bytes written, as fwup counts them."""
        return self.applier.progress.done, self.applier.progress.total

    def _write_reboot_param(self, text: str) -> None:
        """fwup's reboot_param(): the given file, else systemd's, else Nerves' place."""
        if self._reboot_param_path is not None:
            places = [self._reboot_param_path]
        else:
            places = list(REBOOT_PARAM_PLACES)
        for place in places:
            try:
                with open(place, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError:
                continue
            return
        if self._reboot_param_path is not None:
            raise NhlinkError(f"reboot-param can't open '{self._reboot_param_path}'")
        raise NhlinkError("reboot-param can't open under `/run`")

    def feed(self, chunk: bytes | memoryview, read_size: int | None = None) -> bool:
        """Consume input (one read, or reads of ``read_size`` bytes); True when the archive
        is complete. Raises NhlinkError on failure."""
        self.applier.feed(chunk, read_size)
        return self.applier.done

    def finish(self, read_error: str | None = None) -> None:
        """End of input (``read_error``: reading it failed so): raise if the archive was
        cut short, else sync the target."""
        if not self.applier.done:
            self.applier.finish(read_error)
        self.target.sync()

    def close(self) -> None:
        self.worker.close()
        self.target.close()

    def __enter__(self) -> ApplySession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

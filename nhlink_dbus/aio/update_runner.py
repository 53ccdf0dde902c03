"""Running one firmware update: the bytes from the hub (or a local file) into the applier.

:func:`run_update` holds a logind block-inhibitor while the firmware streams
from the download (or from an fd, for ``InstallFile``) into the applier, and
always returns exactly one :class:`UpdateOutcome` — for a download failure, a
refusal of the applier, or a fault of our own alike. Cancellation (the service
stops) aborts the applier and propagates. A download the hub described (size,
checksum, part checksums) goes through :class:`VerifiedSink`
(``core/partials.py``): a part that fails its checksum never reaches the
applier and is fetched again from its offset.

:func:`fwup_version` asks the fwup program for its version without blocking the
loop; the hub chooses firmware by it (protocol.md §3.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING

from nhlink_dbus.aio.logind import Inhibitor, Logind
from nhlink_dbus.config import ApplierKind
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.core.partials import PartMismatch, PartVerifier
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import DownloadError, LogindError, NhlinkError

if TYPE_CHECKING:
    from nhlink_dbus.aio.appliers import ApplyRequest, BaseApplier, OnMessage, OnProgress

# The applier (the fwup engine, or the program's adapter), the downloader (httpx) and
# the local file reader are not imported with this module: the service loads the first
# two in a thread once its name is on the bus (preload), or the first update does.

logger = logging.getLogger(__name__)

# The fwup whose behaviour the built-in applier follows (reported to the hub).
FWUP_COMPAT_VERSION = "1.16.0"


@dataclass(frozen=True, slots=True)
class UpdateJob:
    """Where the firmware comes from and how it is applied."""

    request: ApplyRequest
    applier: ApplierKind
    policy: RetryPolicy
    url: str = field(default="", repr=False)  # pre-signed: never logged
    local_fd: int | None = None  # InstallFile: owned by the job, closed at its end
    fwup_path: str | None = None
    verifier: PartVerifier | None = None  # what the hub said the download is
    on_connected: Callable[[], object] | None = None  # the download's first answer
    chunks: Callable[[], AsyncGenerator[bytes, None]] | None = None  # a file on removable media
    # What must be done before the first byte reaches the applier (the update journal on
    # disk): the rest of the start (the applier, logind, the request) does not wait for it.
    before_first_byte: Awaitable[None] | None = field(default=None, repr=False)


class VerifiedSink:
    """The applier behind a :class:`PartVerifier`: only verified bytes reach it."""

    def __init__(self, applier: BaseApplier, verifier: PartVerifier) -> None:
        self.applier = applier
        self.verifier = verifier

    async def write(self, chunk: bytes) -> None:
        try:
            pieces = self.verifier.feed(chunk)
        except PartMismatch as exc:
            from nhlink_dbus.aio.downloader import Refetch  # noqa: PLC0415  (loaded by now)

            raise Refetch(exc.offset, str(exc)) from None
        for piece in pieces:
            await self.applier.write(piece)

    async def restart(self) -> None:
        self.verifier.restart()
        await self.applier.restart()

    async def finish(self) -> None:
        """The download completed: the last part and the whole-file checks."""
        for piece in self.verifier.finish():
            await self.applier.write(piece)


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    success: bool
    message: str
    applier_error: bool  # False: the download failed before the applier judged


async def run_update(
    job: UpdateJob, logind: Logind | None, on_progress: OnProgress, on_message: OnMessage
) -> UpdateOutcome:
    """Download (or read) and apply; see the module docstring.

    While logind answers for the inhibitor and the journal is written
    (``job.before_first_byte``), the update gets ready side by side: what the first
    update loads (the applier, the downloader and its TLS context; in a thread), the
    applier's start (a program spawned, a target opened) and the download's request and
    answer. Nothing reaches the applier before the lock is held and the journal written.
    """
    fd = job.local_fd
    try:
        async with _inhibitor(logind) as held:
            downloading = fd is None and job.chunks is None
            url = job.url if downloading else None
            make_applier = _loaded(url)
            if make_applier is None:
                make_applier = await asyncio.to_thread(_load, url)
            applier = make_applier(
                job.applier, job.request, on_progress, on_message, fwup_path=job.fwup_path
            )
            starting = asyncio.ensure_future(applier.start())

            async def ready() -> None:
                await held()
                if job.before_first_byte is not None:
                    await asyncio.shield(job.before_first_byte)
                await asyncio.shield(starting)

            try:
                if fd is not None:
                    from nhlink_dbus.fwup.local_firmware import read_fd_chunks  # noqa: PLC0415

                    await ready()
                    await _feed(read_fd_chunks(fd), applier)
                elif job.chunks is not None:
                    await ready()
                    await _feed(job.chunks(), applier)
                else:
                    from nhlink_dbus.aio.downloader import download  # noqa: PLC0415  (by _load)

                    verified = None if job.verifier is None else VerifiedSink(applier, job.verifier)
                    await download(
                        job.url,
                        _Gated(applier if verified is None else verified, ready),
                        job.policy,
                        on_error=lambda reason: logger.warning("download: %s", reason),
                        on_connected=job.on_connected,
                        pieces=applier.takes_parts,
                    )
                    await ready()  # (an empty body opened no gate)
                    if verified is not None:
                        await verified.finish()
            except DownloadError as exc:
                # The applier's start failing is the first thing to tell (the download
                # went on beside it).
                if (failed := await _abort(applier, starting, str(exc))) is not None:
                    raise failed from None
                return UpdateOutcome(False, str(exc), applier_error=False)
            except _SourceFailed as exc:
                if (failed := await _abort(applier, starting, str(exc))) is not None:
                    raise failed from None
                return UpdateOutcome(False, str(exc), applier_error=True)
            except BaseException as exc:
                cancelled = isinstance(exc, asyncio.CancelledError)
                reason = "cancelled" if cancelled else f"internal error: {type(exc).__name__}"
                await _abort(applier, starting, reason)
                raise
            outcome = await applier.finish()
            return UpdateOutcome(outcome.success, outcome.message, applier_error=True)
    except NhlinkError as exc:
        return UpdateOutcome(False, str(exc), applier_error=True)
    except Exception as exc:
        logger.exception("update worker failed")
        return UpdateOutcome(False, f"internal error: {exc.__class__.__name__}", True)
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _abort(
    applier: BaseApplier, starting: asyncio.Future[None], reason: str
) -> BaseException | None:
    """Abort the applier once its start is over (a program being spawned is then known,
    and stopped); return the start's own error, if it failed. Cancelled while the start
    is still going on, the abort follows the start all the same."""
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:

        def abort_after(start: asyncio.Future[None]) -> None:
            if not start.cancelled():
                start.exception()  # read: abort settles the outcome
            _later(applier.abort(reason))

        starting.add_done_callback(abort_after)
        raise
    except Exception as exc:
        await applier.abort(reason)
        return exc
    await applier.abort(reason)
    return None


_LATER: set[asyncio.Task[None]] = set()


def _later(work: Coroutine[object, object, None]) -> None:
    """Run ``work`` in a task of its own, kept until it ends."""
    task = asyncio.ensure_future(work)
    _LATER.add(task)
    task.add_done_callback(_LATER.discard)


class _Gated:
    """A download's sink that waits for ``ready`` before its first byte (or restart):
    the request and the answer's head go ahead, the body waits in the socket."""

    def __init__(self, sink: BaseApplier | VerifiedSink, ready: Callable[[], Awaitable[None]]):
        self.sink = sink
        self._ready: Callable[[], Awaitable[None]] | None = ready

    async def _open(self) -> None:
        if self._ready is not None:
            await self._ready()
            self._ready = None

    async def write(self, chunk: bytes) -> None:
        await self._open()
        await self.sink.write(chunk)

    async def restart(self) -> None:
        await self._open()
        await self.sink.restart()


class _SourceFailed(Exception):
    """The local file (or the medium holding it) could not be read to its end."""


async def _feed(source: AsyncGenerator[bytes, None], applier: BaseApplier) -> None:
    """Every chunk of a local source into the applier; a read failure is _SourceFailed
    (the applier's own failures propagate unchanged)."""
    async with contextlib.aclosing(source):
        while True:
            try:
                chunk = await anext(source)
            except StopAsyncIteration:
                return
            except (NhlinkError, OSError) as exc:
                text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise _SourceFailed(f"reading the firmware failed: {text}") from exc
            await applier.write(chunk)


_make_applier: Callable[..., BaseApplier] | None = None  # once _load has imported it
_downloader_loaded = False


def preload() -> None:
    """What any update needs, whatever its source: the applier and the downloader with
    httpx (not the system trust store, made by the first ``https://`` download that
    needs it). Run by the service in a thread once it is on the bus: a device reboots
    after an update, so each update is the first of the daemon's life, and these imports
    would lie on its way (about 18 ms of a hub push -> Reboot here, where the whole of a
    64 MiB update takes about 120 ms); the bus name is not held back by them."""
    _load("")


def _load(url: str | None) -> Callable[..., BaseApplier]:
    """What an update needs, imported by the first one (then a dictionary lookup each
    time), the downloader warmed up for ``url`` when there is something to download
    (``""``: any URL but ``https://`` ones); run in a thread. Returns
    :func:`~nhlink_dbus.aio.appliers.make_applier`."""
    global _make_applier, _downloader_loaded
    from nhlink_dbus.aio.appliers import make_applier  # noqa: PLC0415

    if url is not None:
        from nhlink_dbus.aio.downloader import warm_up  # noqa: PLC0415

        warm_up(url or None)
        _downloader_loaded = True
    _make_applier = make_applier
    return make_applier


def _loaded(url: str | None) -> Callable[..., BaseApplier] | None:
    """:func:`_load`'s answer when it has nothing left to load (no trip to a thread)."""
    if _make_applier is None or (url is not None and not _downloader_loaded):
        return None
    if url is not None:
        from nhlink_dbus.aio.downloader import is_warm  # noqa: PLC0415  (loaded by _load)

        if not is_warm(url):
            return None
    return _make_applier


@contextlib.asynccontextmanager
async def _inhibitor(logind: Logind | None) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Ask logind for the block inhibitor in the background; yield ``held()``, which
    returns once the lock is held (or refused: the update goes on without it, as
    before, with a warning). The lock is released on the way out."""
    taking = asyncio.create_task(_take_inhibitor(logind), name="inhibitor")

    async def held() -> None:
        await asyncio.shield(taking)

    try:
        yield held
    finally:
        if taking.done():
            _release_taken(taking)
        else:
            # Left before logind answered (a failure, a stop): release the lock when the
            # answer comes (within the call's timeout). Not cancelled: a reply arriving
            # after a cancel would be dropped with the lock's fd in it, held until exit.
            taking.add_done_callback(_release_taken)


async def _take_inhibitor(logind: Logind | None) -> Inhibitor | None:
    if logind is None:
        logger.warning("no logind connection: applying without a shutdown inhibitor")
        return None
    try:
        return await logind.inhibit()
    except LogindError as exc:
        logger.warning("%s; applying without it", exc)
        return None


def _release_taken(taking: asyncio.Task[Inhibitor | None]) -> None:
    if not taking.cancelled() and taking.exception() is None:
        lock = taking.result()
        if lock is not None:
            lock.release()


async def fwup_version(applier: ApplierKind, fwup_path: str | None) -> str:
    """``fwup --version`` of the program the applier will run, else the built-in's."""
    import shutil  # noqa: PLC0415  (it brings bz2 and lzma: not at start-up)

    program = shutil.which(fwup_path or "fwup") if applier != "builtin" else None
    if program is None:
        return FWUP_COMPAT_VERSION
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        logger.warning("cannot run %s --version: %s", program, exc)
        return FWUP_COMPAT_VERSION
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        logger.warning("%s --version did not answer", program)
        return FWUP_COMPAT_VERSION
    return out.decode("utf-8", "replace").strip() or FWUP_COMPAT_VERSION

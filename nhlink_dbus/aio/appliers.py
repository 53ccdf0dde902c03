"""The two firmware appliers behind one async interface (DESIGN.md §4, protocol.md §6.3-§6.6).

The archive streams into the applier while it downloads:

* :class:`BuiltinApplier` runs the core fwup-compatible applier
  (:mod:`nhlink_dbus.core.fwup_apply`, wired by :mod:`nhlink_dbus.fwup.session`
  exactly as ``nhlink-fwup`` does) on one worker thread fed by a queue holding
  at most ``max_in_flight`` bytes;
* :class:`ExternalApplier` runs an fwup-compatible program as nerves_hub_link
  does (§6.3): ``PROG --framing --exit-handshake --apply --no-unmount -d DEV
  --task TASK --public-key K...``, one input frame per chunk, fwup's framed
  stdout decoded into progress, warnings and the final ``OK``/``ER``.

Rules shared by both (the module's contract):

* an empty key list is refused before anything starts: never apply
  unverified firmware (fwup would skip the signature check, §6.3);
* ``on_progress`` sees strictly increasing percentages, 0 first, 100 only on
  success and right before the ``ok`` message; values that do not rise (a
  restarted stream starting again at 0) are not repeated;
* ``on_message(kind, code, text)``: ``warning`` for fwup's ``WN``, then exactly
  one ``ok`` or ``error``; an ``error`` is every way the applier can fail (ER
  text, unexpected exit, a program that cannot be run). :meth:`abort` settles
  the outcome with the caller's reason without reporting it (the caller
  reports its own failure);
* the outcome may be known before :meth:`finish` (fwup stops at the ZIP central
  directory): later ``write`` calls are dropped, ``restart`` is a no-op (the
  result stands; re-running an A/B task would pick the other slot) and
  ``finish`` returns it;
* misuse (``write`` before ``start``, ``finish`` twice...) raises
  :class:`~nhlink_dbus.errors.StateError`; everything else becomes the outcome.

Lifecycle: ``start`` -> ``write``\\* (``restart`` any time) -> ``finish``; or
``abort`` at any point (idempotent, also after ``finish``). ``async with``
starts the applier and aborts it on the way out unless it finished.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import shutil
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

from nhlink_dbus.config import ApplierKind
from nhlink_dbus.core.fwup_framing import (
    ExitStatus,
    OutputDecoder,
    Packet,
    PacketType,
    encode_input_frame,
    frame_header,
)
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import ConfigError, FirmwareError, ProtocolError, StateError
from nhlink_dbus.fwup.pipes import widen_pipe
from nhlink_dbus.fwup.signature import parse_public_key

if TYPE_CHECKING:
    from nhlink_dbus.core.fwup_apply import ApplyListener
    from nhlink_dbus.fwup.session import ApplySession

    # (device, task, public keys, listener, environment) -> an open session; tests pass
    # their own.
    SessionFactory = Callable[
        [str, str, Sequence[bytes], ApplyListener, Mapping[str, str]], ApplySession
    ]

# The built-in applier's engine (nhlink_dbus.fwup.session and what it imports) is loaded by
# its worker thread when it starts: an external fwup never needs it, and the loop never
# waits for it.

logger = logging.getLogger(__name__)

MessageKind = Literal["ok", "warning", "error"]
OnProgress = Callable[[int], None]
OnMessage = Callable[[MessageKind, int, str], None]

MAX_IN_FLIGHT = 1 << 20  # bytes queued for the worker thread before write() waits: one
# verified part of a download (partials.PART_SIZE); the worker applies it while the loop
# checks the next and the transport reads the one after (peak RSS stays flat)
TERM_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL when stopping a program
STDERR_LINES = 5  # last stderr lines kept for a failure without ER
READ_CHUNK = 65536
FRAME = 256 << 10  # the largest frame written to an external fwup
REFUSED_UNSIGNED = "refusing to apply firmware without a public key to verify it"


@dataclass(frozen=True, slots=True)
class ApplyRequest:
    """What to apply where: fwup's ``-d``, ``--task``, ``--public-key`` and added environment."""

    devpath: str
    task: str
    public_keys: tuple[str, ...]  # base64, as fwup's --public-key
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """The one result of an apply: fwup's OK text on success, else its ER text or the reason."""

    success: bool
    message: str


class FirmwareApplier(Protocol):
    """What the update runner drives; also a ``ChunkSink`` for the downloader."""

    takes_parts: bool  # whole parts of a download serve it better than the socket's chunks

    async def start(self) -> None: ...

    async def write(self, chunk: bytes) -> None: ...

    async def restart(self) -> None: ...

    async def finish(self) -> ApplyOutcome: ...

    async def abort(self, reason: str) -> None: ...


class _State(Enum):
    NEW = "new"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class _Reporter:
    """Forwards progress and messages under the module's rules; holds the outcome."""

    def __init__(self, on_progress: OnProgress, on_message: OnMessage) -> None:
        self._on_progress = on_progress
        self._on_message = on_message
        self.last_percent = -1
        self.outcome: ApplyOutcome | None = None

    def progress(self, percent: int) -> None:
        if self.outcome is None and percent > self.last_percent:
            self.last_percent = percent
            self._call(self._on_progress, percent)

    def warning(self, code: int, text: str) -> None:
        if self.outcome is None:
            self._call(self._on_message, "warning", code, text)

    def settle(self, success: bool, code: int, text: str, *, report: bool = True) -> None:
        if self.outcome is not None:
            return
        self.outcome = ApplyOutcome(success, text)
        if success:
            logger.info("firmware applied")
        else:
            logger.info("firmware apply failed: %s", text)
        if report:
            self._call(self._on_message, "ok" if success else "error", code, text)

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        # A listener's bug must not take the apply down with it.
        try:
            fn(*args)
        except Exception:
            logger.exception("applier listener failed")


class BaseApplier(ABC):
    """State handling shared by both appliers; see the module docstring."""

    # Whether whole parts of a download (1 MiB) serve it better than the chunks the
    # socket gives (the downloader's ``pieces``).
    takes_parts = False

    def __init__(self, request: ApplyRequest, on_progress: OnProgress, on_message: OnMessage):
        if not request.public_keys:
            raise FirmwareError(REFUSED_UNSIGNED)
        self.request = request
        self._report = _Reporter(on_progress, on_message)
        self._state = _State.NEW

    @property
    def outcome(self) -> ApplyOutcome | None:
        """The result once known (possibly before :meth:`finish`), else None."""
        return self._report.outcome

    def _require(self, action: str, *states: _State) -> None:
        if self._state not in states:
            raise StateError(f"cannot {action} an applier that is {self._state.value}")

    @abstractmethod
    async def start(self) -> None:
        """Start the applier (a program, a worker thread) before the first byte."""

    @abstractmethod
    async def write(self, chunk: bytes) -> None:
        """Feed the next piece of the archive; waits while the applier is behind."""

    @abstractmethod
    async def restart(self) -> None:
        """The stream starts over at byte 0: start a fresh apply (no-op once settled)."""

    @abstractmethod
    async def finish(self) -> ApplyOutcome:
        """End of input: wait for the applier and return the one outcome."""

    @abstractmethod
    async def abort(self, reason: str) -> None:
        """Stop whatever runs and wait for it; idempotent."""

    async def __aenter__(self) -> BaseApplier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort("apply abandoned" if exc is None else f"apply abandoned: {exc!r}")


# -- built-in --------------------------------------------------------------------------------


class _WorkerRun:
    """One pass of the core applier on its own thread.

    The thread owns the :class:`ApplySession`; the loop side only puts chunks
    into ``queue`` and reads back through ``loop.call_soon_threadsafe``.
    """

    def __init__(self, owner: BuiltinApplier, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: end
        self.cancel = threading.Event()
        # Bytes queued (by the loop) and consumed (by the worker); each side writes only its
        # own count. The worker wakes the loop only while the loop waits for room
        # (``wanting``): a wake-up per chunk consumed cost the loop a trip through its
        # self-pipe for every chunk of a download. Under the GIL each side's store and
        # the other's load are ordered, so one of them sees the other: the loop sets
        # ``wanting`` before it looks at ``consumed`` once more, the worker adds to
        # ``consumed`` before it looks at ``wanting``.
        self.queued = 0
        self.consumed = 0
        self.wanting = False
        self.space = asyncio.Event()
        self.ended = False  # loop side: no more input accepted
        self.exited: asyncio.Future[None] = loop.create_future()
        self.thread = threading.Thread(target=self._main, name="nhlink-apply", daemon=True)

    # worker thread ---------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(fn, *args)

    def progress(self, percent: int) -> None:  # ApplyListener, called on the worker thread
        if not self.cancel.is_set():
            self._post(self.owner._on_progress, self, percent)

    def warning(self, text: str) -> None:  # ApplyListener
        if not self.cancel.is_set():
            self._post(self.owner._on_warning, self, text)

    def _main(self) -> None:
        from nhlink_dbus.fwup.session import ApplySession, error_text  # noqa: PLC0415

        session: ApplySession | None = None
        request = self.owner.request
        try:
            keys = [parse_public_key(k, "--public-key") for k in request.public_keys]
            listener: ApplyListener = self
            factory = self.owner.session_factory or ApplySession
            session = factory(request.devpath, request.task, keys, listener, self.owner.environ)
            complete = False
            while not complete:
                chunk = self.queue.get()
                if chunk is None or self.cancel.is_set():
                    break
                complete = self._feed(session, chunk)
                self.consumed += len(chunk)
                if self.wanting:
                    self.wanting = False
                    self._post(self.space.set)
            if not complete and self.cancel.is_set():
                return  # aborted or restarted: cached writes are dropped, as with a killed fwup
            # A complete archive has been applied (on-finish ran, the cache is flushed), even
            # if a stop came meanwhile: its OK must not be lost, or a restart would apply the
            # archive again and an A/B task would then pick the other slot.
            session.finish()
            session.close()
            session = None
            # fwup sends PR 100 after the target is closed, immediately before OK.
            self._post(self.owner._on_result, self, True, "")
        except Exception as exc:
            if not self.cancel.is_set():  # a failure after a stop is the stop's doing
                self._post(self.owner._on_result, self, False, error_text(exc))
        finally:
            if session is not None:
                try:
                    session.close()
                except Exception:
                    logger.exception("closing the apply target failed")
            self._post(self._exit)

    def _feed(self, session: ApplySession, chunk: bytes) -> bool:
        from nhlink_dbus.fwup.session import READ_SIZE  # noqa: PLC0415  (loaded by _main)

        if self.cancel.is_set():
            return False
        # In reads of at most 16 KiB, as fwup reads a pipe.
        return session.feed(chunk, READ_SIZE)

    # event loop ------------------------------------------------------------------------

    def _exit(self) -> None:
        self.ended = True
        self.space.set()
        if not self.exited.done():
            self.exited.set_result(None)

    def start(self) -> None:
        self.space.set()
        self.thread.start()

    async def stop(self) -> None:
        """Cancel the pass and wait for its thread (it ends after the piece it is on)."""
        self.cancel.set()
        self.ended = True
        self.space.set()
        self.queue.put(None)
        await self.wait()

    async def wait(self) -> None:
        await asyncio.shield(self.exited)
        self.thread.join()  # it posted its last callback: already returning


class BuiltinApplier(BaseApplier):
    """The in-process fwup-compatible applier, on a worker thread with a bounded input queue."""

    takes_parts = True  # a queue hop per chunk, whatever its size

    def __init__(
        self,
        request: ApplyRequest,
        on_progress: OnProgress,
        on_message: OnMessage,
        *,
        environ: Mapping[str, str] | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        session_factory: SessionFactory | None = None,
    ) -> None:
        super().__init__(request, on_progress, on_message)
        self.session_factory = session_factory
        base = os.environ if environ is None else environ
        self.environ: Mapping[str, str] = {**base, **request.env}
        self.max_in_flight = max_in_flight
        self._run: _WorkerRun | None = None

    async def start(self) -> None:
        self._require("start", _State.NEW)
        self._state = _State.RUNNING
        logger.info(
            "applying firmware in-process (task %s, device %s)",
            self.request.task,
            self.request.devpath,
        )
        self._report.progress(0)  # fwup sends PR 0 before it opens the archive
        self._launch()

    def _launch(self) -> None:
        self._run = _WorkerRun(self, asyncio.get_running_loop())
        self._run.start()

    async def write(self, chunk: bytes) -> None:
        """Queue a chunk; waits while ``max_in_flight`` bytes are still queued."""
        self._require("write to", _State.RUNNING)
        run = self._run
        assert run is not None
        while run.queued - run.consumed >= self.max_in_flight and not run.ended:
            run.space.clear()
            run.wanting = True
            if run.queued - run.consumed < self.max_in_flight:
                run.wanting = False  # consumed meanwhile: the worker may not have seen it
                break
            await run.space.wait()
        # Dropped: empty, after the outcome, or the stream was restarted/aborted meanwhile.
        if not chunk or self.outcome is not None or run.ended or run is not self._run:
            return
        run.queued += len(chunk)
        run.queue.put(bytes(chunk))

    async def restart(self) -> None:
        """Start over from byte 0 with a fresh pass (the server ignored a Range request)."""
        self._require("restart", _State.RUNNING)
        if self.outcome is not None or self._run is None:
            return
        logger.info("restarting the apply from the first byte")
        await self._run.stop()
        if self._state is _State.RUNNING and self.outcome is None:
            self._launch()

    async def finish(self) -> ApplyOutcome:
        """End of input; wait for the worker and return the outcome."""
        self._require("finish", _State.RUNNING)
        run = self._run
        assert run is not None
        run.ended = True
        run.queue.put(None)
        await run.wait()
        if self._state is _State.RUNNING:
            self._state = _State.FINISHED
        self._report.settle(False, 0, "applier stopped without a result")
        assert self.outcome is not None
        return self.outcome

    async def abort(self, reason: str) -> None:
        """Stop the worker (cached writes are dropped); the outcome becomes ``reason``."""
        if self._state is _State.NEW:
            self._state = _State.ABORTED
        if self._state is _State.RUNNING:
            self._state = _State.ABORTED
            logger.info("aborting the apply: %s", reason)
        if self._run is not None:
            await self._run.stop()
        self._report.settle(False, 0, reason, report=False)

    # callbacks from the worker, on the loop -------------------------------------------

    def _on_progress(self, run: _WorkerRun, percent: int) -> None:
        if run is self._run:
            self._report.progress(percent)

    def _on_warning(self, run: _WorkerRun, text: str) -> None:
        if run is self._run:
            self._report.warning(0, text)

    def _on_result(self, run: _WorkerRun, success: bool, text: str) -> None:
        if run is not self._run:
            return
        run.ended = True
        run.space.set()
        if success:
            self._report.progress(100)
        self._report.settle(success, 0, text)


# -- external program ------------------------------------------------------------------------


class _Process:
    """One run of the external program and the task that reads its output."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.decoder = OutputDecoder()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.stopping = False  # killed on purpose: its output and exit no longer count
        self.stdin_closed = False
        self.exit_status: int | None = None  # from the 0x1A handshake trailer
        self.watcher: asyncio.Task[None] | None = None

    def close_stdin(self) -> None:
        # --exit-handshake: fwup drains stdin until EOF before it exits.
        if not self.stdin_closed:
            self.stdin_closed = True
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def kill_group(self, sig: signal.Signals) -> None:
        # start_new_session: the program leads its own process group, helpers included.
        # Only while it is not reaped: afterwards its pid (= group id) may be reused.
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


class ExternalApplier(BaseApplier):
    """An fwup-compatible program over ``--framing`` and ``--exit-handshake`` (§6.3, §6.5)."""

    def __init__(
        self,
        request: ApplyRequest,
        on_progress: OnProgress,
        on_message: OnMessage,
        *,
        program: str = "fwup",
        environ: Mapping[str, str] | None = None,
        term_timeout: float = TERM_TIMEOUT,
    ) -> None:
        super().__init__(request, on_progress, on_message)
        self.program = program
        self._name = os.path.basename(program)  # for messages
        base = os.environ if environ is None else environ
        self._env = {**base, **request.env}
        self.term_timeout = term_timeout
        self._proc: _Process | None = None

    @property
    def argv(self) -> list[str]:
        """The command line, in nerves_hub_link's order (§6.3)."""
        r = self.request
        argv = [self.program, "--framing", "--exit-handshake", "--apply", "--no-unmount"]
        argv += ["-d", r.devpath, "--task", r.task]
        for key in r.public_keys:
            argv += ["--public-key", key]
        return argv

    @property
    def pid(self) -> int | None:
        """The running program's pid (also its process group), if any."""
        return None if self._proc is None else self._proc.proc.pid

    async def start(self) -> None:
        self._require("start", _State.NEW)
        self._state = _State.RUNNING
        logger.info(
            "applying firmware with %s (task %s, device %s)",
            self.program,
            self.request.task,
            self.request.devpath,
        )
        await self._spawn()

    async def _spawn(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *with_stdin_buffer(self.argv),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            self._proc = None
            self._report.settle(False, 0, f"cannot run {self.program}: {exc.strerror or exc}")
            return
        _widen_pipe(proc.stdin)
        p = _Process(proc)
        p.watcher = asyncio.create_task(self._watch(p), name=f"fwup-{proc.pid}")
        self._proc = p

    async def write(self, chunk: bytes) -> None:
        """Send a chunk as one frame; waits while the pipe is full (back-pressure)."""
        self._require("write to", _State.RUNNING)
        p = self._proc
        if not chunk or p is None or p.stdin_closed or self.outcome is not None:
            return  # an empty frame would end the input; after the outcome fwup reads no more
        stdin = p.proc.stdin
        assert stdin is not None
        if stdin.is_closing():
            return
        try:
            # Frames of at most FRAME bytes, each written once the one before has gone
            # into the pipe: the frame's length, then its bytes as they are (no copy joins
            # them). A larger write would mostly wait in asyncio's buffer (copied there)
            # and trickle into the pipe as fwup reads it.
            view = memoryview(chunk)
            for start in range(0, len(view), FRAME):
                piece = view[start : start + FRAME]
                stdin.write(frame_header(len(piece)))
                stdin.write(piece)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            # The program exited (after an ER, or died): its stdout and status tell why.
            p.stdin_closed = True

    async def restart(self) -> None:
        """Stop the program and start a fresh one for a stream that starts over at byte 0."""
        self._require("restart", _State.RUNNING)
        if self.outcome is not None:
            return
        logger.info("restarting %s for a stream from the first byte", self.program)
        if self._proc is not None:
            await self._stop(self._proc)
        if self._state is _State.RUNNING and self.outcome is None:
            await self._spawn()

    async def finish(self) -> ApplyOutcome:
        """Send the zero-length end frame, close stdin, wait for the result and the exit."""
        self._require("finish", _State.RUNNING)
        p = self._proc
        if p is not None:
            if self.outcome is None and not p.stdin_closed:
                await self._write_end(p)
            p.close_stdin()
            assert p.watcher is not None
            await asyncio.shield(p.watcher)
        if self._state is _State.RUNNING:
            self._state = _State.FINISHED
        self._report.settle(False, 0, f"{self._name} stopped without a result")
        assert self.outcome is not None
        return self.outcome

    async def _write_end(self, p: _Process) -> None:
        stdin = p.proc.stdin
        assert stdin is not None
        if stdin.is_closing():
            return
        try:
            stdin.write(encode_input_frame(b""))
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            p.stdin_closed = True

    async def abort(self, reason: str) -> None:
        """Stop the program (SIGTERM to its group, SIGKILL after ``term_timeout``) and reap it."""
        if self._state in (_State.NEW, _State.RUNNING):
            if self._state is _State.RUNNING:
                logger.info("aborting the apply: %s", reason)
            self._state = _State.ABORTED
        if self._proc is not None:
            await self._stop(self._proc)
        self._report.settle(False, 0, reason, report=False)

    async def _stop(self, p: _Process) -> None:
        watcher = p.watcher
        assert watcher is not None
        if not watcher.done():
            p.stopping = True
            p.close_stdin()
            p.kill_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(watcher), self.term_timeout)
            except TimeoutError:
                logger.warning("%s ignored SIGTERM; killing it", self.program)
                p.kill_group(signal.SIGKILL)
                await asyncio.shield(watcher)

    # reading the program's output ------------------------------------------------------

    async def _watch(self, p: _Process) -> None:
        stderr = asyncio.create_task(self._read_stderr(p))
        try:
            await self._read_stdout(p)
        except Exception as exc:  # never let the one outcome get lost
            logger.exception("reading %s's output failed", self.program)
            self._fail(p, f"reading {self._name}'s output failed: {exc!r}")
        finally:
            await stderr
            status = await p.proc.wait()
        logger.debug("= %s exited with status %s", self.program, status)
        if not p.stopping and self.outcome is None:
            self._report.settle(False, 0, self._unexpected_exit(p, status))

    async def _read_stdout(self, p: _Process) -> None:
        stdout = p.proc.stdout
        assert stdout is not None
        broken = False
        while data := await stdout.read(READ_CHUNK):
            if broken:
                continue  # read to EOF so the pipe closes cleanly
            try:
                items = p.decoder.feed(data)
            except ProtocolError as exc:
                broken = True
                self._fail(p, f"{self._name} sent malformed output: {exc}")
                continue
            for item in items:
                self._dispatch(p, item)

    def _dispatch(self, p: _Process, item: Packet | ExitStatus) -> None:
        if isinstance(item, ExitStatus):
            p.exit_status = item.status
            logger.debug("< exit handshake, status %d", item.status)
            return
        logger.debug("< %s %d %r", item.type.name, item.code, item.text)
        if p.stopping and item.type is not PacketType.OK:
            # Stopped on purpose: only an OK still counts (the firmware is on the target;
            # a restart must not apply it again, an A/B task would pick the other slot).
            return
        if item.type is PacketType.PR:
            self._report.progress(item.code)
        elif item.type is PacketType.WN:
            self._report.warning(item.code, item.text)
        else:
            if item.type is PacketType.OK:
                self._report.progress(100)  # fwup sent it already, unless -q or stopping
            self._report.settle(item.type is PacketType.OK, item.code, item.text)
            p.close_stdin()

    def _fail(self, p: _Process, text: str) -> None:
        self._report.settle(False, 0, text)
        p.close_stdin()
        p.kill_group(signal.SIGKILL)

    async def _read_stderr(self, p: _Process) -> None:
        stderr = p.proc.stderr
        assert stderr is not None
        while line := await stderr.readline():
            text = line.decode("utf-8", "replace").strip()
            if text:
                logger.debug("< stderr %s", text)
                p.stderr_tail.append(text)

    def _unexpected_exit(self, p: _Process, status: int) -> str:
        if status < 0:
            what = f"{self._name} was killed by {signal.Signals(-status).name}"
        else:
            what = f"{self._name} exited with status {status}"
        text = f"unexpected_exit: {what} without reporting a result"
        if p.stderr_tail:
            text += ": " + " | ".join(p.stderr_tail)
        return text


# bytes: Linux's default /proc/sys/fs/pipe-max-size, and the fastest of 64 KiB to 4 MiB
# (256 MiB through fwup, in-process A/B on 2 cores: 64 KiB 0.76 s, 512 KiB 0.57 s, 1 MiB
# 0.44-0.49 s, 2 MiB 0.75 s, 4 MiB 0.79 s; README, Benchmarks).
PIPE_SIZE = 1 << 20


# fwup reads its framed stdin through stdio, in a buffer of the pipe's st_blksize (4 KiB):
# each 4-byte length then leaves the buffer out of step with the data, and every 16 KiB
# of data takes two read(2) calls and a copy through the buffer (strace: 32,783 reads for
# 256 MiB where fwup -a on a plain stdin makes 16,409). With a buffer of one frame it
# takes one read per frame. 256 MiB from a local file, 24 rounds in turns: cat | fwup -a
# 0.321 s, framed 0.346 s, framed with this buffer 0.323 s; fed by the daemon, push ->
# Reboot against curl | fwup: 1.06 and 1.06 against 1.16 and 1.12 at 256 MiB, 1.09
# against 1.17 at 64 MiB (12 pairs each, in turns; README, Benchmarks).
STDIN_BUFFER = "256K"  # coreutils stdbuf's size: FRAME


def with_stdin_buffer(argv: list[str]) -> list[str]:
    """``argv`` run by coreutils' ``stdbuf -i STDIN_BUFFER``, which sets the program's
    stdin buffer (through ``LD_PRELOAD``) and execs it with ``argv`` unchanged: the
    program sees §6.3's command line. As it is when there is no ``stdbuf``, or when the
    program is not found (its spawn then fails as such, not as stdbuf's exit)."""
    stdbuf = shutil.which("stdbuf")
    if stdbuf is None or shutil.which(argv[0]) is None:
        return argv
    return [stdbuf, "-i", STDIN_BUFFER, *argv]


def _widen_pipe(stdin: asyncio.StreamWriter | None) -> None:
    """Give the program's stdin a PIPE_SIZE pipe (``widen_pipe``)."""
    pipe = None if stdin is None else stdin.get_extra_info("pipe")
    if pipe is None:
        return
    with contextlib.suppress(ValueError):  # closed (the program died)
        widen_pipe(pipe.fileno(), PIPE_SIZE)


def make_applier(
    kind: ApplierKind,
    request: ApplyRequest,
    on_progress: OnProgress,
    on_message: OnMessage,
    *,
    fwup_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BaseApplier:
    """The applier for config ``applier = kind``.

    ``auto`` takes the fwup program (``fwup_path``, default ``fwup``) when it is
    found and executable, else the built-in one; ``fwup`` always runs the
    program. Raises :class:`FirmwareError` for an empty key list,
    :class:`ConfigError` for an unknown kind.
    """
    if kind not in ("auto", "fwup", "builtin"):
        raise ConfigError(f"applier: unknown kind {kind!r} (expected auto, fwup or builtin)")
    program = fwup_path or "fwup"
    found = shutil.which(program) if kind != "builtin" else None
    if found is None and kind != "fwup":
        return BuiltinApplier(request, on_progress, on_message, environ=environ)
    return ExternalApplier(
        request, on_progress, on_message, program=found or program, environ=environ
    )


__all__: Sequence[str] = (
    "ApplierKind",
    "ApplyOutcome",
    "ApplyRequest",
    "BaseApplier",
    "BuiltinApplier",
    "ExternalApplier",
    "FirmwareApplier",
    "MessageKind",
    "make_applier",
)

"""aio.appliers: both appliers on real images, the external one running ``nhlink-fwup``.

Image hashes are real fwup's (fixtures/fwup/EXPECT.md). Every test checks the
reporting rules (progress strictly increasing from 0, one ok/error message
that matches the outcome) and that no process, thread or task is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from nhlink_dbus.aio.appliers import (
    ApplyOutcome,
    ApplyRequest,
    BaseApplier,
    BuiltinApplier,
    ExternalApplier,
    MessageKind,
    make_applier,
    with_stdin_buffer,
)
from nhlink_dbus.core.fwup_apply import ApplyListener
from nhlink_dbus.errors import ConfigError, FirmwareError, StateError
from nhlink_dbus.fwup.session import ApplySession

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fwup"
KEY = (FIXTURES / "fwup-key.pub").read_text().strip()
NHLINK_FWUP = str(Path(sys.executable).parent / "nhlink-fwup")
AB_FW = (FIXTURES / "ab.fw").read_bytes()

BLANK = "3b6a07d0d404fab4e23b6d34bc6696a6a312dd92821332385e5af7c01c421351"
AB_COMPLETE = "c3d9d6767375b1311a9911721071cae8c41b770247febeb16df4b241b2a38137"
AB_UPGRADE_B = "fec67c5c58af6129ffad66439b2e7041b5105284dbae1f27f9ff956e57f3e9fa"
CORRUPT_AFTER = "ca55cfe8bff74526b4ffbd3fd479f65ffd18da43dd8a1012962bf54228d39bc7"
BAD_SIGNATURE = "Firmware archive's meta.conf fails digital signature verification."

SIZES = (1, 100, 4096, 65536, 16384, 777, 300000, 5)  # cycled over the archive

KINDS = ("builtin", "fwup")


class Recorder:
    """The listeners: what the hub and the service would see."""

    def __init__(self) -> None:
        self.progress: list[int] = []
        self.messages: list[tuple[MessageKind, int, str]] = []

    def on_progress(self, percent: int) -> None:
        self.progress.append(percent)

    def on_message(self, kind: MessageKind, code: int, text: str) -> None:
        self.messages.append((kind, code, text))

    @property
    def warnings(self) -> list[str]:
        return [t for k, _, t in self.messages if k == "warning"]

    @property
    def finals(self) -> list[tuple[MessageKind, int, str]]:
        return [m for m in self.messages if m[0] != "warning"]

    def check(self, outcome: ApplyOutcome) -> None:
        """The reporting rules; an applier error is reported once, with the outcome's text."""
        assert self.progress == sorted(set(self.progress)), self.progress
        if self.progress:
            assert self.progress[0] == 0
        assert (100 in self.progress) == outcome.success
        kind = "ok" if outcome.success else "error"
        assert self.finals == [(kind, 0, outcome.message)]
        assert self.messages[-1][0] == kind


def blank_image(path: Path) -> Path:
    with path.open("wb") as fh:
        fh.truncate(64 << 20)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pieces(data: bytes, sizes: Sequence[int] = SIZES) -> Iterator[bytes]:
    pos = 0
    for size in itertools.cycle(sizes):
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size


def new_applier(
    kind: str,
    image: Path,
    task: str,
    rec: Recorder,
    keys: tuple[str, ...] = (KEY,),
    env: Mapping[str, str] | None = None,
    fwup_path: str = NHLINK_FWUP,
) -> BaseApplier:
    request = ApplyRequest(str(image), task, keys, env or {})
    assert kind in KINDS
    return make_applier(
        "builtin" if kind == "builtin" else "fwup",
        request,
        rec.on_progress,
        rec.on_message,
        fwup_path=fwup_path,
    )


async def stream(applier: BaseApplier, data: bytes, sizes: Sequence[int] = SIZES) -> ApplyOutcome:
    await applier.start()
    for chunk in pieces(data, sizes):
        await applier.write(chunk)
    return await applier.finish()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    """asyncio debug on; afterwards no new task, no new thread (the loop's waitpid helpers
    must end on their own) and every spawned program reaped."""
    asyncio.get_running_loop().set_debug(True)
    before = set(threading.enumerate())
    yield
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current] == []
    deadline = time.monotonic() + 60  # guards a hang only
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"thread {thread.name} left behind"
    for pid in SPAWNED:
        assert pid_gone(pid), f"process {pid} left behind"
    SPAWNED.clear()


SPAWNED: list[int] = []


def remember(applier: BaseApplier) -> None:
    if isinstance(applier, ExternalApplier) and applier.pid is not None:
        SPAWNED.append(applier.pid)


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


# -- both appliers ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_ab_complete_then_upgrade_gives_real_fwups_images(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")

    rec = Recorder()
    applier = new_applier(kind, image, "complete", rec)
    outcome = await stream(applier, AB_FW)
    remember(applier)
    assert outcome == ApplyOutcome(True, "")
    rec.check(outcome)
    assert rec.progress[-1] == 100
    assert sha256(image) == AB_COMPLETE

    rec = Recorder()
    applier = new_applier(kind, image, "upgrade", rec)
    outcome = await stream(applier, AB_FW, sizes=(65536, 3, 20000))
    remember(applier)
    assert outcome == ApplyOutcome(True, "")
    rec.check(outcome)
    assert rec.warnings == ["Upgrading partition B", "Switched to partition B"]
    assert sha256(image) == AB_UPGRADE_B


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_signature_fails_and_writes_nothing(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    applier = new_applier(kind, image, "upgrade", rec)
    outcome = await stream(applier, (FIXTURES / "bad-signature.fw").read_bytes(), (4096,))
    remember(applier)
    assert outcome == ApplyOutcome(False, BAD_SIGNATURE)
    rec.check(outcome)
    assert rec.progress == [0]
    assert sha256(image) == BLANK


@pytest.mark.parametrize("kind", KINDS)
async def test_corrupt_resource_fails_with_fwups_text(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    applier = new_applier(kind, image, "upgrade", rec)
    # 4 KiB frames as recorded: the bytes left on the target depend on the slicing.
    outcome = await stream(applier, (FIXTURES / "corrupt-resource.fw").read_bytes(), (4096,))
    remember(applier)
    assert outcome == ApplyOutcome(False, "raw_write detected blake2b mismatch on 'rootfs.img'")
    rec.check(outcome)
    assert rec.warnings == ["starting"]
    assert sha256(image) == CORRUPT_AFTER


@pytest.mark.parametrize("kind", KINDS)
async def test_an_empty_key_list_is_refused_before_anything_starts(
    kind: str, tmp_path: Path
) -> None:
    rec = Recorder()
    with pytest.raises(FirmwareError, match="public key"):
        new_applier(kind, tmp_path / "target.img", "upgrade", rec, keys=())
    assert rec.messages == [] and rec.progress == []
    assert not (tmp_path / "target.img").exists()


@pytest.mark.parametrize("kind", KINDS)
async def test_abort_mid_stream_stops_everything(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    applier = new_applier(kind, image, "complete", rec)
    await applier.start()
    remember(applier)
    for chunk in pieces(AB_FW[: len(AB_FW) // 2], (4096,)):
        await applier.write(chunk)
    await applier.abort("download failed: connection reset")
    assert applier.outcome == ApplyOutcome(False, "download failed: connection reset")
    assert rec.finals == []  # the caller reports its own failure
    assert rec.progress == sorted(set(rec.progress)) and 100 not in rec.progress
    with pytest.raises(StateError):
        await applier.write(b"more")
    with pytest.raises(StateError):
        await applier.finish()
    await applier.abort("again")  # idempotent
    if isinstance(applier, ExternalApplier):
        assert applier.pid is not None and pid_gone(applier.pid)


@pytest.mark.parametrize("kind", KINDS)
async def test_restart_mid_stream_then_the_full_stream(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    applier = new_applier(kind, image, "complete", rec)
    await applier.start()
    remember(applier)
    for chunk in pieces(AB_FW[:300000], (16384,)):
        await applier.write(chunk)
    await applier.restart()
    remember(applier)
    for chunk in pieces(AB_FW, (32768,)):
        await applier.write(chunk)
    outcome = await applier.finish()
    assert outcome == ApplyOutcome(True, "")
    rec.check(outcome)
    assert sha256(image) == AB_COMPLETE


@pytest.mark.parametrize("kind", KINDS)
async def test_outcome_known_early_then_writes_and_restart_are_ignored(
    kind: str, tmp_path: Path
) -> None:
    """ER comes after meta.conf: the rest of the download goes nowhere, restart changes nothing."""
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    data = (FIXTURES / "bad-signature.fw").read_bytes()
    applier = new_applier(kind, image, "upgrade", rec)
    await applier.start()
    remember(applier)
    await applier.write(data[:4096])
    for _ in range(200):
        if applier.outcome is not None:
            break
        await asyncio.sleep(0.01)
    assert applier.outcome == ApplyOutcome(False, BAD_SIGNATURE)
    await applier.restart()
    for chunk in pieces(data[4096:], (4096,)):
        await applier.write(chunk)
    outcome = await applier.finish()
    assert outcome == ApplyOutcome(False, BAD_SIGNATURE)
    rec.check(outcome)
    await applier.abort("after finish: nothing to do")
    assert applier.outcome == outcome


@pytest.mark.parametrize("kind", KINDS)
async def test_async_with_aborts_an_unfinished_apply(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    with pytest.raises(RuntimeError, match="download task failed"):
        async with new_applier(kind, image, "complete", rec) as applier:
            remember(applier)
            await applier.write(AB_FW[:100000])
            raise RuntimeError("download task failed")
    assert applier.outcome is not None and not applier.outcome.success
    assert "download task failed" in applier.outcome.message
    assert rec.finals == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failing_listener_does_not_break_the_apply(kind: str, tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    seen: list[int] = []

    def on_progress(percent: int) -> None:
        seen.append(percent)
        raise ValueError("listener bug")

    request = ApplyRequest(str(image), "complete", (KEY,))
    applier = make_applier(
        "builtin" if kind == "builtin" else "fwup",
        request,
        on_progress,
        lambda kind, code, text: None,
        fwup_path=NHLINK_FWUP,
    )
    outcome = await stream(applier, AB_FW, (65536,))
    remember(applier)
    assert outcome.success and seen[0] == 0 and seen[-1] == 100
    assert sha256(image) == AB_COMPLETE


# -- built-in ------------------------------------------------------------------------------


async def test_builtin_write_waits_while_the_queue_is_full(tmp_path: Path) -> None:
    image = blank_image(tmp_path / "target.img")
    gate = threading.Event()

    class SlowSession(ApplySession):
        def feed(self, chunk: bytes | memoryview, read_size: int | None = None) -> bool:
            assert gate.wait(10)
            return super().feed(chunk, read_size)

    def factory(
        device: str,
        task: str,
        keys: Sequence[bytes],
        listener: ApplyListener,
        environ: Mapping[str, str],
    ) -> ApplySession:
        return SlowSession(device, task, keys, listener, environ)

    rec = Recorder()
    applier = BuiltinApplier(
        ApplyRequest(str(image), "complete", (KEY,)),
        rec.on_progress,
        rec.on_message,
        max_in_flight=32768,
        session_factory=factory,
    )
    await applier.start()
    chunks = list(pieces(AB_FW, (16384,)))
    await applier.write(chunks[0])
    await applier.write(chunks[1])  # 32 KiB in flight: the limit
    blocked = asyncio.create_task(applier.write(chunks[2]))
    await asyncio.sleep(0.2)
    assert not blocked.done()  # back-pressure: the worker has not taken anything yet
    gate.set()
    await blocked
    for chunk in chunks[3:]:
        await applier.write(chunk)
    outcome = await applier.finish()
    assert outcome.success
    rec.check(outcome)
    assert sha256(image) == AB_COMPLETE


async def test_builtin_restart_after_the_archive_completed_keeps_the_ok(tmp_path: Path) -> None:
    """A stop that comes while a complete archive is being finished must not lose its OK:
    a second pass would apply it again (and an A/B upgrade would pick the other slot)."""
    image = blank_image(tmp_path / "target.img")
    reached, gate = threading.Event(), threading.Event()

    class SlowFinish(ApplySession):
        def finish(self) -> None:
            reached.set()
            assert gate.wait(10)
            super().finish()

    def factory(
        device: str,
        task: str,
        keys: Sequence[bytes],
        listener: ApplyListener,
        environ: Mapping[str, str],
    ) -> ApplySession:
        return SlowFinish(device, task, keys, listener, environ)

    rec = Recorder()
    applier = BuiltinApplier(
        ApplyRequest(str(image), "complete", (KEY,)),
        rec.on_progress,
        rec.on_message,
        session_factory=factory,
    )
    await applier.start()
    await applier.write(AB_FW)
    while not reached.is_set():
        await asyncio.sleep(0.01)
    restart = asyncio.create_task(applier.restart())
    await asyncio.sleep(0.05)
    gate.set()
    await restart
    assert applier.outcome == ApplyOutcome(True, "")
    outcome = await applier.finish()
    rec.check(outcome)
    assert sha256(image) == AB_COMPLETE


async def test_builtin_worker_crash_is_one_error_outcome(tmp_path: Path) -> None:
    class BrokenSession(ApplySession):
        def feed(self, chunk: bytes | memoryview, read_size: int | None = None) -> bool:
            raise RuntimeError("disk on fire")

    def factory(
        device: str,
        task: str,
        keys: Sequence[bytes],
        listener: ApplyListener,
        environ: Mapping[str, str],
    ) -> ApplySession:
        return BrokenSession(device, task, keys, listener, environ)

    rec = Recorder()
    applier = BuiltinApplier(
        ApplyRequest(str(blank_image(tmp_path / "t.img")), "complete", (KEY,)),
        rec.on_progress,
        rec.on_message,
        session_factory=factory,
    )
    outcome = await stream(applier, AB_FW, (65536,))
    assert outcome == ApplyOutcome(False, "unexpected error: RuntimeError: disk on fire")
    rec.check(outcome)


async def test_builtin_target_that_cannot_be_opened_is_an_error_outcome(tmp_path: Path) -> None:
    rec = Recorder()
    applier = new_applier("builtin", tmp_path / "no" / "such" / "dir.img", "complete", rec)
    outcome = await stream(applier, AB_FW, (65536,))
    assert not outcome.success and "Cannot create '" in outcome.message
    rec.check(outcome)


async def test_builtin_bad_key_text_is_an_error_outcome(tmp_path: Path) -> None:
    rec = Recorder()
    image = blank_image(tmp_path / "target.img")
    applier = new_applier("builtin", image, "complete", rec, keys=("not base64!",))
    outcome = await stream(applier, AB_FW, (65536,))
    assert outcome == ApplyOutcome(False, "--public-key: not valid base64")
    rec.check(outcome)
    assert sha256(image) == BLANK


# -- external program --------------------------------------------------------------------


async def test_external_program_dying_is_an_unexpected_exit(tmp_path: Path) -> None:
    prog = script(tmp_path, "fwup", "#!/bin/sh\necho 'cannot open /dev/mmcblk9' >&2\nexit 3\n")
    rec = Recorder()
    applier = new_applier("fwup", blank_image(tmp_path / "t.img"), "upgrade", rec, fwup_path=prog)
    outcome = await stream(applier, AB_FW, (4096,))
    remember(applier)
    assert not outcome.success
    assert outcome.message == (
        "unexpected_exit: fwup exited with status 3 without reporting a result:"
        " cannot open /dev/mmcblk9"
    )
    rec.check(outcome)


async def test_external_program_killed_by_a_signal(tmp_path: Path) -> None:
    prog = script(tmp_path, "fwup", "#!/bin/sh\nkill -9 $$\n")
    rec = Recorder()
    applier = new_applier("fwup", blank_image(tmp_path / "t.img"), "upgrade", rec, fwup_path=prog)
    outcome = await stream(applier, b"x" * 10000, (1000,))
    remember(applier)
    assert outcome == ApplyOutcome(
        False, "unexpected_exit: fwup was killed by SIGKILL without reporting a result"
    )
    rec.check(outcome)


async def test_external_program_missing(tmp_path: Path) -> None:
    rec = Recorder()
    missing = str(tmp_path / "nowhere" / "fwup")
    applier = new_applier("fwup", tmp_path / "t.img", "upgrade", rec, fwup_path=missing)
    outcome = await stream(applier, AB_FW, (65536,))
    assert not outcome.success and outcome.message.startswith(f"cannot run {missing}: ")
    rec.check(outcome)


async def test_external_malformed_output_is_an_error_and_the_program_is_stopped(
    tmp_path: Path,
) -> None:
    prog = script(tmp_path, "fwup", "#!/bin/sh\nprintf 'hello world\\n'\nexec cat >/dev/null\n")
    rec = Recorder()
    applier = new_applier("fwup", blank_image(tmp_path / "t.img"), "upgrade", rec, fwup_path=prog)
    outcome = await stream(applier, AB_FW, (4096,))
    remember(applier)
    assert not outcome.success
    assert outcome.message.startswith("fwup sent malformed output: ")
    rec.check(outcome)


FAKE_FWUP = """#!{python}
import json, os, struct, sys
def packet(kind, code=0, text=""):
    body = text.encode()
    sys.stdout.buffer.write(struct.pack(">I2sH", 4 + len(body), kind, code) + body)
    sys.stdout.buffer.flush()
stdin = sys.stdin.buffer
total = 0
while True:
    (n,) = struct.unpack(">I", stdin.read(4))
    if n == 0:
        break
    total += len(stdin.read(n))
packet(b"PR", 0)
packet(b"WN", 0, json.dumps(sys.argv[1:]))
packet(b"WN", 0, "%s %d" % (os.environ.get("NHL_SECRET"), total))
packet(b"WN", 0, os.environ.get("_STDBUF_I", "-"))
packet(b"PR", 100)
packet(b"OK", 0, "fine")
sys.stdout.buffer.write(b"\\x1a\\x00")
sys.stdout.buffer.flush()
stdin.read()
"""


async def test_external_command_line_environment_and_end_frame(tmp_path: Path) -> None:
    """§6.3's exact argument order, fwup_env added, every chunk framed, then the end frame."""
    prog = script(tmp_path, "fake-fwup", FAKE_FWUP.format(python=sys.executable))
    rec = Recorder()
    applier = new_applier(
        "fwup",
        tmp_path / "t.img",
        "upgrade",
        rec,
        keys=(KEY, "b3RoZXI="),
        env={"NHL_SECRET": "s3cret"},
        fwup_path=prog,
    )
    assert "s3cret" not in repr(applier.request)
    outcome = await stream(applier, AB_FW)
    remember(applier)
    assert outcome == ApplyOutcome(True, "fine")
    rec.check(outcome)
    assert rec.warnings[0] == (
        '["--framing", "--exit-handshake", "--apply", "--no-unmount", "-d", "'
        + str(tmp_path / "t.img")
        + f'", "--task", "upgrade", "--public-key", "{KEY}", "--public-key", "b3RoZXI="]'
    )
    assert rec.warnings[1] == f"s3cret {len(AB_FW)}"
    # Run through coreutils' stdbuf (Debian's coreutils is essential): fwup's stdin gets
    # a buffer of one frame; the program's own command line is the same.
    assert rec.warnings[2] == "262144"  # stdbuf -i 256K


def test_the_program_runs_through_stdbuf_when_both_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prog = script(tmp_path, "my-fwup", "#!/bin/sh\n")
    argv = [str(prog), "--framing"]
    stdbuf = shutil.which("stdbuf")
    assert stdbuf is not None
    assert with_stdin_buffer(argv) == [stdbuf, "-i", "256K", *argv]
    # A program that is not found is spawned as it is: its spawn fails as such.
    assert with_stdin_buffer(["no-such-fwup", "-a"]) == ["no-such-fwup", "-a"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no stdbuf: the program alone
    assert with_stdin_buffer(argv) == argv


# Bytes after the archive (the program reads no further than its end): more input than the
# program's stdin pipe (PIPE_SIZE) and the transport's buffer hold.
PADDING = bytes(2 << 20)


async def test_external_write_waits_for_a_slow_program(tmp_path: Path) -> None:
    prog = script(tmp_path, "slow-fwup", f'#!/bin/sh\nsleep 1\nexec {NHLINK_FWUP} "$@"\n')
    image = blank_image(tmp_path / "target.img")
    rec = Recorder()
    applier = new_applier("fwup", image, "complete", rec, fwup_path=prog)
    await applier.start()
    remember(applier)
    started = time.monotonic()
    for chunk in pieces(AB_FW + PADDING, (16384,)):
        await applier.write(chunk)
    waited = time.monotonic() - started
    outcome = await applier.finish()
    assert outcome.success
    rec.check(outcome)
    # 2.5 MiB do not fit in the (1 MiB) pipe and the transport's buffer: the writes waited.
    assert waited > 0.5
    assert sha256(image) == AB_COMPLETE


async def test_external_writer_cancelled_while_waiting_then_abort(tmp_path: Path) -> None:
    """The runner's task is cancelled in the middle of a back-pressured write."""
    prog = script(tmp_path, "slow-fwup", f'#!/bin/sh\nsleep 5\nexec {NHLINK_FWUP} "$@"\n')
    rec = Recorder()
    applier = new_applier("fwup", blank_image(tmp_path / "t.img"), "complete", rec, fwup_path=prog)
    await applier.start()
    remember(applier)

    async def download() -> None:
        for chunk in pieces(AB_FW + PADDING, (16384,)):
            await applier.write(chunk)

    task = asyncio.create_task(download())
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await applier.abort("update cancelled")
    assert applier.outcome == ApplyOutcome(False, "update cancelled")
    assert rec.finals == []


OK_ON_SIGTERM = """#!{python}
import signal, struct, sys, time
def finish(*_):
    sys.stdout.buffer.write(struct.pack(">I2sH", 4, b"OK", 0) + b"\\x1a\\x00")
    sys.stdout.buffer.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, finish)
sys.stdout.buffer.write(struct.pack(">I2sH", 4, b"PR", 0))
sys.stdout.buffer.flush()
while True:
    time.sleep(0.05)
"""


async def test_external_ok_while_being_stopped_for_a_restart_is_kept(tmp_path: Path) -> None:
    prog = script(tmp_path, "ok-on-term", OK_ON_SIGTERM.format(python=sys.executable))
    rec = Recorder()
    applier = new_applier("fwup", tmp_path / "t.img", "upgrade", rec, fwup_path=prog)
    assert isinstance(applier, ExternalApplier)
    await applier.start()
    remember(applier)
    first = applier.pid
    while rec.progress != [0]:
        await asyncio.sleep(0.01)
    await applier.restart()
    assert applier.pid == first  # no second program
    outcome = await applier.finish()
    assert outcome == ApplyOutcome(True, "")
    rec.check(outcome)


async def test_external_abort_kills_a_program_that_ignores_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "trap-set"
    prog = script(
        tmp_path,
        "stubborn",
        f"#!/bin/sh\ntrap '' TERM\ntouch {ready}\nwhile true; do sleep 0.05; done\n",
    )
    rec = Recorder()
    request = ApplyRequest(str(tmp_path / "t.img"), "upgrade", (KEY,))
    applier = ExternalApplier(
        request, rec.on_progress, rec.on_message, program=prog, term_timeout=0.3
    )
    await applier.start()
    remember(applier)
    await applier.write(b"x" * 1000)
    async with asyncio.timeout(60):  # SIGTERM before the trap is set would just end it
        while not ready.exists():
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await applier.abort("cancelled by the user")
    assert 0.25 < time.monotonic() - started < 60  # the upper bound guards a hang only
    assert applier.outcome == ApplyOutcome(False, "cancelled by the user")
    assert rec.messages == []


# -- choosing the applier -----------------------------------------------------------------


def test_make_applier_chooses_by_kind_and_path(tmp_path: Path) -> None:
    request = ApplyRequest(str(tmp_path / "t.img"), "upgrade", (KEY,))

    def make(kind: str, path: str | None) -> BaseApplier:
        return make_applier(kind, request, print, print, fwup_path=path)  # type: ignore[arg-type]

    assert isinstance(make("builtin", NHLINK_FWUP), BuiltinApplier)
    auto = make("auto", NHLINK_FWUP)
    assert isinstance(auto, ExternalApplier) and auto.program == NHLINK_FWUP
    assert isinstance(make("auto", str(tmp_path / "no-fwup")), BuiltinApplier)
    forced = make("fwup", str(tmp_path / "no-fwup"))
    assert isinstance(forced, ExternalApplier) and forced.program == str(tmp_path / "no-fwup")
    with pytest.raises(ConfigError, match="unknown kind"):
        make("magic", None)


async def test_misuse_raises_state_error(tmp_path: Path) -> None:
    rec = Recorder()
    applier = new_applier("builtin", tmp_path / "t.img", "upgrade", rec)
    with pytest.raises(StateError):
        await applier.write(b"x")
    with pytest.raises(StateError):
        await applier.finish()
    await applier.abort("never started")
    with pytest.raises(StateError):
        await applier.start()
    assert applier.outcome == ApplyOutcome(False, "never started")

"""``nhlink-fwup -i -`` from a pipe, as ``curl URL | fwup`` and the daemon feed it.

The records and the differential tests give stdin as a file (fixed reads). From a pipe,
nhlink-fwup reads what the pipe holds into one buffer and hands the archive reader the
same 16 KiB reads in runs, framed or not: the result must be the one from a file. The
error texts for input cut short are fwup's (checked against fwup 1.16.0: the same bytes).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nhlink_dbus.fwup.pipes import widen_pipe

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "fwup"
AB = FIXTURES / "ab.fw"
KEY = FIXTURES / "fwup-key.pub"


def framed(data: bytes, frame: int, end: bool = True) -> bytes:
    out = b"".join(
        struct.pack(">I", len(data[i : i + frame])) + data[i : i + frame]
        for i in range(0, len(data), frame)
    )
    return out + (b"\0\0\0\0" if end else b"")


def apply_from_file(image: Path, stdin: bytes | None, *options: str) -> bytes:
    """nhlink-fwup on ``image`` with stdin a file holding ``stdin`` (fixed reads, as the
    records and the differential tests run it), or ``-i ab.fw`` when it is None; its
    stdout (checked to succeed)."""
    source = ["-i", str(AB)] if stdin is None else ["-i", "-"]
    argv = [sys.executable, "-m", "nhlink_dbus.fwup.cli", *options, "-a", "-d", str(image)]
    argv += ["-t", "complete", *source, "-p", str(KEY)]
    stdin_file = image.with_suffix(".stdin")
    stdin_file.write_bytes(stdin or b"")
    with stdin_file.open("rb") as fh:
        done = subprocess.run(argv, stdin=fh, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def apply(
    image: Path, stdin: bytes, *options: str, piece: int = 4093
) -> subprocess.CompletedProcess[bytes]:
    """nhlink-fwup on ``image``, the archive from ``stdin`` through a pipe written in
    ``piece``-byte writes (the reads then come as the writer's timing gives them)."""
    argv = [sys.executable, "-m", "nhlink_dbus.fwup.cli", *options, "-a", "-d", str(image)]
    argv += ["-t", "complete", "-i", "-", "-p", str(KEY)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None

    def feed() -> None:
        assert proc.stdin is not None
        try:
            for i in range(0, len(stdin), piece):
                proc.stdin.write(stdin[i : i + piece])
                proc.stdin.flush()
        except BrokenPipeError:
            pass  # it stopped reading (a failure): its output says why
        finally:
            proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()  # to its end: the program exited (stderr is a few lines)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    status = proc.wait(timeout=120)
    writer.join()
    return subprocess.CompletedProcess(argv, status, out, err)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("frame", [1000, 16384, 40000, 1 << 20])
def test_framed_from_a_pipe_is_the_same_as_from_a_file(tmp_path: Path, frame: int) -> None:
    # Framed input is read deterministically (each frame 16 KiB at a time), so every
    # progress packet must be the same however the pipe delivers it.
    stream = framed(AB.read_bytes(), frame)
    reference = apply_from_file(tmp_path / "file.img", stream, "--framing")
    piped = apply(tmp_path / "pipe.img", stream, "--framing")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == reference
    assert sha256(tmp_path / "pipe.img") == sha256(tmp_path / "file.img")


@pytest.mark.parametrize("piece", [1, 4093, 65536, 1 << 20])
def test_unframed_from_a_pipe_applies_the_same_image(tmp_path: Path, piece: int) -> None:
    apply_from_file(tmp_path / "file.img", None, "-q")
    piped = apply(tmp_path / "pipe.img", AB.read_bytes(), "-q", piece=piece)
    assert piped.returncode == 0, piped.stderr
    assert sha256(tmp_path / "pipe.img") == sha256(tmp_path / "file.img")


def test_framed_input_cut_inside_a_frame(tmp_path: Path) -> None:
    piped = apply(
        tmp_path / "t.img", framed(AB.read_bytes(), 65536, end=False)[:30000], "--framing"
    )
    assert piped.returncode == 1
    assert piped.stdout.endswith(b"\0\0\0\x1bER\0\0Truncated ZIP file body")


def test_framed_input_cut_inside_a_length(tmp_path: Path) -> None:
    piped = apply(tmp_path / "t.img", b"\0\0", "--framing")
    assert piped.returncode == 1
    assert piped.stdout.endswith(b"ER\0\0Error reading stdin")


def pipe_size(fd: int) -> int:
    import fcntl  # noqa: PLC0415

    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_the_stdin_pipe_grows_but_never_shrinks() -> None:
    r, w = os.pipe()
    try:
        assert pipe_size(r) < 1 << 20
        widen_pipe(r, 1 << 20)
        assert pipe_size(r) == 1 << 20
        widen_pipe(r, 128 << 10)  # already larger: left as it is
        assert pipe_size(r) == 1 << 20
    finally:
        os.close(r)
        os.close(w)


def test_a_file_or_dev_null_on_stdin_is_left_alone(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as fh:
        widen_pipe(fh.fileno(), 1 << 20)  # EBADF, suppressed
    with open(os.devnull, "rb") as fh:
        widen_pipe(fh.fileno(), 1 << 20)

"""Pipe sizing, shared by nhlink-fwup's stdin and the daemon's pipe into an external fwup."""

from __future__ import annotations


def widen_pipe(fd: int, size: int) -> None:
    """Let the pipe ``fd`` hold ``size`` bytes if it holds less (Linux's default is
    64 KiB): the archive then crosses in a few large writes and reads instead of
    thousands of small ones, each a wake-up of both ends. Best effort, and never
    smaller: Linux's default pipe-max-size is 1 MiB, and a pipe that cannot grow (or
    an fd that is no pipe) works as it is."""
    try:
        import fcntl  # noqa: PLC0415  (only where a pipe is read or written)
    except ImportError:  # not POSIX
        return
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < size:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError):  # EBADF: not a pipe; not Linux
        pass

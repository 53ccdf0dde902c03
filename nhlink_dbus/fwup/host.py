"""Host-touching fwup actions (``path_write``, ``pipe_write``, ``execute``) and
the ``require-path-*`` and ``require-execute`` checks. Writes and commands are reached
only with ``--unsafe`` (the engine checks), as in fwup; the path checks only read sysfs."""

from __future__ import annotations

import os

from nhlink_dbus.errors import FirmwareError

# subprocess is imported by the actions that run a command (few archives do): it is
# not worth its import time at the start of every apply.


class _PathWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fh = open(path, "wb")  # noqa: SIM115  (closed in commit/abort)
        except OSError:
            raise FirmwareError(f"path_write can't open '{path}'") from None

    def write(self, data: bytes) -> None:
        try:
            self.fh.write(data)
        except OSError:
            raise FirmwareError(f"path_write failed to write '{self.path}'") from None

    def commit(self) -> None:
        self.fh.close()

    def abort(self) -> None:
        self.fh.close()


class _PipeWriter:
    def __init__(self, command: str) -> None:
        self.command = command
        import subprocess  # noqa: PLC0415

        try:
            self.proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE)
        except OSError:
            raise FirmwareError(f"pipe_write can't run '{command}'") from None

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except OSError:
            raise FirmwareError(f"pipe_write failed to write '{self.command}'") from None

    def commit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise FirmwareError(f"command '{self.command}' returned an error to pipe_write")

    def abort(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def _block_dev_of_path(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return os.major(st.st_dev), os.minor(st.st_dev)


def _sysfs(devnum: tuple[int, int]) -> str:
    return os.path.realpath(f"/sys/dev/block/{devnum[0]}:{devnum[1]}")


class HostActions:
    """Real implementations of :class:`nhlink_dbus.core.fwup_apply.HostOps`."""

    def open_path(self, path: str) -> _PathWriter:
        return _PathWriter(path)

    def open_pipe(self, command: str) -> _PipeWriter:
        return _PipeWriter(command)

    def execute(self, command: str) -> None:
        import subprocess  # noqa: PLC0415

        try:
            status = subprocess.call(command, shell=True)
        except OSError:
            raise FirmwareError(f"execute couldn't run '{command}'") from None
        if status != 0:
            raise FirmwareError(f"'{command}' failed with exit status {status}")

    def succeeds(self, command: str) -> bool:
        """``require-execute``: the shell command ran and exited 0."""
        import subprocess  # noqa: PLC0415

        try:
            return subprocess.call(command, shell=True) == 0
        except OSError:
            return False

    def path_on_device(self, path: str, device: str) -> bool:
        """True if ``path``'s file system lives on ``device`` or one of its partitions."""
        try:
            part = _sysfs(_block_dev_of_path(path))
            st = os.stat(device)
        except OSError:
            return False
        disk = _sysfs((os.major(st.st_rdev), os.minor(st.st_rdev)))
        return part == disk or part.startswith(disk + "/")

    def path_at_offset(self, path: str, block_offset: int) -> bool:
        """True if ``path``'s file system is a partition starting at ``block_offset``."""
        try:
            with open(os.path.join(_sysfs(_block_dev_of_path(path)), "start")) as fh:
                return int(fh.read().strip()) == block_offset
        except (OSError, ValueError):
            return False

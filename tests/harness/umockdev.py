"""umockdev test beds: udev devices and uevents for the media tests, never the host's.

A umockdev test bed is a private ``/sys`` (and ``/dev``) tree; a process started with
``LD_PRELOAD=libumockdev-preload.so.0`` and ``UMOCKDEV_DIR=<its root>`` sees it instead
of the host's, and a ``pyudev.Monitor`` in that process receives the uevents the test
bed sends (../shared/ENVIRONMENT.md). Sending a uevent needs the sender to see the test
bed too, so the test bed lives in a process under the preload:

* :class:`Testbed` drives one through ``libumockdev.so.0`` with ctypes (use it in a
  process under the preload, e.g. a scenario script);
* :class:`UdevDriver` runs such a process (``python -m tests.harness.umockdev``) for a
  test that is not under the preload, and speaks to it in JSON lines; a daemon started
  with :meth:`UdevDriver.env` sees its devices.

:func:`usb_stick` writes the record of a USB stick (a removable disk and one partition
with a file system) whose device node is a real loop device the test attached: the
kernel mounts that, never a host device.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PRELOAD = "libumockdev-preload.so.0"
ROOT = Path(__file__).resolve().parents[2]


class Testbed:
    """A umockdev test bed in this process (which must run under the preload)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libumockdev.so.0")
        lib.umockdev_testbed_new.restype = ctypes.c_void_p
        lib.umockdev_testbed_get_root_dir.restype = ctypes.c_char_p
        lib.umockdev_testbed_get_root_dir.argtypes = [ctypes.c_void_p]
        lib.umockdev_testbed_add_from_string.restype = ctypes.c_bool
        lib.umockdev_testbed_add_from_string.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
        ]
        lib.umockdev_testbed_uevent.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.umockdev_testbed_remove_device.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._gobject = ctypes.CDLL("libgobject-2.0.so.0")
        self._gobject.g_object_unref.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._bed = lib.umockdev_testbed_new()
        self.root = lib.umockdev_testbed_get_root_dir(self._bed).decode()

    def add(self, record: str) -> None:
        """Add devices (umockdev-record text); umockdev sends ``add`` for each."""
        if not self._lib.umockdev_testbed_add_from_string(self._bed, record.encode(), None):
            raise RuntimeError("umockdev refused the device record")

    def uevent(self, sys_path: str, action: str) -> None:
        self._lib.umockdev_testbed_uevent(self._bed, sys_path.encode(), action.encode())

    def remove(self, sys_path: str) -> None:
        """Send ``remove`` and take the device out of the test bed."""
        self.uevent(sys_path, "remove")
        self._lib.umockdev_testbed_remove_device(self._bed, sys_path.encode())

    def close(self) -> None:
        if self._bed:
            self._gobject.g_object_unref(self._bed)  # removes the test bed's folder
            self._bed = None


def preload_env(root: str) -> dict[str, str]:
    """Environment additions for a process that must see the test bed at ``root``."""
    preload = os.environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{PRELOAD}:{preload}" if preload else PRELOAD, "UMOCKDEV_DIR": root}


class UdevDriver:
    """A :class:`Testbed` in a child process under the preload, driven from here."""

    def __init__(self, folder: Path) -> None:
        env = {**os.environ, "TMPDIR": str(folder), "PYTHONPATH": str(ROOT)}
        env["LD_PRELOAD"] = PRELOAD
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.umockdev"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        self.root = self._reply()["root"]

    def env(self) -> dict[str, str]:
        return preload_env(self.root)

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the umockdev driver stopped (exit {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def _send(self, **command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        self._reply()

    def add(self, record: str) -> None:
        self._send(op="add", record=record)

    def uevent(self, sys_path: str, action: str) -> None:
        self._send(op="uevent", path=sys_path, action=action)

    def remove(self, sys_path: str) -> None:
        self._send(op="remove", path=sys_path)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- records ---------------------------------------------------------------------------------

USB_PATH = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host7/target7:0:0/7:0:0:0"


def usb_stick(
    devnode: str, fs_type: str, *, label: str = "STICK", name: str = "sdx"
) -> tuple[str, str]:
    """(record, partition sysfs path) of a USB stick whose partition is ``devnode`` (a loop
    device attached by the test: its real device number goes into the record). No ``N:``
    line: the test bed makes no fake node, so the node is the real one."""
    rdev = os.stat(devnode).st_rdev
    major, minor = os.major(rdev), os.minor(rdev)
    disk = f"{USB_PATH}/block/{name}"
    part = f"{disk}/{name}1"
    record = f"""P: {disk.removeprefix("/sys")}
E: DEVNAME=/dev/{name}
E: DEVTYPE=disk
E: SUBSYSTEM=block
E: ID_BUS=usb
E: ID_MODEL=Test_Stick
E: MAJOR=8
E: MINOR=240
A: removable=1
A: size=65536

P: {part.removeprefix("/sys")}
E: DEVNAME={devnode}
E: DEVTYPE=partition
E: SUBSYSTEM=block
E: ID_BUS=usb
E: ID_FS_TYPE={fs_type}
E: ID_FS_USAGE=filesystem
E: ID_FS_LABEL={label}
E: MAJOR={major}
E: MINOR={minor}
A: partition=1
"""
    return record, part


def _serve() -> None:
    """The driver process: JSON commands on stdin, one JSON reply a line."""
    bed = Testbed()
    print(json.dumps({"root": bed.root}), flush=True)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if command["op"] == "add":
                    bed.add(command["record"])
                elif command["op"] == "uevent":
                    bed.uevent(command["path"], command["action"])
                elif command["op"] == "remove":
                    bed.remove(command["path"])
                else:
                    raise RuntimeError(f"unknown op {command['op']!r}")
            except Exception as exc:
                print(json.dumps({"error": str(exc)}), flush=True)
                continue
            print(json.dumps({"ok": True}), flush=True)
    finally:
        bed.close()


if __name__ == "__main__":
    _serve()

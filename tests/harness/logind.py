"""python-dbusmock's ``logind`` template on a private system bus, with helpers to inspect it.

The mock runs as its own process (``python -m dbusmock --system --template
logind``), so dbus-python and GLib are never imported into the test process.
It records ``Reboot`` calls (``org.freedesktop.DBus.Mock.GetMethodCalls``);
``Inhibit`` returns a real descriptor and is observed with ``ListInhibitors``,
which drops an entry once the descriptor is closed (../shared/ENVIRONMENT.md).
The helpers talk to it with real ``busctl``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from nhlink_dbus import names
from tests.harness.bus import PrivateSystemBus, busctl
from tests.harness.mock_process import MockProcess

# The interpreter that has python-dbusmock: the Debian-12 test venv has only the
# runtime libraries, so its runs point this at the main venv's interpreter.
DBUSMOCK_PYTHON = os.environ.get("NHLINK_DBUSMOCK_PYTHON", sys.executable)

MOCK_INTERFACE = "org.freedesktop.DBus.Mock"


@dataclass(frozen=True)
class InhibitorRecord:
    """One row of ``ListInhibitors`` (``a(ssssuu)``)."""

    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int


class LogindMock(MockProcess):
    """A running dbusmock logind; :meth:`stop` ends it."""

    def __init__(self, bus: PrivateSystemBus) -> None:
        self.bus = bus
        super().__init__(
            bus,
            DBUSMOCK_PYTHON,
            ["--template", "logind"],
            "logind-mock.log",
            lambda: self._call(names.LOGIND_LIST_INHIBITORS, check=False).returncode == 0,
        )

    # --- inspection -------------------------------------------------------------

    def reboot_calls(self) -> list[bool]:
        """The ``interactive`` argument of every ``Reboot`` call so far, in order."""
        return [args[0] for args in self.method_calls(names.LOGIND_REBOOT)]

    def method_calls(self, method: str) -> list[list[Any]]:
        """Arguments of every recorded call of a mocked ``method`` (not Inhibit)."""
        (rows,) = self._json(MOCK_INTERFACE, "GetMethodCalls", "s", method)
        return [[variant["data"] for variant in args] for _timestamp, args in rows]

    def inhibitors(self) -> list[InhibitorRecord]:
        (rows,) = self._json(names.LOGIND_MANAGER_INTERFACE, names.LOGIND_LIST_INHIBITORS)
        return [InhibitorRecord(*row) for row in rows]

    # --- behaviour ----------------------------------------------------------------

    def fail_reboot(
        self,
        times: int | None = None,
        error: str = "org.freedesktop.login1.OperationInProgress",
        message: str = "mock logind refuses to reboot",
    ) -> None:
        """Make ``Reboot`` answer with ``error`` (the first ``times`` calls, or always).

        Failed calls are still recorded by :meth:`reboot_calls`.
        """
        limit = -1 if times is None else times
        code = (
            "self.nhlink_reboot_failures = getattr(self, 'nhlink_reboot_failures', 0) + 1\n"
            f"if {limit} < 0 or self.nhlink_reboot_failures <= {limit}:\n"
            f"    raise dbus.exceptions.DBusException({message!r}, name={error!r})\n"
        )
        self._call(
            "AddMethod",
            "sssss",
            names.LOGIND_MANAGER_INTERFACE,
            names.LOGIND_REBOOT,
            "b",
            "",
            code,
            interface=MOCK_INTERFACE,
        )

    def clear_calls(self) -> None:
        self._call("ClearCalls", interface=MOCK_INTERFACE)

    # --- plumbing -----------------------------------------------------------------

    def _call(
        self,
        method: str,
        *signature_and_args: str,
        interface: str = names.LOGIND_MANAGER_INTERFACE,
        check: bool = True,
        json_output: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        return busctl(
            self.bus,
            "call",
            names.LOGIND_BUS_NAME,
            names.LOGIND_PATH,
            interface,
            method,
            *signature_and_args,
            check=check,
            json=json_output,
        )

    def _json(self, interface: str, method: str, *signature_and_args: str) -> list[Any]:
        done = self._call(method, *signature_and_args, interface=interface, json_output=True)
        data: list[Any] = json.loads(done.stdout)["data"]
        return data

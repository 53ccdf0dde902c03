"""A private system bus for tests: a real ``dbus-daemon`` with a system-type config.

The config follows a distribution's ``system.conf`` closely enough that policy
mistakes show up here (../shared/ENVIRONMENT.md, "A private system bus"):
everyone may connect; nobody may own names or call methods unless a policy
file says so; signals and requested replies flow; root may monitor. It
``<includedir>``s a folder holding copies of the repository's
``dbus-policy/*.conf`` and a test-only file letting root own
``org.freedesktop.login1`` (the dbusmock stand-in for logind).

The socket lives in a ``/tmp`` folder with mode 0755 so that ``setpriv``-ed
processes of other uids can reach it (pytest's own tmp base is 0700).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY_SOURCE = REPO / "dbus-policy"
START_TIMEOUT_S = 10.0

_DOCTYPE = (
    '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
)

# As systemd's own org.freedesktop.login1.conf: root owns and fully uses logind;
# everyone else may call the read-only/locking methods a kiosk needs. The mock's
# control interface (org.freedesktop.DBus.Mock) stays root-only.
LOGIND_TEST_POLICY = (
    _DOCTYPE
    + """<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.login1.Manager" send_member="ListInhibitors"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.login1.Manager" send_member="Inhibit"/>
    <allow send_destination="org.freedesktop.login1"
           send_interface="org.freedesktop.login1.Manager" send_member="CanReboot"/>
  </policy>
</busconfig>
"""
)


def bus_config(socket_path: Path, include_dir: Path) -> str:
    """The daemon's configuration (no <user>, <fork>, <pidfile>, <syslog>, service helper)."""
    return (
        _DOCTYPE
        + f"""<busconfig>
  <type>system</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>{include_dir}</includedir>
</busconfig>
"""
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (kill it if it does not go within 5 s) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PrivateSystemBus:
    """A running private bus; ``address`` is what DBUS_SYSTEM_BUS_ADDRESS must say."""

    address: str
    directory: Path
    policy_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """A copy of ``os.environ`` pointing system-bus clients at this bus."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def add_policy(self, name: str, text: str) -> None:
        """Drop a policy file into the included folder and reload the daemon."""
        (self.policy_dir / name).write_text(text)
        self.reload_config()

    def reload_config(self) -> None:
        busctl(
            self,
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ReloadConfig",
        )

    def log(self) -> str:
        """What the daemon wrote to stderr so far (for failure messages)."""
        return (self.directory / "dbus-daemon.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_system_bus(
    policy_source: Path | None = POLICY_SOURCE,
    extra_policies: Mapping[str, str] | None = None,
) -> PrivateSystemBus:
    """Start a private system-type ``dbus-daemon``; the caller must stop it.

    ``policy_source``'s ``*.conf`` files (the repository's ``dbus-policy/``; a
    missing or empty folder is fine) are copied into the included folder, with
    ``extra_policies`` (name → XML; default: the logind test policy).
    """
    directory = Path(tempfile.mkdtemp(prefix="nhlink-bus-", dir="/tmp"))
    os.chmod(directory, 0o755)
    policy_dir = directory / "policy.d"
    policy_dir.mkdir()
    if policy_source is not None and policy_source.is_dir():
        for conf in sorted(policy_source.glob("*.conf")):
            shutil.copyfile(conf, policy_dir / conf.name)
    policies = (
        {"test-login1.conf": LOGIND_TEST_POLICY} if extra_policies is None else extra_policies
    )
    for name, text in policies.items():
        (policy_dir / name).write_text(text)
    config = directory / "bus.conf"
    config.write_text(bus_config(directory / "system_bus_socket", policy_dir))
    with open(directory / "dbus-daemon.log", "wb") as log:
        process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    bus = PrivateSystemBus("", directory, policy_dir, process)
    try:
        bus.address = _read_address(process)
    except BaseException:
        bus.stop()
        raise
    return bus


def _read_address(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    line = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError("dbus-daemon printed no address in time")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"dbus-daemon exited with status {process.wait()}")
            line += chunk
    return line.decode().strip()


@contextlib.contextmanager
def private_system_bus(
    policy_source: Path | None = POLICY_SOURCE,
    extra_policies: Mapping[str, str] | None = None,
) -> Iterator[PrivateSystemBus]:
    bus = start_system_bus(policy_source, extra_policies)
    try:
        yield bus
    finally:
        bus.stop()


def busctl(
    bus: PrivateSystemBus,
    *args: str,
    as_user: int | None = None,
    check: bool = True,
    json: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run real ``busctl --system`` against ``bus``, optionally as another uid (``setpriv``)."""
    argv: list[str] = ["busctl", "--system", "--no-pager"]
    if json:
        argv.append("--json=short")
    argv.extend(args)
    if as_user is not None:
        argv = [
            "setpriv",
            f"--reuid={as_user}",
            f"--regid={as_user}",
            "--clear-groups",
            *argv,
        ]
    return subprocess.run(
        argv,
        env=bus.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=check,
    )

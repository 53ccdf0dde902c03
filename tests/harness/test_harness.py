"""The harness itself: the private bus behaves like a system bus, checked with real busctl."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from tests.harness import LogindMock, PrivateSystemBus, busctl, private_system_bus

NOBODY = 65534
LOGIN1 = ("org.freedesktop.login1", "/org/freedesktop/login1")
MANAGER = "org.freedesktop.login1.Manager"


def test_busctl_lists_the_mock(logind_mock: LogindMock) -> None:
    listing = json.loads(busctl(logind_mock.bus, "list", json=True).stdout)
    owners = {entry["name"]: entry["pid"] for entry in listing}
    assert owners["org.freedesktop.login1"] == logind_mock.process.pid


def test_system_bus_address_is_exported(system_bus: PrivateSystemBus) -> None:
    assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == system_bus.address
    assert system_bus.address.startswith(f"unix:path={system_bus.directory}/")
    # Other uids must reach the socket: /tmp folder, mode 0755.
    assert stat.S_IMODE(system_bus.directory.stat().st_mode) == 0o755


def test_nobody_may_call_an_allowed_method(logind_mock: LogindMock) -> None:
    done = busctl(
        logind_mock.bus, "call", *LOGIN1, MANAGER, "ListInhibitors", as_user=NOBODY, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "a(ssssuu) 0"), done.stderr


def test_default_policy_denies_other_method_calls(logind_mock: LogindMock) -> None:
    denied = [
        (MANAGER, "Reboot", "b", "false"),
        ("org.freedesktop.DBus.Mock", "GetMethodCalls", "s", "Reboot"),
    ]
    for interface, method, *args in denied:
        done = busctl(
            logind_mock.bus, "call", *LOGIN1, interface, method, *args, as_user=NOBODY, check=False
        )
        assert done.returncode != 0
        assert "Access denied" in done.stderr, done.stderr
    # ... and the refused Reboot never reached logind.
    assert logind_mock.reboot_calls() == []


def test_only_root_may_monitor(system_bus: PrivateSystemBus) -> None:
    become_monitor = (
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.Monitoring",
        "BecomeMonitor",
        "asu",
        "0",
        "0",
    )
    refused = busctl(system_bus, *become_monitor, as_user=NOBODY, check=False)
    assert refused.returncode != 0
    assert "Access denied" in refused.stderr
    assert busctl(system_bus, *become_monitor, check=False).returncode == 0


def test_policy_folder_copied_and_reloadable(tmp_path: Path) -> None:
    source = tmp_path / "dbus-policy"
    source.mkdir()
    (source / "org.example.Test.conf").write_text(
        "<busconfig><policy user='root'><allow own='org.example.Test'/></policy></busconfig>"
    )
    (source / "README").write_text("not a policy")
    with private_system_bus(policy_source=source, extra_policies={}) as bus:
        assert sorted(p.name for p in bus.policy_dir.iterdir()) == ["org.example.Test.conf"]
        bus.add_policy("extra.conf", "<busconfig/>")
        assert bus.process.poll() is None, bus.log()
    assert bus.process.returncode is not None
    assert not bus.directory.exists()


def test_missing_policy_folder_is_tolerated(tmp_path: Path) -> None:
    with private_system_bus(policy_source=tmp_path / "absent") as bus:
        assert sorted(p.name for p in bus.policy_dir.iterdir()) == ["test-login1.conf"]
        assert busctl(bus, "list").returncode == 0


def test_mock_stop_releases_the_name(logind_mock: LogindMock) -> None:
    logind_mock.stop()
    deadline = time.monotonic() + 60  # guards a hang only
    while "org.freedesktop.login1" in bus_names(logind_mock.bus):
        assert time.monotonic() < deadline, "the name outlived the mock"
        time.sleep(0.01)


def bus_names(bus: PrivateSystemBus) -> set[str]:
    return {entry["name"] for entry in json.loads(busctl(bus, "list", json=True).stdout)}

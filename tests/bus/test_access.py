"""Access control, enforced twice (DESIGN §2): by the policy file and by the service.

Other uids run real ``busctl`` or Debian's python (tests/bus/call_as.py) under
``setpriv``; the private bus loads the repository's dbus-policy/ file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from nhlink_dbus import names
from nhlink_dbus.bus.server import BusFace
from tests.bus.conftest import CALL_AS, NOBODY, GroupMember, as_user_argv, run_as
from tests.bus.fake_service import FakeLinkService
from tests.harness import PrivateSystemBus, busctl

# busctl arguments; InstallFile's fd is passed by call_as.py (this busctl cannot pass fds).
METHODS: dict[str, tuple[str, ...] | None] = {
    "Decide": ("sst", "u-1", "ignore", "0"),
    "GetPendingRequests": (),
    "CheckForUpdate": (),
    "InstallFile": None,
    "Reconnect": (),
    "SetReconnectBackoff": ("at", "1", "1000"),
}
SERVICE_DENIAL = "not allowed: run as root or as a member of group nhlink"

# A mistaken drop-in that opens the methods to everyone ("mandatory" comes last).
PERMISSIVE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="mandatory">
    <allow send_destination="org.nerveshub.Link"/>
  </policy>
</busconfig>
"""


def busctl_call(bus: PrivateSystemBus, member: str, uid: int) -> subprocess.CompletedProcess[str]:
    args = METHODS[member]
    assert args is not None
    return busctl(
        bus,
        "call",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
        member,
        *args,
        as_user=uid,
        check=False,
    )


async def test_nobody_is_refused_every_method_by_the_policy(
    system_bus: PrivateSystemBus, face: BusFace, service: FakeLinkService
) -> None:
    for member, args in METHODS.items():
        if args is None:
            continue
        result = await asyncio.to_thread(busctl_call, system_bus, member, NOBODY)
        assert result.returncode != 0, member
        assert "Access denied" in result.stderr, (member, result.stderr)
    # The exact error name, from a dbus-next client as nobody (with a real fd for InstallFile).
    result = await run_as(system_bus, NOBODY, str(CALL_AS), "methods")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(METHODS, names.DBUS_ERROR_ACCESS_DENIED)
    assert service.calls == []
    assert set(service.pending) == {"u-1", "a-1"}


async def test_nobody_is_refused_by_the_service_when_the_policy_is_opened(
    system_bus: PrivateSystemBus, face: BusFace, service: FakeLinkService
) -> None:
    await asyncio.to_thread(system_bus.add_policy, "zz-permissive-test.conf", PERMISSIVE)
    result = await run_as(system_bus, NOBODY, str(CALL_AS), "methods")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(METHODS, names.ERROR_PREFIX + "AccessDenied")
    reconnect = await asyncio.to_thread(busctl_call, system_bus, "Reconnect", NOBODY)
    assert reconnect.returncode != 0
    assert SERVICE_DENIAL in reconnect.stderr
    assert service.calls == []
    assert set(service.pending) == {"u-1", "a-1"}


async def test_a_member_of_group_nhlink_may_call_every_method(
    nhlink_member: GroupMember,
    system_bus: PrivateSystemBus,
    face: BusFace,
    service: FakeLinkService,
) -> None:
    result = await run_as(system_bus, nhlink_member.uid, str(CALL_AS), "methods", init_groups=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(METHODS, "ok")
    (decide,) = [c for c in service.calls if c[0] == "decide"]
    assert decide[4].uid == nhlink_member.uid


async def test_the_same_user_without_the_group_is_refused(
    nhlink_member: GroupMember,
    system_bus: PrivateSystemBus,
    face: BusFace,
    service: FakeLinkService,
) -> None:
    await asyncio.to_thread(system_bus.add_policy, "zz-permissive-test.conf", PERMISSIVE)
    result = await run_as(system_bus, nhlink_member.uid, str(CALL_AS), "methods")  # no groups
    assert json.loads(result.stdout) == dict.fromkeys(METHODS, names.ERROR_PREFIX + "AccessDenied")
    assert service.calls == []


async def test_everyone_may_read_properties_and_introspect(
    system_bus: PrivateSystemBus, face: BusFace
) -> None:
    get = await asyncio.to_thread(
        busctl,
        system_bus,
        "get-property",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
        "State",
        as_user=NOBODY,
    )
    assert get.stdout.strip() == 's "awaiting-decision"'
    introspect = await asyncio.to_thread(
        busctl, system_bus, "introspect", names.BUS_NAME, names.OBJECT_PATH, as_user=NOBODY
    )
    assert ".Decide" in introspect.stdout
    assert ".UpdateAvailable" in introspect.stdout


async def test_nobody_receives_signals(
    system_bus: PrivateSystemBus, face: BusFace, service: FakeLinkService
) -> None:
    argv = [*as_user_argv(NOBODY), "/usr/bin/python3", str(CALL_AS), "listen"]
    from tests.bus.conftest import system_python_env  # noqa: PLC0415

    process = await asyncio.create_subprocess_exec(
        *argv,
        env=system_python_env(system_bus),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 10)).strip() == b"ready"
        service.listeners[0].decision_made("u-1", "apply", 0, "timeout")
        out, err = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert json.loads(out) == {"DecisionMade": ["u-1", "apply", 0, "timeout"]}, err


async def test_only_root_may_own_the_name(system_bus: PrivateSystemBus) -> None:
    request = await asyncio.to_thread(
        busctl,
        system_bus,
        "call",
        names.DBUS_NAME,
        names.DBUS_PATH,
        names.DBUS_INTERFACE,
        "RequestName",
        "su",
        names.BUS_NAME,
        "4",
        as_user=NOBODY,
        check=False,
    )
    assert request.returncode != 0
    assert "Access denied" in request.stderr
    served = await run_as(system_bus, NOBODY, str(CALL_AS), "own")
    assert served.returncode == 0, served.stderr
    error = json.loads(served.stdout)["error"]
    assert error.startswith(f"not permitted to own {names.BUS_NAME}")


async def test_a_second_service_is_told_the_name_is_taken(
    system_bus: PrivateSystemBus, face: BusFace
) -> None:
    from nhlink_dbus.bus.server import serve  # noqa: PLC0415
    from nhlink_dbus.errors import BusNameError  # noqa: PLC0415

    with pytest.raises(BusNameError, match="already owned by another process"):
        await serve(FakeLinkService())

"""A member of the service's group may do what the shipped policy gives the group
(call the ``org.nerveshub.Link1`` methods, read properties) and nothing more: not
own the service's name, not set a property, not call it without naming the
interface. (Calling every method as a member, and uid 65534 being refused: test_access.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess

from nhlink_dbus import names
from nhlink_dbus.bus.server import BusFace
from tests.bus.conftest import CALL_AS, GroupMember, as_user_argv, run_as
from tests.bus.fake_service import FakeLinkService
from tests.harness import PrivateSystemBus


async def _busctl_as(bus: PrivateSystemBus, member: GroupMember, *args: str) -> str:
    argv = [*as_user_argv(member.uid, init_groups=True), "busctl", "--system", *args]
    done = await asyncio.to_thread(
        subprocess.run, argv, env=bus.env, capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout + done.stderr


async def test_a_member_may_not_own_the_name(
    system_bus: PrivateSystemBus, nhlink_member: GroupMember
) -> None:
    served = await run_as(system_bus, nhlink_member.uid, str(CALL_AS), "own", init_groups=True)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["error"].startswith(f"not permitted to own {names.BUS_NAME}")


async def test_a_member_may_read_but_not_set_properties(
    system_bus: PrivateSystemBus,
    nhlink_member: GroupMember,
    face: BusFace,
    service: FakeLinkService,
) -> None:
    state = await _busctl_as(
        system_bus, nhlink_member, "get-property", names.BUS_NAME, names.OBJECT_PATH,
        names.INTERFACE, "State",
    )  # fmt: skip
    assert state.strip() == 's "awaiting-decision"'
    refused = await _busctl_as(
        system_bus, nhlink_member, "set-property", names.BUS_NAME, names.OBJECT_PATH,
        names.INTERFACE, "State", "s", "idle",
    )  # fmt: skip
    assert "Access denied" in refused
    assert service.calls == []


async def test_a_member_must_name_the_interface(
    system_bus: PrivateSystemBus,
    nhlink_member: GroupMember,
    face: BusFace,
    service: FakeLinkService,
) -> None:
    """The group's rule is a send_interface rule: a call without an interface header
    (which dbus-next would dispatch by member name) never reaches the service."""
    done = await run_as(system_bus, nhlink_member.uid, "-c", NO_INTERFACE, init_groups=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == names.DBUS_ERROR_ACCESS_DENIED
    assert service.calls == []


# Run by Debian's python as the member: Reconnect without an interface header.
NO_INTERFACE = f"""
import asyncio
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType
from dbus_next.message import Message

async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(
        Message(destination="{names.BUS_NAME}", path="{names.OBJECT_PATH}", member="Reconnect")
    )
    print(reply.error_name or "ok")
    bus.disconnect()

asyncio.run(main())
"""

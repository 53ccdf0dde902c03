"""bus/access.py keeps one verdict per connection: a client calling a thousand
times a second costs one credentials lookup and, if refused, one log line."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest
from dbus_next.message import Message
from dbus_next.signature import Variant

from nhlink_dbus.bus.access import VERDICTS_KEPT, AccessPolicy
from nhlink_dbus.errors import AccessDenied


class CountingBus:
    """Answers GetConnectionCredentials like the bus daemon: uid by unique name."""

    def __init__(self, uids: dict[str, int]) -> None:
        self.uids = uids
        self.lookups: list[str] = []

    async def call(self, msg: Message) -> Message:
        assert msg.member == "GetConnectionCredentials"
        msg.serial = len(self.lookups) + 1
        (sender,) = msg.body
        self.lookups.append(sender)
        await asyncio.sleep(0)  # a round trip: other calls may arrive meanwhile
        if sender not in self.uids:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.NameHasNoOwner", "gone")
        body: dict[str, Any] = {
            "UnixUserID": Variant("u", self.uids[sender]),
            "ProcessID": Variant("u", os.getpid()),
        }
        return Message.new_method_return(msg, "a{sv}", [body])


def _policy(bus: CountingBus) -> AccessPolicy:
    return AccessPolicy(bus, group="nhlink-no-such-group")  # type: ignore[arg-type]


async def test_many_calls_of_one_connection_cost_one_lookup() -> None:
    bus = CountingBus({":1.5": 0})
    policy = _policy(bus)
    callers = await asyncio.gather(*(policy.check(":1.5") for _ in range(200)))
    callers += [await policy.check(":1.5") for _ in range(200)]
    assert {c.uid for c in callers} == {0}
    assert bus.lookups == [":1.5"]


async def test_a_refused_connection_is_looked_up_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "nhlink_dbus.bus.access")
    bus = CountingBus({":1.6": 65534})
    policy = _policy(bus)
    results = await asyncio.gather(
        *(policy.check(":1.6") for _ in range(100)), return_exceptions=True
    )
    for _ in range(100):
        with pytest.raises(AccessDenied):
            await policy.check(":1.6")
    assert all(isinstance(r, AccessDenied) for r in results)
    assert bus.lookups == [":1.6"]
    assert len([r for r in caplog.records if "refused a call" in r.getMessage()]) == 1


async def test_a_caller_that_left_is_not_remembered() -> None:
    bus = CountingBus({})
    policy = _policy(bus)
    for _ in range(2):
        with pytest.raises(AccessDenied):
            await policy.check(":1.7")
    assert bus.lookups == [":1.7", ":1.7"]  # no verdict about a connection that is gone


async def test_the_memory_is_bounded() -> None:
    bus = CountingBus({f":1.{n}": 0 for n in range(VERDICTS_KEPT + 10)})
    policy = _policy(bus)
    for n in range(VERDICTS_KEPT + 10):
        await policy.check(f":1.{n}")
    await policy.check(":1.0")  # forgotten: looked up again
    assert bus.lookups.count(":1.0") == 2
    await policy.check(f":1.{VERDICTS_KEPT + 9}")  # recent: remembered
    assert bus.lookups.count(f":1.{VERDICTS_KEPT + 9}") == 1

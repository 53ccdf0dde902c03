"""NH1 with a device clock an hour off (protocol.md §2.2: the hub refuses a token
signed more than 90 s before its own time, and accepts one from the future).

A device an hour behind is refused once; the refusal's ``Date`` tells it the hub's
time, and the next attempt signs with that (core.nh1.ClockHint, as nerves_hub_link
PR #434): it connects on the second attempt. A device an hour ahead connects at once.
"""

from __future__ import annotations

import re
import time

import pytest

from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.core.hub_session import Disconnected, Joined
from nhlink_dbus.core.nh1 import ClockHint, signing_time
from nhlink_devtools.hubsim import HubSim
from tests.aio.test_hub_client_sim import (
    DEV,
    DEVICE,
    Recorder,
    nh1_settings,
    running,
    short_backoff,
)

HOUR = 3600.0


def test_signing_time_takes_the_later_of_the_device_clock_and_the_hint() -> None:
    assert signing_time(1000.9, 5.0, None) == 1000
    hint = ClockHint(server_time=5000.0, received_at=10.0)
    assert signing_time(1000.0, 12.5, hint) == 5002  # the hub's time, moved on 2.5 s
    assert signing_time(9000.0, 12.5, hint) == 9000  # the device clock caught up: it wins


async def test_a_device_clock_an_hour_behind_connects_on_the_second_attempt(
    sim: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim),
        DEVICE,
        on_event=rec,
        reconnect_backoff=short_backoff([50]),
        wall_clock=lambda: time.time() - HOUR,
    )
    async with running(client):
        await rec.wait(Joined)
        device = await sim.wait_for_join(DEV)
    refused, accepted = sim.handshakes[:2]
    assert (refused.status, accepted.status) == (401, 101)
    assert "expired" in refused.reason
    (failure,) = rec.of(Disconnected)
    assert failure.reason == "the hub refused the credentials (HTTP 401)"
    assert device.auth is not None
    signed_at = int(device.auth.headers["x-nh-time"])
    assert abs(signed_at - time.time()) < 60  # the hub's time, not the device's
    (warning,) = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    skew = re.search(r"the hub's clock is ([+-]\d+) s from this device's", warning)
    assert skew is not None and abs(int(skew.group(1)) - HOUR) <= 2  # Date has whole seconds


async def test_a_device_clock_an_hour_ahead_is_accepted_at_once(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim), DEVICE, on_event=rec, wall_clock=lambda: time.time() + HOUR
    )
    async with running(client):
        await rec.wait(Joined)
    assert [h.status for h in sim.handshakes] == [101]
    assert not rec.of(Disconnected)


async def test_a_wrong_secret_is_not_mended_by_the_hint(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim, secret="wrong"),
        DEVICE,
        on_event=rec,
        reconnect_backoff=short_backoff([20]),
        wall_clock=lambda: time.time() - HOUR,
    )
    async with running(client):
        await rec.wait(Disconnected, count=3)
    assert {h.status for h in sim.handshakes} == {401}

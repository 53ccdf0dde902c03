"""Two devices with one identifier: the server closes the older socket (code 1000)
each time the other connects. The back-off must not be reset by those short
connections (core/backoff.py: only a connection that lasted twice the longest
delay resets it), so the pair settles at the back-off's pace instead of storming.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator

from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.core.backoff import ReconnectBackoff
from nhlink_dbus.core.hub_session import Connected, DeviceInfo, Disconnected, HubSession
from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret
from tests.aio.test_hub_client_sim import DEV, DEVICE, KEY, SECRET, Recorder, nh1_settings


class SlipstreamBackoff(ReconnectBackoff):
    """The rule of nerves_hub_link 2.5.2 (Slipstream): every upgrade resets the list."""

    def stable_after_ms(self) -> int:
        return 0


def _kicked_pair(backoff_type: type[ReconnectBackoff], seconds: float) -> list[list[float]]:
    """Two sessions sharing an identifier on a fake clock; each connection closes the
    other's (the server keeps the newer). Returns each one's connection times."""
    seeds = iter(range(10_000))
    sessions = [
        HubSession(
            DeviceInfo({}, "1.16.0"),
            heartbeat_interval_ms=30_000,
            rejoin_after_ms=5_000,
            backoff=backoff_type(rng_factory=lambda: random.Random(next(seeds))),
        )
        for _ in range(2)
    ]
    connects: list[list[float]] = [[], []]
    connected: int | None = None
    now = 0.0
    # the second device starts a little later, as two boxes never boot together
    sessions[1].connect_at = 0.3
    while True:
        index = min((0, 1), key=lambda i: sessions[i].connect_at)
        now = max(now, sessions[index].connect_at)
        if now > seconds:
            return connects
        session = sessions[index]
        session.begin_attempt(now)
        session.connected(now)
        connects[index].append(now)
        if connected is not None:
            sessions[connected].connection_lost(now, "connection closed (code 1000)")
        connected = index
        session.connect_at = float("inf")  # up until the other one kicks it


def test_a_kicked_pair_climbs_to_the_last_delay_and_stays_there() -> None:
    storm = _kicked_pair(SlipstreamBackoff, 20.0)
    settled = _kicked_pair(ReconnectBackoff, 20.0)
    # Slipstream's rule: every connection resets the list, ~1 s apart for ever.
    assert sum(map(len, storm)) >= 14
    # Ours: 1, 2, 4, 8 s (+ jitter) between one device's connections: at most 5 in 20 s.
    assert all(len(times) <= 5 for times in settled), settled
    hour = _kicked_pair(ReconnectBackoff, 3600.0)
    for times in hour:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # After the climb, one device reconnects once per round: its own last delay
        # plus the other's (each 60..90 s), where Slipstream's rule gave 1..1.5 s.
        assert all(120 <= gap <= 180.5 for gap in gaps[7:]), gaps
        assert 20 <= len(times) <= 35


@contextlib.asynccontextmanager
async def _running(*clients: HubClient) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(client.run()) for client in clients]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_two_clients_with_one_identifier_follow_the_back_off() -> None:
    """The real simulator closes the older socket (1000) whenever the other connects."""
    config = HubSimConfig(shared_secrets=[SharedSecret(KEY, SECRET)], health_check=False)
    delays = [100, 200, 400, 800]  # stable after 1.6 s; a kicked connection lasts <= 0.8 s
    async with HubSim(config) as sim:
        recorders = [Recorder(), Recorder()]
        clients = [HubClient(nh1_settings(sim), DEVICE, on_event=rec) for rec in recorders]
        for client in clients:
            client.set_backoff(delays)
        async with _running(*clients):
            for rec in recorders:
                await rec.wait(Disconnected, count=6, timeout=60)
        device = sim.devices[DEV]
    for rec in recorders:
        lost = [
            (t, e)
            for t, e in zip(rec.times, rec.events, strict=True)
            if isinstance(e, Disconnected)
        ]
        began = [t for t, e in zip(rec.times, rec.events, strict=True) if isinstance(e, Connected)]
        waits = [e.reconnect_in_ms for _, e in lost][:6]
        assert all("1000" in e.reason for _, e in lost)
        # Up the list, never back down unless the connection that ended had lasted
        # 1.6 s (on a busy machine the other client may be that late: then it is right).
        for n in range(1, len(waits)):
            if waits[n] < waits[n - 1]:
                lasted = lost[n][0] - max(t for t in began if t <= lost[n][0])
                assert lasted >= 1.6, (waits, lasted)
        assert 800 in waits, waits  # the top of the list is reached: no storm
    assert device.disconnects.count("replaced by a newer connection") >= 11

"""HubClient against nhlink-hub-sim on 127.0.0.1: the "must show" of issue 3.

Real WebSocket, real TLS, real NH1 verification; short intervals. Runs on the
current websockets release and on Debian 12's 10.4 (``make pytest-deb12``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core.backoff import delay_list
from nhlink_dbus.core.hub_session import (
    ChannelDown,
    Connected,
    DeviceInfo,
    Disconnected,
    Joined,
    SessionEvent,
)
from nhlink_dbus.core.hub_settings import HubSettings, SharedSecretAuth, TlsAuth
from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret

DEV = "kiosk-0042"
KEY = "nhd_" + "k" * 43
SECRET = "s" * 43
KV = {
    "nerves_fw_uuid": "8a8b902c-d1a9-58aa-6111-04ab57c2f2a8",
    "nerves_fw_product": "nerves_hub",
    "nerves_fw_architecture": "x86_64",
    "nerves_fw_version": "0.1.0",
    "nerves_fw_platform": "x86_84",
}
DEVICE = DeviceInfo(KV, "1.10.2")
FIXTURES = Path("/work/shared/fixtures/fwup")

E = TypeVar("E")


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


class Recorder:
    """Collects the client's events; lets a test wait for one kind."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)
        self.times.append(time.monotonic())
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, kind: type[E], count: int = 1, timeout: float = 60.0) -> list[E]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


@contextlib.asynccontextmanager
async def running(client: HubClient) -> AsyncIterator[HubClient]:
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def nh1_settings(sim: HubSim, secret: str = SECRET, **kw: Any) -> HubSettings:
    kw.setdefault("heartbeat_interval_ms", 100)
    kw.setdefault("rejoin_after_ms", 50)
    return HubSettings(url=sim.ws_url, identifier=DEV, auth=SharedSecretAuth(KEY, secret), **kw)


def short_backoff(delays: list[int]) -> Callable[[], list[int]]:
    return lambda: delays


@pytest.fixture
async def sim() -> AsyncIterator[HubSim]:
    config = HubSimConfig(
        shared_secrets=[SharedSecret(KEY, SECRET)],
        fwup_public_keys=["fwkey=="],
        archive_public_keys=["arkey=="],
    )
    async with HubSim(config) as hub:
        yield hub


async def test_nh1_connect_join_params_heartbeats_and_every_event(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(nh1_settings(sim), DEVICE, on_event=rec)
    async with running(client):
        device = await sim.wait_for_join(DEV)
        assert device.auth is not None and device.auth.auth == "nh1"
        assert device.auth.path == "/device-socket/websocket"
        assert device.join_params == KV | {
            "fwup_version": "1.10.2",
            "device_api_version": "2.4.0",
            "console_version": "2.0.0",
            "fwup_public_keys": "on_connect",
            "archive_public_keys": "on_connect",
            "currently_downloading_uuid": None,
        }
        (join,) = device.joins
        assert (join.join_ref, join.ref) == ("1", "1")
        await rec.wait(Joined)
        # the after-join pushes of §3.2, then check_health (tolerated)
        await rec.wait(hm.ArchivePublicKeys)
        assert rec.of(hm.FwupPublicKeys) == [hm.FwupPublicKeys(("fwkey==",))]
        assert rec.of(hm.ArchivePublicKeys) == [hm.ArchivePublicKeys(("arkey==",))]

        # heartbeats every 100 ms on "phoenix", refs from the shared counter
        def heartbeats() -> list[Any]:
            return [f for f in device.frames_received if f.topic == "phoenix"]

        beats = await sim.wait_for(lambda: (h := heartbeats()) and len(h) >= 3 and h)
        assert [b.event for b in beats] == ["heartbeat"] * len(beats)
        assert all(b.join_ref is None and b.payload == {} for b in beats)
        refs = [int(b.ref or 0) for b in beats]
        assert refs == sorted(refs) and refs[0] >= 2

        # every server event type
        await sim.offer_update(DEV, FIXTURES / "simple.fw", deployment_id=7)
        await sim.offer_archive(DEV, FIXTURES / "ab.fw")
        await sim.push(DEV, "fwup_public_keys", {"keys": ["k2"]})
        await sim.push(DEV, "archive_public_keys", {"keys": []})
        await sim.push(DEV, "check_health", {})
        await sim.push(DEV, "extensions:get", {})
        await sim.push(DEV, "totally_unknown", {"a": [1]})
        await sim.push(DEV, "scripts/run", {"text": "IO.puts(:hi)", "ref": "AbCdEg"})
        await sim.push(DEV, "identify", {})
        await sim.push(DEV, "reboot", {})
        await rec.wait(hm.Reboot)
        (update,) = rec.of(hm.UpdateInfo)
        assert update.firmware_url == sim.updates[DEV]["firmware_url"]
        assert update.deployment_id == 7
        assert update.firmware_meta.uuid == sim.updates[DEV]["firmware_meta"]["uuid"]
        (archive,) = rec.of(hm.ArchiveInfo)
        assert archive.url == sim.archives[DEV]["url"] and archive.size > 0
        assert rec.of(hm.FwupPublicKeys)[-1] == hm.FwupPublicKeys(("k2",))
        assert rec.of(hm.ArchivePublicKeys)[-1] == hm.ArchivePublicKeys(())
        assert len(rec.of(hm.Identify)) == 1
        # scripts/run is answered in the reply shape, honestly
        (answer,) = await sim.wait_for_event(DEV, "scripts/run")
        assert answer == {"ref": "AbCdEg", "output": hm.SCRIPTS_UNSUPPORTED_OUTPUT, "return": "nil"}

        # device pushes
        assert client.push_fwup_progress(0) is not None
        client.push_fwup_progress(100)
        client.push_status_update("fwup error boom")
        client.push_rebooting()
        progress = await sim.wait_for_event(DEV, "fwup_progress", count=2)
        assert progress == [{"value": 0}, {"value": 100}]
        assert await sim.wait_for_event(DEV, "status_update") == [{"status": "fwup error boom"}]
        assert await sim.wait_for_event(DEV, "rebooting") == [{}]
        pushes = [f for f in device.frames_received if f.event == "fwup_progress"]
        assert all(f.join_ref is None and f.topic == "device" for f in pushes)

        # check_update_available, answered by ref
        found = await client.check_update_available(timeout=60)
        assert found is not None and found.firmware_url == update.firmware_url
        sim.clear_update(DEV)
        assert await client.check_update_available(timeout=60) is None
    assert not rec.of(Disconnected)
    assert not device.disconnects or device.disconnects[-1].startswith("closed by device")


async def test_mutual_tls_with_sni_and_server_verification(tmp_path: Path) -> None:
    config = HubSimConfig(tls=True, cert_dir=tmp_path / "pki")
    async with HubSim(config) as hub:
        assert hub.pki is not None
        pair = hub.issue_device_cert(DEV)
        auth = TlsAuth(str(pair.cert), str(pair.key), cafile=str(hub.pki.ca.cert), sni="localhost")
        settings = HubSettings(url=hub.ws_url, identifier=DEV, auth=auth, heartbeat_interval_ms=100)
        assert settings.url.startswith("wss://")
        rec = Recorder()
        async with running(HubClient(settings, DEVICE, on_event=rec)):
            device = await hub.wait_for_join(DEV)
            assert device.auth is not None and device.auth.auth == "cert"
            assert device.auth.path == "/socket/websocket"
            assert device.join_params is not None
            assert device.join_params["nerves_fw_uuid"] == KV["nerves_fw_uuid"]
            await rec.wait(Joined)
            await hub.push(DEV, "identify", {})
            await rec.wait(hm.Identify)

        # without the CA the server certificate is not trusted (system store only)
        untrusted = HubSettings(
            url=hub.ws_url, identifier=DEV, auth=TlsAuth(str(pair.cert), str(pair.key))
        )
        rec2 = Recorder()
        client = HubClient(untrusted, DEVICE, on_event=rec2, reconnect_backoff=short_backoff([20]))
        async with running(client):
            (failure, *_) = await rec2.wait(Disconnected)
        assert "TLS" in failure.reason or "certificate" in failure.reason.lower()
        assert not rec2.of(Connected)
        # a name the certificate does not carry fails too
        wrong_name = HubSettings(
            url=hub.ws_url,
            identifier=DEV,
            auth=TlsAuth(str(pair.cert), str(pair.key), str(hub.pki.ca.cert), sni="hub.example"),
        )
        rec3 = Recorder()
        client = HubClient(wrong_name, DEVICE, on_event=rec3, reconnect_backoff=short_backoff([20]))
        async with running(client):
            await rec3.wait(Disconnected)
        assert not rec3.of(Connected)


async def test_nh1_over_wss_verifies_the_server(tmp_path: Path) -> None:
    config = HubSimConfig(tls=True, cert_dir=tmp_path, shared_secrets=[SharedSecret(KEY, SECRET)])
    async with HubSim(config) as hub:
        assert hub.pki is not None
        settings = nh1_settings(hub)
        rec = Recorder()
        client = HubClient(settings, DEVICE, on_event=rec, reconnect_backoff=short_backoff([20]))
        async with running(client):
            await rec.wait(Disconnected)  # not trusted by the system store
        assert not rec.of(Connected)
        trusted = nh1_settings(hub, cafile=str(hub.pki.ca.cert))
        rec = Recorder()
        async with running(HubClient(trusted, DEVICE, on_event=rec)):
            device = await hub.wait_for_join(DEV)
            assert device.auth is not None and device.auth.auth == "nh1"


async def test_wrong_secret_gets_401_and_reconnects_follow_the_delay_list(sim: HubSim) -> None:
    delays = [60, 120, 240]
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim, secret="wrong"),
        DEVICE,
        on_event=rec,
        reconnect_backoff=short_backoff(delays),
    )
    async with running(client):
        await rec.wait(Disconnected, count=5, timeout=60)
    failures = rec.of(Disconnected)[:5]
    assert [f.reconnect_in_ms for f in failures] == [60, 120, 240, 240, 240]
    assert all("401" in f.reason for f in failures)
    refused = [h for h in sim.handshakes if h.status == 401]
    assert len(refused) >= 5
    gaps = [b.time - a.time for a, b in itertools.pairwise(refused[:5])]
    for gap, expected in zip(gaps, [0.06, 0.12, 0.24, 0.24], strict=True):
        assert expected - 0.005 <= gap <= expected + 2.0, gaps  # never early; late only by load
    assert DEV not in sim.devices or not sim.devices[DEV].connected


async def test_401_backoff_with_delay_list_semantics_end_to_end(sim: HubSim) -> None:
    """delay_list(20, 100, 0.5), re-drawn per disconnect: [j(20), j(40), j(80), j(100), …]."""
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim, secret="wrong"),
        DEVICE,
        on_event=rec,
        reconnect_backoff=lambda: delay_list(20, 100, 0.5),
    )
    async with running(client):
        await rec.wait(Disconnected, count=6, timeout=60)
    waits = [d.reconnect_in_ms for d in rec.of(Disconnected)[:6]]
    for wait, base in zip(waits, [20, 40, 80, 100, 100, 100], strict=True):
        assert base <= wait <= base * 1.5, waits
    refused = [h for h in sim.handshakes if h.status == 401][:6]
    gaps = [b.time - a.time for a, b in itertools.pairwise(refused)]
    for gap, wait in zip(gaps, waits, strict=False):
        assert wait / 1000 - 0.005 <= gap <= wait / 1000 + 2.0, (gaps, waits)  # never early


async def test_set_backoff_replaces_the_list_and_a_lasting_connection_resets_it(
    sim: HubSim,
) -> None:
    rec = Recorder()
    client = HubClient(nh1_settings(sim, secret="wrong"), DEVICE, on_event=rec)
    client.set_backoff([30])
    async with running(client):
        await rec.wait(Disconnected, count=3)
        assert {d.reconnect_in_ms for d in rec.of(Disconnected)} == {30}
    assert client.session.backoff.attempt >= 3
    rec = Recorder()
    good = HubClient(nh1_settings(sim), DEVICE, on_event=rec)
    good.set_backoff([30, 60])  # a connection lasting 2 x 60 ms resets the index
    good.session.backoff.attempt = 5
    async with running(good):
        device = await sim.wait_for_join(DEV)
        # The connection must outlast 120 ms on the client's clock: time is the subject
        # here (the real one: this client has no clock to inject); 0.2 s is enough.
        await asyncio.sleep(0.2)
        await sim.close_device(DEV, 1000)
        (lost,) = await rec.wait(Disconnected)
        assert lost.reconnect_in_ms == 30 and good.session.backoff.attempt == 1
        await sim.wait_for(lambda: device.connections == 2 and device.joined)


async def test_killed_and_restarted_server_is_reconnected(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim), DEVICE, on_event=rec, reconnect_backoff=short_backoff([50])
    )
    async with running(client):
        device = await sim.wait_for_join(DEV)
        await sim.stop()  # TCP abort, no close frame
        # One refused attempt at least while the server is down (waited for, not slept).
        await rec.wait(Disconnected, count=2)
        await sim.start()
        await sim.wait_for(lambda: device.connections == 2 and device.joined)
        await rec.wait(Joined, count=2)
        assert client.joined
        # the join after the reconnect is a fresh connection: refs restart at "1"
        assert (device.joins[-1].join_ref, device.joins[-1].ref) == ("1", "1")
        assert any("cannot reach" in d.reason for d in rec.of(Disconnected)[1:])


async def test_server_close_and_drain_are_reconnected(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim), DEVICE, on_event=rec, reconnect_backoff=short_backoff([20])
    )
    async with running(client):
        device = await sim.wait_for_join(DEV)
        await sim.drain(1012)
        await sim.wait_for(lambda: device.connections == 2 and device.joined)
        assert "1012" in rec.of(Disconnected)[0].reason
        sim.break_connection(DEV)
        await sim.wait_for(lambda: device.connections == 3 and device.joined)


@pytest.mark.parametrize("event", ["phx_error", "phx_close"])
async def test_phx_error_and_phx_close_are_rejoined(sim: HubSim, event: str) -> None:
    rec = Recorder()
    client = HubClient(nh1_settings(sim, rejoin_after_ms=50), DEVICE, on_event=rec)
    async with running(client):
        device = await sim.wait_for_join(DEV)
        client.set_downloading("f00d-uuid")
        started = time.monotonic()
        await sim.channel_error(DEV, event)
        (down,) = await rec.wait(ChannelDown)
        assert down == ChannelDown(event, 50)
        await sim.wait_for(lambda: len(device.joins) == 2 and device.joined)
        assert time.monotonic() - started >= 0.045
        rejoin = device.joins[-1]
        assert rejoin.join_ref == rejoin.ref and rejoin.join_ref != "1"
        # §14: currently_downloading_uuid on re-joins too (2.5.2 drops it)
        assert rejoin.payload["currently_downloading_uuid"] == "f00d-uuid"
        assert device.connections == 1  # a re-join, not a reconnect
        await rec.wait(Joined, count=2)
        await sim.push(DEV, "identify", {})
        await rec.wait(hm.Identify)


async def test_refused_join_is_retried_after_rejoin_after(sim: HubSim) -> None:
    sim.config.join_reply = "error"
    rec = Recorder()
    async with running(HubClient(nh1_settings(sim, rejoin_after_ms=40), DEVICE, on_event=rec)):
        downs = await rec.wait(ChannelDown, count=2)
        assert downs[0] == ChannelDown("join refused: could not connect", 40)
        sim.config.join_reply = "ok"
        device = await sim.wait_for_join(DEV)
        assert len(device.joins) >= 3 and device.connections == 1


async def test_unanswered_heartbeat_closes_and_reconnects(sim: HubSim) -> None:
    rec = Recorder()
    client = HubClient(
        nh1_settings(sim, heartbeat_interval_ms=50),
        DEVICE,
        on_event=rec,
        reconnect_backoff=short_backoff([20]),
    )
    async with running(client):
        device = await sim.wait_for_join(DEV)
        sim.config.reply_heartbeats = False
        (gone,) = await rec.wait(Disconnected)
        assert gone.reason == "heartbeat_timeout"
        sim.config.reply_heartbeats = True
        await sim.wait_for(lambda: device.connections == 2 and device.joined)


async def test_legacy_join_reply_and_fastlane_pushes(sim: HubSim) -> None:
    sim.config.join_reply = "legacy"
    sim.config.fastlane = True
    await sim.offer_update(DEV, FIXTURES / "simple.fw")  # device away: kept for the join reply
    rec = Recorder()
    async with running(HubClient(nh1_settings(sim), DEVICE, on_event=rec)):
        (update,) = await rec.wait(hm.UpdateInfo)
        assert update.firmware_url == sim.updates[DEV]["firmware_url"]
        await sim.push(DEV, "identify", {})  # [null, null, "device", "identify", {}]
        await rec.wait(hm.Identify)
        device = sim.devices[DEV]
        assert device.frames_sent[-1].join_ref is None


async def test_reconnect_request_and_fresh_nh1_headers_per_attempt(sim: HubSim) -> None:
    now = [1_700_000_000.0]
    rec = Recorder()
    sim.config.clock = lambda: now[0]
    client = HubClient(
        nh1_settings(sim),
        DEVICE,
        on_event=rec,
        reconnect_backoff=short_backoff([20]),
        wall_clock=lambda: now[0],
    )
    async with running(client):
        device = await sim.wait_for_join(DEV)
        assert device.auth is not None
        first_time = device.auth.headers["x-nh-time"]
        now[0] += 600  # ten minutes later: a token signed earlier would be expired
        client.reconnect()
        await sim.wait_for(lambda: device.connections == 2 and device.joined)
        assert device.auth.headers["x-nh-time"] == str(int(now[0])) != first_time
        assert rec.of(Disconnected)[0].reason == "reconnect requested"


async def test_no_secret_or_signed_url_in_logs(
    sim: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    sim.config.clock = lambda: 1_700_000_000.0
    settings = nh1_settings(sim)
    client = HubClient(settings, DEVICE, on_event=rec, wall_clock=lambda: 1_700_000_000.0)
    assert isinstance(settings.auth, SharedSecretAuth)
    signature = dict(settings.auth.headers(DEV, 1_700_000_000))["x-nh-signature"]
    async with running(client):
        await sim.wait_for_join(DEV)
        await sim.offer_update(DEV, FIXTURES / "simple.fw")
        await rec.wait(hm.UpdateInfo)
    url = sim.updates[DEV]["firmware_url"]
    query = url.split("?", 1)[1]
    text = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("nhlink_dbus.aio") or r.name.startswith("nhlink_dbus.core")
    )
    assert "connected to" in text and "< " in text  # DEBUG frames were logged
    for secret in (SECRET, signature, signature.split(".")[-1], query):
        assert secret not in text
    assert str(rec.of(hm.UpdateInfo)[0]).find(query) == -1

"""nhlink-hub-sim's newer device API (nhlink_devtools/hubsim/device_api.py), with a raw
WebSocket client: the extensions handshake and detach, health checks on an interval,
update modes, the penalty box, partial checksums, and the server's delta rule."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from nhlink_devtools.hubsim import HubSim
from nhlink_devtools.hubsim.device_api import device_update_type
from tests.hubsim.conftest import DEVICE_ID, nh1_headers
from tests.hubsim.wsclient import open_ws, recv, send

JOIN = {
    "nerves_fw_uuid": "8a8b0000-0000-0000-0000-000000000000",
    "nerves_fw_version": "0.1.0",
    "fwup_version": "1.16.0",
    "device_api_version": "2.4.0",
}


async def joined(sim: HubSim, params: dict[str, Any] | None = None) -> Any:
    ws = await open_ws(f"{sim.ws_url}/device-socket/websocket?vsn=2.0.0", nh1_headers())
    await send(ws, "1", "1", "device", "phx_join", JOIN if params is None else params)
    assert (await recv(ws))[3] == "phx_reply"
    return ws


@pytest.mark.parametrize(
    ("device", "needed", "kind"),
    [
        ("1.16.0", None, "delta"),  # the default needs 1.13.0 (@very_safe_version)
        ("1.13.0", None, "delta"),
        ("1.12.9", None, "full"),
        (None, None, "full"),  # no fwup_version: counted as 0.2.0 (@oldest_version)
        ("1.16.0", "1.16.1", "full"),
        ("1.16.0-rc.1", "1.16.0", "full"),  # a pre-release sorts before its release
        ("2.0.0", "1.16.0", "delta"),
        ("1.16", None, "full"),  # not semver: Version.compare raises, the rescue says full
        ("fwup 1.16.0", None, "full"),
    ],
)
def test_device_update_type_is_the_servers_rule(
    device: str | None, needed: str | None, kind: str
) -> None:
    assert device_update_type(device, needed) == kind
    assert device_update_type(device, needed, delta_exists=False) == "full"


async def test_extensions_handshake_health_on_an_interval_and_detach(sim: HubSim) -> None:
    sim.config.extensions = ("health",)
    sim.config.health_interval_s = 0.05
    ws = await joined(sim)
    mode = {"mode": "automatic", "managed_updates_allowed": False}
    assert await recv(ws) == ["1", None, "device", "update_mode", mode]
    assert await recv(ws) == ["1", None, "device", "extensions:get", {}]
    await send(ws, "2", "2", "extensions", "phx_join", {"health": "0.0.1", "geo": "0.0.1"})
    # geo is offered but not enabled on this hub: only health attaches.
    ok = {"status": "ok", "response": ["health"]}
    assert await recv(ws) == ["2", "2", "extensions", "phx_reply", ok]
    await send(ws, None, "3", "extensions", "geo:attached", {})
    assert (await recv(ws))[4] == {"status": "error", "response": "detach"}
    await send(ws, None, "4", "extensions", "health:attached", {})
    for _ in range(3):  # at once, then every interval
        assert (await recv(ws))[2:4] == ["extensions", "health:check"]
    await send(ws, None, "5", "extensions", "health:detached", {})
    device = sim.devices[DEVICE_ID]
    await sim.wait_for(lambda: not device.api.extensions_attached)
    assert device.api.health_checks_sent >= 3
    await ws.close()


async def test_old_clients_get_neither_extensions_nor_update_mode(sim: HubSim) -> None:
    ws = await joined(sim, JOIN | {"device_api_version": "2.1.0"})
    await send(ws, None, "2", "phoenix", "heartbeat", {})
    assert (await recv(ws))[2] == "phoenix"  # nothing was pushed before the heartbeat reply
    await ws.close()


async def test_update_modes_check_request_and_the_penalty_box(sim: HubSim, tmp_path: Path) -> None:
    sim.config.extensions = ()
    firmware = tmp_path / "x.fw"
    data = bytes(range(256)) * 5000  # 1.22 MiB: two parts
    firmware.write_bytes(data)
    await sim.set_update_mode(DEVICE_ID, "device_managed", allowed=False)
    ws = await joined(sim)
    assert (await recv(ws))[4] == {"mode": "device_managed", "managed_updates_allowed": False}
    payload = await sim.offer_update(DEVICE_ID, firmware, push=False)
    assert payload["size"] == len(data)
    assert payload["checksum"] == hashlib.sha256(data).hexdigest().upper()
    assert payload["partials_checksums"] == [
        hashlib.sha256(data[: 1 << 20]).hexdigest().upper(),
        hashlib.sha256(data[1 << 20 :]).hexdigest().upper(),
    ]
    await send(ws, None, "2", "device", "check_update", {})
    answer = await recv(ws)
    assert answer[3] == "update_available" and answer[4]["available"] is True
    assert "firmware_url" not in answer[4]
    # set_update_mode: device_managed needs the grant, off is the operator's alone.
    await send(ws, None, "3", "device", "set_update_mode", {"mode": "automatic"})
    assert (await recv(ws))[4]["mode"] == "automatic"
    await send(ws, None, "4", "device", "set_update_mode", {"mode": "device_managed"})
    assert (await recv(ws))[4]["mode"] == "automatic"
    await send(ws, None, "5", "device", "set_update_mode", {"mode": "off"})
    assert (await recv(ws))[4]["mode"] == "automatic"
    await send(ws, None, "6", "device", "request_update", {})
    update = await recv(ws)
    assert update[3] == "update" and update[4]["firmware_url"].startswith(sim.http_url)
    # ignored: the penalty box; check_update and request_update are refused meanwhile.
    await send(ws, None, "7", "device", "status_update", {"status": "ignored", "reason": "no"})
    await send(ws, None, "8", "device", "request_update", {})
    assert (await recv(ws))[3:] == ["update_rejected", {"reason": "busy", "delay_for": 5}]
    await send(ws, None, "9", "device", "check_update", {})
    assert (await recv(ws))[4] == {"available": False, "firmware_meta": None}
    # rescheduled: blocked for delay_for milliseconds.
    now = sim.config.clock()
    await send(
        ws, None, "10", "device", "status_update", {"status": "rescheduled", "delay_for": 60_000}
    )
    device = sim.devices[DEVICE_ID]
    await sim.wait_for(lambda: (device.api.blocked_until or 0) < now + 61)
    assert 59 < (device.api.blocked_until or 0) - now < 61
    await ws.close()


async def test_offer_with_a_delta_follows_the_joined_fwup_version(
    sim: HubSim, tmp_path: Path
) -> None:
    full, delta = tmp_path / "full.fw", tmp_path / "delta.fw"
    full.write_bytes(b"full" * 1000)
    delta.write_bytes(b"delta")
    ws = await joined(sim, JOIN | {"fwup_version": "1.12.0"})
    payload = await sim.offer_update(DEVICE_ID, full, push=False, delta=delta)
    assert payload["firmware_url"].split("?")[0].endswith("/full.fw")
    await ws.close()
    ws = await joined(sim)
    payload = await sim.offer_update(DEVICE_ID, full, push=False, delta=delta)
    assert payload["firmware_url"].split("?")[0].endswith("/delta.fw")
    assert payload["size"] == 5
    assert sim.devices[DEVICE_ID].api.update_types == ["full", "delta"]
    await ws.close()


async def test_control_api_mode_delta_and_live_settings(tmp_path: Path) -> None:
    import httpx  # noqa: PLC0415

    from nhlink_devtools.hubsim import HubSimConfig, SharedSecret  # noqa: PLC0415
    from tests.hubsim.conftest import PRODUCT_KEY, PRODUCT_SECRET  # noqa: PLC0415

    (tmp_path / "full.fw").write_bytes(b"full" * 100)
    (tmp_path / "delta.fw").write_bytes(b"delta")
    config = HubSimConfig(
        control_port=0,
        shared_secrets=[SharedSecret(PRODUCT_KEY, PRODUCT_SECRET)],
        health_check=False,
        fw_dir=tmp_path,
        extensions=(),
    )
    async with HubSim(config) as sim:
        ws = await joined(sim)
        assert (await recv(ws))[3] == "update_mode"
        async with httpx.AsyncClient(base_url=f"{sim.control_url}/_sim") as client:
            answer = await client.post(
                "/mode", json={"device": DEVICE_ID, "mode": "device_managed", "allowed": True}
            )
            assert answer.json() == {"mode": "device_managed", "managed_updates_allowed": True}
            assert (await recv(ws))[3:] == ["update_mode", answer.json()]
            body = {"device": DEVICE_ID, "file": "full.fw", "delta": "delta.fw", "push": False}
            update = (await client.post("/update", json=body)).json()
            assert update["firmware_url"].split("?")[0].endswith("/delta.fw")
            settings = {"request_update_busy": 2, "health_interval_s": None, "penalty_box_s": 5}
            live = (await client.post("/config", json=settings)).json()
            assert live["request_update_busy"] == 2 and live["health_interval_s"] is None
            assert sim.config.penalty_box_s == 5.0
            bad = await client.post("/mode", json={"device": DEVICE_ID, "mode": "sideways"})
            assert bad.status_code == 400
        await ws.close()

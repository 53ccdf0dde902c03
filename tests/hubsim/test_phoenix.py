"""The simulator's Phoenix channel server, driven by a raw WebSocket client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nhlink_dbus.errors import StateError
from nhlink_devtools.hubsim import HubSim, SimFrame
from tests.hubsim.conftest import DEVICE_ID, nh1_headers
from tests.hubsim.wsclient import open_ws, recv, send

JOIN_PARAMS = {
    "nerves_fw_uuid": "8a8b0000-0000-0000-0000-000000000000",
    "nerves_fw_version": "0.1.0",
    "device_api_version": "2.1.0",
    "currently_downloading_uuid": None,
}


def url(sim: HubSim) -> str:
    return f"{sim.ws_url}/device-socket/websocket?vsn=2.0.0"


async def joined(sim: HubSim, params: dict[str, Any] | None = None) -> Any:
    ws = await open_ws(url(sim), nh1_headers())
    await send(ws, "1", "1", "device", "phx_join", params or JOIN_PARAMS)
    assert await recv(ws) == ["1", "1", "device", "phx_reply", {"status": "ok", "response": {}}]
    return ws


async def test_join_reply_then_after_join_pushes(sim: HubSim) -> None:
    sim.config.fwup_public_keys = ["KEY1"]
    sim.config.health_check = True
    params = JOIN_PARAMS | {"fwup_public_keys": "on_connect"}
    ws = await joined(sim, params)
    assert await recv(ws) == ["1", None, "device", "fwup_public_keys", {"keys": ["KEY1"]}]
    assert await recv(ws) == ["1", None, "device", "check_health", {}]
    device = await sim.wait_for_join(DEVICE_ID)
    assert device.join_params == params
    assert device.auth is not None and device.auth.auth == "nh1"
    assert device.auth.headers["x-nh-signature"] == "<redacted>"
    await ws.close()
    await sim.wait_for(lambda: not device.connected)


async def test_heartbeat_reply_and_unmatched_topic(sim: HubSim) -> None:
    ws = await joined(sim)
    await send(ws, None, "2", "phoenix", "heartbeat", {})
    assert await recv(ws) == [None, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
    await send(ws, None, "3", "extensions", "health:report", {})
    assert await recv(ws) == [
        None,
        "3",
        "extensions",
        "phx_reply",
        {"status": "error", "response": {"reason": "unmatched topic"}},
    ]
    await send(ws, "4", "4", "nosuch", "phx_join", {})
    assert (await recv(ws))[4]["response"] == {"reason": "unmatched topic"}
    await ws.close()


async def test_heartbeats_can_go_unanswered(sim: HubSim) -> None:
    sim.config.reply_heartbeats = False
    ws = await joined(sim)
    await send(ws, None, "2", "phoenix", "heartbeat", {})
    await send(ws, None, "3", "device", "check_update_available", {})
    reply = await recv(ws)
    assert reply[1] == "3"  # the heartbeat got nothing
    await ws.close()


async def test_push_reaches_device_and_frames_are_recorded(sim: HubSim) -> None:
    ws = await joined(sim)
    await sim.wait_for_join(DEVICE_ID)
    await sim.push(DEVICE_ID, "identify")
    assert await recv(ws) == ["1", None, "device", "identify", {}]
    await sim.push(DEVICE_ID, "reboot", fastlane=True)
    assert await recv(ws) == [None, None, "device", "reboot", {}]
    await send(ws, None, "2", "device", "fwup_progress", {"value": 42})
    await send(ws, None, "3", "device", "rebooting", {})
    assert await sim.wait_for_event(DEVICE_ID, "rebooting") == [{}]
    device = sim.devices[DEVICE_ID]
    assert device.events("fwup_progress") == [{"value": 42}]
    assert [f.event for f in device.frames_received] == ["phx_join", "fwup_progress", "rebooting"]
    assert device.frames_sent[-1] == SimFrame(None, None, "device", "reboot", {})
    await ws.close()


async def test_push_to_absent_device_raises(sim: HubSim) -> None:
    with pytest.raises(StateError):
        await sim.push("nobody", "identify")


async def test_check_update_available(sim: HubSim, tmp_path: Any) -> None:
    ws = await joined(sim)
    await send(ws, None, "2", "device", "check_update_available", {})
    assert await recv(ws) == [
        "1",
        "2",
        "device",
        "phx_reply",
        {
            "status": "ok",
            "response": {
                "update_available": False,
                "firmware_url": None,
                "firmware_meta": None,
                "deployment_id": None,
            },
        },
    ]
    firmware = tmp_path / "x.fw"
    firmware.write_bytes(b"not really firmware")
    payload = await sim.offer_update(DEVICE_ID, firmware, firmware_meta={"version": "9"})
    pushed = await recv(ws)
    assert pushed == ["1", None, "device", "update", payload]
    assert payload["firmware_url"].startswith(f"{sim.http_url}/firmware/x.fw?")
    assert "X-Amz-Signature=" in payload["firmware_url"]
    assert payload["firmware_meta"]["version"] == "9"
    await send(ws, None, "3", "device", "check_update_available", {})
    assert (await recv(ws))[4]["response"] == payload
    await ws.close()


async def test_join_refused_and_legacy_reply(sim: HubSim) -> None:
    sim.config.join_reply = "error"
    ws = await open_ws(url(sim), nh1_headers())
    await send(ws, "1", "1", "device", "phx_join", JOIN_PARAMS)
    assert await recv(ws) == [
        "1",
        "1",
        "device",
        "phx_reply",
        {"status": "error", "response": {"error": "could not connect"}},
    ]
    with pytest.raises(StateError):
        await sim.push(DEVICE_ID, "identify")
    sim.config.join_reply = "legacy"
    await send(ws, "2", "2", "device", "phx_join", JOIN_PARAMS)
    assert await recv(ws) == [
        "2",
        "2",
        "device",
        "phx_reply",
        {"status": "ok", "response": {"update_available": False}},
    ]
    await ws.close()


async def test_second_join_closes_old_join_ref(sim: HubSim) -> None:
    ws = await joined(sim)
    await send(ws, "5", "5", "device", "phx_join", JOIN_PARAMS)
    assert await recv(ws) == ["1", "1", "device", "phx_close", {}]
    assert await recv(ws) == ["5", "5", "device", "phx_reply", {"status": "ok", "response": {}}]
    assert sim.devices[DEVICE_ID].joined_topics == {"device": "5"}
    await ws.close()


async def test_channel_error_and_close_commands(sim: HubSim) -> None:
    ws = await joined(sim)
    await sim.channel_error(DEVICE_ID, "phx_error")
    assert await recv(ws) == ["1", "1", "device", "phx_error", {}]
    assert not sim.devices[DEVICE_ID].joined
    await send(ws, "2", "2", "device", "phx_join", JOIN_PARAMS)
    await recv(ws)
    await sim.channel_error(DEVICE_ID, "phx_close")
    assert await recv(ws) == ["2", "2", "device", "phx_close", {}]
    await ws.close()


async def test_new_connection_closes_the_old_one(sim: HubSim) -> None:
    first = await joined(sim)
    second = await joined(sim)
    await asyncio.wait_for(first.wait_closed(), 5)
    assert first.close_code == 1000
    device = sim.devices[DEVICE_ID]
    assert device.connected and device.connections == 2
    assert await sim.wait_for(lambda: device.disconnects) == ["replaced by a newer connection"]
    await second.close()


async def test_drain_closes_with_1012(sim: HubSim) -> None:
    ws = await joined(sim)
    await sim.drain()
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1012
    await sim.wait_for(lambda: not sim.devices[DEVICE_ID].connected)


async def test_break_connection_sends_no_close_frame(sim: HubSim) -> None:
    ws = await joined(sim)
    await sim.wait_for_join(DEVICE_ID)
    sim.break_connection(DEVICE_ID)
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1006
    await sim.wait_for(lambda: not sim.devices[DEVICE_ID].connected)


async def test_idle_timeout(sim: HubSim) -> None:
    sim.config.idle_timeout_s = 0.2
    ws = await joined(sim)
    await asyncio.wait_for(ws.wait_closed(), 5)
    device = sim.devices[DEVICE_ID]
    assert await sim.wait_for(lambda: device.disconnects) == ["idle timeout"]


async def test_bad_frame_closes_socket(sim: HubSim) -> None:
    ws = await joined(sim)
    await ws.send('{"not": "a frame"}')
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1011


async def test_stop_and_start_on_the_same_port(sim: HubSim) -> None:
    ws = await joined(sim)
    port = sim.ws_port
    await sim.stop()
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1006
    assert not sim.devices[DEVICE_ID].connected
    await sim.start()
    assert sim.ws_port == port
    ws = await joined(sim)
    assert sim.devices[DEVICE_ID].connections == 2
    await ws.close()


async def test_archive_offer_pushed_now_and_after_join(sim: HubSim, tmp_path: Any) -> None:
    archive = tmp_path / "a.fw"
    archive.write_bytes(b"archive bytes")
    ws = await joined(sim)
    info = await sim.offer_archive(DEVICE_ID, archive, info={"uuid": "1234", "version": "1.0"})
    assert await recv(ws) == ["1", None, "device", "archive", info]
    assert info["size"] == 13 and "/archives/1234.fw?" in info["url"]
    await ws.close()
    ws = await joined(sim)
    assert await recv(ws) == ["1", None, "device", "archive", info]
    await ws.close()

"""The control API over HTTP, and the CLI against a running ``nhlink-hub-sim serve``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret
from nhlink_devtools.hubsim.cli import main
from tests.hubsim.conftest import DEVICE_ID, PRODUCT_KEY, PRODUCT_SECRET, nh1_headers
from tests.hubsim.wsclient import open_ws, recv, send

WS_PATH = "/device-socket/websocket?vsn=2.0.0"


@pytest.fixture
async def control_sim(tmp_path: Path) -> AsyncIterator[HubSim]:
    config = HubSimConfig(
        control_port=0,
        shared_secrets=[SharedSecret(PRODUCT_KEY, PRODUCT_SECRET)],
        health_check=False,
        fw_dir=tmp_path,
    )
    async with HubSim(config) as sim:
        yield sim


async def test_control_api(control_sim: HubSim, tmp_path: Path) -> None:
    sim = control_sim
    (tmp_path / "x.fw").write_bytes(b"firmware")
    ws = await open_ws(sim.ws_url + WS_PATH, nh1_headers())
    await send(ws, "1", "1", "device", "phx_join", {"nerves_fw_uuid": "old"})
    await recv(ws)
    async with httpx.AsyncClient(base_url=f"{sim.control_url}/_sim") as client:
        info = (await client.get("/info")).json()
        assert info["connected"] == [DEVICE_ID]
        devices = (await client.get("/devices")).json()
        assert devices[0]["join_params"] == {"nerves_fw_uuid": "old"}
        response = await client.post("/push", json={"device": DEVICE_ID, "event": "identify"})
        assert response.json() == ["1", None, "device", "identify", {}]
        assert await recv(ws) == ["1", None, "device", "identify", {}]
        update = (await client.post("/update", json={"device": DEVICE_ID, "file": "x.fw"})).json()
        assert await recv(ws) == ["1", None, "device", "update", update]
        await client.post("/keys", json={"kind": "fwup", "keys": ["K"], "device": DEVICE_ID})
        assert await recv(ws) == ["1", None, "device", "fwup_public_keys", {"keys": ["K"]}]
        assert sim.config.fwup_public_keys == ["K"]
        await send(ws, None, "2", "device", "status_update", {"status": "hi"})
        await sim.wait_for_event(DEVICE_ID, "status_update")
        detail = (await client.get(f"/devices/{DEVICE_ID}")).json()
        assert detail["frames_received"][-1] == [
            None,
            "2",
            "device",
            "status_update",
            {"status": "hi"},
        ]
        fault = {"kind": "status", "status": 500, "times": 1}
        assert (await client.post("/faults", json=fault)).status_code == 200
        assert (await client.get("/faults")).json()[0]["status"] == 500
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(update["firmware_url"])).status_code == 500
        log = (await client.get("/http-log")).json()
        assert log[0]["status"] == 500 and log[0]["fault"] == "status"
        settings = (await client.post("/config", json={"join_reply": "error"})).json()
        assert settings["join_reply"] == "error" and sim.config.join_reply == "error"
        assert (await client.post("/config", json={"tls": True})).status_code == 400
        missing = await client.post("/push", json={"device": "nobody", "event": "identify"})
        assert missing.status_code == 409
        assert (await client.get("/nothing")).status_code == 404
        assert (await client.post("/close", json={"device": DEVICE_ID, "code": 1012})).json() == {}
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1012


async def _cli(*argv: str) -> tuple[int, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nhlink_devtools.hubsim.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out.strip() else None


async def test_cli_against_running_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"# test keys\n{PRODUCT_KEY}:{PRODUCT_SECRET}\n")
    (tmp_path / "x.fw").write_bytes(b"firmware bytes")
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nhlink_devtools.hubsim.cli",
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--control-port",
        "0",
        "--no-health-check",
        "--shared-secret-file",
        str(secrets),
        "--fw",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        ready = json.loads(await asyncio.wait_for(server.stdout.readline(), 20))
        control = ["--control", ready["control_url"]]
        ws = await open_ws(ready["ws_url"] + WS_PATH, nh1_headers())
        await send(ws, "1", "1", "device", "phx_join", {"nerves_fw_version": "1.0.0"})
        await recv(ws)

        code, devices = await _cli(*control, "devices")
        assert code == 0 and devices[0]["identifier"] == DEVICE_ID

        # In-process main() for the rest (fast); it prints the JSON answer.
        argv = [
            *control,
            "push",
            "update",
            "--device",
            DEVICE_ID,
            "--file",
            "x.fw",
            "--version",
            "2.0.0",
            "--meta",
            "product=demo",
        ]
        assert await asyncio.to_thread(main, argv) == 0
        update = json.loads(capsys.readouterr().out)
        assert update["firmware_meta"]["version"] == "2.0.0"
        assert update["firmware_meta"]["product"] == "demo"
        assert await recv(ws) == ["1", None, "device", "update", update]

        assert (
            await asyncio.to_thread(main, [*control, "push", "reboot", "--device", DEVICE_ID]) == 0
        )
        assert await recv(ws) == ["1", None, "device", "reboot", {}]
        argv = [
            *control,
            "push",
            "event",
            "--device",
            DEVICE_ID,
            "--event",
            "scripts/run",
            "--payload",
            '{"text": "1+1", "ref": "abc"}',
        ]
        assert await asyncio.to_thread(main, argv) == 0
        assert await recv(ws) == ["1", None, "device", "scripts/run", {"text": "1+1", "ref": "abc"}]

        argv = [
            *control,
            "fault",
            "add",
            "--kind",
            "cut",
            "--path",
            "/firmware/x.fw",
            "--after",
            "4",
            "--times",
            "1",
        ]
        assert await asyncio.to_thread(main, argv) == 0
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(update["firmware_url"])
        capsys.readouterr()
        assert await asyncio.to_thread(main, [*control, "http-log"]) == 0
        log = json.loads(capsys.readouterr().out)
        assert (log[-1]["fault"], log[-1]["bytes_sent"]) == ("cut", 4)

        code = await asyncio.to_thread(main, [*control, "close", "--device", "nobody"])
        assert code == 1
        assert "not connected" in capsys.readouterr().err
        assert await asyncio.to_thread(main, [*control, "drain"]) == 0
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1012
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 10) == 0


def test_cli_unreachable_control(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--control", "http://127.0.0.1:9", "devices"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_cli_cert_reuses_the_pki(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cert", "--cert-dir", str(tmp_path), "--device", "kiosk-1"]) == 0
    first = json.loads(capsys.readouterr().out)
    ca = Path(first["ca"]).read_bytes()
    assert main(["cert", "--cert-dir", str(tmp_path), "--device", "kiosk-2"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert Path(second["ca"]).read_bytes() == ca
    assert Path(second["cert"]).name == "kiosk-2.pem"

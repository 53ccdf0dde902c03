"""Upgrade-request authentication as nerves_hub_web decides it (protocol.md §2)."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from nhlink_devtools.hubsim import HubSim, HubSimConfig
from nhlink_devtools.hubsim.auth import NO_AUTH_REASON, SharedSecret
from nhlink_devtools.hubsim.certs import client_context, generate_ca, issue_device_cert
from tests.hubsim.conftest import (
    DEVICE_ID,
    DEVICE_KEY,
    DEVICE_SECRET,
    PRODUCT_KEY,
    PRODUCT_SECRET,
    nh1_headers,
)
from tests.hubsim.wsclient import open_ws, recv, rejected_status, send

PATH = "/device-socket/websocket?vsn=2.0.0"


async def get(sim: HubSim, headers: list[tuple[str, str]], path: str = PATH) -> httpx.Response:
    http_url = sim.ws_url.replace("ws://", "http://")
    async with httpx.AsyncClient() as client:
        return await client.get(http_url + path, headers=headers)


async def test_product_key_accepted(sim: HubSim) -> None:
    ws = await open_ws(sim.ws_url + PATH, nh1_headers())
    await send(ws, "1", "1", "device", "phx_join", {})
    assert (await recv(ws))[4]["status"] == "ok"
    device = sim.devices[DEVICE_ID]
    assert device.auth is not None
    assert (device.auth.auth, device.auth.key) == ("nh1", PRODUCT_KEY)
    await ws.close()


async def test_device_key_accepted_on_both_paths(sim: HubSim) -> None:
    for path in ("/socket/websocket?vsn=2.0.0", PATH):
        ws = await open_ws(sim.ws_url + path, nh1_headers(DEVICE_KEY, DEVICE_SECRET))
        await ws.close()
    assert [h.status for h in sim.handshakes] == [101, 101]


async def test_signature_from_the_future_accepted(sim: HubSim) -> None:
    ws = await open_ws(sim.ws_url + PATH, nh1_headers(now_s=time.time() + 3600))
    await ws.close()


# Recipes, not headers: an NH1 signature made at collection time could be older
# than the server's 90 s max age by the time a slow machine runs the test.
@pytest.mark.parametrize(
    ("make_headers", "reason"),
    [
        (lambda: nh1_headers(PRODUCT_KEY, "wrong secret"), "bad signature"),
        (lambda: nh1_headers("nhp_unknown", PRODUCT_SECRET), "unknown key"),
        (lambda: nh1_headers(DEVICE_KEY, DEVICE_SECRET, identifier="other"), "another identifier"),
        (lambda: [("x-forwarded-for", "10.0.0.1")], "missing header x-nh-alg"),
    ],
)
async def test_refused_with_empty_401(
    sim: HubSim, make_headers: Callable[[], list[tuple[str, str]]], reason: str
) -> None:
    headers = make_headers()
    response = await get(sim, headers)
    assert response.status_code == 401
    assert response.content == b""
    assert "nh-connection-error-reason" not in response.headers
    assert reason in sim.handshakes[-1].reason


async def test_expired_signature_refused(sim: HubSim) -> None:
    signed_at = int(time.time())
    sim.config.clock = lambda: signed_at + 91
    response = await get(sim, nh1_headers(now_s=signed_at))
    assert response.status_code == 401
    assert sim.handshakes[-1].reason == "expired signature"
    # Within the 90 s max age it is still fine (the hub's clock is fixed: exact on any machine).
    sim.config.clock = lambda: signed_at + 80
    ws = await open_ws(sim.ws_url + PATH, nh1_headers(now_s=signed_at))
    await ws.close()


async def test_expired_refused_by_websocket_client(sim: HubSim) -> None:
    with pytest.raises(Exception) as info:
        await open_ws(sim.ws_url + PATH, nh1_headers(now_s=time.time() - 600))
    assert rejected_status(info.value) == 401


async def test_no_credentials_refused_with_reason(sim: HubSim) -> None:
    response = await get(sim, [])
    assert response.status_code == 401
    assert response.headers["nh-connection-error-reason"] == NO_AUTH_REASON
    assert response.text == NO_AUTH_REASON


async def test_shared_secrets_disabled() -> None:
    async with HubSim(HubSimConfig()) as sim:
        response = await get(sim, nh1_headers())
    assert response.status_code == 401
    assert response.content == b""


async def test_other_paths_and_serializer_version(sim: HubSim) -> None:
    assert (await get(sim, [], "/status/alive")).text == "Hello Friend!"
    assert (await get(sim, [], "/other")).status_code == 301
    response = await get(sim, nh1_headers(), "/device-socket/websocket")
    assert response.status_code == 403


def test_shared_secret_parse() -> None:
    assert SharedSecret.parse("nhd_k:s:dev") == SharedSecret("nhd_k", "s", "dev")
    assert SharedSecret.parse("nhp_k:s").identifier is None
    assert "s3cr3t" not in repr(SharedSecret.parse("nhp_k:s3cr3t"))


@pytest.fixture
async def tls_sim(tmp_path: Path) -> AsyncIterator[HubSim]:
    config = HubSimConfig(
        tls=True,
        cert_dir=tmp_path / "pki",
        shared_secrets=[SharedSecret(PRODUCT_KEY, PRODUCT_SECRET)],
        health_check=False,
    )
    async with HubSim(config) as running:
        yield running


async def test_mtls_device_certificate_accepted(tls_sim: HubSim) -> None:
    assert tls_sim.pki is not None
    pair = tls_sim.issue_device_cert("kiosk-0042")
    context = client_context(tls_sim.pki, pair)
    context.maximum_version = ssl.TLSVersion.TLSv1_3  # the server must settle on 1.2
    ws = await open_ws(f"{tls_sim.ws_url}/socket/websocket?vsn=2.0.0", ssl_context=context)
    await send(ws, "1", "1", "device", "phx_join", {"nerves_fw_uuid": "u"})
    assert (await recv(ws))[4] == {"status": "ok", "response": {}}
    transport = ws.transport
    assert transport.get_extra_info("ssl_object").version() == "TLSv1.2"
    device = tls_sim.devices["kiosk-0042"]
    assert device.auth is not None and device.auth.auth == "cert"
    await ws.close()


async def test_mtls_unknown_ca_refused(tls_sim: HubSim, tmp_path: Path) -> None:
    assert tls_sim.pki is not None
    rogue = generate_ca(tmp_path / "rogue", "rogue-ca")
    pair = issue_device_cert(rogue, "kiosk-0042", tmp_path / "rogue")
    context = client_context(tls_sim.pki, pair)
    with pytest.raises((ssl.SSLError, ConnectionError, EOFError, OSError)):
        ws = await open_ws(f"{tls_sim.ws_url}/socket/websocket?vsn=2.0.0", ssl_context=context)
        await recv(ws)  # TLS 1.3 clients may only see the alert on first read
    assert "kiosk-0042" not in tls_sim.devices


async def test_tls_without_certificate_falls_back_to_nh1(tls_sim: HubSim) -> None:
    assert tls_sim.pki is not None
    context = client_context(tls_sim.pki)
    ws = await open_ws(f"{tls_sim.ws_url}{PATH}", nh1_headers(), ssl_context=context)
    await ws.close()
    async with httpx.AsyncClient(verify=context) as client:
        url = tls_sim.ws_url.replace("wss://", "https://") + PATH
        response = await client.get(url)
    assert response.status_code == 401
    assert response.headers["nh-connection-error-reason"] == NO_AUTH_REASON


async def test_no_credentials_refused_by_websocket_client(sim: HubSim) -> None:
    with pytest.raises(Exception) as info:
        await open_ws(sim.ws_url + PATH)
    assert rejected_status(info.value) == 401

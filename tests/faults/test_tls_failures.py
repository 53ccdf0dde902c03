"""TLS failures between the hub client and the simulator: every one refuses the
connection, says why in words an operator can act on, and is retried on the
back-off (never a crash, never a connection without verification).

Certificates are made at test time (nhlink_devtools/hubsim/certs.py), never at
collection time: a certificate made then could expire before the test runs.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from nhlink_dbus.aio.hub_client import HubClient
from nhlink_dbus.core.hub_session import Connected, Disconnected
from nhlink_dbus.core.hub_settings import HubSettings, TlsAuth
from nhlink_devtools.hubsim import HubSim, HubSimConfig
from nhlink_devtools.hubsim.certs import (
    SimPKI,
    generate_ca,
    issue_device_cert,
    issue_server_cert,
    load_or_generate_pki,
)
from tests.aio.test_hub_client_sim import DEV, DEVICE, Recorder, running, short_backoff

DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _past() -> tuple[datetime.datetime, datetime.datetime]:
    return _now() - 30 * DAY, _now() - DAY


def _future() -> tuple[datetime.datetime, datetime.datetime]:
    return _now() + DAY, _now() + 30 * DAY


async def _first_failure(settings: HubSettings) -> tuple[str, Recorder]:
    rec = Recorder()
    client = HubClient(settings, DEVICE, on_event=rec, reconnect_backoff=short_backoff([20, 40]))
    async with running(client):
        failures = await rec.wait(Disconnected, count=2)  # refused, then retried
    assert not rec.of(Connected)
    assert [f.reconnect_in_ms for f in failures] == [20, 40]
    assert failures[0].reason == failures[1].reason
    return failures[0].reason, rec


# (case, how the PKI is spoiled, what the device is told)
SERVER_CASES = {
    "wrong CA": "the hub's TLS certificate is not trusted: unable to get local issuer certificate",
    "expired": "the hub's TLS certificate is not trusted: certificate has expired",
    "not yet valid": "the hub's TLS certificate is not trusted: certificate is not yet valid",
    "wrong host name": "the hub's TLS certificate is not trusted: Hostname mismatch",
}


@pytest.mark.parametrize("case", list(SERVER_CASES))
async def test_a_server_certificate_that_cannot_be_trusted_is_refused(
    tmp_path: Path, case: str
) -> None:
    pki = load_or_generate_pki(tmp_path / "pki")
    cafile = pki.ca.cert
    sni = None
    if case == "wrong CA":
        cafile = generate_ca(tmp_path / "other", "other-ca").cert
    elif case == "expired":
        issue_server_cert(pki, valid=_past())
    elif case == "not yet valid":
        issue_server_cert(pki, valid=_future())
    else:
        sni = "devices.example.com"
    async with HubSim(HubSimConfig(tls=True, cert_dir=pki.folder)) as hub:
        device = issue_device_cert(pki.device_ca, DEV, tmp_path / "device")
        auth = TlsAuth(str(device.cert), str(device.key), cafile=str(cafile), sni=sni)
        reason, _ = await _first_failure(HubSettings(url=hub.ws_url, identifier=DEV, auth=auth))
        assert not [h for h in hub.handshakes if h.status == 101]
    assert reason.startswith(SERVER_CASES[case]), reason


class CertificateCheckingServer:
    """A TLS 1.2 server that checks client certificates and answers a bad one with
    the TLS alert, as the hub's TLS stack does. (The simulator cannot: asyncio's
    server-side TLS drops the pending alert and resets the connection.) Blocking
    ``ssl`` sockets in a thread, on 127.0.0.1."""

    def __init__(self, pki: SimPKI) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.maximum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(pki.server.cert, pki.server.key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cafile=pki.device_ca.cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusals: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    with self.context.wrap_socket(conn, server_side=True):
                        self.refusals.append("accepted")  # not expected here
                except (ssl.SSLError, OSError) as exc:
                    self.refusals.append(str(exc))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._thread.join(timeout=10)


DEVICE_CASES = {
    "expired": "the hub refused this device's certificate: certificate expired (TLS alert)",
    "not yet valid": "the hub refused this device's certificate: bad certificate (TLS alert)",
    "unknown CA": "the hub refused this device's certificate: unknown CA (TLS alert)",
}


@pytest.mark.parametrize("case", list(DEVICE_CASES))
async def test_a_device_certificate_the_hub_refuses_is_reported(tmp_path: Path, case: str) -> None:
    pki = load_or_generate_pki(tmp_path / "pki")
    folder = tmp_path / "device"
    if case == "unknown CA":
        device = issue_device_cert(generate_ca(tmp_path / "rogue", "rogue-ca"), DEV, folder)
    else:
        device = issue_device_cert(
            pki.device_ca, DEV, folder, valid=_past() if case == "expired" else _future()
        )
    server = CertificateCheckingServer(pki)
    try:
        auth = TlsAuth(str(device.cert), str(device.key), cafile=str(pki.ca.cert))
        url = f"wss://127.0.0.1:{server.port}"
        reason, _ = await _first_failure(HubSettings(url=url, identifier=DEV, auth=auth))
    finally:
        server.close()
    assert reason == DEVICE_CASES[case], reason
    assert server.refusals and "accepted" not in server.refusals

"""core.hub_settings: URL rule (§1.1) and the NH1 headers the client sends (§2.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from nhlink_dbus.core.hub_settings import (
    HubSettings,
    SharedSecretAuth,
    TlsAuth,
    websocket_url,
)
from nhlink_dbus.core.nh1 import NH1Params, verify_headers
from nhlink_dbus.errors import ConfigError

NH1 = SharedSecretAuth("nhd_key", "s3cr3t")
TLS = TlsAuth("/c.pem", "/k.pem")


def url(base: str, auth: SharedSecretAuth | TlsAuth = NH1) -> str:
    return websocket_url(HubSettings(url=base, identifier="dev", auth=auth))


def test_url_rule() -> None:
    assert url("wss://devices.example.com", TLS) == (
        "wss://devices.example.com/socket/websocket?vsn=2.0.0"
    )
    assert url("hub.example.com") == "wss://hub.example.com/device-socket/websocket?vsn=2.0.0"
    assert url("ws://127.0.0.1:4000/ignored/path") == (
        "ws://127.0.0.1:4000/device-socket/websocket?vsn=2.0.0"
    )
    assert (
        url("wss://h:4001/x?a=1&vsn=1.0.0") == "wss://h:4001/device-socket/websocket?a=1&vsn=2.0.0"
    )
    for bad in ("https://h", "wss://", "wss://h:99999", "ftp://h"):
        with pytest.raises(ConfigError):
            url(bad)


def test_settings_validation_and_repr_hides_secret() -> None:
    s = HubSettings(url="wss://h", identifier="dev", auth=NH1)
    assert "s3cr3t" not in repr(s)
    assert (s.heartbeat_interval_ms, s.rejoin_after_ms) == (30000, 5000)
    with pytest.raises(ConfigError):
        HubSettings(url="wss://h", identifier="", auth=NH1)
    with pytest.raises(ConfigError):
        HubSettings(url="wss://h", identifier="d", auth=NH1, heartbeat_interval_ms=-1)
    with pytest.raises(ConfigError):
        HubSettings(url="wss://h", identifier="d", auth=NH1, rejoin_after_ms=-1)
    tls = HubSettings(url="wss://h", identifier="d", auth=TlsAuth("c", "k", "ca", "sni"), sni="x")
    assert (tls.server_cafile, tls.server_sni) == ("ca", "sni")
    nh1 = HubSettings(url="wss://h", identifier="d", auth=NH1, cafile="ca2", sni="y")
    assert (nh1.server_cafile, nh1.server_sni) == ("ca2", "y")


# -- NH1 headers ----------------------------------------------------------------------

VECTORS = [
    (
        "nhp_exampleProductKey",
        "exampleProductSecret",
        1700000000,
        "SFMyNTY.g2gDbQAAAAtkZXZpY2UtMTIzNG4GAABo5c-LAWIAAVGA."
        "J3qrcuoZv0cIKvxtGeS550iTmlkMJ-7dbRZVWHZIcZ4",
    ),
    (
        "nhd_exampleDeviceKey",
        "exampleDeviceSecret",
        1728432000,
        "SFMyNTY.g2gDbQAAAAtkZXZpY2UtMTIzNG4GAABMk26SAWIAAVGA."
        "0hqIe-dges3wUIGK412LG42lZ4vYwrls6ulGMyHbzsA",
    ),
]


@pytest.mark.parametrize(("key", "secret", "now", "signature"), VECTORS)
def test_protocol_vectors(key: str, secret: str, now: int, signature: str) -> None:
    headers = SharedSecretAuth(key, secret).headers("device-1234", now)
    assert headers == [
        ("x-nh-alg", "NH1-HMAC-sha256-1000-32"),
        ("x-nh-key", key),
        ("x-nh-time", str(now)),
        ("x-nh-signature", signature),
    ]


def _independent_signature(secret: str, key: str, identifier: str, now: int, p: NH1Params) -> str:
    """A from-scratch re-derivation of §2.2 (not using core.nh1)."""
    digest, iters, length = p.digest, p.iterations, p.length
    alg = f"NH1-HMAC-{digest}-{iters}-{length}"
    salt = (
        "NH1:device-socket:shared-secret:connect\n\n"
        f"x-nh-alg={alg}\nx-nh-key={key}\nx-nh-time={now}\n"
    ).encode()
    derived = hashlib.pbkdf2_hmac(digest, secret.encode(), salt, iters, length)
    ident = identifier.encode()
    ms = now * 1000
    mag = ms.to_bytes((ms.bit_length() + 7) // 8, "little")
    etf = (
        b"\x83h\x03m"
        + struct.pack(">I", len(ident))
        + ident
        + bytes([0x6E, len(mag), 0])
        + mag
        + b"b\x00\x01Q\x80"
    )

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    signing_input = "SFMyNTY." + b64(etf)
    return signing_input + "." + b64(hmac.new(derived, signing_input.encode(), "sha256").digest())


@pytest.mark.parametrize(
    ("identifier", "now", "params"),
    [
        ("kiosk-0042", 1760000000, NH1Params()),
        ("ünïcødé-серийный", 2000000000, NH1Params()),
        ("x" * 300, 1728432001, NH1Params("sha512", 2000, 64)),
        ("d", 4102444800, NH1Params("sha256", 1, 16)),  # 2100-01-01: still 6 magnitude bytes
    ],
)
def test_own_vectors_match_an_independent_derivation(
    identifier: str, now: int, params: NH1Params
) -> None:
    auth = SharedSecretAuth("nhd_" + "A" * 43, "b" * 43, params)
    headers = dict(auth.headers(identifier, now))
    assert headers["x-nh-alg"] == params.alg
    assert headers["x-nh-signature"] == _independent_signature(
        "b" * 43,
        "nhd_" + "A" * 43,
        identifier,
        now,
        params,
    )
    # and the server-side check of core.nh1 accepts them
    token = verify_headers(headers, {"nhd_" + "A" * 43: "b" * 43}, now_ms=now * 1000)
    assert token.identifier == identifier


def test_headers_depend_on_the_time_they_are_made() -> None:
    a = dict(NH1.headers("dev", 1700000000))
    b = dict(NH1.headers("dev", 1700000001))
    assert a["x-nh-time"] != b["x-nh-time"] and a["x-nh-signature"] != b["x-nh-signature"]
    assert all("s3cr3t" not in v for v in a.values())

"""Synchronous tests of the simulator's pure parts: frames and the auth decision."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core.nh1 import sign_headers
from nhlink_dbus.errors import ProtocolError
from nhlink_devtools.hubsim.auth import Accepted, HttpAnswer, SharedSecret, decide
from nhlink_devtools.hubsim.frames import SimFrame

# protocol.md §2.2, vector A
KEY, SECRET, IDENT, SIGNED_AT = (
    "nhp_exampleProductKey",
    "exampleProductSecret",
    "device-1234",
    1700000000,
)
TARGET = "/device-socket/websocket?vsn=2.0.0"
SECRETS = {KEY: SharedSecret(KEY, SECRET)}


def headers() -> dict[str, str]:
    return dict(sign_headers(KEY, SECRET, IDENT, SIGNED_AT))


def test_vector_a_accepted_within_90_s() -> None:
    decision = decide(TARGET, headers(), None, secrets=SECRETS, now_ms=(SIGNED_AT + 90) * 1000)
    assert isinstance(decision, Accepted)
    assert (decision.identifier, decision.auth, decision.key) == (IDENT, "nh1", KEY)


def test_vector_a_expired_after_90_s() -> None:
    decision = decide(TARGET, headers(), None, secrets=SECRETS, now_ms=(SIGNED_AT + 91) * 1000)
    assert isinstance(decision, HttpAnswer)
    assert (decision.status, decision.body) == (401, b"")


def test_certificate_wins_over_headers() -> None:
    peercert = {"subject": ((("organizationName", "x"),), (("commonName", "kiosk-7"),))}
    decision = decide(TARGET, headers(), peercert, secrets={}, now_ms=0)
    assert isinstance(decision, Accepted)
    assert (decision.identifier, decision.auth) == ("kiosk-7", "cert")


def test_device_key_pinned_to_identifier() -> None:
    secrets = {"nhd_k": SharedSecret("nhd_k", "s", "other")}
    signed = dict(sign_headers("nhd_k", "s", IDENT, SIGNED_AT))
    decision = decide(TARGET, signed, None, secrets=secrets, now_ms=SIGNED_AT * 1000)
    assert isinstance(decision, HttpAnswer) and decision.status == 401


def test_frame_round_trip() -> None:
    frame = SimFrame("1", "2", "device", "update", {"a": [1]})
    assert SimFrame.decode(frame.encode()) == frame


@pytest.mark.parametrize(
    "text", ["", "{}", "[1,2,3,4,5]", '[null,null,"t","e"]', '[1,"1","t","e",{}]', "nan"]
)
def test_frame_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        SimFrame.decode(text)


@given(st.text(max_size=60))
def test_frame_decode_value_or_protocol_error(text: str) -> None:
    try:
        frame = SimFrame.decode(text)
    except ProtocolError:
        return
    assert json.loads(frame.encode())[2:4] == [frame.topic, frame.event]

"""Ed25519 checks (nhlink_dbus/fwup/signature.py): libsodium, as fwup, and cryptography
where libsodium cannot be loaded; both give the same answers."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nhlink_dbus.fwup import signature

# RFC 8032, section 7.1, tests 1 and 2: (public key, message, signature).
RFC8032 = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc6"
        "1e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e45"
        "8f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


def sodium() -> signature._Verify:
    check = signature.sodium_verifier()
    assert check is not None, "libsodium.so.23 not found: apt-get install libsodium23"
    return check


def both() -> list[signature._Verify]:
    return [sodium(), signature.cryptography_verifier()]


def test_libsodium_is_used_where_it_loads() -> None:
    sodium()
    assert signature.backend() == "libsodium"


@pytest.mark.parametrize(("key", "message", "sig"), RFC8032)
def test_the_rfc_8032_vectors(key: str, message: str, sig: str) -> None:
    pk, msg, sg = bytes.fromhex(key), bytes.fromhex(message), bytes.fromhex(sig)
    for check in both():
        assert check(pk, sg, msg)
        assert not check(pk, sg, msg + b"x")
        assert not check(pk, sg[:10] + bytes([sg[10] ^ 1]) + sg[11:], msg)
    assert signature.check_signature(pk, sg, msg)


def test_both_give_the_same_answers() -> None:
    checks = both()
    for n in range(40):
        private = Ed25519PrivateKey.generate()
        pk = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = os.urandom(n * 37)
        sig = private.sign(message)
        flipped = bytearray(sig)
        flipped[n % 64] ^= 1 << (n % 8)
        other = (
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        for key, s, m, expected in (
            (pk, sig, message, True),
            (pk, bytes(flipped), message, False),
            (other, sig, message, False),
            (pk, sig, message + b"\0", False),
        ):
            assert [check(key, s, m) for check in checks] == [expected, expected]
            assert signature.check_signature(key, s, m) is expected


def test_malformed_keys_and_signatures_are_refused() -> None:
    pk = bytes.fromhex(RFC8032[0][0])
    sig = bytes.fromhex(RFC8032[0][2])
    assert not signature.check_signature(pk[:31], sig, b"")
    assert not signature.check_signature(pk, sig[:63], b"")
    assert not signature.check_signature(pk + b"\0", sig, b"")
    assert not signature.check_signature(bytes(32), sig, b"")  # not a valid point
    assert signature.check_signature(memoryview(pk), bytearray(sig), memoryview(b""))

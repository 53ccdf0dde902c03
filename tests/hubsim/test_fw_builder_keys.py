"""nhlink_devtools.fw_builder's keys, also on Debian 12's cryptography 38 (`make pytest-deb12`)."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nhlink_devtools.fw_builder import generate_key_pair, load_private_key


def test_generated_pair_is_fwups_key_file_format_and_signs() -> None:
    private, public = generate_key_pair()
    raw, public_raw = base64.b64decode(private), base64.b64decode(public)
    assert len(raw) == 64 and len(public_raw) == 32 and raw[32:] == public_raw
    signature = load_private_key(private).sign(b"meta.conf")
    Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, b"meta.conf")
    assert generate_key_pair()[1] != public

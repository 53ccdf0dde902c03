"""Ed25519 checks and fwup key parsing (the one place that uses ``cryptography``)."""

from __future__ import annotations

import base64
import binascii

from nhlink_dbus.errors import ConfigError


def load() -> None:
    """Import what :func:`check_signature` needs, ahead of the first check (an apply does
    it when it opens its target, before the archive's first bytes arrive)."""
    import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401, PLC0415


def check_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message``."""
    # Imported here: ``cryptography`` takes tens of milliseconds and several MiB to load,
    # and the daemon (which parses keys at start) needs it only when it verifies.
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_public_key(text: str, where: str = "public key") -> bytes:
    """A fwup public key: base64 of 32 bytes, as ``fwup -g`` writes it."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: expecting a 32-byte Ed25519 public key, got {len(raw)} bytes")
    return raw

"""Ed25519 checks and fwup key parsing.

A signature is checked with libsodium's ``crypto_sign_ed25519_verify_detached``, the very
function fwup checks it with (so the same signatures pass: libsodium refuses some that
other libraries take, such as a small-order public key), loaded with ctypes from
``libsodium.so.23`` (Debian's libsodium23). Where it cannot be loaded, ``cryptography``
checks it instead. libsodium costs about 1 MiB of memory and 2 ms to load; the PyPI wheel
of cryptography, carrying its own OpenSSL, about 8 MiB and 6 ms (Debian's, about 2 MiB).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from nhlink_dbus.errors import ConfigError

__all__ = ["backend", "check_signature", "load", "parse_public_key"]

SODIUM_LIBRARIES = ("libsodium.so.23", "libsodium.so")
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_Verify = Callable[[bytes, bytes, bytes], bool]
_chosen: tuple[str, _Verify] | None = None


def sodium_verifier() -> _Verify | None:
    """libsodium's check, or None when the library cannot be loaded."""
    import ctypes  # noqa: PLC0415  (only when a signature is checked)

    lib = None
    for name in SODIUM_LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    try:
        if lib is None or lib.sodium_init() < 0:
            return None
        verify = lib.crypto_sign_ed25519_verify_detached
    except AttributeError:  # a library of that name without these functions
        return None
    verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
    verify.restype = ctypes.c_int

    def check(public_key: bytes, signature: bytes, message: bytes) -> bool:
        return bool(verify(signature, message, len(message), public_key) == 0)

    return check


def cryptography_verifier() -> _Verify:
    """cryptography's check (OpenSSL's Ed25519)."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    def check(public_key: bytes, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    return check


def _verifier() -> tuple[str, _Verify]:
    global _chosen  # loaded once, on first use
    if _chosen is None:
        sodium = sodium_verifier()
        _chosen = ("libsodium", sodium) if sodium else ("cryptography", cryptography_verifier())
    return _chosen


def backend() -> str:
    """Which library checks signatures here: "libsodium" or "cryptography"."""
    return _verifier()[0]


def load() -> None:
    """Load what :func:`check_signature` needs, ahead of the first check (an apply does it
    when it opens its target, before the archive's first bytes arrive)."""
    _verifier()


def check_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    return _verifier()[1](bytes(public_key), bytes(signature), bytes(message))


def parse_public_key(text: str, where: str = "public key") -> bytes:
    """A fwup public key: base64 of 32 bytes, as ``fwup -g`` writes it."""
    try:
        raw = binascii.a2b_base64(text.strip(), strict_mode=True)  # base64's b64decode
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not valid base64") from None
    if len(raw) != PUBLIC_KEY_SIZE:
        raise ConfigError(f"{where}: expecting a 32-byte Ed25519 public key, got {len(raw)} bytes")
    return raw

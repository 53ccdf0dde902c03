"""NH1 shared-secret authentication headers (protocol.md §2.2).

The device signs ``{identifier, signed_at_ms, 86400}`` the way
``Plug.Crypto.sign/4`` does: PBKDF2 derives a key from the secret and a salt
built from the other headers, the Erlang term is serialised in External Term
Format (ETF), and the token is ``"SFMyNTY." + b64url(etf) + "." + b64url(mac)``
with an HMAC-SHA256 MAC (always SHA-256, whatever the PBKDF2 digest).

Both sides live here: :func:`sign_headers` for the device and
:func:`verify_headers` for ``nhlink-hub-sim``, which checks them as the server
does (salt rebuilt from the received headers, max age 90 s, a signing time in
the future accepted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import AuthError

SIGNATURE_VERSION = "NH1"
PROTECTED = "SFMyNTY"  # unpadded base64url of b"HS256"
PLUG_DEFAULT_MAX_AGE = 86400  # embedded by Plug.Crypto.sign when no max_age is given
SERVER_MAX_AGE_S = 90

_SALT_PREFIX = "NH1:device-socket:shared-secret:connect\n\n"


@dataclass(frozen=True, slots=True)
class ClockHint:
    """The hub's clock as its last refusal told it (the ``Date`` of a 401/403).

    A device that boots with its clock far behind signs tokens the server finds
    expired (``signed_at + 90 s < now``) until its clock is set. As nerves_hub_link
    does since PR #434, the next attempt signs with the hub's time instead, moved
    on by the (monotonic) time since; once the device clock has caught up past
    that, the device clock wins (:func:`signing_time`). The hint can only move the
    signing time forward: a device clock ahead of the hub is already accepted.
    """

    server_time: float  # Unix seconds, from the Date header
    received_at: float  # monotonic seconds when the refusal arrived


def signing_time(wall_now: float, mono_now: float, hint: ClockHint | None) -> int:
    """The ``x-nh-time`` to sign with (whole seconds): the device clock, or the hub's
    clock from ``hint`` moved on by the time since, whichever is later."""
    if hint is None:
        return int(wall_now)
    return int(max(wall_now, hint.server_time + (mono_now - hint.received_at)))


@dataclass(frozen=True, slots=True)
class NH1Params:
    """Key derivation parameters (the ``shared_secret`` overrides of §2.2)."""

    digest: str = "sha256"
    iterations: int = 1000
    length: int = 32

    @property
    def alg(self) -> str:
        return f"{SIGNATURE_VERSION}-HMAC-{self.digest}-{self.iterations}-{self.length}"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid signature proves: who signed, and when."""

    key: str
    identifier: str
    signed_at_ms: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise AuthError("malformed base64 in NH1 token") from exc


def salt(alg: str, key: str, signed_at_s: str) -> bytes:
    """The exact salt string of §2.2 (five lines, the second empty)."""
    return f"{_SALT_PREFIX}x-nh-alg={alg}\nx-nh-key={key}\nx-nh-time={signed_at_s}\n".encode()


def derive_key(secret: str, salt_bytes: bytes, params: NH1Params) -> bytes:
    """PBKDF2 over the secret's UTF-8 bytes (used as-is, not base64-decoded)."""
    return hashlib.pbkdf2_hmac(
        params.digest, secret.encode(), salt_bytes, params.iterations, params.length
    )


def _etf_integer(value: int) -> bytes:
    if 0 <= value <= 255:
        return b"\x61" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"\x62" + struct.pack(">i", value)
    magnitude = abs(value)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
    if len(digits) > 255:
        raise ValueError("integer too large for SMALL_BIG_EXT")
    return b"\x6e" + bytes([len(digits), 1 if value < 0 else 0]) + digits


def etf_payload(identifier: str, signed_at_ms: int, max_age: int = PLUG_DEFAULT_MAX_AGE) -> bytes:
    """``term_to_binary({identifier, signed_at_ms, max_age})`` in canonical form."""
    ident = identifier.encode()
    return (
        b"\x83\x68\x03\x6d"
        + struct.pack(">I", len(ident))
        + ident
        + _etf_integer(signed_at_ms)
        + _etf_integer(max_age)
    )


def sign_token(
    secret: str,
    salt_bytes: bytes,
    identifier: str,
    signed_at_s: int,
    params: NH1Params = NH1Params(),
) -> str:
    """The ``x-nh-signature`` value for the given salt and signing time."""
    key = derive_key(secret, salt_bytes, params)
    signing_input = f"{PROTECTED}.{_b64url(etf_payload(identifier, signed_at_s * 1000))}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def sign_headers(
    key: str, secret: str, identifier: str, now_s: int, params: NH1Params = NH1Params()
) -> list[tuple[str, str]]:
    """The four upgrade-request headers, in the order nerves_hub_link sends them.

    ``now_s`` is the OS clock in whole seconds; call this right before every
    connection attempt (protocol.md §14 fix of the 2.5.2 quirk of signing at the
    start of the back-off wait, which let long waits present expired tokens).
    """
    alg = params.alg
    signed_at = str(int(now_s))
    token = sign_token(secret, salt(alg, key, signed_at), identifier, int(now_s), params)
    return [
        ("x-nh-alg", alg),
        ("x-nh-key", key),
        ("x-nh-time", signed_at),
        ("x-nh-signature", token),
    ]


class _EtfReader:
    """A tiny, safe ETF decoder for the one term shape NH1 tokens carry."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise AuthError("truncated NH1 token payload")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        tag = self.take(1)[0]
        if tag == 0x61:
            return self.take(1)[0]
        if tag == 0x62:
            return int(struct.unpack(">i", self.take(4))[0])
        if tag == 0x6E:
            n, sign = self.take(2)
            value = int.from_bytes(self.take(n), "little")
            return -value if sign else value
        raise AuthError("NH1 token payload: integer expected")

    def binary(self) -> bytes:
        if self.take(1)[0] != 0x6D:
            raise AuthError("NH1 token payload: binary expected")
        (length,) = struct.unpack(">I", self.take(4))
        return self.take(length)


def decode_payload(payload: bytes) -> tuple[str, int, int]:
    """Decode ``{identifier, signed_at_ms, max_age}``; raise AuthError otherwise."""
    reader = _EtfReader(payload)
    if reader.take(1) != b"\x83":
        raise AuthError("NH1 token payload: bad ETF version")
    tag = reader.take(1)[0]
    if tag != 0x68 or reader.take(1)[0] != 3:
        raise AuthError("NH1 token payload: 3-tuple expected")
    try:
        identifier = reader.binary().decode()
    except UnicodeDecodeError as exc:
        raise AuthError("NH1 token payload: identifier is not UTF-8") from exc
    signed_at_ms = reader.integer()
    max_age = reader.integer()
    if reader.pos != len(payload):
        raise AuthError("NH1 token payload: trailing bytes")
    return identifier, signed_at_ms, max_age


def verify_headers(
    headers: dict[str, str],
    secret_for_key: dict[str, str],
    now_ms: int,
    max_age_s: int = SERVER_MAX_AGE_S,
) -> VerifiedToken:
    """Check NH1 headers as nerves_hub_web does; raise AuthError on any failure.

    ``headers`` maps lower-case header names to values; ``secret_for_key`` maps
    known ``nhp_``/``nhd_`` keys to their secrets.
    """
    try:
        alg = headers["x-nh-alg"]
        key = headers["x-nh-key"]
        time_text = headers["x-nh-time"]
        token = headers["x-nh-signature"]
    except KeyError as exc:
        raise AuthError(f"missing header {exc.args[0]}") from exc
    if not alg.startswith(f"{SIGNATURE_VERSION}-HMAC-"):
        raise AuthError("unsupported x-nh-alg")
    fields = alg[len(SIGNATURE_VERSION) + 6 :].split("-")
    if len(fields) != 3:
        raise AuthError("malformed x-nh-alg")
    try:
        params = NH1Params(fields[0].lower(), int(fields[1]), int(fields[2]))
        int(time_text)
    except ValueError as exc:
        raise AuthError("malformed x-nh-alg or x-nh-time") from exc
    if params.digest not in hashlib.algorithms_available or not (
        0 < params.iterations <= 1_000_000 and 0 < params.length <= 128
    ):
        raise AuthError("unsupported key derivation parameters")
    secret = secret_for_key.get(key)
    if secret is None:
        raise AuthError("unknown key")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PROTECTED:
        raise AuthError("malformed x-nh-signature")
    derived = derive_key(secret, salt(alg, key, time_text), params)
    expected = hmac.new(derived, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64url_decode(parts[2])):
        raise AuthError("bad signature")
    identifier, signed_at_ms, _max_age = decode_payload(_b64url_decode(parts[1]))
    if signed_at_ms + max_age_s * 1000 < now_ms:
        raise AuthError("expired signature")
    return VerifiedToken(key=key, identifier=identifier, signed_at_ms=signed_at_ms)

"""fwup's ``disk_crypto``: the sector ciphers behind ``raw_write(offset, "cipher=...",
"secret=...")`` (and a delta update's ``delta-source-raw-options``).

Behaviour follows fwup 1.16.0's ``src/disk_crypto.c``:

* options: each argument is ``key=value[,key=value...]`` with the keys ``cipher``
  and ``secret``; a value is cut at 32 (cipher) or 128 (secret) characters and,
  as fwup copies it with ``strncpy`` into the same buffer, a later shorter value
  overwrites only the start of an earlier one; one without the other is an error;
* ``aes-cbc-plain``: AES-256-CBC per 512-byte sector, the IV being the sector
  number (counted from the start of the write, truncated to 32 bits) little-endian
  and zero-padded; the key is 64 hex digits, or (deprecated, fwup 1.5.0) base64 of
  32 bytes, decoded up to the first non-base64 character;
* ``aes-xts-plain64``: AES-256-XTS per 512-byte sector, the tweak being the 64-bit
  sector number little-endian; the key is 128 hex digits (two AES-256 keys).

The cipher works on whole segments: ``encrypt(data, lba)`` takes any number of
whole sectors, the first being sector ``lba``. Errors are ``FirmwareError`` with
fwup's text. This is the one module that uses ``cryptography``'s ciphers; it only
uses APIs present since cryptography 38.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nhlink_dbus.errors import FirmwareError

SECTOR = 512
_MAX_CIPHER_LEN = 32
_MAX_SECRET_LEN = 128
_AES_KEYLEN = 32
_XTS_KEYLEN = 64
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_U128 = (1 << 128) - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64 = {c: i for i, c in enumerate(_B64_ALPHABET)}

Buffer = bytes | bytearray | memoryview


def _strncpy(buf: str, value: str, limit: int) -> str:
    """fwup's ``strncpy(buf, value, min(limit, len))`` without a terminator: the value
    replaces only the start of what the buffer held."""
    part = value[:limit]
    return part + buf[len(part) :]


def parse_options(args: Sequence[str]) -> tuple[str, str]:
    """(cipher, secret) from raw_write's option arguments, as fwup's ``parse_options``."""
    cipher = ""
    secret = ""
    for arg in args:
        key: str | None = arg
        while key is not None:
            eq = key.find("=")
            if eq < 0:
                raise FirmwareError(f"Expecting '=' for in parameter '{key}'")
            rest = key[eq + 1 :]
            comma = rest.find(",")
            value = rest if comma < 0 else rest[:comma]
            if key.startswith("cipher="):
                cipher = _strncpy(cipher, value, _MAX_CIPHER_LEN)
            elif key.startswith("secret="):
                secret = _strncpy(secret, value, _MAX_SECRET_LEN)
            else:
                raise FirmwareError(f"Unexpected parameter: {key}")
            key = None if comma < 0 else rest[comma + 1 :]
    if bool(cipher) != bool(secret):
        raise FirmwareError("Both a cipher and secret are required if one is supplied")
    return cipher, secret


def _hex_key(text: str, size: int) -> bytes | None:
    if len(text) != 2 * size or not _HEX.issuperset(text):
        return None
    return bytes.fromhex(text)


def _base64_key(text: str, size: int) -> bytes | None:
    """fwup's ``from_base64``: decode up to the first non-base64 character (padding
    included); None when that is more than ``size`` bytes, not exactly ``size`` bytes,
    or the leftover bits are not zero."""
    acc = 0
    bits = 0
    out = bytearray()
    for ch in text:
        digit = _B64.get(ch)
        if digit is None:
            break
        acc = ((acc << 6) | digit) & 0xFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            if len(out) >= size:
                return None
            out.append((acc >> bits) & 0xFF)
    if bits > 4 or acc & ((1 << bits) - 1):
        return None
    return bytes(out) if len(out) == size else None


class AesCbcPlain:
    """``aes-cbc-plain``: each sector CBC-encrypted on its own, IV = le32(sector)."""

    name = "aes-cbc-plain"

    def __init__(self, key: bytes) -> None:
        self._aes = algorithms.AES(key)

    def _run(self, data: Buffer, lba: int, decrypt: bool) -> bytes:
        view = memoryview(data)
        out = bytearray(len(view))
        for pos in range(0, len(view) - len(view) % SECTOR, SECTOR):
            iv = ((lba + pos // SECTOR) & _U32).to_bytes(4, "little") + bytes(12)
            cipher = Cipher(self._aes, modes.CBC(iv))
            ctx = cipher.decryptor() if decrypt else cipher.encryptor()
            out[pos : pos + SECTOR] = ctx.update(view[pos : pos + SECTOR])
        return bytes(out)

    def encrypt(self, data: Buffer, lba: int) -> bytes:
        return self._run(data, lba, False)

    def decrypt(self, data: Buffer, lba: int) -> bytes:
        return self._run(data, lba, True)


def _xor(a: Buffer, b: Buffer) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class AesXtsPlain64:
    """``aes-xts-plain64``: each sector XTS-encrypted, tweak = le64(sector).

    OpenSSL refuses an XTS key whose two halves are equal; mbedtls (fwup) does not,
    so such a key is handled here with the XTS construction over AES-ECB."""

    name = "aes-xts-plain64"

    def __init__(self, key: bytes) -> None:
        self._aes = algorithms.AES(key)
        self._fallback: tuple[algorithms.AES, algorithms.AES] | None = None
        try:
            Cipher(self._aes, modes.XTS(bytes(16))).encryptor()
        except ValueError:
            self._fallback = (algorithms.AES(key[:32]), algorithms.AES(key[32:]))

    def _run(self, data: Buffer, lba: int, decrypt: bool) -> bytes:
        view = memoryview(data)
        usable = len(view) - len(view) % SECTOR
        if self._fallback is not None:
            return self._run_ecb(view[:usable], lba, decrypt) + bytes(len(view) - usable)
        out = bytearray(len(view))
        for pos in range(0, usable, SECTOR):
            tweak = ((lba + pos // SECTOR) & _U64).to_bytes(16, "little")
            cipher = Cipher(self._aes, modes.XTS(tweak))
            ctx = cipher.decryptor() if decrypt else cipher.encryptor()
            out[pos : pos + SECTOR] = ctx.update(view[pos : pos + SECTOR])
        return bytes(out)

    def _run_ecb(self, view: memoryview, lba: int, decrypt: bool) -> bytes:
        assert self._fallback is not None
        data_key, tweak_key = self._fallback
        sectors = len(view) // SECTOR
        units = b"".join(((lba + i) & _U64).to_bytes(16, "little") for i in range(sectors))
        first = Cipher(tweak_key, modes.ECB()).encryptor().update(units)
        masks = []
        for i in range(sectors):
            t = int.from_bytes(first[16 * i : 16 * i + 16], "little")
            for _ in range(SECTOR // 16):
                masks.append(t.to_bytes(16, "little"))
                t = ((t << 1) & _U128) ^ (0x87 if t >> 127 else 0)
        mask = b"".join(masks)
        ecb = Cipher(data_key, modes.ECB())
        ctx = ecb.decryptor() if decrypt else ecb.encryptor()
        return _xor(ctx.update(_xor(view, mask)), mask)

    def encrypt(self, data: Buffer, lba: int) -> bytes:
        return self._run(data, lba, False)

    def decrypt(self, data: Buffer, lba: int) -> bytes:
        return self._run(data, lba, True)


DiskCipher = AesCbcPlain | AesXtsPlain64


def _cbc(secret: str) -> AesCbcPlain:
    key = _hex_key(secret, _AES_KEYLEN)
    if key is None:
        # fwup 1.5.0 took base64; kept for aes-cbc-plain only.
        key = _base64_key(secret, _AES_KEYLEN)
    if key is None:
        raise FirmwareError(f"aes-cbc-plain requires a hex-encoded {_AES_KEYLEN * 8}-bit key")
    return AesCbcPlain(key)


def _xts(secret: str) -> AesXtsPlain64:
    key = _hex_key(secret, _XTS_KEYLEN)
    if key is None:
        raise FirmwareError(f"aes-xts-plain64 requires a hex-encoded {_XTS_KEYLEN * 8}-bit key")
    return AesXtsPlain64(key)


_CIPHERS: dict[str, Callable[[str], DiskCipher]] = {
    "aes-cbc-plain": _cbc,
    "aes-xts-plain64": _xts,
}


def open_cipher(args: Sequence[str]) -> DiskCipher:
    """The cipher raw_write's option arguments select (fwup's ``disk_crypto_init``).

    Raises ``FirmwareError`` with fwup's message for bad options, an unknown cipher
    or a malformed secret."""
    cipher, secret = parse_options(args)
    make = _CIPHERS.get(cipher)
    if make is None:
        raise FirmwareError(f"Unsupported disk encryption: {cipher}")
    return make(secret)

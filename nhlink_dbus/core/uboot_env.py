"""The U-Boot environment block, as fwup's ``uboot_*`` functions write it.

Non-redundant layout (fixtures/fwup/EXPECT.md): a little-endian CRC-32 (zlib
polynomial) of everything after it, then ``name=value\\0`` for every variable
sorted by name in byte order, one more ``\\0``, then 0xff up to the block size.
An empty environment is the CRC, a single ``\\0`` and the 0xff fill.
"""

from __future__ import annotations

import struct
import zlib

from nhlink_dbus.errors import FirmwareError


class UbootEnvError(ValueError):
    """The block does not hold a valid environment (bad CRC or layout)."""


def decode(block: bytes) -> dict[str, str]:
    """Variables of a valid block; raise :class:`UbootEnvError` otherwise."""
    if len(block) < 5:
        raise UbootEnvError("U-Boot environment block too small")
    (crc,) = struct.unpack_from("<I", block)
    if zlib.crc32(block[4:]) != crc:
        raise UbootEnvError("U-Boot environment CRC mismatch")
    out: dict[str, str] = {}
    pos = 4
    while pos < len(block) and block[pos] != 0:
        end = block.find(b"\0", pos)
        if end < 0:
            raise UbootEnvError("U-Boot environment not terminated")
        item = block[pos:end]
        name, sep, value = item.partition(b"=")
        if sep:
            out[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos = end + 1
    return out


def encode(variables: dict[str, str], size: int) -> bytes:
    """A block of ``size`` bytes holding ``variables``."""
    body = b"".join(
        k.encode() + b"=" + v.encode() + b"\0"
        for k, v in sorted(variables.items(), key=lambda kv: kv[0].encode())
    )
    body += b"\0"
    if len(body) > size - 4:
        raise FirmwareError("Not enough space in U-Boot environment")
    body += b"\xff" * (size - 4 - len(body))
    return struct.pack("<I", zlib.crc32(body)) + body

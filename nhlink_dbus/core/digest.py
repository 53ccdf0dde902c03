"""Incremental digests behind one small interface, so a driver can move the
hashing of resource data to another thread without the core knowing.

The core asks a :data:`DigestFactory` for a fresh digest per entry, feeds it
with ``update`` and reads ``result()`` once at the end of the entry.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from typing import Protocol
else:
    from nhlink_dbus.core.lean import Protocol

try:
    # hashlib's own BLAKE2 (hashlib.blake2b is this very type) without hashlib, whose
    # import loads OpenSSL's libcrypto: 4 MiB of resident memory in every apply.
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it: hashlib's, whatever it is
    from hashlib import blake2b


class Digest(Protocol):
    def update(self, data: bytes) -> None: ...

    def result(self) -> bytes: ...


DigestFactory = Callable[[str], Digest]  # the argument names the algorithm

__all__ = ["Blake2b256", "Crc32", "Digest", "DigestFactory", "blake2b", "new_digest"]


class Blake2b256:
    """BLAKE2b with a 32-byte digest (fwup's resource hash)."""

    def __init__(self) -> None:
        self._h = blake2b(digest_size=32)

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def result(self) -> bytes:
        return self._h.digest()


class Crc32:
    """ZIP's CRC-32; ``result`` is the value as 4 big-endian bytes."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def result(self) -> bytes:
        return self._crc.to_bytes(4, "big")


def new_digest(algorithm: str) -> Digest:
    """The synchronous default :data:`DigestFactory`."""
    if algorithm == "blake2b-256":
        return Blake2b256()
    if algorithm == "crc32":
        return Crc32()
    raise ValueError(f"unknown digest {algorithm}")

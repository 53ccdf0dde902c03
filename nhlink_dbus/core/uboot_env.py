"""The U-Boot environment block, as fwup's ``uboot_*`` functions write it.

Non-redundant layout (fixtures/fwup/EXPECT.md): a little-endian CRC-32 (zlib
polynomial) of everything after it, then ``name=value\\0`` for every variable
sorted by name in byte order, one more ``\\0``, then 0xff up to the block size.
An empty environment is the CRC, a single ``\\0`` and the 0xff fill.

Redundant layout (``block-offset-redund``): two copies of the same size, each
with a flags byte right after the CRC (the CRC does not cover it), so the
variables start at byte 5. The flags byte is a wrapping counter: the copy
written last has the bigger one (``(b - a) % 256`` in 1..127 means ``b`` is
newer; equal flags prefer the primary copy). fwup reads the newer valid copy
and rewrites the *other* one with that copy's flags + 1 (mod 256), so a
power cut during the write always leaves one valid copy. When the preferred
copy is corrupt, the other one is read and the corrupt one is the one written
next (:class:`EnvRead` records which).

fwup always leaves at least one byte of the block unused: the variables, the
closing ``\\0`` and the header must fit in ``size - 1`` bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError

#: The message fwup gives when the variables do not fit in the block.
NO_ROOM = "Not enough room in U-boot environment"
#: The message fwup gives for a block that passes the CRC but is malformed.
INVALID = "Invalid U-boot environment"


class UbootEnvError(ValueError):
    """The block does not hold a valid environment (bad CRC or layout)."""


def _data_offset(redundant: bool) -> int:
    return 5 if redundant else 4


def decode_pairs(
    block: bytes,
    *,
    redundant: bool = False,
    block_offset: int | None = None,
    errors: str = "replace",
) -> list[tuple[str, str]]:
    """The ``(name, value)`` entries of a valid block, in fwup's list order.

    That is the reverse of their order in the block, duplicates kept: fwup
    reads a name's value from its first entry in this list (the last one in
    the block) and :func:`setenv` / :func:`unsetenv` change only that entry.
    Raises :class:`UbootEnvError` with fwup's message when the block is not valid.

    ``redundant``: the block is one copy of a redundant environment (flags
    byte at 4, not covered by the CRC). ``block_offset`` (in 512-byte blocks)
    only goes into the CRC error message, as fwup words it. ``errors`` is how
    bytes that are not UTF-8 are decoded (``"surrogateescape"`` keeps them
    for :func:`encode`).
    """
    start = _data_offset(redundant)
    if len(block) < start + 1:
        raise UbootEnvError("U-boot environment block too small")
    (expected,) = struct.unpack_from("<I", block)
    actual = zlib.crc32(block[start:])
    if expected != actual:
        where = "" if block_offset is None else f" (block {block_offset})"
        raise UbootEnvError(
            f"U-boot environment{where} CRC32 mismatch"
            f" (expected 0x{expected:08x}; got 0x{actual:08x})"
        )
    out: list[tuple[str, str]] = []
    end = len(block)
    pos = start
    while pos != end and block[pos] != 0:
        # As fwup: the name is at least one byte (a leading '=' is part of it)
        # and ends at the first '='; the value ends at the next NUL.
        eq = pos + 1
        while eq != end and block[eq] not in (0, 0x3D):
            eq += 1
        if eq == end or block[eq] == 0:
            raise UbootEnvError(INVALID)
        nul = block.find(b"\0", eq + 1)
        if nul < 0:
            raise UbootEnvError(INVALID)
        out.append(
            (block[pos:eq].decode("utf-8", errors), block[eq + 1 : nul].decode("utf-8", errors))
        )
        pos = nul + 1
    out.reverse()
    return out


def decode(
    block: bytes,
    *,
    redundant: bool = False,
    block_offset: int | None = None,
    errors: str = "replace",
) -> dict[str, str]:
    """Variables of a valid block (see :func:`decode_pairs`); raise
    :class:`UbootEnvError` otherwise. A name given twice has its last value."""
    pairs = decode_pairs(block, redundant=redundant, block_offset=block_offset, errors=errors)
    return _as_dict(pairs)


def _as_dict(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    return dict(reversed(pairs))  # the first entry of a name wins


def setenv(pairs: list[tuple[str, str]], name: str, value: str) -> None:
    """fwup's ``uboot_setenv`` on :func:`decode_pairs` entries: replace the
    first entry of ``name``, or add one at the front."""
    for i, (key, _old) in enumerate(pairs):
        if key == name:
            pairs[i] = (name, value)
            return
    pairs.insert(0, (name, value))


def unsetenv(pairs: list[tuple[str, str]], name: str) -> None:
    """fwup's ``uboot_unsetenv``: remove the first entry of ``name`` only."""
    for i, (key, _old) in enumerate(pairs):
        if key == name:
            del pairs[i]
            return


def encode(
    variables: Mapping[str, str] | Sequence[tuple[str, str]],
    size: int,
    *,
    flags: int | None = None,
) -> bytes:
    """A block of ``size`` bytes holding ``variables``.

    Entries are sorted by name in byte order; entries with the same name (from
    :func:`decode_pairs`) keep their order. ``flags`` given: one copy of a
    redundant environment with that flags byte (taken mod 256). Raises
    :class:`FirmwareError` with fwup's message when the variables do not fit.
    """
    start = _data_offset(flags is not None)
    items = variables.items() if isinstance(variables, Mapping) else variables
    pairs = [
        (k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
        for k, v in items
    ]
    pairs.sort(key=lambda kv: kv[0])  # stable, as fwup's qsort is here
    body = b"".join(k + b"=" + v + b"\0" for k, v in pairs) + b"\0"
    # fwup refuses an entry that would reach the last two bytes of the block,
    # so header + entries + final NUL never use the last byte.
    if start + len(body) > size - 1:
        raise FirmwareError(NO_ROOM)
    data = body + b"\xff" * (size - start - len(body))
    header = struct.pack("<I", zlib.crc32(data))
    if flags is not None:
        header += bytes([flags & 0xFF])
    return header + data


@dataclass(frozen=True, slots=True)
class EnvRead:
    """What fwup learns from reading an environment, for writing it back.

    For a redundant environment ``flags`` is the flags byte of the copy read;
    the next write uses ``flags + 1`` and goes to the copies marked
    ``write_primary`` / ``write_secondary`` (the one not read). A
    non-redundant environment is always written to its only (primary) block.
    """

    pairs: list[tuple[str, str]]  # as decode_pairs gives them
    flags: int
    write_primary: bool
    write_secondary: bool
    block: bytes  # the copy the entries come from
    # Why the copy tried first was not used (then the other one was): fwup sets this as
    # its last error text even though the read succeeds.
    first_error: str | None = None

    @property
    def values(self) -> dict[str, str]:
        return _as_dict(self.pairs)


def read_redundant(
    primary: bytes,
    secondary: bytes,
    *,
    block_offset: int | None = None,
    errors: str = "replace",
) -> EnvRead:
    """The newer valid copy of a redundant environment.

    Raises :class:`UbootEnvError` (the error of the copy tried last, with
    ``block_offset`` in its message, as fwup reports it) when neither is valid.
    """
    if len(primary) < 5 or len(secondary) < 5:
        raise UbootEnvError("U-boot environment block too small")
    flag1, flag2 = primary[4], secondary[4]
    delta = (flag2 - flag1) & 0xFF
    if delta == 0 or delta >= 128:
        first, second, first_is_primary = primary, secondary, True
    else:
        first, second, first_is_primary = secondary, primary, False
    try:
        pairs = decode_pairs(first, redundant=True, block_offset=block_offset, errors=errors)
        return EnvRead(pairs, first[4], not first_is_primary, first_is_primary, first)
    except UbootEnvError as exc:
        first_error = str(exc)
    pairs = decode_pairs(second, redundant=True, block_offset=block_offset, errors=errors)
    return EnvRead(pairs, second[4], first_is_primary, not first_is_primary, second, first_error)


def as_single_copy(block: bytes) -> bytes:
    """One redundant copy without its flags byte: a non-redundant block
    (one byte shorter) that :func:`decode` reads exactly as the copy."""
    return block[:4] + block[5:]

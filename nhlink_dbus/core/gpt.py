"""The GUID partition table fwup's ``gpt_write`` writes, byte for byte.

Sources: fwup ``src/gpt.c`` (``gpt_cfg_to_partitions``, ``gpt_create_cfg``), ``src/gpt.h``,
``src/util.c`` (``string_to_uuid_me``, ``ascii_to_utf16le``), ``src/crc32.c`` (the zlib CRC-32)
and ``src/block_cache.c`` (the device size handed to ``gpt_create_cfg``). The rules, as fwup has
them:

* Sector 0 is a protective MBR: one entry, type 0xEE, start CHS ``00 02 00``, end CHS
  ``ff ff ff``, LBA 1, ``num_blocks - 1`` sectors; everything else zero but ``55 aa``.
* The primary header is LBA 1, its 128 entries (32 sectors) LBA 2..33. The backup entries are
  the 33 sectors before the last one, the backup header the last sector. Only partitions 0..15
  can be used; the other entries stay zero.
* Headers: revision 1.0, size 92, first usable LBA 34, last usable ``num_blocks - 34``.
* GUIDs are stored mixed-endian (the first three groups little-endian).
* A name is its first 36 bytes, each widened to a 16-bit unit (not real UTF-16).
* ``expand = true`` grows the partition to the last usable LBA when the device is large enough.
* ``num_blocks`` is the device size in 512-byte blocks truncated to 32 bits, as fwup's block
  cache keeps it; 0 (a regular file that is empty or of unknown size) means "just big enough":
  the end of the last partition plus 34 sectors. All block arithmetic is 32-bit, as in fwup.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError

__all__ = ["GptPartition", "GptSpec", "build_gpt", "parse_gpt"]

BLOCK = 512
MAX_PARTITIONS = 16  # gpt.h GPT_MAX_PARTITIONS
_TABLE_BLOCKS = 32  # gpt.h GPT_PARTITION_TABLE_BLOCKS
_GPT_BLOCKS = 1 + _TABLE_BLOCKS  # gpt.h GPT_SIZE_BLOCKS: header + entries
_ENTRY_SIZE = 128
_ENTRIES = _TABLE_BLOCKS * BLOCK // _ENTRY_SIZE
_HEADER_SIZE = 92
_U32 = 0xFFFFFFFF
_INT32_MAX = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class GptPartition:
    """One ``partition N { ... }`` block, with every field already in on-disk form."""

    index: int
    block_offset: int
    block_count: int
    type_guid: bytes  # 16 bytes, mixed-endian
    guid: bytes  # 16 bytes, mixed-endian
    name: bytes  # 72 bytes
    flags: int
    expand: bool


@dataclass(frozen=True, slots=True)
class GptSpec:
    """A parsed ``gpt`` section: the disk GUID and its partitions by index."""

    disk_guid: bytes  # 16 bytes, mixed-endian
    partitions: tuple[GptPartition, ...]

    def verify(self) -> None:
        """fwup's create-time checks (gpt.c ``gpt_verify_partitions``): no overlaps, and
        nothing after a partition with ``expand = true``. fwup does not run them on apply."""
        if not self.partitions:
            raise FirmwareError("empty partition table?")
        expanding = False
        for p in self.partitions:
            left, right = p.block_offset, (p.block_offset + p.block_count) & _U32
            if left == right and not p.expand:
                continue
            if expanding:
                raise FirmwareError(
                    'a partition can\'t be specified after the one with "expand = true"'
                )
            expanding = expanding or p.expand
            for q in self.partitions:
                if q is p:
                    continue
                qleft, qright = q.block_offset, (q.block_offset + q.block_count) & _U32
                if qleft <= left < qright or qleft < right <= qright:
                    raise FirmwareError(
                        f"partitions {p.index} (blocks {left} to {right}) and "
                        f"{q.index} (blocks {qleft} to {qright}) overlap"
                    )


def _strtoul(text: str) -> tuple[int, str]:
    """C ``strtoul(text, &end, 0)``: the value and the unparsed rest (0x hex, 0 octal)."""
    s = text.lstrip(" \t\n\r\f\v")
    negative = s.startswith("-")
    if s and s[0] in "+-":
        s = s[1:]
    if s[:2].lower() == "0x" and s[2:3] and s[2:3] in "0123456789abcdefABCDEF":
        base, s = 16, s[2:]
    elif s[:1] == "0":
        base = 8
    else:
        base = 10
    digits = "0123456789abcdef"[:base]
    n = 0
    while n < len(s) and s[n].lower() in digits:
        n += 1
    if n == 0:
        return 0, text
    value = int(s[:n], base)
    return (-value if negative else value), s[n:]


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = (_text(value) or "false").lower()
    # libconfuse's boolean spellings
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    raise FirmwareError(f"{what} must be true or false: '{text}'")


def uuid_mixed_endian(text: str) -> bytes | None:
    """fwup's ``string_to_uuid_me``: GPT byte order, or None if ``text`` is not a UUID.

    Only the first 36 characters count (fwup checks ``strlen >= 36``).
    """
    if len(text) < 36 or any(text[i] != "-" for i in (8, 13, 18, 23)):
        return None
    groups = (text[0:8], text[9:13], text[14:18], text[19:23], text[24:36])
    try:
        raw = [bytes.fromhex(g) for g in groups]
    except ValueError:
        return None
    if any(len(g) * 2 != len(s) or not s.isascii() for g, s in zip(raw, groups, strict=True)):
        return None
    return raw[0][::-1] + raw[1][::-1] + raw[2][::-1] + raw[3] + raw[4]


def _partition(title: str, options: Mapping[str, object]) -> GptPartition:
    index, _ = _strtoul(title)
    index &= 0xFFFFFFFFFFFFFFFF  # unsigned long
    if index >= MAX_PARTITIONS:
        raise FirmwareError(f"partition must be numbered 0 through {MAX_PARTITIONS - 1}")
    type_guid = uuid_mixed_endian(_text(options.get("type")) or "")
    if type_guid is None:
        raise FirmwareError(f"partition {index}'s type must set to a UUID")
    guid = uuid_mixed_endian(_text(options.get("guid")) or "")
    if guid is None:
        raise FirmwareError(f"partition {index} must have a valid guid")
    # util.c ascii_to_utf16le: each of the first 36 bytes becomes one 16-bit unit
    name_bytes = (_text(options.get("name")) or "").encode("utf-8")[:36]
    name = b"".join(bytes([b, 0]) for b in name_bytes).ljust(72, b"\0")

    offset_text = _text(options.get("block-offset"))
    if not offset_text:
        raise FirmwareError(f"partition {index}'s block_offset is required")
    block_offset, _ = _strtoul(offset_text)
    # gpt.c checks the end pointer of the *flags* parse here, not the offset's.
    flags, flags_rest = _strtoul(_text(options.get("flags")) or "0")
    if block_offset < 0 or block_offset >= _U32:
        raise FirmwareError(
            f"partition {index}'s block_offset must be positive and less than 2^32 - 1: "
            f"'{offset_text}'"
        )
    if flags_rest:
        raise FirmwareError(f"error parsing partition {index}'s block offset")

    count_value = options.get("block-count")
    if count_value is None:
        block_count = _INT32_MAX  # libconfuse default in fwup's cfgfile.c
    else:
        count, rest = _strtoul(_text(count_value) or "")
        if rest.strip() or _text(count_value) == "":
            raise FirmwareError(f"partition {index}'s block-count must be an integer")
        block_count = count & _U32
    if block_count >= _INT32_MAX:
        raise FirmwareError(
            f"partition {index}'s block-count must be specified and less than 2^31 - 1"
        )
    return GptPartition(
        index=index,
        block_offset=block_offset,
        block_count=block_count,
        type_guid=type_guid,
        guid=guid,
        name=name,
        flags=flags & 0xFFFFFFFFFFFFFFFF,
        expand=_bool(options.get("expand"), f"partition {index}'s expand"),
    )


def parse_gpt(
    options: Mapping[str, object], partitions: Sequence[tuple[str, Mapping[str, object]]]
) -> GptSpec:
    """Parse a ``gpt`` section the way fwup's ``gpt_cfg_to_partitions`` reads it.

    ``options`` holds the section's own keys (``guid``); ``partitions`` lists, in file
    order, ``(title, keys)`` for every ``partition <title> { ... }`` block, where the keys are
    ``block-offset``, ``block-count``, ``type``, ``guid``, ``name``, ``flags`` and ``expand``.
    Values may be strings as written in meta.conf, ints or bools; other keys are ignored, as
    fwup ignores unknown options when applying. Raises :class:`FirmwareError` with fwup's text.
    """
    disk_guid = uuid_mixed_endian(_text(options.get("guid")) or "")
    if disk_guid is None:
        raise FirmwareError("GPT must have a valid disk guid")
    found: dict[int, GptPartition] = {}
    for title, keys in partitions:
        part = _partition(title, keys)
        if part.index in found:
            raise FirmwareError(f"invalid or duplicate partition number found for {part.index}")
        found[part.index] = part
    return GptSpec(disk_guid, tuple(found[i] for i in sorted(found)))


def _entry(p: GptPartition, num_blocks: int) -> bytes:
    count = p.block_count
    # gpt.c create_partition: grow to the last usable LBA if the device is big enough
    if p.expand and num_blocks > ((p.block_offset + p.block_count + _GPT_BLOCKS) & _U32):
        count = (num_blocks - _GPT_BLOCKS - 1 - p.block_offset) & _U32
    last = (p.block_offset + count - 1) & _U32
    return p.type_guid + p.guid + struct.pack("<QQQ", p.block_offset, last, p.flags) + p.name


def _entries(spec: GptSpec, num_blocks: int) -> bytes:
    table = bytearray(_ENTRIES * _ENTRY_SIZE)
    for p in spec.partitions:
        table[p.index * _ENTRY_SIZE : (p.index + 1) * _ENTRY_SIZE] = _entry(p, num_blocks)
    return bytes(table)


def _header(spec: GptSpec, *, current: int, backup: int, table_lba: int, last_usable: int,
            table_crc: int) -> bytes:  # fmt: skip
    fields = struct.pack(
        "<8sIIIIQQQQ16sQIII",
        b"EFI PART",
        0x00010000,
        _HEADER_SIZE,
        0,  # CRC, filled in below
        0,
        current,
        backup,
        1 + _GPT_BLOCKS,
        last_usable,
        spec.disk_guid,
        table_lba,
        _ENTRIES,
        _ENTRY_SIZE,
        table_crc,
    )
    crc = zlib.crc32(fields)
    return (fields[:16] + struct.pack("<I", crc) + fields[20:]).ljust(BLOCK, b"\0")


def _protective_mbr(num_blocks: int) -> bytes:
    mbr = bytearray(BLOCK)
    entry = bytes([0, 0, 0x02, 0, 0xEE, 0xFF, 0xFF, 0xFF]) + struct.pack(
        "<II", 1, (num_blocks - 1) & _U32
    )
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def build_gpt(spec: GptSpec, num_blocks: int) -> tuple[tuple[int, bytes], ...]:
    """The writes of ``gpt_write``: ``((byte_offset, data), ...)`` for the target.

    ``num_blocks`` is the target size in 512-byte blocks (0 if unknown, as for fwup's regular
    files that are empty). The first write is sector 0 (protective MBR), the primary header
    and entries; the second the backup entries and header.
    """
    blocks = num_blocks & _U32  # block_cache.c keeps the size as a uint32_t
    if blocks == 0:
        ends = [(p.block_offset + p.block_count) & _U32 for p in spec.partitions]
        blocks = (max(ends, default=0) + _GPT_BLOCKS + 1) & _U32  # gpt.c compute_num_blocks
    table = _entries(spec, blocks)
    table_crc = zlib.crc32(table)
    last_usable = (blocks - _GPT_BLOCKS - 1) & _U32
    backup_table = (blocks - _GPT_BLOCKS) & _U32
    primary = _header(
        spec,
        current=1,
        backup=(blocks - 1) & _U32,
        table_lba=2,
        last_usable=last_usable,
        table_crc=table_crc,
    )
    secondary = _header(
        spec,
        current=(blocks - 1) & _U32,
        backup=1,
        table_lba=backup_table,
        last_usable=last_usable,
        table_crc=table_crc,
    )
    return (
        (0, _protective_mbr(blocks) + primary + table),
        (backup_table * BLOCK, table + secondary),
    )

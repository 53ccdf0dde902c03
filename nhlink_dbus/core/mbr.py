"""The master boot record fwup's ``mbr_write`` writes (fixtures/fwup/EXPECT.md).

All 512 bytes of sector 0: 440 bytes of bootstrap code (zeros), the disk
signature (u32 LE) at 440, two zero bytes, four 16-byte partition entries,
``55 aa``. CHS addresses use 255 heads x 63 sectors; past cylinder 1023 the
three CHS bytes stay zero, as fwup leaves them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from nhlink_dbus.core.fwup_conf import Mbr


def _chs(lba: int) -> bytes:
    cylinder = lba // (255 * 63)
    if cylinder > 1023:
        return b"\0\0\0"
    head = (lba // 63) % 255
    sector = lba % 63 + 1
    return bytes([head, sector | ((cylinder >> 2) & 0xC0), cylinder & 0xFF])


def encode(mbr: Mbr, total_blocks: int | None = None) -> bytes:
    """Sector 0 for ``mbr``; ``total_blocks`` sizes partitions marked ``expand``."""
    entries = [b"\0" * 16] * 4
    for p in mbr.partitions:
        count = p.block_count
        if p.expand and total_blocks is not None and total_blocks > p.block_offset + count:
            count = total_blocks - p.block_offset
        if count == 0 and p.block_offset == 0 and p.type == 0:
            continue
        last = p.block_offset + count - 1 if count else p.block_offset
        entries[p.index] = (
            bytes([0x80 if p.boot else 0])
            + _chs(p.block_offset)
            + bytes([p.type & 0xFF])
            + _chs(last)
            + struct.pack("<II", p.block_offset, count)
        )
    return b"\0" * 440 + struct.pack("<IH", mbr.signature, 0) + b"".join(entries) + b"\x55\xaa"


def partition_offsets(sector0: bytes) -> Iterable[tuple[int, int]]:
    """(index, LBA start) of the used entries of an MBR with a valid signature."""
    if len(sector0) < 512 or sector0[510:512] != b"\x55\xaa":
        return []
    out = []
    for i in range(4):
        entry = sector0[446 + 16 * i : 462 + 16 * i]
        start, count = struct.unpack_from("<II", entry, 8)
        if entry[4] != 0 or count:
            out.append((i, start))
    return out

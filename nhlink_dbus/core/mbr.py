"""The master boot record fwup's ``mbr_write`` writes (fixtures/fwup/EXPECT.md).

Sector 0: 440 bytes of bootstrap code (zeros, the ``bootstrap-code`` given in
hex, or an Intel OSIP header), the disk signature (u32 LE) at 440, two zero
bytes, four 16-byte partition entries, ``55 aa``. CHS addresses use 255 heads
x 63 sectors; past cylinder 1023 the three CHS bytes stay zero, as fwup leaves
them. An entry of type 0 is "unused": its first 8 bytes are zero, but the LBA
start and count are written anyway (fwup keeps data there for some boards).

Partitions 4 to 11 are logical partitions inside partition 3, which must then
be extended (type 0x05 or 0x0f): each gets an extended boot record (EBR) in the
block at ``partition 3's offset + n``, pointing at its partition (relative to
the EBR) and at the next EBR (relative to partition 3).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from nhlink_dbus.core.fwup_conf import Mbr, MbrPartition
from nhlink_dbus.core.records import dataclass, replace
from nhlink_dbus.errors import FirmwareError

BLOCK = 512
PRIMARY = 4


def is_extended(type_: int) -> bool:
    return type_ in (0x05, 0x0F)


@dataclass(frozen=True, slots=True)
class _Entry:
    type: int
    block_offset: int
    block_count: int
    boot: bool = False
    expand: bool = False
    record_offset: int = 0  # the EBR's block, for a logical partition


def _chs(lba: int) -> bytes:
    if lba > 63 * 255 * 0x3FF:
        return b"\0\0\0"
    cylinder = lba // (255 * 63)
    head = (lba // 63) % 255
    sector = lba % 63 + 1
    return bytes([head, ((cylinder & 0x300) >> 2) | sector, cylinder & 0xFF])


def _entry_bytes(e: _Entry) -> bytes:
    if e.type > 0:
        head = (
            bytes([0x80 if e.boot else 0])
            + _chs(e.block_offset)
            + bytes([e.type])
            + _chs((e.block_offset + e.block_count - 1) & 0xFFFFFFFF)
        )
    else:
        head = b"\0" * 8
    return head + struct.pack("<II", e.block_offset & 0xFFFFFFFF, e.block_count & 0xFFFFFFFF)


def _table(mbr: Mbr) -> list[_Entry]:
    """The 12 entries fwup's table holds, unused ones zero, with EBR places assigned."""
    table = [_Entry(0, 0, 0)] * 12
    for p in mbr.partitions:
        table[p.index] = _Entry(p.type, p.block_offset, p.block_count, p.boot, p.expand)
    logical = max((p.index for p in mbr.partitions if p.index >= PRIMARY), default=-1)
    if logical >= PRIMARY:
        if not is_extended(table[3].type):
            raise FirmwareError(
                "to use more than 4 partitions with MBR, partition 3 must have extended"
                " partition type 0xf or 0x5"
            )
        record = table[3].block_offset
        for i in range(PRIMARY, 12):
            if not table[i].type:
                break
            table[i] = replace(table[i], record_offset=record)
            record += 1
    return table


def _expand(table: list[_Entry], total_blocks: int) -> list[_Entry]:
    end = max([total_blocks, *(e.block_offset + e.block_count for e in table)])
    out = []
    for e in table:
        count = e.block_count
        if e.expand and end > e.block_offset + count:
            count = end - e.block_offset
        out.append(replace(e, block_count=count, expand=False))
    return out


def _verify(table: Sequence[_Entry]) -> None:
    """fwup's mbr_verify on the expanded table: no overlaps, except that an extended
    partition 3 must hold every logical partition and its EBR."""
    for i, p in enumerate(table):
        left, right = p.block_offset, p.block_offset + p.block_count
        if p.type == 0 or left == right:
            continue
        for j in range(i + 1, len(table)):
            q = table[j]
            if q.type == 0:
                continue
            jleft, jright = q.block_offset, q.block_offset + q.block_count
            if jleft == jright:
                continue
            required = i == 3 and is_extended(p.type)
            overlaps = not (left >= jright or right <= jleft)
            ebr_j = q.record_offset > 0 and left <= q.record_offset < right
            ebr_i = p.record_offset > 0 and jleft <= p.record_offset < jright
            if overlaps != required:
                if not required:
                    raise FirmwareError(
                        f"partitions {i} (blocks {left} to {right}) and {j} (blocks {jleft}"
                        f" to {jright}) overlap"
                    )
                raise FirmwareError(
                    f"partition 3, the extended partition, is expected to contain partition {j}"
                )
            if ebr_j != required:
                if not required:
                    raise FirmwareError(
                        f"partition {i} (blocks {left} to {right}) overlaps the EBR at"
                        f" {q.record_offset} for partition {j}"
                    )
                raise FirmwareError(
                    "partition 3, the extended partition, is expected to contain the EBR"
                    f" for partition {j}"
                )
            if ebr_i:
                raise FirmwareError(
                    f"partition {j} (blocks {jleft} to {jright}) overlaps the EBR at"
                    f" {p.record_offset} for partition {i}"
                )


def _osip(mbr: Mbr) -> bytes:
    osip = mbr.osip
    assert osip is not None
    images = max(osip.images) + 1
    size = 32 + 24 * images
    out = bytearray(size)
    out[0:4] = b"$OS$"
    out[5], out[6] = osip.minor & 0xFF, osip.major & 0xFF
    out[8], out[9] = osip.num_pointers & 0xFF, images & 0xFF
    struct.pack_into("<H", out, 10, size & 0xFFFF)
    for index, d in osip.images.items():
        struct.pack_into(
            "<HHIIIIB",
            out,
            32 + 24 * index,
            d.os_minor & 0xFFFF,
            d.os_major & 0xFFFF,
            d.start_block_offset & 0xFFFFFFFF,
            d.ddr_load_address & 0xFFFFFFFF,
            d.entry_point & 0xFFFFFFFF,
            d.image_size_blocks & 0xFFFFFFFF,
            d.attribute & 0xFF,
        )
    checksum = 0
    for byte in out:
        checksum ^= byte
    out[7] = checksum
    return bytes(out[:440]) + b"\0" * max(0, 440 - size)


def encode_all(mbr: Mbr, total_blocks: int | None = None) -> list[tuple[int, bytes]]:
    """(block, 512 bytes) for sector 0 and each EBR; ``total_blocks`` (0 or None when
    unknown) sizes partitions marked ``expand`` (and the extended partition)."""
    table = _table(mbr)
    expanded = _expand(table, total_blocks or 0)
    _verify(expanded)
    if mbr.bootstrap is not None:
        code = mbr.bootstrap
    elif mbr.osip is not None:
        code = _osip(mbr)
    else:
        code = b"\0" * 440
    sector0 = (
        code
        + struct.pack("<IH", mbr.signature & 0xFFFFFFFF, 0)
        + b"".join(_entry_bytes(e) for e in expanded[:PRIMARY])
        + b"\x55\xaa"
    )
    out = [(0, sector0)]
    logical = [e for e in expanded[PRIMARY:] if e.record_offset]
    for n, e in enumerate(logical):
        first = _Entry(e.type, e.block_offset - e.record_offset, e.block_count)
        last = n == len(logical) - 1
        chain = b"\0" * 16 if last else _entry_bytes(_Entry(0x0F, n + 1, 1))  # the next EBR
        ebr = b"\0" * 446 + _entry_bytes(first) + chain + b"\0" * 32 + b"\x55\xaa"
        out.append((e.record_offset, ebr))
    return out


def encode(mbr: Mbr, total_blocks: int | None = None) -> bytes:
    """Sector 0 only (see :func:`encode_all`)."""
    return encode_all(mbr, total_blocks)[0][1]


def partition_offset(sector0: bytes, index: int) -> int | None:
    """The LBA start in entry ``index`` of an MBR, as fwup's require-partition-offset reads
    it: any of the four entries, used or not; 0 for a logical index (fwup reads no EBR);
    None without the ``55 aa`` signature."""
    if len(sector0) < BLOCK or sector0[510:512] != b"\x55\xaa":
        return None
    if not 0 <= index < PRIMARY:
        return 0
    (start,) = struct.unpack_from("<I", sector0, 446 + 16 * index + 8)
    return int(start)


__all__ = ["Mbr", "MbrPartition", "encode", "encode_all", "is_extended", "partition_offset"]

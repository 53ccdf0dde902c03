"""fwup's ``fat_*`` actions on a FAT file system inside an image, carried out by mtools.

fwup 1.16 drives ChaN's FatFs R0.15 (``src/fatfs.c`` over ``src/3rdparty/fatfs``); this module
gives the same results file by file (names and their case, sizes, contents, attributes, volume
label, serial, directory tree) by running mtools against ``image@@byteoffset``. The rules
copied from fwup, each cited where it is applied:

* ``fat_mkfs``: written here, not by mformat: byte for byte what FatFs ``f_mkfs`` writes with
  fwup's options (``FM_SFD | FM_FAT | FM_FAT32``, 2 FATs, 1 sector per cluster, 512 root
  entries, OEM name ``MSDOS5.0``, "FAT12"/"FAT16"/"FAT32" type strings, FAT32 FSINFO and backup
  sectors), plus the volume's last sector filled with 0xff and fwup's trim of whole 128 KiB
  segments (see :func:`mkfs_writes`); a regular-file image shorter than the volume grows.
* Every timestamp is 1980-01-01 00:00:00 (fwup pins FAT time); the volume serial is that FAT
  time plus the volume size in sectors (``f_mkfs``: ``vsn = sz_vol + GET_FATTIME()``).
* Names are matched case-insensitively against the long and the short name; a name that fits
  8.3 in one case per part gets no long-name entry, only the case flags (mtools writes the same).
* Errors read ``"<context>(<name>): FATFS: <reason>"`` (``fatfs_error`` in ``src/fatfs.c``).

Everything else is done in place: mtools addresses the image at a byte offset and never resizes
it; each operation checks that the image size did not change. (``fat_adapter.MtoolsFat`` with
a block cache runs these on a private copy of the volume and writes changes through the cache.)
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError, TargetError

_T = TypeVar("_T")

__all__ = ["FatFilesystem", "FatGeometry", "fatfs_geometry", "mkfs_writes", "volume_serial"]

SECTOR = 512
_SEGMENT = 128 * 1024  # fwup's block cache segment, the unit fatfs_mkfs trims

# fwup's fatfs_set_time(1980-01-01 00:00:00) as a FAT date/time word pair (ff.c GET_FATTIME):
# (year - 1980) << 25 | month << 21 | day << 16.
FAT_TIME_1980 = (1 << 21) | (1 << 16)
# SOURCE_DATE_EPOCH for mtools, read with TZ=UTC: 1980-01-01 00:00:00.
_EPOCH_1980 = "315532800"

# ff.c: cluster-count limits that decide the FAT type (FatFs, not the Microsoft spec).
_MAX_FAT12 = 0xFF5
_MAX_FAT16 = 0xFFF5
_MAX_FAT32 = 0x0FFFFFF5
_ROOT_ENTRIES = 512  # f_mkfs default n_root

# FatFs LFN rules (ff.c create_name): characters never allowed in a name.
_BAD_NAME_CHARS = frozenset('"*:<>?|\x7f')
# ff.c f_setlabel: characters never allowed in a FAT volume label.
_BAD_LABEL_CHARS = frozenset('+.,;=[]/\\"*:<>?|\x7f')


class _Fr(enum.Enum):
    """The FRESULT codes fwup reports, with the text of ``fatfs_error_to_string``."""

    NO_FILE = "FATFS: Could not find the file"
    NO_PATH = "FATFS: Could not find the path"
    INVALID_NAME = "FATFS: The path name format is invalid"
    DENIED = "FATFS: Access denied due to prohibited access or directory full"
    EXIST = "FATFS: Destination file already exists"
    NO_FILESYSTEM = "FATFS: There is no valid FAT volume"
    MKFS_ABORTED = (
        "FATFS: f_mkfs() aborted due to a parameter error. Try adjusting the partition size."
    )


class _FatError(Exception):
    """Internal: a FatFs-level failure, turned into FirmwareError with the op's context."""

    def __init__(self, fr: _Fr) -> None:
        super().__init__(fr.value)
        self.fr = fr


def _firmware_error(context: str, name: str, fr: _Fr) -> FirmwareError:
    # src/fatfs.c fatfs_error: set_last_error("%s(%s): %s", context, filename, reason)
    return FirmwareError(f"{context}({name}): {fr.value}")


@dataclass(frozen=True, slots=True)
class FatGeometry:
    """The layout ``f_mkfs`` chooses for a volume of ``total_sectors``."""

    fat_bits: int  # 12, 16 or 32
    total_sectors: int
    reserved_sectors: int
    fat_sectors: int  # per FAT; there are always 2
    root_entries: int  # 0 on FAT32
    clusters: int


def fatfs_geometry(block_count: int) -> FatGeometry | None:
    """The geometry fwup's ``fat_mkfs`` gives ``block_count`` sectors, or None if it aborts.

    Follows ff.c ``f_mkfs`` (R0.15) with fwup's options (src/fatfs.c ``fatfs_mkfs``):
    ``fmt = FM_SFD|FM_FAT|FM_FAT32``, ``n_fat = 2``, ``au_size = 512`` (one sector), default
    root entries, and an alignment of one sector (fwup's GET_BLOCK_SIZE of 128 KiB is above
    FatFs's 32 KiB limit, so FatFs falls back to 1).
    """
    size = block_count
    if size < 128 or size >= 1 << 32:
        return None
    bits = 16  # FM_FAT given: start from FAT12/16, switch to FAT32 when clusters overflow
    while True:
        if bits == 32:
            clusters = size
            fat_sectors = (clusters * 4 + 8 + SECTOR - 1) // SECTOR
            reserved, dir_sectors = 32, 0
            if clusters <= _MAX_FAT16 or clusters > _MAX_FAT32:
                return None
        else:
            clusters = size
            if clusters > _MAX_FAT12:
                fat_bytes = clusters * 2 + 4
            else:
                bits = 12
                fat_bytes = (clusters * 3 + 1) // 2 + 3
            fat_sectors = (fat_bytes + SECTOR - 1) // SECTOR
            reserved, dir_sectors = 1, _ROOT_ENTRIES * 32 // SECTOR
        data_start = reserved + 2 * fat_sectors + dir_sectors
        if size < data_start + 16:
            return None
        clusters = size - data_start
        if bits == 32 and clusters <= _MAX_FAT16:
            return None  # au_size is fixed, so f_mkfs cannot retry with other clusters
        if bits == 16:
            if clusters > _MAX_FAT16:
                bits = 32
                continue
            if clusters <= _MAX_FAT12:
                return None
        if bits == 12 and clusters > _MAX_FAT12:
            return None
        return FatGeometry(
            fat_bits=bits,
            total_sectors=size,
            reserved_sectors=reserved,
            fat_sectors=fat_sectors,
            root_entries=0 if bits == 32 else _ROOT_ENTRIES,
            clusters=clusters,
        )


def volume_serial(block_count: int) -> int:
    """The volume serial number fwup's ``fat_mkfs`` writes (ff.c: ``sz_vol + GET_FATTIME()``)."""
    return (block_count + FAT_TIME_1980) & 0xFFFFFFFF


def _boot_sector(g: FatGeometry) -> bytes:
    """The volume boot record ff.c ``f_mkfs`` writes for geometry ``g`` (super-floppy)."""
    b = bytearray(SECTOR)
    b[0:11] = b"\xeb\xfe\x90MSDOS5.0"  # BS_JmpBoot, BS_OEMName
    struct.pack_into("<HBHBH", b, 11, SECTOR, 1, g.reserved_sectors, 2, g.root_entries)
    if g.total_sectors < 0x10000:
        struct.pack_into("<H", b, 19, g.total_sectors)  # BPB_TotSec16
    else:
        struct.pack_into("<I", b, 32, g.total_sectors)  # BPB_TotSec32
    b[21] = 0xF8  # BPB_Media
    struct.pack_into("<HHI", b, 24, 63, 255, 0)  # BPB_SecPerTrk, BPB_NumHeads, BPB_HiddSec
    serial = volume_serial(g.total_sectors)
    if g.fat_bits == 32:
        struct.pack_into("<I", b, 36, g.fat_sectors)  # BPB_FATSz32
        struct.pack_into("<IHH", b, 44, 2, 1, 6)  # BPB_RootClus32, BPB_FSInfo32, BPB_BkBootSec32
        b[64] = 0x80  # BS_DrvNum32
        b[66] = 0x29  # BS_BootSig32
        struct.pack_into("<I", b, 67, serial)  # BS_VolID32
        b[71:90] = b"NO NAME    FAT32   "
    else:
        struct.pack_into("<H", b, 22, g.fat_sectors)  # BPB_FATSz16
        b[36] = 0x80  # BS_DrvNum
        b[38] = 0x29  # BS_BootSig
        struct.pack_into("<I", b, 39, serial)  # BS_VolID
        # fwup's patched ff.c writes "FAT12"/"FAT16" (u-boot needs it) instead of "FAT".
        b[43:62] = f"NO NAME    FAT{g.fat_bits}   ".encode()
    b[510:512] = b"\x55\xaa"
    return bytes(b)


def mkfs_writes(block_count: int) -> tuple[FatGeometry, list[tuple[int, bytes]]]:
    """What fwup's ``fat_mkfs`` writes: the geometry and (volume sector, data) in fwup's order.

    The volume's last sector filled with 0xff comes first (src/fatfs.c ``fatfs_mkfs``), then
    what ff.c ``f_mkfs`` writes. FirmwareError with fwup's text when ``f_mkfs`` aborts.
    """
    geometry = fatfs_geometry(block_count)
    if geometry is None:
        raise _firmware_error("fat_mkfs", "", _Fr.MKFS_ABORTED)
    return geometry, [(block_count - 1, b"\xff" * SECTOR), *_mkfs_sectors(geometry)]


def _mkfs_sectors(g: FatGeometry) -> list[tuple[int, bytes]]:
    """(sector, data) for everything ``f_mkfs`` writes, in its order."""
    vbr = _boot_sector(g)
    out = [(0, vbr)]
    if g.fat_bits == 32:
        fsinfo = bytearray(SECTOR)
        struct.pack_into("<I", fsinfo, 0, 0x41615252)  # FSI_LeadSig
        struct.pack_into("<III", fsinfo, 484, 0x61417272, g.clusters - 1, 2)  # StrucSig, free, next
        fsinfo[510:512] = b"\x55\xaa"
        out += [(6, vbr), (7, bytes(fsinfo)), (1, bytes(fsinfo))]
        head = struct.pack("<III", 0xFFFFFFF8, 0xFFFFFFFF, 0x0FFFFFFF)
    elif g.fat_bits == 16:
        head = struct.pack("<I", 0xFFFFFFF8)
    else:
        head = b"\xf8\xff\xff"
    fat = head + bytes(g.fat_sectors * SECTOR - len(head))
    sector = g.reserved_sectors
    for _ in range(2):
        out.append((sector, fat))
        sector += g.fat_sectors
    root_sectors = 1 if g.fat_bits == 32 else g.root_entries * 32 // SECTOR
    out.append((sector, bytes(root_sectors * SECTOR)))
    return out


def _oem(path: str) -> str:
    """The characters FatFs sees in ``path``: fwup builds it with FF_LFN_UNICODE 0 and
    FF_CODE_PAGE 850, so each byte of the (UTF-8) text is one code page 850 character
    ("é", C3 A9, is "├®"); mtools, run in a UTF-8 locale, then stores the same name."""
    return path.encode("utf-8", "surrogateescape").decode("cp850")


def _split_path(path: str) -> list[str]:
    """Split and check a path as FatFs does (ff.c follow_path/create_name, no RPATH)."""
    parts: list[str] = []
    for raw in re.split(r"[/\\]", _oem(path)):
        if not raw:
            continue  # FatFs skips repeated separators
        name = raw.rstrip(" .")  # create_name strips trailing spaces and dots
        if (
            not name
            or len(name) > 255
            or any(ch in _BAD_NAME_CHARS or ord(ch) < 0x20 for ch in name)
        ):
            raise _FatError(_Fr.INVALID_NAME)
        parts.append(name)
    return parts


def _fat_label(label: str) -> str:
    """The 0..11-character label f_setlabel stores for ``label`` (ff.c f_setlabel)."""
    out = []
    for ch in label:
        if ord(ch) < 0x20:
            break  # f_setlabel stops at the first control character
        up = ch.upper()
        if len(up) != 1 or up in _BAD_LABEL_CHARS or ord(up) > 0x7E:
            raise _FatError(_Fr.INVALID_NAME)
        out.append(up)
    if len(out) > 11:
        raise _FatError(_Fr.INVALID_NAME)
    return "".join(out).rstrip(" ")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One directory entry as mdir shows it."""

    name: str  # the long name, or the short name as displayed (case flags applied)
    short: str
    is_dir: bool
    size: int
    has_long_name: bool = False

    def matches(self, name: str) -> bool:
        key = name.upper()
        return key in (self.name.upper(), self.short.upper())


# ff.c's ExCvt table for code page 850 (TBL_CT850): the short-name "upper case" of each
# byte 0x80-0xFF; accented letters lose their accent ("ë" is "E").
_CP850_UPPER = bytes.fromhex(
    "43554541414141434545454949494141"
    "4592924f4f4f5555594f554f9c4f9e9f"
    "41494f55a5a5a6a7a8a9aaabacadaeaf"
    "b0b1b2b3b4414141b8b9babbbcbdbebf"
    "c0c1c2c3c4c54141c8c9cacbcccdcecf"
    "d1d145454549494949d9dadbdcdd49df"
    "4fe14f4f4f4fe6e8e85555555959eeef"
    "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
)


def _sfn_checksum(sfn: bytes) -> int:
    total = 0
    for byte in sfn:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _lfn_entries(name: str, sfn: bytes) -> bytes:
    """The long-name directory entries of ``name`` for short name ``sfn``, in disk order."""
    units = list(struct.unpack(f"<{len(name.encode('utf-16-le')) // 2}H", name.encode("utf-16-le")))
    count = -(-len(units) // 13)
    units += [0] if len(units) % 13 else []
    units += [0xFFFF] * (count * 13 - len(units))
    checksum = _sfn_checksum(sfn)
    out = []
    for seq in range(count, 0, -1):
        chars = units[(seq - 1) * 13 : seq * 13]
        order = seq | (0x40 if seq == count else 0)
        out.append(
            struct.pack("<B5H", order, *chars[:5])
            + bytes([0x0F, 0, checksum])
            + struct.pack("<6HH2H", *chars[5:11], 0, *chars[11:13])
        )
    return b"".join(out)


def _short_name_bytes(shown: str) -> bytes:
    """The 11 bytes of a short name as mdir shows it ("BASE.EXT", code page 850)."""
    base, _, ext = shown.partition(".")
    return base.ljust(8).encode("cp850", "replace") + ext.ljust(3).encode("cp850", "replace")


def _fatfs_short_name(leaf: str) -> bytes | None:
    """FatFs's 11-byte short name for ``leaf`` when it fits 8.3 without loss (code page
    850, upper-cased); None when FatFs would mangle it (a numeric tail)."""
    base, dot, ext = leaf.rpartition(".")
    if not dot:
        base, ext = leaf, ""
    if not base or "." in base or len(base) > 8 or len(ext) > 3:
        return None
    if any(ch in "+,;=[] " for ch in base + ext):
        return None  # replaced or dropped by create_name: a lossy name
    try:
        raw = (base.ljust(8) + ext.ljust(3)).encode("cp850")
    except UnicodeEncodeError:
        return None
    raw = bytes(_CP850_UPPER[b - 0x80] if b >= 0x80 else ord(chr(b).upper()) for b in raw)
    if raw[0] == 0xE5:
        raw = b"\x05" + raw[1:]  # ff.c: a first byte of 0xE5 is stored as 0x05
    return raw


# One entry line of `mdir -a` (mtools 4.0.32): 8.3 columns, size or <DIR>, date, time, long name.
_MDIR_LINE = re.compile(
    r"^(?P<base>.{8}) (?P<ext>.{3}) (?P<size><DIR> {4}| *\d+) \d{4}-\d\d-\d\d +\d+:\d\d"
    r" (?: (?P<long>.+))?$"
)
_MTOOLS_PACKAGE = "mtools"


def mtools_environment() -> dict[str, str]:
    """A clean, fixed environment for mtools: no user or system drive settings matter for
    ``-i``, and SOURCE_DATE_EPOCH pins every timestamp mtools writes to fwup's 1980-01-01."""
    return {
        "PATH": os.defpath,
        "HOME": "/nonexistent",
        "MTOOLSRC": "/dev/null",
        "MTOOLS_SKIP_CHECK": "1",
        "MTOOLS_LOWER_CASE": "0",
        "MTOOLS_NO_VFAT": "0",
        "MTOOLS_FAT_COMPATIBILITY": "0",
        "MTOOLS_NAME_NUMERIC_TAIL": "1",
        "MTOOLS_TWENTY_FOUR_HOUR_CLOCK": "1",
        "MTOOLS_DATE_STRING": "yyyy-mm-dd",
        "SOURCE_DATE_EPOCH": _EPOCH_1980,
        "TZ": "UTC",
        "LC_ALL": "C.UTF-8",  # names go to mtools as UTF-8 (see _oem)
    }


class FatFilesystem:
    """The FAT file system starting at ``block_offset`` 512-byte blocks into ``image_path``.

    Each method is one fwup action and raises :class:`FirmwareError` with fwup's message when
    fwup would fail, or :class:`TargetError` when the image or mtools cannot be used.
    ``mtools_dir`` is where the mtools binaries live (default: found on ``PATH``).
    """

    def __init__(
        self, image_path: str, block_offset: int, *, mtools_dir: str | None = None
    ) -> None:
        if block_offset < 0:
            raise ValueError("block_offset must be >= 0")
        self._image = image_path
        self._offset = block_offset * SECTOR
        self._mtools_dir = mtools_dir
        self._env = mtools_environment()

    # -- fwup actions -------------------------------------------------------------------------

    def mkfs(self, block_count: int) -> None:
        """fat_mkfs(block_offset, block_count): a fresh FAT exactly as FatFs f_mkfs lays it out.

        The sectors are written here, byte for byte what fwup writes (ff.c ``f_mkfs`` after
        src/fatfs.c ``fatfs_mkfs``): boot sector (and FAT32's FSINFO and backup copies), both
        FATs, the root directory, and the volume's last sector filled with 0xff. fwup first
        trims the volume's whole 128 KiB cache segments, so a segment it writes into reads
        back as zeros wherever FatFs did not write; that is reproduced as well.
        """
        geometry, writes = mkfs_writes(block_count)
        start = self._offset
        end = start + block_count * SECTOR
        trim_lo = -(-start // _SEGMENT) * _SEGMENT
        trim_hi = trim_lo + ((end - trim_lo) // _SEGMENT) * _SEGMENT if end > trim_lo else trim_lo
        zero_first: list[int] = []
        for sector, data in writes:
            first = start + sector * SECTOR
            seg = first - first % _SEGMENT
            while seg < first + len(data):
                if trim_lo <= seg < trim_hi and seg not in zero_first:
                    zero_first.append(seg)
                seg += _SEGMENT
        try:
            with open(self._image, "r+b") as f:
                for seg in zero_first:
                    os.pwrite(f.fileno(), bytes(_SEGMENT), seg)
                for sector, data in writes:
                    os.pwrite(f.fileno(), data, start + sector * SECTOR)
        except OSError as exc:
            raise TargetError(f"cannot write {self._image}: {exc}") from exc
        fs_type = self._minfo().get("disk type", "").strip()
        if fs_type != f"FAT{geometry.fat_bits}":
            raise TargetError(
                f"the new file system reads as {fs_type or 'an unknown type'} where fwup makes "
                f"FAT{geometry.fat_bits} ({block_count} sectors)"
            )

    def write(self, path: str, src_file: str) -> None:
        """fat_write: create ``path``, or truncate and rewrite it, with the bytes of ``src_file``.

        fwup opens with FA_CREATE_ALWAYS (src/fatfs.c fatfs_truncate): an existing file keeps
        its name and gets attributes ``A`` only; a read-only file or a directory is refused.
        """
        self._create_from(path, src_file, context="Can't open file on FAT partition")

    def cp(self, src: str, dst: str) -> None:
        """fat_cp: copy file ``src`` to ``dst`` (overwriting it, as FA_CREATE_ALWAYS does)."""
        with tempfile.TemporaryDirectory(prefix="nhlink-fat-") as tmp:
            local = str(Path(tmp, "data"))
            self.copy_out(src, local)
            self.copy_in(dst, local)

    def copy_out(self, src: str, local: str) -> None:
        """fat_cp's first half: file ``src`` to the local file ``local`` (f_open FA_READ)."""
        context = "fatfs_cp can't open file"
        entry = self._guard(context, src, lambda: self._lookup(src))
        if entry is None or entry.is_dir:  # f_open(FA_READ) on a directory: FR_NO_FILE
            raise _firmware_error(context, src, _Fr.NO_FILE)
        self._run("mcopy", ["-n", self._mpath(self._canonical(src)), local])

    def copy_in(self, dst: str, local: str) -> None:
        """fat_cp's second half: ``dst`` created or truncated with the bytes of ``local``."""
        self._create_from(dst, local, context="fatfs_cp can't open file")

    def mv(self, src: str, dst: str, force: bool) -> None:
        """fat_mv / fat_mv!: rename ``src`` to ``dst``; ``force`` first removes ``dst``.

        f_rename fails with FR_EXIST if ``dst`` exists (unless it is ``src`` itself, a change
        of case), keeps the attributes and adds ``A`` on files (ff.c f_rename).
        """
        context = "fat_mv!" if force else "fat_mv"
        if force:
            self._remove(dst, must_exist=False, context=context)
        entry = self._guard(context, src, lambda: self._lookup(src))
        if entry is None:
            raise _firmware_error(context, src, _Fr.NO_FILE)
        target = self._guard(context, src, lambda: self._lookup(dst))
        dst_parts = self._guard(context, src, lambda: _split_path(dst))
        if not dst_parts:
            raise _firmware_error(context, src, _Fr.INVALID_NAME)
        src_path = self._canonical(src)
        if target is not None and self._canonical(dst).upper() != src_path.upper():
            raise _firmware_error(context, src, _Fr.EXIST)
        dst_path = "/".join([*self._canonical_parts(dst_parts[:-1]), dst_parts[-1]])
        if entry.is_dir:
            # Directories are renamed in place; mtools keeps the old entry's case flags.
            self._named(
                dst_path,
                lambda at: self._run("mmove", ["-D", "o", self._mpath(src_path), self._mpath(at)]),
                lambda at: self._run("mmove", ["-D", "o", self._mpath(at), self._mpath(src_path)]),
            )
            return
        # A file is re-created under its new name so that its short name and case flags are
        # made from that name, as FatFs's dir_register does; mmove would keep the old ones.
        attrs = self._attributes(src_path)
        with tempfile.TemporaryDirectory(prefix="nhlink-fat-") as tmp:
            local = str(Path(tmp, "data"))
            self._run("mcopy", ["-n", self._mpath(src_path), local])
            self._run("mattrib", ["-r", self._mpath(src_path)])
            self._run("mdel", [self._mpath(src_path)])
            self._named(
                dst_path,
                lambda at: self._run("mcopy", ["-D", "o", local, self._mpath(at)]),
                lambda at: self._run("mdel", [self._mpath(at)]),
            )
        self._set_attributes(dst_path, attrs | {"A"})

    def rm(self, path: str, must_exist: bool) -> None:
        """fat_rm / fat_rm!: delete a file or an empty directory (ff.c f_unlink).

        A missing ``path`` is fine unless ``must_exist`` (fat_rm!; src/fatfs.c fatfs_rm).
        """
        self._remove(path, must_exist=must_exist, context="fat_rm!" if must_exist else "fat_rm")

    def mkdir(self, path: str) -> None:
        """fat_mkdir: create a directory; an existing directory is fine (src/fatfs.c)."""
        entry = self._guard("fat_mkdir", path, lambda: self._lookup(path))
        if entry is not None:
            if entry.is_dir:
                return
            raise _firmware_error("fat_mkdir", path, _Fr.EXIST)
        parts = _split_path(path)
        target = "/".join([*self._canonical_parts(parts[:-1]), parts[-1]])
        self._named(
            target,
            lambda at: self._run("mmd", [self._mpath(at)]),
            lambda at: self._run("mrd", [self._mpath(at)]),
        )

    def setlabel(self, label: str) -> None:
        """fat_setlabel: set (or, with an empty label, remove) the volume label.

        FatFs upper-cases the label and rejects FAT-invalid characters and more than 11
        characters (ff.c f_setlabel). FatFs changes only the root-directory entry and leaves
        "NO NAME" in the boot sector, which ``fsck.vfat -n`` reports as an inconsistency;
        mlabel keeps both copies equal, and we let it (a deliberate, harmless difference
        from fwup's bytes: the file system then checks clean).
        """
        # ff.c f_setlabel mounts the volume before it looks at the label.
        self._guard("fat_setlabel", label, self._require_fs)
        value = self._guard("fat_setlabel", label, lambda: _fat_label(label))
        if value:
            self._run("mlabel", [f"::{value}"])
        else:
            self._run("mlabel", ["-c", "::"])
        shown = self._run("mlabel", ["-s", "::"]).stdout
        expected = f" Volume label is {value}" if value else " Volume has no label"
        if not shown.startswith(expected):
            raise TargetError(f"mlabel stored {shown.strip()!r} for label {value!r}")

    def touch(self, path: str) -> None:
        """fat_touch: create an empty file if ``path`` does not exist; no timestamp change.

        f_open(FA_OPEN_ALWAYS) refuses an existing read-only file or a directory (FR_DENIED).
        """
        entry = self._guard("fat_touch", path, lambda: self._lookup(path))
        if entry is None:
            self._create_from(path, os.devnull, context="fat_touch")
            return
        if entry.is_dir or "R" in self._attributes(self._canonical(path)):
            raise _firmware_error("fat_touch", path, _Fr.DENIED)

    def attrib(self, path: str, attrib: str) -> None:
        """fat_attrib: set exactly the R/H/S attributes named in ``attrib`` (ff.c f_chmod)."""
        if any(ch not in "RHSrhs" for ch in attrib):
            # src/functions.c fat_attrib_validate
            raise FirmwareError("fat_attrib only supports R, H, and S attributes")
        entry = self._guard("fat_attrib", path, lambda: self._lookup(path))
        if entry is None:
            raise _firmware_error("fat_attrib", path, _Fr.NO_FILE)
        target = self._canonical(path)
        keep = self._attributes(target) & {"A"}
        self._set_attributes(target, keep | set(attrib.upper()))

    def exists(self, path: str) -> bool:
        """True if ``path`` is a file (require-fat-file-exists opens it with FA_OPEN_EXISTING)."""
        try:
            entry = self._lookup(path)
        except _FatError:
            return False
        return entry is not None and not entry.is_dir

    def entries(self, directory: str) -> list[tuple[str, bool, int]] | None:
        """(name, is a directory, size) in ``directory`` ("" = the root), matched as FatFs
        matches names; None when there is no such directory."""
        if directory:
            try:
                entry = self._guard("fatfs_ls", directory, lambda: self._lookup(directory))
            except FirmwareError:
                return None  # a missing or bad path on the way
            if entry is None or not entry.is_dir:
                return None
            directory = self._canonical(directory)
        else:
            self._guard("fatfs_ls", "/", self._require_fs)
        return [(e.name, e.is_dir, e.size) for e in self._list(directory)]

    def read(self, path: str) -> bytes | None:
        """The bytes of file ``path``; None if it is missing, a directory, or there is no FAT."""
        if not self.exists(path):
            return None
        with tempfile.TemporaryDirectory(prefix="nhlink-fat-") as tmp:
            local = Path(tmp, "data")
            self._run("mcopy", ["-n", self._mpath(self._canonical(path)), str(local)])
            return local.read_bytes()

    # -- FatFs semantics on top of mtools -----------------------------------------------------

    def check_create(self, path: str) -> int:
        """fat_write's first step (src/fatfs.c fatfs_truncate, before any data is read):
        fail as its f_open(FA_CREATE_ALWAYS | FA_WRITE) would, changing nothing. Returns the
        size of the file the truncation empties (0 for a new file)."""
        return self._create_target(path, context="Can't open file on FAT partition")[1]

    def _create_target(self, path: str, *, context: str) -> tuple[str, int]:
        """Where f_open(FA_CREATE_ALWAYS | FA_WRITE) puts ``path`` and the size of the file
        it empties there (0: none), or its error."""
        entry = self._guard(context, path, lambda: self._lookup(path))
        parts = self._guard(context, path, lambda: _split_path(path))
        if not parts:
            raise _firmware_error(context, path, _Fr.INVALID_NAME)
        if entry is not None:
            target = self._canonical(path)
            if entry.is_dir or "R" in self._attributes(target):
                raise _firmware_error(context, path, _Fr.DENIED)
            return target, entry.size
        return "/".join([*self._canonical_parts(parts[:-1]), parts[-1]]), 0

    def _create_from(self, path: str, local: str, *, context: str) -> None:
        """f_open(FA_CREATE_ALWAYS | FA_WRITE) and write ``local``'s bytes."""
        target = self._create_target(path, context=context)[0]
        # An existing entry is rewritten under its own spelling, so its case is kept.
        self._named(
            target,
            lambda at: self._run("mcopy", ["-D", "o", local, self._mpath(at)]),
            lambda at: self._run("mdel", [self._mpath(at)]),
        )
        self._set_attributes(target, {"A"})

    def _named(
        self, path: str, create: Callable[[str], object], undo: Callable[[str], object]
    ) -> None:
        """``create`` the entry ``path`` (canonical directories) under FatFs's name rule.

        A name with an extended character (ff.c create_name): FatFs gives it a long-name
        entry even when it fits 8.3, and a short name upper-cased in code page 850 with no
        numeric tail when nothing is lost; mtools may write only the short name (with case
        flags) or another short name. The entry is then made again under a stand-in name of
        the same length that mtools must give a long name (one character replaced by "+"),
        and its entries rewritten to FatFs's: long name, short name and their checksum.
        """
        create(path)
        directory, _, leaf = path.rpartition("/")
        want = None if all(ord(ch) < 0x80 for ch in leaf) else _fatfs_short_name(leaf)
        if want is None:
            return  # ASCII, or a lossy name: FatFs's numeric tail and mtools' agree
        entry = self._listed(directory, lambda e: e.matches(leaf), leaf)
        if entry.has_long_name:
            have = _short_name_bytes(entry.short)
            if have == want:
                return
            self._rewrite_entries(path, leaf, have, want)
            return
        undo(path)
        stand_in = leaf.replace(next(ch for ch in leaf if ord(ch) >= 0x80), "+", 1)
        create(f"{directory}/{stand_in}" if directory else stand_in)
        made = self._listed(directory, lambda e: e.name == stand_in, stand_in)
        self._rewrite_entries(path, stand_in, _short_name_bytes(made.short), want, leaf)

    def _rewrite_entries(
        self, path: str, name: str, sfn: bytes, want: bytes, new_name: str | None = None
    ) -> None:
        """Find the long-name entries of ``name`` and its short name ``sfn`` in the volume and
        make them ``new_name``'s (default: ``name``) with short name ``want``."""
        old = _lfn_entries(name, sfn) + sfn
        volume = self._pread(0, self._image_size() - self._offset)
        at = volume.find(old)
        if at < 0 or volume.find(old, at + 1) >= 0:
            raise TargetError(f"cannot give {path!r} FatFs's names (entries not found)")
        entry = bytearray(volume[at + len(old) - 11 : at + len(old) + 21])
        entry[:11] = want
        entry[12] = 0  # no case flags with a long name
        self._pwrite(at, _lfn_entries(new_name or name, want) + bytes(entry))

    def _remove(self, path: str, *, must_exist: bool, context: str) -> None:
        try:
            entry = self._lookup(path)
        except _FatError as exc:
            if exc.fr is _Fr.NO_PATH and not must_exist:
                return
            raise _firmware_error(context, path, exc.fr) from None
        if not _split_path(path):
            raise _firmware_error(context, path, _Fr.INVALID_NAME)  # the root directory
        if entry is None:
            if must_exist:
                raise _firmware_error(context, path, _Fr.NO_FILE)
            return
        target = self._canonical(path)
        if "R" in self._attributes(target):
            raise _firmware_error(context, path, _Fr.DENIED)
        if entry.is_dir:
            if self._list(target):
                raise _firmware_error(context, path, _Fr.DENIED)  # f_unlink: not empty
            self._run("mrd", [self._mpath(target)])
        else:
            self._run("mdel", [self._mpath(target)])

    def _guard(self, context: str, name: str, step: Callable[[], _T]) -> _T:
        try:
            return step()
        except _FatError as exc:
            raise _firmware_error(context, name, exc.fr) from None

    def _lookup(self, path: str) -> _Entry | None:
        """Resolve ``path`` as ff.c follow_path does: None for a missing last component."""
        parts = _split_path(path)
        self._require_fs()
        if not parts:
            return _Entry(name="", short="", is_dir=True, size=0)
        here: list[str] = []
        entry: _Entry | None = None
        for i, part in enumerate(parts):
            found = next((e for e in self._list("/".join(here)) if e.matches(part)), None)
            if found is None:
                if i < len(parts) - 1:
                    raise _FatError(_Fr.NO_PATH)
                return None
            if i < len(parts) - 1 and not found.is_dir:
                raise _FatError(_Fr.NO_PATH)
            here.append(found.name)
            entry = found
        return entry

    def _canonical_parts(self, parts: Sequence[str]) -> list[str]:
        """The on-disk spelling of existing directories ``parts`` (missing: FR_NO_PATH)."""
        here: list[str] = []
        for part in parts:
            found = next((e for e in self._list("/".join(here)) if e.matches(part)), None)
            if found is None or not found.is_dir:
                raise _FatError(_Fr.NO_PATH)
            here.append(found.name)
        return here

    def _canonical(self, path: str) -> str:
        parts = _split_path(path)
        names = self._canonical_parts(parts[:-1])
        last = next(e for e in self._list("/".join(names)) if e.matches(parts[-1]))
        return "/".join([*names, last.name])

    def _listed(self, directory: str, wanted: Callable[[_Entry], bool], name: str) -> _Entry:
        """The entry of ``directory`` that ``wanted`` picks: one just made, so mtools
        listing it otherwise is an error of the target, not a StopIteration."""
        for entry in self._list(directory):
            if wanted(entry):
                return entry
        raise TargetError(f"mdir does not list {name!r} in {directory or '/'!r} after mcopy")

    def _list(self, directory: str) -> list[_Entry]:
        """The entries of ``directory`` (canonical path, "" = root), without "." and ".."."""
        out = self._run("mdir", ["-a", self._mpath(directory)]).stdout
        entries = []
        for line in out.splitlines():
            m = _MDIR_LINE.match(line)
            if m is None:
                continue
            base, ext = m["base"].rstrip(), m["ext"].rstrip()
            if base in (".", ".."):
                continue
            short = f"{base}.{ext}" if ext else base
            size = m["size"]
            is_dir = size.startswith("<DIR>")
            entries.append(
                _Entry(
                    name=m["long"] or short,
                    short=short,
                    is_dir=is_dir,
                    size=0 if is_dir else int(size),
                    has_long_name=bool(m["long"]),
                )
            )
        return entries

    def _attributes(self, path: str) -> set[str]:
        """The R/H/S/A letters mattrib shows for canonical ``path``."""
        line = self._run("mattrib", [self._mpath(path)]).stdout.splitlines()[0]
        flags = line.split("::", 1)[0]
        return {ch for ch in flags if ch in "RHSA"}

    def _set_attributes(self, path: str, attrs: set[str]) -> None:
        args = [("+" if letter in attrs else "-") + letter.lower() for letter in "AHRS"]
        self._run("mattrib", [*args, self._mpath(path)])

    def _require_fs(self) -> None:
        """FR_NO_FILESYSTEM unless mtools recognises a FAT boot sector."""
        result = self._exec("minfo", ["::"])
        if result.returncode != 0:
            if "non DOS media" in result.stderr or "Cannot initialize" in result.stderr:
                raise _FatError(_Fr.NO_FILESYSTEM)
            raise TargetError(f"minfo failed on {self._image}: {result.stderr.strip()}")

    def _minfo(self) -> dict[str, str]:
        out = self._run("minfo", ["::"]).stdout
        facts = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                facts[key.strip()] = value.strip().strip('"')
        return facts

    def _boot_sectors(self) -> dict[int, bytes]:
        """The boot sector (and FAT32's backup at sector 6), to undo mlabel's BPB label."""
        keep = {0: self._pread(0, SECTOR)}
        if keep[0][82:87] == b"FAT32":
            keep[6] = self._pread(6 * SECTOR, SECTOR)
        return keep

    def _restore_boot_sectors(self, keep: dict[int, bytes]) -> None:
        for sector, data in keep.items():
            if self._pread(sector * SECTOR, SECTOR) != data:
                self._pwrite(sector * SECTOR, data)

    # -- I/O ----------------------------------------------------------------------------------

    def _mpath(self, path: str) -> str:
        return "::/" + path

    def _tool(self, name: str) -> str:
        found = (
            str(Path(self._mtools_dir, name))
            if self._mtools_dir is not None
            else shutil.which(name)
        )
        if found is None or not os.access(found, os.X_OK):
            raise TargetError(
                f"{name} not found: the built-in fwup applier needs mtools "
                f"(Debian package {_MTOOLS_PACKAGE!r}: apt-get install {_MTOOLS_PACKAGE})"
            )
        return found

    def _exec(self, tool: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = [self._tool(tool), "-i", f"{self._image}@@{self._offset}", *args]
        try:
            return subprocess.run(
                cmd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
            )
        except OSError as exc:
            raise TargetError(f"cannot run {tool}: {exc}") from exc

    def _run(
        self, tool: str, args: Sequence[str], *, size: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run an mtools command; any failure is an error, and the image must not change size."""
        before = self._image_size() if size is None else size
        result = self._exec(tool, args)
        after = self._image_size()
        if after != before:
            raise TargetError(f"{tool} changed the size of {self._image}: {before} -> {after}")
        if result.returncode != 0:
            message = result.stderr.strip() or f"exit status {result.returncode}"
            if "Disk full" in message or "No free cluster" in message:
                raise FirmwareError(f"{tool}: FAT file system full: {message}")
            raise TargetError(f"{tool} failed on {self._image}: {message}")
        return result

    def _image_size(self) -> int:
        try:
            with open(self._image, "rb") as f:
                return f.seek(0, os.SEEK_END)
        except OSError as exc:
            raise TargetError(f"cannot open {self._image}: {exc}") from exc

    def _pread(self, offset: int, count: int) -> bytes:
        try:
            with open(self._image, "rb") as f:
                f.seek(self._offset + offset)
                return f.read(count)
        except OSError as exc:
            raise TargetError(f"cannot read {self._image}: {exc}") from exc

    def _pwrite(self, offset: int, data: bytes) -> None:
        self._pwrite_abs(self._offset + offset, data)

    def _pwrite_abs(self, offset: int, data: bytes) -> None:
        """Write ``data`` at byte ``offset`` of the image (not of the file system)."""
        try:
            with open(self._image, "r+b") as f:
                f.seek(offset)
                f.write(data)
        except OSError as exc:
            raise TargetError(f"cannot write {self._image}: {exc}") from exc

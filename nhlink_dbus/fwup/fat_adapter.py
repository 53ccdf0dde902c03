"""Binds the applier's :class:`~nhlink_dbus.core.fwup_apply.FatOps` to mtools.

A ``fat_write`` resource is spooled to a temporary file (FAT resources are
boot files: kernels, configs) and copied in with one mtools call on commit.

With a block cache (``MtoolsFat(path, cache)``), FAT work goes through the cache as fwup's
FatFs does (src/fatfs.c ``disk_read``/``disk_write`` over the block cache): each operation
runs mtools on a private sparse copy of the volume (boot area, FATs, root directory and the
clusters in use, read through the cache), and the sectors it changed are written back through
the cache, "streamed" past volume sector 2048 as fwup marks them. Nothing reaches the target
before the cache writes it, so a failed apply drops FAT changes as fwup does (and mkfs trims
the volume in the cache first, as ``fatfs_mkfs`` does). Without a cache, mtools works on the
target directly (the caller flushes the cache around each call).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nhlink_dbus.core.block_cache import BlockCache
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError, TargetError
from nhlink_dbus.fwup.fat import SECTOR, FatFilesystem, mkfs_writes

# src/fatfs.c disk_write: a write to a sector past this one is a "streamed" cache write.
_STREAMED_AFTER = 2048
_CHUNK = 1024 * 1024  # bytes per copy step between the cache and a shadow volume
_ZERO_CHUNK = bytes(4096)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where things are in a FAT volume, from its boot sector (in sectors / clusters)."""

    total_sectors: int
    data_start: int  # first sector of cluster 2
    cluster_sectors: int
    clusters: int
    fat_start: int
    fat_bits: int


def _layout(boot: bytes) -> _Layout | None:
    """The layout of the volume whose boot sector is ``boot``; None if it is not FAT."""
    if len(boot) < SECTOR or boot[510:512] != b"\x55\xaa":
        return None
    bps, spc, rsvd, nfats, root_ent, tot16 = struct.unpack_from("<HBHBHH", boot, 11)
    fatsz = struct.unpack_from("<H", boot, 22)[0] or struct.unpack_from("<I", boot, 36)[0]
    total = tot16 or struct.unpack_from("<I", boot, 32)[0]
    if bps != SECTOR or spc == 0 or spc & (spc - 1) or rsvd == 0 or nfats not in (1, 2):
        return None
    data_start = rsvd + nfats * fatsz + (root_ent * 32 + SECTOR - 1) // SECTOR
    if fatsz == 0 or total <= data_start:
        return None
    clusters = (total - data_start) // spc
    # ff.c find_volume: the FAT type follows from the cluster count alone.
    bits = 12 if clusters <= 0xFF5 else 16 if clusters <= 0xFFF5 else 32
    if bits == 32 and struct.unpack_from("<H", boot, 22)[0] != 0:
        return None
    return _Layout(total, data_start, spc, clusters, rsvd, bits)


def _used_clusters(layout: _Layout, fat: bytes) -> list[tuple[int, int]]:
    """Runs (first cluster, count) of clusters whose FAT entry is not 0 (free)."""
    runs: list[tuple[int, int]] = []
    end = layout.clusters + 2

    def add(cluster: int) -> None:
        if 2 <= cluster < end:
            if runs and runs[-1][0] + runs[-1][1] == cluster:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((cluster, 1))

    if layout.fat_bits == 12:
        for cluster in range(2, end):
            at = cluster + cluster // 2
            pair = fat[at] | (fat[at + 1] << 8) if at + 1 < len(fat) else 0
            if (pair >> 4 if cluster & 1 else pair & 0xFFF) != 0:
                add(cluster)
        return runs
    width = layout.fat_bits // 8
    mask = 0x0FFFFFFF if width == 4 else 0xFFFF
    code = "<I" if width == 4 else "<H"
    for chunk_at in range(0, min(len(fat), end * width), len(_ZERO_CHUNK)):
        chunk = fat[chunk_at : chunk_at + len(_ZERO_CHUNK)]
        if chunk == _ZERO_CHUNK[: len(chunk)]:
            continue  # a stretch of free clusters
        for at in range(0, len(chunk) - width + 1, width):
            if struct.unpack_from(code, chunk, at)[0] & mask:
                add((chunk_at + at) // width)
    return runs


class _Shadow:
    """A sparse private copy of one volume, filled from the cache, for mtools to work on."""

    def __init__(self, cache: BlockCache, block_offset: int, tmpdir: str) -> None:
        self.cache = cache
        self.base = block_offset * SECTOR
        self.path = os.path.join(tmpdir, "volume.img")
        boot = cache.pread(SECTOR, self.base)
        self.layout = _layout(boot)
        with open(self.path, "w+b") as f:
            if self.layout is None:
                # Not a FAT volume: mtools sees the same first sector and refuses it as well.
                f.write(boot)
                self.runs: list[tuple[int, int]] = []
                return
            f.truncate(self.layout.total_sectors * SECTOR)
            meta = self.layout.data_start * SECTOR
            for at in range(0, meta, _CHUNK):
                os.pwrite(f.fileno(), cache.pread(min(_CHUNK, meta - at), self.base + at), at)
            fat = self._read_fat(f.fileno())
            self.runs = _used_clusters(self.layout, fat)
            for first, length in self._sector_runs(self.runs):
                for at in range(first * SECTOR, (first + length) * SECTOR, _CHUNK):
                    n = min(_CHUNK, (first + length) * SECTOR - at)
                    os.pwrite(f.fileno(), cache.pread(n, self.base + at), at)

    def _read_fat(self, fd: int) -> bytes:
        assert self.layout is not None
        size = (self.layout.data_start - self.layout.fat_start) * SECTOR
        return os.pread(fd, size, self.layout.fat_start * SECTOR)

    def _sector_runs(self, runs: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        assert self.layout is not None
        spc = self.layout.cluster_sectors
        for first, count in runs:
            yield self.layout.data_start + (first - 2) * spc, count * spc

    def write_back(self) -> None:
        """Write every sector mtools changed (or newly allocated) through the cache."""
        if self.layout is None:
            return
        with open(self.path, "rb") as f:
            fd = f.fileno()
            if os.fstat(fd).st_size != self.layout.total_sectors * SECTOR:
                raise TargetError("mtools changed the size of the FAT volume copy")
            self._write_changed(fd, 0, self.layout.data_start)
            before = {c for first, n in self.runs for c in range(first, first + n)}
            after = _used_clusters(self.layout, self._read_fat(fd))
            spc = self.layout.cluster_sectors
            for first, count in after:
                # Newly allocated clusters go out whole; kept ones where they differ.
                run_start = first
                for cluster in range(first, first + count + 1):
                    fresh = cluster < first + count and cluster not in before
                    if cluster == first + count or not fresh:
                        if cluster > run_start:
                            sector = self.layout.data_start + (run_start - 2) * spc
                            self._write_all(fd, sector, (cluster - run_start) * spc)
                        if cluster < first + count:
                            sector = self.layout.data_start + (cluster - 2) * spc
                            self._write_changed(fd, sector, spc)
                        run_start = cluster + 1

    def _write_all(self, fd: int, sector: int, count: int) -> None:
        for at in range(sector * SECTOR, (sector + count) * SECTOR, _CHUNK):
            n = min(_CHUNK, (sector + count) * SECTOR - at)
            self._put(at, os.pread(fd, n, at))

    def _write_changed(self, fd: int, sector: int, count: int) -> None:
        for at in range(sector * SECTOR, (sector + count) * SECTOR, _CHUNK):
            n = min(_CHUNK, (sector + count) * SECTOR - at)
            new = os.pread(fd, n, at)
            old = self.cache.pread(n, self.base + at)
            if new == old:
                continue
            run: int | None = None
            for i in range(0, n + SECTOR, SECTOR):
                differs = i < n and new[i : i + SECTOR] != old[i : i + SECTOR]
                if differs and run is None:
                    run = i
                elif not differs and run is not None:
                    self._put(at + run, new[run:i])
                    run = None

    def _put(self, at: int, data: bytes) -> None:
        """Write volume bytes ``data`` at volume offset ``at``, split where fwup streams."""
        limit = (_STREAMED_AFTER + 1) * SECTOR
        if at < limit < at + len(data):
            self.cache.pwrite(data[: limit - at], self.base + at, False)
            data, at = data[limit - at :], limit
        self.cache.pwrite(data, self.base + at, at >= limit)


def _write_room(read: Callable[[int, int], bytes], replaced: int) -> int | None:
    """How many bytes a file emptied by fat_write can take: the volume's free clusters and
    those of the ``replaced`` bytes it held (FatFs f_write stops where create_chain finds no
    free cluster). None when the volume is not FAT (mtools then refuses it)."""
    layout = _layout(read(0, SECTOR))
    if layout is None:
        return None
    fat = read(layout.fat_start * SECTOR, (layout.data_start - layout.fat_start) * SECTOR)
    used = sum(count for _first, count in _used_clusters(layout, fat))
    cluster = layout.cluster_sectors * SECTOR
    return (layout.clusters - used + -(-replaced // cluster)) * cluster


class _SpooledFatWrite:
    """One fat_write: the data is spooled and copied in on commit; a write that would not fit
    in the volume fails when it is made, with fwup's message (src/fatfs.c fatfs_pwrite)."""

    def __init__(self, owner: MtoolsFat, block_offset: int, path: str, room: int | None) -> None:
        self.owner = owner
        self.block_offset = block_offset
        self.path = path
        self.room = room
        self.pos = 0
        self.tmp = tempfile.NamedTemporaryFile(prefix="nhlink-fat-", delete=True)  # noqa: SIM115

    def _full(self, expected: int, written: int) -> FirmwareError:
        return FirmwareError(
            f"Error writing file to FAT: {self.path}, expected {expected} bytes written, "
            f"got {written} (maybe the disk is full?)"
        )

    def write(self, data: bytes) -> None:
        if self.room is not None and self.pos + len(data) > self.room:
            raise self._full(len(data), max(0, self.room - self.pos))
        self._spool(data)

    def fill(self, count: int, expected: int) -> None:
        """Zeros up to a later write of ``expected`` bytes (or the end of a file that ends in
        a hole: 0). fwup writes them 512 bytes at a time; the piece that does not fit is the
        one it reports, with the size of the write that was to follow."""
        if self.room is not None and self.pos + count > self.room:
            piece = self.pos + (self.room - self.pos) // SECTOR * SECTOR
            raise self._full(expected, self.room - piece)
        if count > 0:
            # The spool grows by a hole, which reads back as zeros.
            self._spooling(lambda: self.tmp.truncate(self.pos + count))
            self._spooling(lambda: self.tmp.seek(self.pos + count))
            self.pos += count

    def _spool(self, data: bytes) -> None:
        self._spooling(lambda: self.tmp.write(data))
        self.pos += len(data)

    @staticmethod
    def _spooling(step: Callable[[], object]) -> None:
        try:
            step()
        except OSError as exc:
            raise TargetError(f"fat_write: cannot spool data: {exc.strerror}") from exc

    def commit(self) -> None:
        try:
            self.tmp.flush()
            with self.owner.volume(self.block_offset) as fs:
                fs.write(self.path, self.tmp.name)
        finally:
            self.tmp.close()

    def abort(self) -> None:
        self.tmp.close()


class MtoolsFat:
    """FAT operations on the image or device at ``image_path`` (through ``cache`` if given)."""

    def __init__(self, image_path: str, cache: BlockCache | None = None) -> None:
        self.image_path = image_path
        self.cache = cache
        # True: the caller must not flush the cache around FAT calls (fwup does not).
        self.through_cache = cache is not None

    @contextmanager
    def volume(self, block_offset: int, *, readonly: bool = False) -> Iterator[FatFilesystem]:
        """The file system at ``block_offset``; changes reach the cache when the block ends."""
        if self.cache is None:
            yield FatFilesystem(self.image_path, block_offset)
            return
        try:
            tmp = tempfile.TemporaryDirectory(prefix="nhlink-fat-")
        except OSError as exc:
            raise TargetError(f"cannot create a FAT work area: {exc}") from exc
        with tmp as tmpdir:
            try:
                shadow = _Shadow(self.cache, block_offset, tmpdir)
            except OSError as exc:
                raise TargetError(f"cannot copy the FAT volume to {tmpdir}: {exc}") from exc
            yield FatFilesystem(shadow.path, 0)
            if not readonly:
                try:
                    shadow.write_back()
                except OSError as exc:
                    raise TargetError(f"cannot read back the FAT volume copy: {exc}") from exc

    def mkfs(self, block_offset: int, block_count: int) -> None:
        if self.cache is None:
            FatFilesystem(self.image_path, block_offset).mkfs(block_count)
            return
        _geometry, writes = mkfs_writes(block_count)
        base = block_offset * SECTOR
        # src/fatfs.c fatfs_mkfs: trim the volume in the cache, then write through it.
        self.cache.trim(base, block_count * SECTOR)
        for sector, data in writes:
            at = base + sector * SECTOR
            self.cache.pwrite(data, at, sector == block_count - 1 or sector > _STREAMED_AFTER)

    def open_write(self, block_offset: int, path: str) -> _SpooledFatWrite:
        # fwup opens (creates) the file before it reads the resource: its errors come first.
        with self.volume(block_offset, readonly=True) as fs:
            replaced = fs.check_create(path)
        return _SpooledFatWrite(self, block_offset, path, self._room(block_offset, replaced))

    def _room(self, block_offset: int, replaced: int) -> int | None:
        base = block_offset * SECTOR
        if self.cache is not None:
            cache = self.cache
            return _write_room(lambda at, n: cache.pread(n, base + at), replaced)
        try:
            with open(self.image_path, "rb") as f:
                return _write_room(lambda at, n: os.pread(f.fileno(), n, base + at), replaced)
        except OSError as exc:
            raise TargetError(f"cannot read {self.image_path}: {exc}") from exc

    def mv(self, block_offset: int, src: str, dst: str, force: bool) -> None:
        with self.volume(block_offset) as fs:
            fs.mv(src, dst, force)

    def rm(self, block_offset: int, path: str, must_exist: bool) -> None:
        with self.volume(block_offset) as fs:
            fs.rm(path, must_exist)

    def cp(self, block_offset: int, src: str, dst: str, dst_offset: int | None = None) -> None:
        """fat_cp; ``dst_offset`` names another volume for the copy (fwup's 4-argument form)."""
        if dst_offset is None or dst_offset == block_offset:
            with self.volume(block_offset) as fs:
                fs.cp(src, dst)
            return
        with tempfile.TemporaryDirectory(prefix="nhlink-fat-") as tmp:
            local = os.path.join(tmp, "data")
            with self.volume(block_offset, readonly=True) as fs:
                fs.copy_out(src, local)
            with self.volume(dst_offset) as fs:
                fs.copy_in(dst, local)

    def mkdir(self, block_offset: int, path: str) -> None:
        with self.volume(block_offset) as fs:
            fs.mkdir(path)

    def setlabel(self, block_offset: int, label: str) -> None:
        with self.volume(block_offset) as fs:
            fs.setlabel(label)

    def touch(self, block_offset: int, path: str) -> None:
        with self.volume(block_offset) as fs:
            fs.touch(path)

    def attrib(self, block_offset: int, path: str, attrib: str) -> None:
        with self.volume(block_offset) as fs:
            fs.attrib(path, attrib)

    def exists(self, block_offset: int, path: str) -> bool:
        with self.volume(block_offset, readonly=True) as fs:
            return fs.exists(path)

    def read(self, block_offset: int, path: str) -> bytes | None:
        with self.volume(block_offset, readonly=True) as fs:
            return fs.read(path)

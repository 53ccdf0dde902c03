"""Applying a ``.fw`` archive the way fwup does, as a push-driven state machine.

Feed the archive bytes in any slicing (:meth:`ApplyEngine.feed`); the applier
reads the ZIP stream, verifies ``meta.conf``'s Ed25519 signature, selects the
task, runs ``on-init``, streams each resource into its ``on-resource``
actions while hashing it, runs ``on-finish`` when the ZIP central directory is
reached, and flushes the write cache. On any failure it runs the task's
``on-error`` actions, drops the cache and raises the one error whose text fwup
would put in its ``ER`` packet.

Rules (fwup 1.16, fixtures/fwup/EXPECT.md and fwup's ``src/functions.c``):

* signatures: with keys, an unsigned archive is refused (``Expecting signed
  firmware archive.``) and a signature that no key verifies too; without keys
  nothing is checked (a warning in verbose mode when the archive is signed);
* task choice: tasks in file order, the first whose name starts with the
  requested one and whose ``require-*`` conditions all hold;
* progress units: raw_write/path_write = the resource's data length,
  fat_write/pipe_write = its size with holes (fwup's count_holes),
  raw_memset = count x 512, each uboot_* = environment size, gpt_write = two
  GPT copies, trim = count / 256, other fat_* / mbr_write / execute = 512,
  info/error = 0; percent = floor(done x 100 / total), at most 99 until the
  end, reported only when it rises;
* writes go through :class:`~.block_cache.BlockCache`; resource data through a
  :class:`~.block_cache.PadToBlockWriter`; a resource's blake2b-256 and length
  are checked after its last byte, before that writer's final block.

The target, FAT and host operations, the signature check and the listener all
enter through the constructor: this module performs no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.block_cache import BLOCK, BlockCache, PadToBlockWriter, sync_range
from nhlink_dbus.core.digest import Digest, DigestFactory, new_digest
from nhlink_dbus.core.fw_archive import (
    INFLATE_OUTPUT,
    DataFailed,
    EntryData,
    EntryEnd,
    EntryStart,
    Event,
    ZipStreamReader,
)
from nhlink_dbus.core.fwup_conf import (
    HOST_ACTIONS,
    RESOURCE_ACTIONS,
    Action,
    FileResource,
    MetaConf,
    Task,
    UbootEnvironment,
    load_meta_conf,
    parse_int,
)
from nhlink_dbus.core.fwup_meta import HeadReader, archive_resource_name, meta_variables
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import FirmwareError, NhlinkError

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    import re
    from typing import Protocol, cast

    from nhlink_dbus.core import vcdiff
else:
    from nhlink_dbus.core.lean import Protocol, cast

# MBR, GPT and VCDIFF codecs are imported where an action needs them: most archives
# use none of them, and every import is paid at the start of every apply.


def _c_int(value: int) -> int:
    """``(int) value`` in C: fwup prints some sizes through a 32-bit int."""
    return (value + (1 << 31)) % (1 << 32) - (1 << 31)


# GPT_SIZE in fwup: one header block plus 128 entries of 128 bytes.
GPT_SIZE = BLOCK + 128 * 128


class ApplyListener(Protocol):
    """Receives what fwup would print while applying."""

    def progress(self, percent: int) -> None: ...

    def warning(self, text: str) -> None: ...


class FatWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class FatFileWriter(FatWriter, Protocol):
    def fill(self, count: int, expected: int) -> None:
        """``count`` zero bytes before a write of ``expected`` bytes (0: the file's end)."""


class FatOps(Protocol):
    """FAT file system operations on the target at a block offset.

    ``through_cache``: the operations read and write through the engine's block cache (as
    fwup's FatFs does); when False they use the target directly, so the engine flushes the
    cache around them.
    """

    through_cache: bool

    def mkfs(self, block_offset: int, block_count: int) -> None: ...

    def open_write(self, block_offset: int, path: str) -> FatFileWriter: ...

    def mv(self, block_offset: int, src: str, dst: str, force: bool) -> None: ...

    def rm(self, block_offset: int, path: str, must_exist: bool) -> None: ...

    def cp(self, block_offset: int, src: str, dst: str, dst_offset: int | None = None) -> None: ...

    def mkdir(self, block_offset: int, path: str) -> None: ...

    def setlabel(self, block_offset: int, label: str) -> None: ...

    def touch(self, block_offset: int, path: str) -> None: ...

    def attrib(self, block_offset: int, path: str, attrib: str) -> None: ...

    def exists(self, block_offset: int, path: str) -> bool: ...

    def read(self, block_offset: int, path: str) -> bytes | None: ...


class HostOps(Protocol):
    """Actions and checks that touch the host (gated by ``unsafe``)."""

    def open_path(self, path: str) -> FatWriter: ...

    def open_pipe(self, command: str) -> FatWriter: ...

    def execute(self, command: str) -> None: ...

    def succeeds(self, command: str) -> bool: ...

    def path_on_device(self, path: str, device: str) -> bool: ...

    def path_at_offset(self, path: str, block_offset: int) -> bool: ...


SignatureCheck = Callable[[bytes, bytes, bytes], bool]  # (public key, signature, message)


class SectorCipher(Protocol):
    """fwup's disk_crypto for one raw_write: whole 512-byte sectors in, the first being
    sector ``lba`` counted from the write's start offset (fwup's ``base_offset``)."""

    def encrypt(self, data: bytes | bytearray | memoryview, lba: int) -> bytes: ...

    def decrypt(self, data: bytes | bytearray | memoryview, lba: int) -> bytes: ...


# raw_write's option arguments ("cipher=...", "secret=...") -> their cipher; raises
# FirmwareError with fwup's text (disk_crypto_init).
DiskCryptoFactory = Callable[[Sequence[str]], SectorCipher]


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    task: str
    public_keys: Sequence[bytes] = ()
    unsafe: bool = False
    verbose: bool = False
    total_blocks: int | None = None  # size of the target, for MBR/GPT "expand"
    progress_low: int = 0  # fwup's --progress-low / --progress-high
    progress_high: int = 100
    # reboot_param("..."): where the text goes (a host file); None = the action fails.
    reboot_param: Callable[[str], None] | None = None
    # The archive's name in fwup's "Expecting meta.conf to be at the beginning of %s"
    # (its -i argument; C's printf shows "(null)" for stdin).
    archive_name: str = "(null)"


class _Progress:
    """fwup's progress: ``low + done * range // total``, held below ``high`` until the
    end (the caller reports ``high`` itself, after success)."""

    def __init__(self, listener: ApplyListener, low: int = 0, high: int = 100) -> None:
        self.listener = listener
        self.low = low
        self.range = high - low
        self.total = 0
        self.done = 0
        self.last = low  # PR low is sent before the archive is opened

    def report(self, units: int) -> None:
        self.done = min(self.done + units, self.total) if self.total > 0 else self.done + units
        if self.total <= 0:
            return
        amount = min(self.done * self.range // self.total, self.range - 1)
        percent = self.low + amount
        if percent > self.last:
            self.last = percent
            self.listener.progress(percent)


class _Consumer:
    """One resource-consuming action fed while the resource streams (the callbacks
    of fwup's ``process_resource``).

    ``sink(data, offset)`` writes a piece of a data run at its offset in the
    resource; ``final_hole(hole, size)`` handles a hole ending the resource;
    ``count_holes`` is fwup's flag: holes count as progress (fat_write, pipe_write).
    """

    def __init__(
        self,
        name: str,
        sink: Callable[[bytes, int], None],
        close: Callable[[], None],
        abort: Callable[[], None],
        final_hole: Callable[[int, int], None] | None = None,
        count_holes: bool = False,
    ) -> None:
        self.name = name
        self.sink = sink
        self.close = close
        self.abort = abort
        self.final_hole = final_hole or (lambda _hole, _size: None)
        self.count_holes = count_holes
        self.written = 0  # data bytes given to sink
        self.mark = 0  # end offset of the last piece, for count_holes progress


_ZEROS = bytes(1 << 20)


class _SequentialSink:
    """A write-only stream (FAT file, host file) fed at rising offsets: a hole is
    written as zeros, as fwup's fatfs_pwrite does (and a seek past the end of a
    regular file reads back)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.pos = 0

    def fill(self, count: int) -> None:
        while count > 0:
            n = min(count, len(_ZEROS))
            self.write(_ZEROS if n == len(_ZEROS) else _ZEROS[:n])
            count -= n
            self.pos += n

    def pwrite(self, data: bytes, offset: int) -> None:
        self.fill(offset - self.pos)
        self.write(data)
        self.pos = offset + len(data)


class _FatSink:
    """fat_write's writer, fed at rising offsets: a gap is zeros the FAT file writes itself
    (fwup's fatfs_pwrite fills it before the write that follows, and reports a full volume
    with that write's size)."""

    def __init__(self, file: FatFileWriter) -> None:
        self.file = file
        self.pos = 0

    def pwrite(self, data: bytes, offset: int) -> None:
        if offset > self.pos:
            self.file.fill(offset - self.pos, len(data))
        self.file.write(data)
        self.pos = offset + len(data)

    def grow(self, size: int) -> None:
        """A file that ends in a hole: fatfs_pwrite(file_size, NULL, 0) fills it."""
        if size > self.pos:
            self.file.fill(size - self.pos, 0)
            self.pos = size


class _PipeSink(_SequentialSink):
    """pipe_write's writer, with fwup's gap filling: it writes a hole in 512-byte
    pieces and fails (``pipe_write failed to write``) on the first piece whose size is
    not that of the data being written after it, once the piece is written."""

    def __init__(self, write: Callable[[bytes], None], command: str) -> None:
        super().__init__(write)
        self.command = command

    def pwrite(self, data: bytes, offset: int) -> None:
        gap = offset - self.pos
        if gap > 0:
            full, rest = divmod(gap, BLOCK)
            count = len(data)
            if count == BLOCK:
                self.fill(gap)
                ok = rest == 0
            elif full:
                self.fill(BLOCK)
                ok = False
            else:
                self.fill(rest)
                ok = rest == count
            if not ok:
                raise FirmwareError(f"pipe_write failed to write '{self.command}'")
        self.write(data)
        self.pos = offset + len(data)


class _SparseCursor:
    """Where the archive entry's bytes go: they are the data runs of the resource's
    sparse map back to back (fwup_apply.c ``read_callback_normal``). Pieces never
    cross a run; after the map's last data run the entry reads as ended, whatever
    follows in the archive."""

    def __init__(self, runs: tuple[int, ...]) -> None:
        self.runs = runs
        self.ix = 0  # the data run being read (even index)
        self.left = runs[0]  # bytes left in it
        self.offset = 0  # the resource offset of its next byte
        if runs[0] == 0:
            # fwup skips a leading empty data run only; with no data after it the
            # resource is empty (or all hole).
            if len(runs) > 2:
                self.ix, self.left, self.offset = 2, runs[2], runs[1]
            else:
                self.ix = len(runs)
        self.ended = self.ix >= len(runs) or self.left == 0

    def pieces(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        view = memoryview(data)
        while view and not self.ended:
            n = min(self.left, len(view))
            out.append((self.offset, bytes(view[:n]) if n < len(data) else data))
            view = view[n:]
            self.offset += n
            self.left -= n
            if self.left == 0:
                self.ix += 1
                if self.ix < len(self.runs):
                    self.offset += self.runs[self.ix]  # the hole
                    self.ix += 1
                # An empty data run mid-map reads as the end of the entry, as in fwup.
                if self.ix >= len(self.runs) or self.runs[self.ix] == 0:
                    self.ended = True
                else:
                    self.left = self.runs[self.ix]
        return out


class _DeltaCursor:
    """Where a delta resource's bytes go (fwup_apply.c ``read_callback_xdelta``): the
    entry is an xdelta3 (VCDIFF) patch, the resource is its output, without holes,
    handed on as it is decoded. It ends when the entry does (:meth:`end`)."""

    def __init__(self, decoder: vcdiff.VcdiffDecoder) -> None:
        self.decoder = decoder
        self.offset = 0
        self.ended = False

    def pieces(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        from nhlink_dbus.core.vcdiff import VcdiffError  # noqa: PLC0415  (loaded with the decoder)

        try:
            for chunk in self.decoder.feed(data):
                yield self.offset, chunk
                self.offset += len(chunk)
        except VcdiffError as exc:
            raise FirmwareError(f"xdelta3 error: {exc}") from None

    def end(self) -> None:
        self.ended = True
        self.decoder.finish()


_STRTOUL: re.Pattern[str] | None = None  # compiled on first use: only delta updates need it


def _strtoul(text: str) -> int:
    """C's ``strtoul(text, NULL, 0)``: the leading number, 0 when there is none."""
    global _STRTOUL
    if _STRTOUL is None:
        import re  # noqa: PLC0415  (re is not loaded by nhlink-fwup's start)

        _STRTOUL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
    m = _STRTOUL.match(text)
    if m is None:
        return 0
    digits = m.group(2)
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return (-value if m.group(1) == "-" else value) % (1 << 64)


class ApplyEngine:
    """Apply one archive to one target; see the module docstring."""

    def __init__(
        self,
        options: ApplyOptions,
        cache: BlockCache,
        listener: ApplyListener,
        check_signature: SignatureCheck,
        fat: FatOps | None = None,
        host: HostOps | None = None,
        environ: Mapping[str, str] | None = None,
        digests: DigestFactory = new_digest,
        disk_crypto: DiskCryptoFactory | None = None,
    ) -> None:
        self.options = options
        self.digests = digests
        self.disk_crypto = disk_crypto  # None: encrypted raw_writes are refused
        self.cache = cache
        self.listener = listener
        self.check_signature = check_signature
        self.fat = fat
        self.host = host
        self.environ = dict(environ or {})
        self.reader = ZipStreamReader(digests)
        self.progress = _Progress(listener, options.progress_low, options.progress_high)
        self.signature: bytes | None = None
        self.head = HeadReader(
            self.reader,
            wrong_first=f"Expecting meta.conf to be at the beginning of {options.archive_name}",
        )
        self.conf: MetaConf | None = None
        self.task: Task | None = None
        self.done = False
        self.failed = False
        self._entry: str | None = None
        self._pending: list[Action] = []
        self._consumer: _Consumer | None = None
        self._resource: FileResource | None = None
        self._hasher: Digest | None = None
        self._cursor: _SparseCursor | _DeltaCursor | None = None
        self._seen: set[str] = set()
        # An error fwup records without failing (fat_attrib's, a U-Boot environment read
        # that uboot_recover or the other copy makes good): reported if on-error ends
        # after it without an error of its own.
        self._last_error: FirmwareError | None = None

    # -- driving ----------------------------------------------------------------------

    def feed(self, chunk: bytes | memoryview, read_size: int | None = None) -> None:
        """Consume input: one read of the archive, or with ``read_size`` as many reads
        of that size as ``chunk`` holds (the same as one call per read); raise
        :class:`NhlinkError` (after on-error) on failure."""
        if self.done or self.failed:
            return
        if read_size is None or len(chunk) <= read_size:
            events: Iterable[Event] = self.reader.feed(chunk)
        else:
            events = self.reader.stream(chunk, read_size)
        self._guard(lambda: self._events(events))

    def finish(self, read_error: str | None = None) -> None:
        """End of input (``read_error``: reading it failed, with fwup's text for that).
        Raises if the archive was cut short where fwup notices it."""
        if self.done or self.failed:
            return
        self._guard(lambda: self._events(self.reader.finish(read_error)))

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except NhlinkError as exc:
            later = self._fail()
            if later is not None:
                raise later from exc
            raise

    def _fail(self) -> NhlinkError | None:
        """After a failure: on-error, as fwup runs it. Returns on-error's own error, which
        is the one fwup reports then (its last error text replaces the first)."""
        self.failed = True
        self.reader.bulk_limit = 0
        if self._consumer is not None:
            self._consumer.abort()
            self._consumer = None
        self.cache.discard()
        later: NhlinkError | None = None
        self._last_error = None
        if self.task is not None:
            # As fwup: on-error's own writes are kept (flushed), unless one of its actions
            # fails, when what they wrote so far is thrown away.
            try:
                for action in self.task.on_error:
                    self._run(action)
            except NhlinkError as exc:
                self.cache.discard()
                later = exc
            try:  # noqa: SIM105  (contextlib is not loaded by nhlink-fwup's start)
                self.cache.flush()
            except NhlinkError:
                pass
        return later or self._last_error

    def _events(self, events: Iterable[Event]) -> None:
        for ev in events:
            if self.conf is None:
                if self.head.event(ev):
                    self.signature = self.head.signature
                    self._load_meta(self.head.meta_conf)
            elif isinstance(ev, EntryData):
                self._data(ev)
            elif isinstance(ev, EntryStart):
                self._start(ev)
            elif isinstance(ev, EntryEnd):
                self._end(ev)
            elif isinstance(ev, DataFailed):
                if self._consumer is not None:
                    raise FirmwareError(ev.text)
            else:  # ArchiveEnd, HeaderFailed: fwup's resource loop just ends
                self._archive_end()
            if self.done:
                return
            if self.conf is not None and self._consumer is None:
                # fwup reads an entry's data only inside an on-resource action that
                # consumes it: otherwise its next header skips the rest.
                self.reader.skip()

    # -- archive entries ------------------------------------------------------------------

    def _start(self, ev: EntryStart) -> None:
        self._entry = ev.name
        assert self.conf is not None
        name = archive_resource_name(ev.name)
        resource = self.conf.resources.get(name)
        if not name or resource is None:
            return  # as fwup: an entry no file-resource names is skipped (nothing reads it)
        self._seen.add(name)
        assert self.task is not None
        # fwup_apply.c: a plain resource whose ZIP header size is not its length is an
        # xdelta3 patch, which needs delta-source-* options.
        in_zip = ev.size
        cursor: _SparseCursor | _DeltaCursor
        if (
            in_zip is not None
            and in_zip != resource.length
            and not resource.sparse_map
            and name in self.task.on_resource
        ):
            cursor = _DeltaCursor(self._delta_decoder(name, in_zip, resource.length))
        else:
            cursor = _SparseCursor(resource.runs)
        self._resource = resource
        self._pending = list(self.task.on_resource.get(name, ()))
        self._hasher = None
        self._cursor = cursor
        self._run_until_consumer()

    def _delta_decoder(self, name: str, in_zip: int, length: int) -> vcdiff.VcdiffDecoder:
        """The decoder of a delta resource, reading its source where the on-resource's
        delta-source-* options say (fwup_apply.c ``xdelta_read_source_callback`` and
        ``xdelta_read_fat_callback``)."""
        from nhlink_dbus.core import vcdiff  # noqa: PLC0415

        assert self.task is not None
        delta = self.task.deltas.get(name)
        if delta is not None and delta.raw_count > 0 and delta.raw_offset is not None:
            start = _strtoul(delta.raw_offset) * BLOCK
            count = _c_int(delta.raw_count * BLOCK)  # fwup multiplies in a C int
            cipher: SectorCipher | None = None
            if delta.raw_options is not None:
                if self.disk_crypto is None:
                    raise FirmwareError(
                        "delta-source-raw-options: disk encryption is not supported"
                    )
                cipher = self.disk_crypto([delta.raw_options])
            cache = self.cache

            def read_raw(offset: int, size: int) -> bytes:
                if offset < 0 or offset > count:
                    raise FirmwareError(
                        f"xdelta tried to load outside of allowed byte range (0-{count}):"
                        f" offset: {offset}, count: {size}"
                    )
                size = min(size, count - offset)
                data = cache.pread(size, start + offset)
                # fwup decrypts the source as the block cache loads it, sectors counted
                # from the source's start.
                return data if cipher is None else cipher.decrypt(data, offset // BLOCK)

            return vcdiff.VcdiffDecoder(read_raw)
        if delta is not None and delta.fat_offset is not None and delta.fat_path is not None:
            fat = self._fat_ops("delta-source-fat-path")
            block_offset = _strtoul(delta.fat_offset)
            path = delta.fat_path
            loaded: list[bytes] = []

            def read_fat(offset: int, size: int) -> bytes:
                # fwup's fatfs_pread; the file is read once, at the first read.
                if not loaded:
                    if not fat.through_cache:
                        sync_range(self.cache, block_offset * BLOCK, None)
                    content = fat.read(block_offset, path)
                    if content is None:
                        raise FirmwareError(
                            f"fat_pread can't open file({path}): FATFS: Could not find the file"
                        )
                    loaded.append(content)
                return loaded[0][offset : offset + size]

            return vcdiff.VcdiffDecoder(read_fat)
        raise FirmwareError(
            f"File '{name}' isn't expected size ({_c_int(in_zip)} vs"
            f" {_c_int(length)}) and xdelta3 patch support not enabled on"
            " it. (Add delta-source-raw-offset / delta-source-raw-count or"
            " delta-source-fat-offset / delta-source-fat-path)"
        )

    def _data(self, ev: EntryData) -> None:
        consumer = self._consumer
        if consumer is None:
            return  # resource not used by this task, or its actions are done
        assert self._hasher is not None and self._cursor is not None
        parts: tuple[bytes, ...] = (ev.data,)
        if 0 < ev.tail < len(ev.data):
            # Several reads at once: the last one's output is written by itself, as
            # fwup writes it (the pad-to-block writer's state depends on it). Views,
            # not copies: only raw_write reads in bulk (_bulk_limit), and its
            # pad-to-block writer and the hash take any buffer.
            view = memoryview(ev.data)
            parts = (cast(bytes, view[: -ev.tail]), cast(bytes, view[-ev.tail :]))
        for part in parts:
            for offset, piece in self._cursor.pieces(part):
                self._hasher.update(piece)
                consumer.sink(piece, offset)
                consumer.written += len(piece)
                if consumer.count_holes:
                    self.progress.report(offset + len(piece) - consumer.mark)
                    consumer.mark = offset + len(piece)
                else:
                    self.progress.report(len(piece))
        if self._cursor.ended:
            # fwup reads no further: the rest of the entry is skipped.
            self._finish_consumer()
            self._run_until_consumer()

    def _end(self, ev: EntryEnd) -> None:
        if isinstance(self._cursor, _DeltaCursor):
            self._cursor.end()  # the whole patch is read: xdelta3 outputs nothing more
        if self._consumer is not None:
            # The entry ended before the sparse map did: the length check fails.
            self._finish_consumer()
            self._run_until_consumer()
        self._resource = None
        self._cursor = None
        self._entry = None

    def _finish_consumer(self) -> None:
        """The end of fwup's process_resource: the final hole, then the length and
        blake2b-256 checks, then the action's own close."""
        consumer, res = self._consumer, self._resource
        assert consumer is not None and res is not None and self._hasher is not None
        self.reader.bulk_limit = 0
        hole = res.ending_hole
        if hole > 0:
            consumer.final_hole(hole, res.size)
            if consumer.count_holes:
                self.progress.report(hole)
        self._consumer = None
        written = consumer.written
        if written != res.length:
            consumer.abort()
            if written == 0:
                raise FirmwareError(
                    f"{consumer.name} didn't write anything and was likely called twice in"
                    f" an on-resource for '{res.name}'. Try a \"cp\" function."
                )
            raise FirmwareError(
                f"{consumer.name} wrote {written} bytes for '{res.name}',"
                f" but should have written {res.length}"
            )
        if self._hasher.result().hex() != res.blake2b_256:
            consumer.abort()
            raise FirmwareError(f"{consumer.name} detected blake2b mismatch on '{res.name}'")
        consumer.close()

    def _archive_end(self) -> None:
        assert self.task is not None
        # fwup's resource list is built by prepending: it names the last one missing.
        for name in reversed(list(self.task.on_resource)):
            if name not in self._seen:
                raise FirmwareError(f"Resource {name} not found in archive")
        for action in self.task.on_finish:
            self._run(action)
        self.cache.flush()
        self.done = True

    # -- meta.conf ----------------------------------------------------------------------------

    def _load_meta(self, text: bytes) -> None:
        keys = self.options.public_keys
        if keys:
            if self.signature is None:
                raise FirmwareError("Expecting signed firmware archive.")
            if not any(self.check_signature(k, self.signature, text) for k in keys):
                raise FirmwareError(
                    "Firmware archive's meta.conf fails digital signature verification."
                )
        elif self.signature is not None and self.options.verbose:
            self.listener.warning("Firmware archive is signed, but signature verification is off.")
        variables = dict(self.environ)
        variables.update(meta_variables(text))
        conf = load_meta_conf(text, variables)
        self.conf = conf
        self._validate_references(conf)
        self.task = self._select_task(conf)
        self.progress.total = self._units(conf, self.task)
        for action in self.task.on_init:
            self._run(action)

    def _validate_references(self, conf: MetaConf) -> None:
        for task in conf.tasks:
            blocks = [task.on_init, task.on_finish, task.on_error, *task.on_resource.values()]
            for block in blocks:
                for a in block:
                    if a.name == "mbr_write" and a.args[0] not in conf.mbrs:
                        raise FirmwareError("mbr_write can't find mbr reference")
                    if a.name == "gpt_write" and a.args[0] not in conf.gpts:
                        raise FirmwareError("gpt_write can't find gpt reference")
                    if a.name.startswith("uboot_") and a.args[0] not in conf.uboot_envs:
                        raise FirmwareError(
                            f"{a.name} can't find uboot-environment reference {a.args[0]}"
                        )
            for name in task.on_resource:
                if name not in conf.resources:
                    raise FirmwareError(f"Resource {name} not found in archive")

    def _select_task(self, conf: MetaConf) -> Task:
        wanted = self.options.task
        for task in conf.tasks:
            if task.name.startswith(wanted) and self._requirements_met(task):
                return task
        raise FirmwareError(
            f"Couldn't find applicable task '{wanted}'. If task is available, the task's"
            " requirements may not be met."
        )

    def _requirements_met(self, task: Task) -> bool:
        """A task's require-* conditions in order, up to the first one not met; with -v
        each says so, as fwup's requirement.c reports them (its first two arguments)."""
        for req in task.requirements:
            met = self._requirement(req)
            if self.options.verbose:
                shown = req.args[0] if req.args else ""
                if len(req.args) >= 2:
                    shown += f", {req.args[1]}"
                self.listener.warning(f"{req.name}({shown}) -> {'met' if met else 'not met'}")
            if not met:
                return False
        return True

    def _requirement(self, req: Action) -> bool:
        assert self.conf is not None
        a = req.args
        if req.name == "require-uboot-variable":
            env = self.conf.uboot_envs.get(a[0])
            if env is None:
                raise FirmwareError(f"{req.name} can't find uboot-environment reference {a[0]}")
            try:
                values = uboot_env.decode(self._read_env(env))
            except uboot_env.UbootEnvError:
                return False
            return values.get(a[1]) == a[2]
        if req.name == "require-partition-offset":
            index = parse_int(a[0], req.name)
            offset = parse_int(a[1], req.name)
            from nhlink_dbus.core import mbr as mbr_codec  # noqa: PLC0415

            return mbr_codec.partition_offset(self.cache.pread(BLOCK, 0), index) == offset
        if req.name in ("require-fat-file-exists", "require-fat-file-match"):
            fat = self._fat_ops(req.name)
            block_offset = parse_int(a[0], req.name)
            if not fat.through_cache:
                sync_range(self.cache, block_offset * BLOCK, None)
            if req.name == "require-fat-file-exists":
                return fat.exists(block_offset, a[1])
            content = fat.read(block_offset, a[1])
            return content is not None and a[2].encode() in content
        host = self.host
        if host is None:
            return False
        if req.name == "require-execute":
            # Runs a host command: only with --unsafe; otherwise simply "not met" (as fwup).
            return self.options.unsafe and bool(a[0]) and host.succeeds(a[0])
        if req.name == "require-path-on-device":
            return host.path_on_device(a[0], a[1])
        if req.name == "require-path-at-offset":
            return host.path_at_offset(a[0], parse_int(a[1], req.name))
        raise FirmwareError(f"Unsupported requirement '{req.name}'")

    # -- progress ------------------------------------------------------------------------------

    def _units(self, conf: MetaConf, task: Task) -> int:
        total = 0
        blocks: list[tuple[Action, FileResource | None]] = []
        blocks += [(a, None) for a in task.on_init]
        for name, actions in task.on_resource.items():
            blocks += [(a, conf.resources[name]) for a in actions]
        blocks += [(a, None) for a in task.on_finish]
        for action, res in blocks:
            total += self._action_units(action, res)
        return total

    def _action_units(self, action: Action, res: FileResource | None) -> int:
        assert self.conf is not None
        name = action.name
        if name in RESOURCE_ACTIONS:
            if res is None:
                return 0
            # fat_write and pipe_write write holes out, so they count them (fwup's
            # count_holes); raw_write and path_write count the data only.
            return res.size if name in ("fat_write", "pipe_write") else res.length
        if name == "raw_memset":
            return parse_int(action.args[1], name) * BLOCK
        if name.startswith("uboot_"):
            env = self.conf.uboot_envs.get(action.args[0])
            if env is None:
                return BLOCK
            copies = 1 if env.block_offset_redund is None else 2  # fwup counts both copies
            return copies * env.block_count * BLOCK
        if name == "gpt_write":
            return 2 * GPT_SIZE
        if name == "trim":
            return parse_int(action.args[1], name) // 256
        if name in ("info", "error"):
            return 0
        return BLOCK  # mbr_write, fat_* other than fat_write, execute

    # -- actions ---------------------------------------------------------------------------------

    def _run_until_consumer(self) -> None:
        while self._pending:
            action = self._pending.pop(0)
            if action.name in RESOURCE_ACTIONS:
                self._consumer = self._open_consumer(action)
                self._hasher = self.digests("blake2b-256")
                res = self._resource
                assert res is not None and self._cursor is not None
                self.reader.bulk_limit = self._bulk_limit(action, res)
                digest = res.blake2b_256
                if len(digest) != 64:
                    raise FirmwareError(f"invalid blake2b hash for '{res.name}'")
                if not self._cursor.ended:
                    return
                # Nothing (more) to read: fwup's read callback reports the end at once.
                self._finish_consumer()
                continue
            self._run(action)

    def _total_blocks(self) -> int | None:
        """The target's size in blocks for MBR and GPT ``expand``, as fwup reads it: a
        regular file's soft end where it has moved to (BlockCache.soft_end)."""
        soft = self.cache.soft_end
        return soft // BLOCK if soft else self.options.total_blocks

    def _bulk_limit(self, action: Action, res: FileResource) -> int:
        """How much output the archive reader may hand over in one event of several
        reads (0: one read per event, as fwup). Only for a raw_write of a resource read
        as it is stored (no delta) that fits on the target, so that nothing can fail
        between the reads, and only while no event advances the progress by more than
        one percent, so that every percent fwup reports is reported."""
        if action.name != "raw_write" or not isinstance(self._cursor, _SparseCursor):
            return 0
        end = self.cache.end_offset
        dest = parse_int(action.args[0], action.name) * BLOCK
        if end is not None and dest + res.size > end:
            return 0
        per_percent = self.progress.total // max(self.progress.range, 1)
        return per_percent if per_percent >= INFLATE_OUTPUT else 0

    def _open_consumer(self, action: Action) -> _Consumer:
        name = action.name
        if name == "raw_write":
            dest = parse_int(action.args[0], name) * BLOCK
            out = self.cache
            if len(action.args) > 1:
                # fwup's disk_crypto: sectors are encrypted as the pad-to-block writer
                # hands them to the cache, numbered from the write's start.
                if self.disk_crypto is None:
                    raise FirmwareError("raw_write: encrypted writes (cipher=) are not supported")
                cipher = self.disk_crypto(action.args[1:])
                cache = self.cache

                class _Encrypting:
                    def pwrite(
                        self, buf: bytes | bytearray | memoryview, offset: int, streamed: bool
                    ) -> None:
                        lba = (offset - dest) // BLOCK
                        cache.pwrite(cipher.encrypt(buf, lba), offset, streamed)

                out = cast(BlockCache, _Encrypting())
            writer = PadToBlockWriter(out)

            def raw_final_hole(hole: int, size: int) -> None:
                # A seek does not make a regular file longer: fwup writes the hole's last
                # block (at most) of zeros.
                n = min(hole, BLOCK)
                writer.pwrite(_ZEROS[:n], dest + size - n)

            return _Consumer(
                name,
                lambda data, off: writer.pwrite(data, dest + off),
                writer.flush,
                lambda: None,
                raw_final_hole,
            )
        if name == "fat_write":
            fat = self._fat_ops(name)
            block_offset = parse_int(action.args[0], name)
            if not fat.through_cache:
                sync_range(self.cache, block_offset * BLOCK, None)
            fat_sink = _FatSink(fat.open_write(block_offset, action.args[1]))
            return _Consumer(
                name,
                fat_sink.pwrite,
                fat_sink.file.commit,
                fat_sink.file.abort,
                lambda _hole, size: fat_sink.grow(size),
                count_holes=True,
            )
        host = self._host_ops(name)
        if name == "path_write":
            target = host.open_path(action.args[0])
            sink = _SequentialSink(target.write)
        else:
            target = host.open_pipe(action.args[0])
            sink = _PipeSink(target.write, action.args[0])
        return _Consumer(
            name,
            sink.pwrite,
            target.commit,
            target.abort,
            # fwup writes one zero byte at the end to give the file its size.
            lambda _hole, size: sink.pwrite(b"\0", size - 1),
            count_holes=name == "pipe_write",
        )

    def _fat_ops(self, what: str) -> FatOps:
        if self.fat is None:
            raise FirmwareError(f"{what}: FAT support is not available")
        return self.fat

    def _host_ops(self, what: str) -> HostOps:
        if not self.options.unsafe:
            raise FirmwareError(f"{what} requires --unsafe")
        if self.host is None:
            raise FirmwareError(f"{what} is not available")
        return self.host

    def _read_env(self, env: UbootEnvironment) -> bytes:
        """The environment as a block :func:`uboot_env.decode` reads.

        For a redundant environment: the copy fwup would read (the newer valid
        one) without its flags byte (:func:`uboot_env.as_single_copy`); when
        neither copy is valid, the primary one that way, which does not decode.
        """
        if not 0 < env.block_count < 0xFFFF:
            raise uboot_env.UbootEnvError("invalid u-boot environment block count")
        size = env.block_count * BLOCK
        primary = self.cache.pread(size, env.block_offset * BLOCK)
        if env.block_offset_redund is None:
            return primary
        secondary = self.cache.pread(size, env.block_offset_redund * BLOCK)
        try:
            chosen = uboot_env.read_redundant(primary, secondary).block
        except uboot_env.UbootEnvError:
            chosen = primary
        return uboot_env.as_single_copy(chosen)

    def _write_env(
        self,
        env: UbootEnvironment,
        values: Sequence[tuple[str, str]],
        state: uboot_env.EnvRead | None = None,
    ) -> None:
        """Write ``values`` where fwup would after reading ``state``; with no
        ``state`` (clear or recover), a fresh environment to every copy."""
        if not 0 < env.block_count < 0xFFFF:
            raise FirmwareError("invalid u-boot environment block count")
        size = env.block_count * BLOCK
        if env.block_offset_redund is None:
            self.cache.pwrite(uboot_env.encode(values, size), env.block_offset * BLOCK, False)
            return
        if state is None:
            state = uboot_env.EnvRead([], 0, True, True, b"")
        block = uboot_env.encode(values, size, flags=state.flags + 1)
        if state.write_primary:
            self.cache.pwrite(block, env.block_offset * BLOCK, False)
        if state.write_secondary:
            self.cache.pwrite(block, env.block_offset_redund * BLOCK, False)

    def _env_values(self, env: UbootEnvironment) -> uboot_env.EnvRead:
        """The environment's variables and where to write it back, as fwup reads
        it; :class:`FirmwareError` with fwup's message when it is not valid."""
        try:
            if not 0 < env.block_count < 0xFFFF:
                raise uboot_env.UbootEnvError("invalid u-boot environment block count")
            size = env.block_count * BLOCK
            primary = self.cache.pread(size, env.block_offset * BLOCK)
            if env.block_offset_redund is None:
                pairs = uboot_env.decode_pairs(
                    primary, block_offset=env.block_offset, errors="surrogateescape"
                )
                return uboot_env.EnvRead(pairs, 0, True, False, primary)
            secondary = self.cache.pread(size, env.block_offset_redund * BLOCK)
            state = uboot_env.read_redundant(
                primary, secondary, block_offset=env.block_offset, errors="surrogateescape"
            )
        except uboot_env.UbootEnvError as exc:
            raise FirmwareError(str(exc)) from None
        if state.first_error is not None:
            self._last_error = FirmwareError(state.first_error)  # fwup's text from now on
        return state

    def _run(self, action: Action) -> None:
        assert self.conf is not None
        name, a = action.name, action.args
        units = self._action_units(action, None)
        if name == "info":
            self.listener.warning(a[0])
        elif name == "error":
            raise FirmwareError(a[0])
        elif name == "raw_memset":
            dest = parse_int(a[0], name) * BLOCK
            count = parse_int(a[1], name)
            value = parse_int(a[2], name)
            if count < 1 or not 0 <= value <= 255:
                raise FirmwareError("raw_memset requires a positive block count and a byte value")
            block = bytes([value]) * BLOCK
            for i in range(count):
                offset = dest + i * BLOCK
                try:
                    self.cache.pwrite(block, offset, True)
                except NhlinkError:
                    raise FirmwareError(
                        f"raw_memset couldn't write {BLOCK} bytes to offset {offset}"
                    ) from None
                self.progress.report(BLOCK)
            return
        elif name == "mbr_write":
            from nhlink_dbus.core import mbr as mbr_codec  # noqa: PLC0415

            for at, sector in mbr_codec.encode_all(self.conf.mbrs[a[0]], self._total_blocks()):
                self.cache.pwrite(sector, at * BLOCK, False)
        elif name == "gpt_write":
            self._gpt_write(a[0])
        elif name == "uboot_clearenv":
            self._write_env(self.conf.uboot_envs[a[0]], [])
        elif name == "uboot_setenv":
            env = self.conf.uboot_envs[a[0]]
            state = self._env_values(env)
            uboot_env.setenv(state.pairs, a[1], a[2])
            self._write_env(env, state.pairs, state)
        elif name == "uboot_unsetenv":
            env = self.conf.uboot_envs[a[0]]
            state = self._env_values(env)
            uboot_env.unsetenv(state.pairs, a[1])
            self._write_env(env, state.pairs, state)
        elif name == "uboot_recover":
            env = self.conf.uboot_envs[a[0]]
            try:
                self._env_values(env)
            except FirmwareError as exc:
                # Not valid: a clean environment to every copy. fwup's read failed, so its
                # text is fwup's last error from now on, though uboot_recover succeeds.
                self._last_error = exc
                self._write_env(env, [])
        elif name == "trim":
            self.cache.trim(parse_int(a[0], name) * BLOCK, parse_int(a[1], name) * BLOCK)
        elif name == "fat_attrib":
            try:
                self._fat_action(name, a)
            except FirmwareError as exc:
                # fwup's fat_attrib_run returns 1, not -1, when FatFs fails: the apply goes
                # on (without its progress), but the text is fwup's last error from now on.
                self._last_error = exc
                return
        elif name.startswith("fat_"):
            self._fat_action(name, a)
        elif name == "execute":
            self._host_ops(name).execute(a[0])
        elif name == "reboot_param":
            if self.options.reboot_param is None:
                raise FirmwareError("reboot-param can't open under `/run`")
            self.options.reboot_param(a[0])
        else:
            raise FirmwareError(f"Unsupported function '{name}'")
        self.progress.report(units)

    def _gpt_write(self, gpt_name: str) -> None:
        assert self.conf is not None
        from nhlink_dbus.core import gpt  # noqa: PLC0415

        section = self.conf.gpts[gpt_name]
        spec = gpt.parse_gpt(section.options, section.partitions)
        # fwup passes 0 ("size unknown") when it cannot size the destination.
        for offset, data in gpt.build_gpt(spec, self._total_blocks() or 0):
            self.cache.pwrite(data, offset, False)

    def _fat_action(self, name: str, a: tuple[str, ...]) -> None:
        fat = self._fat_ops(name)
        block_offset = parse_int(a[0], name)
        start = block_offset * BLOCK
        if name == "fat_mkfs":
            count = parse_int(a[1], name)
            if not fat.through_cache:
                sync_range(self.cache, start, start + count * BLOCK)
            fat.mkfs(block_offset, count)
            # src/fatfs.c fatfs_mkfs fills the volume's last block with 0xff through the cache
            # (mkfs wrote it too); written again here, the cache's flush of its segment grows
            # a regular-file image to that segment's end, as fwup's does.
            self.cache.pwrite(b"\xff" * BLOCK, start + (count - 1) * BLOCK, True)
            return
        if not fat.through_cache:
            sync_range(self.cache, start, None)
        if name in ("fat_mv", "fat_mv!"):
            fat.mv(block_offset, a[1], a[2], force=name.endswith("!"))
        elif name in ("fat_rm", "fat_rm!"):
            fat.rm(block_offset, a[1], must_exist=name.endswith("!"))
        elif name == "fat_cp":
            # fat_cp(offset, from, to) or fat_cp(from_offset, from, to_offset, to)
            if len(a) == 4:
                to_offset = parse_int(a[2], name)
                if not fat.through_cache:
                    sync_range(self.cache, to_offset * BLOCK, None)
                fat.cp(block_offset, a[1], a[3], to_offset)
            elif len(a) == 3:
                fat.cp(block_offset, a[1], a[2])
            else:
                raise FirmwareError("fat_cp requires either 3 or 4 arguments")
        elif name == "fat_mkdir":
            fat.mkdir(block_offset, a[1])
        elif name == "fat_setlabel":
            fat.setlabel(block_offset, a[1])
        elif name == "fat_touch":
            fat.touch(block_offset, a[1])
        elif name == "fat_attrib":
            fat.attrib(block_offset, a[1], a[2])
        else:
            raise FirmwareError(f"Unsupported function '{name}'")


__all__ = [
    "HOST_ACTIONS",
    "ApplyEngine",
    "ApplyListener",
    "ApplyOptions",
    "FatFileWriter",
    "FatOps",
    "FatWriter",
    "HostOps",
    "SignatureCheck",
]

"""Archive metadata as fwup reports it: ``meta-uuid``, ``-m``, ``-l`` and ``-V``.

* ``meta-uuid``: BLAKE2b-256 over a fixed 16-byte prefix and the exact
  ``meta.conf`` bytes; byte 6 gets version nibble 5; the first 16 bytes are
  printed as a UUID (the variant bits are left alone).
* ``-m`` prints, in fwup's order and only when set, the ``meta-*`` keys, the
  creation date (the UT mtime of the ``meta.conf`` entry), ``meta-uuid`` and
  ``meta-nickname``, as ``key=value``: bare when the value is non-empty and
  made of ``[A-Za-z0-9_.]`` only, else double-quoted with ``"`` and ``\\``
  escaped.
* ``-l`` prints task names sorted by name.
* ``-V`` inflates every resource and checks its length and blake2b-256; an
  xdelta3 patch (a plain resource whose ZIP header gives another size) gets
  fwup's header check only: a valid digest, then the VCDIFF header and first
  window header decode (fwup_verify.c ``check_xdelta3_resource``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from nhlink_dbus.core import confuse
from nhlink_dbus.core.digest import blake2b
from nhlink_dbus.core.fw_archive import (
    DataFailed,
    EntryData,
    EntryEnd,
    EntryStart,
    Event,
    HeaderFailed,
    ZipStreamReader,
)
from nhlink_dbus.core.fwup_conf import META_KEYS, MetaConf, load_meta_conf
from nhlink_dbus.core.fwup_nickname import nickname
from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import FirmwareError

TYPE_CHECKING = False  # without importing typing (nhlink_dbus/core/lean.py)
if TYPE_CHECKING:
    from nhlink_dbus.core.vcdiff import VcdiffDecoder

SIG_ENTRY = "meta.conf.ed25519"
META_ENTRY = "meta.conf"
SIGNATURE_LEN = 64
META_CONF_MAX = 50000  # cfgfile.c: what fwup reads of meta.conf at most

_UUID_PREFIX = bytes.fromhex("2053dffbd51e4310b93b956da89f9f34")
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")
METADATA_ORDER = (*META_KEYS, "meta-uuid", "meta-nickname")  # fwup -m order


def _uuid_hash(meta_conf: bytes) -> bytearray:
    h = bytearray(blake2b(_UUID_PREFIX + meta_conf, digest_size=32).digest())
    h[6] = (h[6] & 0x0F) | 0x50
    return h


def meta_uuid(meta_conf: bytes) -> str:
    """The UUID fwup derives from ``meta.conf`` (also ``${FWUP_META_UUID}``)."""
    h = _uuid_hash(meta_conf)[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def archive_resource_name(entry: str) -> str:
    """The file-resource an archive entry holds: ``data/x`` is ``x``, any other path
    ``/path`` (fwup's convention for files kept at the archive's root); "" for ``data/``."""
    return entry[5:] if entry.startswith("data/") else "/" + entry


def meta_nickname(meta_conf: bytes) -> str:
    """fwup's two-word ``meta-nickname`` (also ``${FWUP_META_NICKNAME}``)."""
    return nickname(bytes(_uuid_hash(meta_conf)))


def meta_variables(meta_conf: bytes) -> dict[str, str]:
    """The variables fwup resolves in a ``meta.conf`` when it reads one back."""
    return {"FWUP_META_UUID": meta_uuid(meta_conf), "FWUP_META_NICKNAME": meta_nickname(meta_conf)}


# meta.conf keys -> nerves_hub_link FirmwareMetadata fields (protocol.md §4.1).
META_FIELDS = {
    "meta-product": "product",
    "meta-description": "description",
    "meta-version": "version",
    "meta-author": "author",
    "meta-platform": "platform",
    "meta-architecture": "architecture",
    "meta-misc": "misc",
    "meta-vcs-identifier": "vcs_identifier",
    "meta-fwup-version": "fwup_version",
}


def firmware_metadata(meta_conf: bytes) -> dict[str, str]:
    """FirmwareMetadata fields of an archive (those it sets) plus its ``uuid``.

    Reads only the top-level ``meta-*`` options, so any valid libconfuse text
    works; raises :class:`~.confuse.ConfuseError` (or UnicodeDecodeError) otherwise.
    """
    uuid = meta_uuid(meta_conf)
    root = confuse.parse(meta_conf.decode("utf-8"), meta_variables(meta_conf))
    out = {}
    for key, value, _is_list in root.options:
        field_name = META_FIELDS.get(key)
        if field_name is not None and value:
            out[field_name] = value[0]
    out["uuid"] = uuid
    return out


def utc_text(seconds: int) -> str:
    """``seconds`` since 1970 as fwup prints a date, ``YYYY-MM-DDTHH:MM:SSZ`` (UTC).
    Arithmetic, not :mod:`datetime`: importing it is a millisecond of nhlink-fwup's
    start, for a date only ``-m`` prints."""
    days, rest = divmod(seconds, 86400)
    # The proleptic Gregorian calendar, with years starting on March 1st so that the
    # leap day ends them: 146097 days in each 400 years.
    era, day_of_era = divmod(days + 719468, 146097)  # 719468: 0000-03-01 to 1970-01-01
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_from_march = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_from_march + 2) // 5 + 1
    month = month_from_march + 3 if month_from_march < 10 else month_from_march - 9
    year = era * 400 + year_of_era + (month <= 2)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def quote_value(value: str) -> str:
    """fwup's ``-m`` quoting."""
    if value and _BARE.issuperset(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class FwArchiveHead:
    """What the head of an archive says."""

    meta_conf: bytes
    conf: MetaConf
    signature: bytes | None
    created: int | None  # seconds since 1970 (UTC)
    signature_verified: bool

    def metadata(self) -> dict[str, str]:
        """Every ``meta-*`` value fwup's ``-m`` prints, in its order."""
        values = dict(self.conf.meta)
        if self.created is not None:
            values["meta-creation-date"] = utc_text(self.created)
        values["meta-uuid"] = meta_uuid(self.meta_conf)
        values["meta-nickname"] = meta_nickname(self.meta_conf)
        return {k: values[k] for k in METADATA_ORDER if k in values}

    def metadata_text(self) -> str:
        return "".join(f"{k}={quote_value(v)}\n" for k, v in self.metadata().items())

    def task_list_text(self) -> str:
        return "".join(f"{name}\n" for name in sorted({t.name for t in self.conf.tasks}))


class HeadReader:
    """fwup's reading of an archive's head: an optional ``meta.conf.ed25519``, then
    ``meta.conf`` (fwup_apply.c, fwup_verify.c, cfgfile.c ``archive_read_all_data``).

    Give it the reader's events until :meth:`event` returns True; then ``meta_conf``,
    ``signature`` and ``mtime`` hold what fwup read. It raises :class:`FirmwareError`
    with fwup's texts: ``wrong_first`` when the entry is not meta.conf, ``first_failed``
    when there is no first entry (None: libarchive's own text, "(null)" if none; a
    failure to open the archive always gives libarchive's text).
    """

    def __init__(
        self, reader: ZipStreamReader, *, wrong_first: str, first_failed: str | None = None
    ) -> None:
        self.reader = reader
        self.wrong_first = wrong_first
        self.first_failed = first_failed
        self.headers = 0
        self.signature: bytes | None = None
        self.meta_conf = b""
        self.mtime: int | None = None
        self._reading = ""
        self._limit = 0
        self._buf = bytearray()

    def event(self, ev: Event) -> bool:
        if isinstance(ev, EntryData):
            self._buf += ev.data[: self._limit - len(self._buf)]
            return len(self._buf) >= self._limit and self._done(bytes(self._buf))
        if isinstance(ev, EntryEnd):
            return self._done(bytes(self._buf))
        if isinstance(ev, DataFailed):
            # archive_read_all_data asks for everything in one archive_read_data call,
            # which returns the error: nothing counts as read.
            return self._done(b"")
        self.headers += 1
        if isinstance(ev, EntryStart):
            if self.headers == 1 and ev.name == SIG_ENTRY:
                self._reading, limit = SIG_ENTRY, SIGNATURE_LEN
            elif ev.name == META_ENTRY:
                self._reading, limit = META_ENTRY, META_CONF_MAX
                self.mtime = ev.mtime
            else:
                raise FirmwareError(self.wrong_first)
            # fwup reads what the header's size says, when it gives one, up to its limit.
            self._limit = limit if ev.size is None else min(ev.size, limit)
            self._buf = bytearray()
            return self._limit == 0 and self._done(b"")
        if self.headers > 1:
            raise FirmwareError("Expecting more than meta.conf.ed25519 in archive")
        text = None if isinstance(ev, HeaderFailed) and ev.opening else self.first_failed
        if text is None and isinstance(ev, HeaderFailed):
            text = ev.text
        raise FirmwareError("(null)" if text is None else text)

    def _done(self, data: bytes) -> bool:
        self.reader.skip()  # fwup reads no more of the entry
        if self._reading == SIG_ENTRY:
            if len(data) != SIGNATURE_LEN:
                raise FirmwareError(f"Unexpected meta.conf.ed25519 size: {len(data)}")
            self.signature = data
            return False
        if not 10 <= len(data) < META_CONF_MAX:
            raise FirmwareError(f"Unexpected meta.conf size: {len(data)}")
        self.meta_conf = data
        return True


@dataclass(slots=True)
class ArchiveInspector:
    """Reads the head of an archive (and with ``verify``, every resource).

    Feed it bytes; ``info`` is set once ``meta.conf`` has been read and checked,
    ``verified`` once the whole archive checked out in verify mode.
    """

    public_keys: Sequence[bytes]
    check_signature: Callable[[bytes, bytes, bytes], bool]
    verify: bool = False
    archive_name: str = "(null)"  # the -i argument, as fwup names it in its errors
    info: FwArchiveHead | None = None
    verified: bool = False
    _reader: ZipStreamReader = field(default_factory=ZipStreamReader)
    _head: HeadReader | None = None
    _hash: blake2b | None = None
    _length: int = 0
    _name: str = ""
    _checked: set[str] = field(default_factory=set)
    _delta: VcdiffDecoder | None = None

    def __post_init__(self) -> None:
        if self.verify:  # fwup_verify.c
            wrong = f"Expecting meta.conf to be at the beginning of {self.archive_name}"
            self._head = HeadReader(self._reader, wrong_first=wrong)
        else:  # cfgfile.c cfgfile_parse_fw_meta_conf (-l, -m)
            self._head = HeadReader(
                self._reader,
                wrong_first=f"Expecting meta.conf to be at beginning of {self.archive_name}",
                first_failed=f"Corrupt archive '{self.archive_name}'",
            )

    @property
    def complete(self) -> bool:
        return self.verified if self.verify else self.info is not None

    def feed(self, chunk: bytes | memoryview) -> None:
        if not self.complete:
            self._events(self._reader.feed(chunk))

    def finish(self) -> None:
        if not self.complete:
            self._events(self._reader.finish())

    def _events(self, events: Iterator[Event]) -> None:
        for ev in events:
            if self.complete:
                return
            if self.info is None:
                assert self._head is not None
                if self._head.event(ev):
                    self._load(self._head)
                continue
            if isinstance(ev, EntryStart):
                self._start(ev)
            elif isinstance(ev, EntryData):
                if self._delta is not None:
                    from nhlink_dbus.core.vcdiff import VcdiffError  # noqa: PLC0415

                    try:
                        for _ in self._delta.feed(ev.data):
                            pass  # header_only: nothing comes out
                    except VcdiffError as exc:
                        raise FirmwareError(f"xdelta3 error: {exc}") from None
                    if self._delta.header_seen:
                        self._reader.skip()  # fwup reads the patch's header only
                elif self._hash is not None:
                    self._hash.update(ev.data)
                    self._length += len(ev.data)
            elif isinstance(ev, EntryEnd):
                self._end(ev)
            elif isinstance(ev, DataFailed):
                raise FirmwareError(ev.text)
            else:  # next_header gave no entry: the loop ends (fwup_verify.c)
                # fwup's resource list is built by prepending: it names the last missing.
                for name in reversed(list(self.info.conf.resources)):
                    if name not in self._checked:
                        raise FirmwareError(f"Resource {name} not found in archive")
                self.verified = True

    def _start(self, ev: EntryStart) -> None:
        assert self.info is not None
        self._name = archive_resource_name(ev.name)
        self._hash = None
        self._delta = None
        if not self._name:
            self._reader.skip()  # "data/" itself: zip(1) adds it; fwup skips it
            return
        if self._name not in self.info.conf.resources:
            raise FirmwareError(f"Can't find file-resource for {self._name}")
        if self._name in self._checked:
            raise FirmwareError(f"Processing {self._name} twice. Archive is corrupt.")
        self._checked.add(self._name)
        res = self.info.conf.resources[self._name]
        if ev.size is not None and not res.sparse_map and ev.size != res.length:
            # A possible xdelta3 patch: its output can't be checked without the source.
            if len(res.blake2b_256) != 64:
                raise FirmwareError(f"invalid blake2b-256 hash for '{self._name}'")
            from nhlink_dbus.core.vcdiff import VcdiffDecoder  # noqa: PLC0415

            self._delta = VcdiffDecoder(header_only=True)
            return
        if ev.size is not None and ev.size != res.length:
            raise FirmwareError(f"ZIP local header length mismatch for {self._name}")
        self._hash = blake2b(digest_size=32)
        self._length = 0

    def _end(self, ev: EntryEnd) -> None:
        assert self.info is not None
        if self._delta is not None:
            self._delta = None
            return
        if self._hash is None:
            return  # a skipped entry
        res = self.info.conf.resources[self._name]
        if self._length != res.length:
            raise FirmwareError(f"ZIP data length mismatch for {self._name}")
        if self._hash.hexdigest() != res.blake2b_256:
            raise FirmwareError(f"Detected blake2b digest mismatch for {self._name}")
        self._hash = None

    def _load(self, head: HeadReader) -> None:
        text = head.meta_conf
        signature = head.signature
        verified = False
        if self.public_keys:
            if signature is None:
                raise FirmwareError("Expecting signed firmware archive.")
            if not any(self.check_signature(k, signature, text) for k in self.public_keys):
                raise FirmwareError(
                    "Firmware archive's meta.conf fails digital signature verification."
                )
            verified = True
        conf = load_meta_conf(text, meta_variables(text))
        self.info = FwArchiveHead(text, conf, signature, head.mtime, verified)

    def verify_text(self) -> str:
        """fwup ``-V``'s success line."""
        assert self.info is not None
        if self.info.signature is None:
            return "Valid archive without a signature\n"
        if self.info.signature_verified:
            return "Valid archive with a good signature\n"
        return "Valid archive with an unverified signature. Specify a public key to authenticate.\n"

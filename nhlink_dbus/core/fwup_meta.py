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

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from nhlink_dbus.core import confuse
from nhlink_dbus.core.digest import blake2b
from nhlink_dbus.core.fw_archive import (
    ArchiveEnd,
    EntryData,
    EntryEnd,
    EntryStart,
    ZipStreamReader,
)
from nhlink_dbus.core.fwup_conf import META_KEYS, MetaConf, load_meta_conf
from nhlink_dbus.core.fwup_nickname import nickname
from nhlink_dbus.errors import FirmwareError

if TYPE_CHECKING:
    from nhlink_dbus.core.vcdiff import VcdiffDecoder

_UUID_PREFIX = bytes.fromhex("2053dffbd51e4310b93b956da89f9f34")
_BARE = re.compile(r"[A-Za-z0-9_.]+")
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


def quote_value(value: str) -> str:
    """fwup's ``-m`` quoting."""
    if value and _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class FwArchiveHead:
    """What the head of an archive says."""

    meta_conf: bytes
    conf: MetaConf
    signature: bytes | None
    created: datetime | None
    signature_verified: bool

    def metadata(self) -> dict[str, str]:
        """Every ``meta-*`` value fwup's ``-m`` prints, in its order."""
        values = dict(self.conf.meta)
        if self.created is not None:
            values["meta-creation-date"] = self.created.strftime("%Y-%m-%dT%H:%M:%SZ")
        values["meta-uuid"] = meta_uuid(self.meta_conf)
        values["meta-nickname"] = meta_nickname(self.meta_conf)
        return {k: values[k] for k in METADATA_ORDER if k in values}

    def metadata_text(self) -> str:
        return "".join(f"{k}={quote_value(v)}\n" for k, v in self.metadata().items())

    def task_list_text(self) -> str:
        return "".join(f"{name}\n" for name in sorted({t.name for t in self.conf.tasks}))


@dataclass(slots=True)
class ArchiveInspector:
    """Reads the head of an archive (and with ``verify``, every resource).

    Feed it bytes; ``info`` is set once ``meta.conf`` has been read and checked,
    ``verified`` once the whole archive checked out in verify mode.
    """

    public_keys: Sequence[bytes]
    check_signature: Callable[[bytes, bytes, bytes], bool]
    verify: bool = False
    info: FwArchiveHead | None = None
    verified: bool = False
    _reader: ZipStreamReader = field(default_factory=ZipStreamReader)
    _sig: bytearray = field(default_factory=bytearray)
    _meta: bytearray = field(default_factory=bytearray)
    _created: datetime | None = None
    _hash: blake2b | None = None
    _length: int = 0
    _name: str = ""
    _checked: set[str] = field(default_factory=set)
    _delta: VcdiffDecoder | None = None

    @property
    def complete(self) -> bool:
        return self.verified if self.verify else self.info is not None

    def feed(self, chunk: bytes | memoryview) -> None:
        if not self.complete:
            self._events(self._reader.feed(chunk))

    def finish(self) -> None:
        if not self.complete:
            self._events(self._reader.finish())

    def _events(self, events: list[EntryStart | EntryData | EntryEnd | ArchiveEnd]) -> None:
        for ev in events:
            if self.complete:
                return
            if isinstance(ev, EntryStart):
                self._start(ev)
            elif isinstance(ev, EntryData):
                if self.info is None:
                    buf = self._sig if ev.name == "meta.conf.ed25519" else self._meta
                    buf += ev.data
                elif self._delta is not None:
                    from nhlink_dbus.core.vcdiff import VcdiffError  # noqa: PLC0415

                    try:
                        for _ in self._delta.feed(ev.data):
                            pass  # header_only: nothing comes out
                    except VcdiffError as exc:
                        raise FirmwareError(f"xdelta3 error: {exc}") from None
                elif self._hash is not None:
                    self._hash.update(ev.data)
                    self._length += len(ev.data)
            elif isinstance(ev, EntryEnd):
                self._end(ev)
            else:
                if self.info is None:
                    raise FirmwareError("Invalid firmware archive: no meta.conf")
                if self.verify:
                    for name in self.info.conf.resources:
                        if name not in self._checked:
                            raise FirmwareError(f"Resource {name} not found in archive")
                self.verified = True

    def _start(self, ev: EntryStart) -> None:
        if self.info is None:
            if ev.name not in ("meta.conf.ed25519", "meta.conf"):
                raise FirmwareError("Expecting meta.conf to be at the beginning of the archive")
            if ev.name == "meta.conf":
                self._created = ev.mtime
            return
        self._name = archive_resource_name(ev.name)
        if not self._name:
            self._hash = None  # "data/" itself: zip(1) adds it; fwup skips it
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
            self._hash = None
            return
        self._hash = blake2b(digest_size=32)
        self._length = 0

    def _end(self, ev: EntryEnd) -> None:
        if self.info is None:
            if ev.name == "meta.conf":
                self._load()
            return
        if self._delta is not None:
            self._delta = None
            return
        if self._hash is None:
            return  # a skipped entry
        res = self.info.conf.resources[self._name]
        if self._length != res.length:
            raise FirmwareError(f"Length mismatch for {self._name}")
        if self._hash.hexdigest() != res.blake2b_256:
            raise FirmwareError(f"Detected blake2b digest mismatch for {self._name}")
        self._hash = None

    def _load(self) -> None:
        text = bytes(self._meta)
        signature = bytes(self._sig) if self._sig else None
        if signature is not None and len(signature) != 64:
            raise FirmwareError("Invalid signature file in archive")
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
        self.info = FwArchiveHead(text, conf, signature, self._created, verified)

    def verify_text(self) -> str:
        """fwup ``-V``'s success line."""
        assert self.info is not None
        if self.info.signature is None:
            return "Valid archive without a signature\n"
        if self.info.signature_verified:
            return "Valid archive with a good signature\n"
        return "Valid archive with an unverified signature. Specify a public key to authenticate.\n"

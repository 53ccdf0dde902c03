"""Removable media holding archives and firmware (DESIGN §1.5): the rules, sans-I/O.

The udev monitor, the mount table, mounting and reading files are adapters
(``aio/udev_monitor.py``, ``aio/media_mounts.py``, ``aio/media_files.py``);
this module says what they look at and what follows. Rules:

* **Devices.** A udev ``block`` device is a medium when it carries a file system
  (``ID_FS_USAGE=filesystem``, or a known ``ID_FS_TYPE`` when udev gave no usage)
  and sits on a USB bus (``ID_BUS=usb``) or on a disk whose ``removable``
  attribute is 1. Partitions and whole-disk file systems (sticks without a
  partition table) alike. A medium is known by its sysfs path: an ``add`` of a
  known one is ignored (udev and umockdev repeat themselves); ``remove`` ends it.
  A ``change`` (a card inserted into or taken out of a reader, a file system
  written) adds a device that became a medium and ends a medium that no longer
  is one.
* **Mounting.** A medium already mounted (its device number, else its node, in
  the mount table; a mount of the file system's root) is read where it is and
  never unmounted by the service; with ``[media] mount = false`` the service
  waits for such a mount (the desktop's). Otherwise it is mounted read-only
  with ``nosuid,nodev,noexec`` (ext3/ext4 also ``noload``: no journal is
  replayed onto the stick) at ``<mount_dir>/<device name>``, and unmounted on
  removal. A FAT file system the kernel cannot mount is read
  through mtools.
* **Files.** In each configured folder (relative to the medium's root; a folder
  is never followed through a symlink; not recursive): regular files whose name
  ends in ``.fw``. Skipped: hidden names (``.x``, AppleDouble ``._x``), names
  with a path separator or a control character, ``.``/``..``, symlinks and
  anything else that is not a regular file, files over ``[media] max_bytes``.
* **Kinds.** A candidate whose ``meta.conf`` has a task the configured
  ``[firmware] task`` selects (fwup selects tasks by name prefix) is *firmware*:
  it must name the running firmware's product, platform and architecture and be
  signed by the firmware keys. Any other is an *archive*, signed by the archive
  keys (protocol.md §7.6). Each candidate is verified whole before anything is
  announced; a file that fails is reported once (by name, never by content).
* **Lifecycle** (:class:`MediaManager`): ``added`` → ATTACHING (mount, scan:
  one task per medium) → ``attached`` announces ``MediaAdded`` → VERIFYING →
  ``done`` → READY; ``failed`` (it cannot be read) → READY at once. ``removed``
  from any state ends the medium: its task is cancelled (a copy in progress is
  removed), a mount of ours is undone, a firmware offer from it is withdrawn, and
  ``MediaRemoved`` is announced if ``MediaAdded`` was. An illegal transition
  raises :class:`~nhlink_dbus.errors.StateError` and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from enum import Enum
from typing import Final

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import StateError

CANDIDATE_SUFFIX: Final = ".fw"

# File systems worth mounting when udev named the type but not the usage.
FILESYSTEMS: Final = frozenset(
    {
        "vfat",
        "exfat",
        "ntfs",
        "ntfs3",
        "ext2",
        "ext3",
        "ext4",
        "btrfs",
        "xfs",
        "f2fs",
        "iso9660",
        "udf",
        "squashfs",
    }
)
FAT_TYPES: Final = frozenset({"vfat", "msdos", "fat"})
_JOURNALED_EXT: Final = frozenset({"ext3", "ext4"})
MOUNT_FLAGS: Final = ("ro", "nosuid", "nodev", "noexec")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")


# -- names -----------------------------------------------------------------------------------


def folder_problem(folder: str) -> str | None:
    """What is wrong with a ``[media] folders`` item (None: fine). Relative, no ``..``."""
    if not folder or folder.startswith("/"):
        return 'must be a relative folder on the medium ("." is its root)'
    if _CONTROL.search(folder) or "\\" in folder:
        return "must not contain control characters or backslashes"
    parts = [p for p in folder.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "must not contain '..'"
    return None


def folder_parts(folder: str) -> tuple[str, ...]:
    """The components of a valid folder (``()`` for the root)."""
    return tuple(p for p in folder.split("/") if p not in ("", "."))


def name_problem(name: str) -> str | None:
    """Why a directory entry is not a candidate file name (None: it is one)."""
    if not name.lower().endswith(CANDIDATE_SUFFIX):
        return "not a .fw file"
    if name.startswith("."):
        return "hidden file" if not name.startswith("._") else "AppleDouble file"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "a path, not a name"
    if _CONTROL.search(name):
        return "control characters in the name"
    return None


# -- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """What udev says about a block device (the properties of its uevent)."""

    sys_path: str
    devnode: str
    devnum: tuple[int, int] | None
    devtype: str  # disk | partition
    fs_type: str
    fs_usage: str
    label: str
    usb: bool
    removable: bool

    @classmethod
    def from_udev(
        cls, sys_path: str, properties: Mapping[str, str], removable: bool
    ) -> BlockDevice:
        """Parse the uevent properties; ``removable``: the disk's sysfs attribute is 1."""
        devnum: tuple[int, int] | None = None
        major, minor = properties.get("MAJOR", ""), properties.get("MINOR", "")
        if major.isdigit() and minor.isdigit():
            devnum = (int(major), int(minor))
        return cls(
            sys_path=sys_path,
            devnode=properties.get("DEVNAME", ""),
            devnum=devnum,
            devtype=properties.get("DEVTYPE", ""),
            fs_type=properties.get("ID_FS_TYPE", ""),
            fs_usage=properties.get("ID_FS_USAGE", ""),
            label=properties.get("ID_FS_LABEL", ""),
            usb=properties.get("ID_BUS", "") == "usb",
            removable=removable,
        )

    @property
    def has_filesystem(self) -> bool:
        if self.fs_usage:
            return self.fs_usage == "filesystem" and bool(self.fs_type)
        return self.fs_type in FILESYSTEMS

    @property
    def is_medium(self) -> bool:
        """A file system on a USB or removable disk, with a device node to read."""
        return (
            self.devtype in ("disk", "partition")
            and self.devnode.startswith("/dev/")
            and self.has_filesystem
            and (self.usb or self.removable)
        )

    @property
    def name(self) -> str:
        """A safe name for its mount point (``sdb1``)."""
        base = self.devnode.rsplit("/", 1)[-1]
        return base if _DEVICE_NAME.fullmatch(base) and base not in (".", "..") else "medium"


def mount_options(fs_type: str) -> str:
    """``mount -o`` for a medium: read-only, nothing executable, no journal replay."""
    flags = list(MOUNT_FLAGS)
    if fs_type in _JOURNALED_EXT:
        flags.append("noload")
    return ",".join(flags)


# -- the mount table -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo`` (proc(5))."""

    devnum: tuple[int, int]
    root: str
    mount_point: str
    fs_type: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every well-formed line of a mountinfo text (others are skipped)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    devnum=(int(major), int(minor)),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    fs_type=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def find_mount(entries: Sequence[MountEntry], device: BlockDevice) -> MountEntry | None:
    """Where ``device``'s whole file system is mounted (the first such mount), if anywhere."""
    for entry in entries:
        if entry.root != "/":
            continue  # a bind mount of a folder shows part of the medium only
        if device.devnum is not None and entry.devnum == device.devnum:
            return entry
        if device.devnum is None and entry.source == device.devnode:
            return entry
    return None


# -- what a candidate is ---------------------------------------------------------------------


class Kind(Enum):
    FIRMWARE = "firmware"
    ARCHIVE = "archive"


_MATCHED = ("product", "platform", "architecture")


def classify(
    meta: Mapping[str, str],
    tasks: Collection[str],
    running: Mapping[str, str],
    task: str,
) -> tuple[Kind, str | None]:
    """(kind, refusal): firmware if a task is selected by ``task`` (fwup's prefix rule),
    else an archive. ``refusal`` says why firmware is not for this device (None: it is).
    ``running`` is the running slot's KV (``nerves_fw_product``, …)."""
    if not any(name.startswith(task) for name in tasks):
        return Kind.ARCHIVE, None
    known = {key: running.get(f"nerves_fw_{key}") for key in _MATCHED}
    if not any(known.values()):
        return Kind.FIRMWARE, (
            "the running firmware names no product, platform or architecture to match"
        )
    for key in _MATCHED:
        want = known[key]
        if want and meta.get(key) != want:
            return Kind.FIRMWARE, (
                f"firmware for another device ({key} {meta.get(key) or '(none)'!r}, "
                f"this device runs {want!r})"
            )
    return Kind.FIRMWARE, None


# -- where a file is ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A candidate file: the medium (sysfs path, device node) and its path on it."""

    sys_path: str
    device: str
    path: str  # relative to the medium's root, "/"-separated


# -- inputs (from the adapters) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediumAdded:
    device: BlockDevice


@dataclass(frozen=True, slots=True)
class MediumChanged:
    device: BlockDevice


@dataclass(frozen=True, slots=True)
class MediumRemovedEvent:
    sys_path: str


@dataclass(frozen=True, slots=True)
class MediumAttached:
    """The medium is readable at ``mount_point`` (``owned``: mounted by us) and holds
    ``candidates`` files worth verifying."""

    sys_path: str
    mount_point: str
    owned: bool
    candidates: int


@dataclass(frozen=True, slots=True)
class MediumFailed:
    """The medium cannot be read (mount failed, …)."""

    sys_path: str
    reason: str


@dataclass(frozen=True, slots=True)
class MediumDone:
    """Every candidate of the medium was handled."""

    sys_path: str


@dataclass(frozen=True, slots=True)
class FirmwareFound:
    """Verified firmware for this device (signature, every resource, kind match)."""

    file: MediaFile
    meta: Mapping[str, str]
    size: int


@dataclass(frozen=True, slots=True)
class ArchiveFound:
    """A verified archive, copied and verified again at ``staged`` (None: the same
    archive is in the archives folder already, valid, and nothing was copied)."""

    file: MediaFile
    meta: Mapping[str, str]
    size: int
    staged: str | None


@dataclass(frozen=True, slots=True)
class CandidateRefused:
    file: MediaFile
    reason: str


MediaInput = (
    MediumAdded
    | MediumChanged
    | MediumRemovedEvent
    | MediumAttached
    | MediumFailed
    | MediumDone
    | FirmwareFound
    | ArchiveFound
    | CandidateRefused
)


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttachMedium:
    """Mount (or find the mount of) the medium, scan and verify its candidates."""

    device: BlockDevice


@dataclass(frozen=True, slots=True)
class DetachMedium:
    """The medium is gone: stop its work; unmount ``mount_point`` if ``owned``."""

    sys_path: str
    mount_point: str
    owned: bool


@dataclass(frozen=True, slots=True)
class MediaAdded:
    device: str
    mount_point: str
    candidates: int


@dataclass(frozen=True, slots=True)
class MediaRemoved:
    device: str


MediaEffect = AttachMedium | DetachMedium | MediaAdded | MediaRemoved


# -- the lifecycle ---------------------------------------------------------------------------


class MediumState(Enum):
    ATTACHING = "attaching"  # finding or making its mount, listing candidates
    VERIFYING = "verifying"  # announced (MediaAdded); candidates being judged
    READY = "ready"  # everything judged (or it could not be read)


@dataclass(slots=True)
class Medium:
    device: BlockDevice
    state: MediumState = MediumState.ATTACHING
    mount_point: str = ""
    owned: bool = False
    announced: bool = False


# Which states accept which input (the one table of this module).
_ACCEPTS: Final[dict[str, frozenset[MediumState]]] = {
    "attached": frozenset({MediumState.ATTACHING}),
    "failed": frozenset({MediumState.ATTACHING}),
    "done": frozenset({MediumState.VERIFYING}),
}


class MediaManager:
    """The media present, by sysfs path; see the module docstring."""

    def __init__(self) -> None:
        self.media: dict[str, Medium] = {}

    def _get(self, sys_path: str, what: str) -> Medium:
        medium = self.media.get(sys_path)
        if medium is None:
            raise StateError(f"{what}: no medium {sys_path}")
        if medium.state not in _ACCEPTS[what]:
            raise StateError(f"{what} is not possible while the medium is {medium.state.value}")
        return medium

    def added(self, device: BlockDevice) -> list[MediaEffect]:
        if not device.is_medium or device.sys_path in self.media:
            return []
        self.media[device.sys_path] = Medium(device)
        return [AttachMedium(device)]

    def attached(self, event: MediumAttached) -> list[MediaEffect]:
        medium = self._get(event.sys_path, "attached")
        medium.mount_point, medium.owned = event.mount_point, event.owned
        medium.state, medium.announced = MediumState.VERIFYING, True
        return [MediaAdded(medium.device.devnode, event.mount_point, event.candidates)]

    def failed(self, sys_path: str) -> None:
        """Nothing more is done with it until it is removed (and inserted again)."""
        self._get(sys_path, "failed").state = MediumState.READY

    def done(self, sys_path: str) -> None:
        self._get(sys_path, "done").state = MediumState.READY

    def changed(self, device: BlockDevice) -> list[MediaEffect]:
        if device.sys_path in self.media:
            return [] if device.is_medium else self.removed(device.sys_path)
        return self.added(device)

    def removed(self, sys_path: str) -> list[MediaEffect]:
        medium = self.media.pop(sys_path, None)
        if medium is None:
            return []
        out: list[MediaEffect] = [DetachMedium(sys_path, medium.mount_point, medium.owned)]
        if medium.announced:
            out.append(MediaRemoved(medium.device.devnode))
        return out

    def present(self, sys_path: str) -> bool:
        return sys_path in self.media

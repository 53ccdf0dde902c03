"""Archives: fetches decided ``download``, the ready shelf, the folder's bounds
(protocol.md §7; DESIGN §1.4).

An ``archive`` push (or a verified archive on removable media) is a signed
``.fw`` side payload for applications. Whether to take one is a question of the
decision engine; this module keeps what was decided ``download`` until its file
is ready or failed, and what is ready (the shelf: ``GetArchives``). Rules:

* Different archives are independent (2.5.2 starts a download per offer too).
  A second offer of an archive that is being fetched is dropped: the file on its
  way is the same (2.5.2 started a second download into the same file).
* An offer of an archive on the shelf is not asked again: it is decided
  ``download`` by policy and the fetch only re-checks the file that is there
  (present and valid → ``ArchiveReady`` without a download; gone or invalid →
  dropped from the shelf and asked afresh).
* An archive from removable media arrives already copied and verified
  (``staged``); ``download`` moves it into place, any other final answer deletes
  the copy (:class:`DiscardStaged`), ``reschedule`` keeps it.
* The folder is bounded (``[archives] max_bytes``, ``max_count``): when an
  archive becomes ready, the oldest others are removed first, never one that
  became ready less than ``keep_ready_ms`` ago; with only those left the bound is
  exceeded for the newcomer (:func:`plan_eviction` says so; the store warns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.core.media import MediaFile
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import StateError

Info = dict[str, str | int]


@dataclass(frozen=True, slots=True)
class ArchiveOffer:
    """An archive to decide on, with the keys that must have signed it."""

    info: ArchiveInfo
    public_keys: tuple[str, ...]
    source: str = "hub"  # hub | removable
    file: MediaFile | None = None  # removable: where it was found
    staged: str | None = None  # removable: the verified copy in the archives folder
    extra: Mapping[str, str] | None = None  # removable: more of the file's metadata

    @property
    def key(self) -> str:
        """What makes two offers the same question (the hub repeats offers)."""
        return self.info.uuid if self.source == "hub" else f"{self.source}:{self.info.uuid}"


@dataclass(frozen=True, slots=True)
class StartArchiveDownload:
    """Get the archive into the folder: download it, move the staged copy, or — with
    ``recheck`` — only check the file that is there."""

    request_id: str
    offer: ArchiveOffer
    recheck: bool = False


@dataclass(frozen=True, slots=True)
class DiscardStaged:
    """Delete a staged copy nobody wants (``ignore``, or superseded)."""

    path: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    """How a fetch ended: the verified file (and the archives the bounds evicted for it),
    or ``error``; ``missing``: a re-check found no valid file to keep."""

    path: str | None = None
    evicted: tuple[str, ...] = ()
    error: str = ""
    missing: bool = False


@dataclass(frozen=True, slots=True)
class ReadyArchive:
    path: str
    info: Info


class ArchiveManager:
    """Archive requests decided ``download`` (by request id), and the ready shelf (by uuid)."""

    def __init__(self) -> None:
        self.downloading: dict[str, StartArchiveDownload] = {}
        self.ready: dict[str, ReadyArchive] = {}

    def is_downloading(self, uuid: str) -> bool:
        return any(s.offer.info.uuid == uuid for s in self.downloading.values())

    def start(
        self, request_id: str, offer: ArchiveOffer, *, recheck: bool = False
    ) -> list[StartArchiveDownload]:
        if request_id in self.downloading:
            raise StateError(f"archive request {request_id} is already being fetched")
        start = StartArchiveDownload(request_id, offer, recheck)
        self.downloading[request_id] = start
        return [start]

    def done(self, request_id: str) -> StartArchiveDownload | None:
        """The fetch ended (ready or failed): what was started, or None if nothing ran."""
        return self.downloading.pop(request_id, None)

    def shelve(self, uuid: str, path: str, info: Info) -> None:
        self.ready[uuid] = ReadyArchive(path, dict(info))

    def unshelve(self, uuids: Sequence[str]) -> None:
        for uuid in uuids:
            self.ready.pop(uuid, None)


# -- the folder's bounds ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShelfBounds:
    """``[archives] max_bytes``, ``max_count``, ``keep_ready_ms``."""

    max_bytes: int
    max_count: int
    keep_ready_ms: int


@dataclass(frozen=True, slots=True)
class ShelfItem:
    """An archive in the folder: its size and when it became ready (wall clock, s)."""

    uuid: str
    size: int
    ready_at: float


def plan_eviction(
    items: Sequence[ShelfItem], newcomer: ShelfItem, bounds: ShelfBounds, now: float
) -> tuple[list[str], bool]:
    """(uuids to remove, bound still exceeded) so the folder holds ``newcomer`` within
    ``bounds``: oldest first, never one ready for less than ``keep_ready_ms`` at ``now``
    (wall-clock seconds, as ``ready_at``)."""
    others = sorted(
        (i for i in items if i.uuid != newcomer.uuid), key=lambda i: (i.ready_at, i.uuid)
    )
    count = len(others) + 1
    total = sum(i.size for i in others) + newcomer.size
    keep_s = bounds.keep_ready_ms / 1000
    evict = []
    for item in others:
        if count <= bounds.max_count and total <= bounds.max_bytes:
            break
        if now - item.ready_at < keep_s:
            continue
        evict.append(item.uuid)
        count -= 1
        total -= item.size
    return evict, count > bounds.max_count or total > bounds.max_bytes

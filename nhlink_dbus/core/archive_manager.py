"""Archives being fetched (protocol.md §7; DESIGN §1.4).

An ``archive`` push is a signed ``.fw`` side payload for applications. Whether
to fetch one is a question of the decision engine; this module keeps what was
decided ``download`` until its file is ready or failed. Different archives are
independent (2.5.2 starts a download per offer as well); a new offer of an
archive that is being fetched is ignored, since the file on its way is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.errors import StateError


@dataclass(frozen=True, slots=True)
class ArchiveOffer:
    """An archive to decide on, with the keys that must have signed it."""

    info: ArchiveInfo
    public_keys: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.info.uuid


@dataclass(frozen=True, slots=True)
class StartArchiveDownload:
    request_id: str
    offer: ArchiveOffer


class ArchiveManager:
    """Archive requests decided ``download``, by request id."""

    def __init__(self) -> None:
        self.downloading: dict[str, ArchiveOffer] = {}

    def is_downloading(self, uuid: str) -> bool:
        return any(o.info.uuid == uuid for o in self.downloading.values())

    def start(self, request_id: str, offer: ArchiveOffer) -> list[StartArchiveDownload]:
        if request_id in self.downloading:
            raise StateError(f"archive request {request_id} is already being fetched")
        self.downloading[request_id] = offer
        return [StartArchiveDownload(request_id, offer)]

    def done(self, request_id: str) -> ArchiveOffer | None:
        """The fetch ended (ready or failed): the offer, or None if it was not running."""
        return self.downloading.pop(request_id, None)

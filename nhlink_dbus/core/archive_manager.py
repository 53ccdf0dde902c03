"""Archive offers (protocol.md §7; DESIGN §1.4, §3).

An ``archive`` push is a signed ``.fw`` side payload for applications. Each
offer gets a request id and needs a decision: ``download``, ``ignore`` or
``reschedule``. A newer offer for the same archive UUID replaces a pending or
rescheduled one; different archives are independent (2.5.2 starts a download
per offer as well). Sans-I/O: the service performs the returned effects.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from nhlink_dbus.core.hub_messages import ArchiveInfo
from nhlink_dbus.errors import StateError


class ArchiveDecision(Enum):
    DOWNLOAD = "download"
    IGNORE = "ignore"
    RESCHEDULE = "reschedule"


@dataclass(frozen=True, slots=True)
class ArchiveOffer:
    request_id: str
    info: ArchiveInfo
    public_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AskArchive:
    offer: ArchiveOffer


@dataclass(frozen=True, slots=True)
class ArchiveDecided:
    offer: ArchiveOffer
    decision: ArchiveDecision
    delay_ms: int
    decided_by: str


@dataclass(frozen=True, slots=True)
class StartArchiveDownload:
    offer: ArchiveOffer


@dataclass(frozen=True, slots=True)
class ArchiveDropped:
    """A pending request replaced by a newer offer of the same archive."""

    request_id: str


ArchiveEffect = AskArchive | ArchiveDecided | StartArchiveDownload | ArchiveDropped


class ArchiveManager:
    """Pending, rescheduled and downloading archive requests."""

    def __init__(self, id_prefix: str = "a") -> None:
        self.pending: dict[str, ArchiveOffer] = {}  # awaiting a decision
        self.rescheduled: dict[str, tuple[ArchiveOffer, float]] = {}  # id -> (offer, due)
        self.downloading: dict[str, ArchiveOffer] = {}
        self._ids = (f"{id_prefix}{n}" for n in itertools.count(1))

    def offer(self, info: ArchiveInfo, public_keys: tuple[str, ...]) -> list[ArchiveEffect]:
        out: list[ArchiveEffect] = []
        for table in (self.pending, self.rescheduled):
            for rid in [r for r, v in table.items() if _uuid(v) == info.uuid]:
                del table[rid]
                out.append(ArchiveDropped(rid))
        if any(o.info.uuid == info.uuid for o in self.downloading.values()):
            return out  # already on its way
        offer = ArchiveOffer(next(self._ids), info, public_keys)
        self.pending[offer.request_id] = offer
        out.append(AskArchive(offer))
        return out

    def decide(
        self, request_id: str, decision: ArchiveDecision, delay_ms: int, decided_by: str, now: float
    ) -> list[ArchiveEffect]:
        offer = self.pending.get(request_id)
        if offer is None:
            raise StateError(f"no pending archive request {request_id}")
        if decision is ArchiveDecision.RESCHEDULE and delay_ms <= 0:
            raise StateError("reschedule needs a positive delay")
        del self.pending[request_id]
        out: list[ArchiveEffect] = [ArchiveDecided(offer, decision, delay_ms, decided_by)]
        if decision is ArchiveDecision.DOWNLOAD:
            self.downloading[request_id] = offer
            out.append(StartArchiveDownload(offer))
        elif decision is ArchiveDecision.RESCHEDULE:
            self.rescheduled[request_id] = (offer, now + delay_ms)
        return out

    def tick(self, now: float) -> list[ArchiveEffect]:
        out: list[ArchiveEffect] = []
        for rid, (offer, due) in list(self.rescheduled.items()):
            if now >= due:
                del self.rescheduled[rid]
                self.pending[rid] = offer
                out.append(AskArchive(offer))
        return out

    def next_deadline(self) -> float | None:
        return min((due for _o, due in self.rescheduled.values()), default=None)

    def done(self, request_id: str) -> ArchiveOffer | None:
        return self.downloading.pop(request_id, None)


def _uuid(value: ArchiveOffer | tuple[ArchiveOffer, float]) -> str:
    offer = value[0] if isinstance(value, tuple) else value
    return offer.info.uuid

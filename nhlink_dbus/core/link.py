"""The service's core: hub events and face requests in, effects out (DESIGN §1-3).

:class:`LinkCore` joins the decision engine (:mod:`~nhlink_dbus.core.decisions`),
the update lifecycle (:mod:`~nhlink_dbus.core.update_manager`) and the archive
fetches (:mod:`~nhlink_dbus.core.archive_manager`), keeps the signing keys and
the values the faces read (``State``, ``Connected``, ``Progress``,
``LastError``), and says what the composition root must do as effects. It is
sans-I/O: every input that depends on time takes ``now`` (seconds, monotonic);
the root wakes it at :meth:`LinkCore.next_deadline` with :meth:`LinkCore.tick`.

Keys (protocol.md §3.1, §7.6): firmware keys are the configured ones, else those
the hub pushed; archive keys are the configured archive keys, else the
configured firmware keys, else those the hub pushed for archives. No key at all
→ the offer is refused with an ``Error`` (never applied or announced unverified).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import media
from nhlink_dbus.core.archive_manager import (
    ArchiveManager,
    ArchiveOffer,
    DiscardStaged,
    FetchResult,
    StartArchiveDownload,
)
from nhlink_dbus.core.decisions import Asked, Decided, DecisionEngine, KindRules, Withdrawn
from nhlink_dbus.core.update_manager import (
    Offer,
    ReportError,
    ReportProgress,
    UpdateEffect,
    UpdateManager,
    UpdateState,
)
from nhlink_dbus.errors import NotPossible

UPDATE = "update"
ARCHIVE = "archive"

Info = dict[str, str | int]

_FIRMWARE_KEYS = (
    "uuid",
    "version",
    "product",
    "platform",
    "architecture",
    "author",
    "description",
    "misc",
    "vcs_identifier",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """What the core needs of the configuration (``Config.link_settings()``). No
    defaults here: they are the configuration's (``config.DecisionsConfig``,
    ``config.RebootConfig``), in one place."""

    decision_timeout_ms: int
    default_update: str
    default_archive: str
    ignore_same_uuid: bool
    reboot_delay_ms: int
    fwup_keys: tuple[str, ...] = ()  # configured
    archive_keys: tuple[str, ...] = ()  # configured


# -- effects beside the update manager's ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announce:
    """A question for the faces (UpdateAvailable / ArchiveAvailable)."""

    kind: str
    request_id: str
    info: Info


@dataclass(frozen=True, slots=True)
class DecisionMade:
    kind: str
    request_id: str
    decision: str
    delay_ms: int
    decided_by: str


@dataclass(frozen=True, slots=True)
class RequestGone:
    """A request ended undecided (superseded): release what belongs to it."""

    request_id: str


@dataclass(frozen=True, slots=True)
class ArchiveReady:
    request_id: str
    info: Info
    path: str


@dataclass(frozen=True, slots=True)
class Downloading:
    """The firmware being fetched, for the next join (``currently_downloading_uuid``)."""

    uuid: str | None


@dataclass(frozen=True, slots=True)
class PropertiesChanged:
    changed: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class IdentifyRequested:
    pass


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    reason: str


Effect = (
    UpdateEffect
    | StartArchiveDownload
    | DiscardStaged
    | media.MediaEffect
    | Announce
    | DecisionMade
    | RequestGone
    | ArchiveReady
    | Downloading
    | PropertiesChanged
    | IdentifyRequested
    | ConnectionLost
)


def update_info(offer: Offer) -> Info:
    """The a{sv} info of an update: firmware metadata, never the URL."""
    meta = offer.info.firmware_meta
    out: Info = {"source": offer.source}
    for key in _FIRMWARE_KEYS:
        value = getattr(meta, key)
        if value is not None:
            out[key] = value
    if offer.info.deployment_id is not None:
        out["deployment_id"] = offer.info.deployment_id
    if offer.medium is not None:
        out.update(_medium_info(offer.medium))
    return out


def _medium_info(file: media.MediaFile) -> Info:
    """Where a removable offer was found: the device node and the path on the medium."""
    return {"device": file.device, "file": file.path}


def archive_info(offer: ArchiveOffer) -> Info:
    """The a{sv} info of an archive: its metadata, never the URL."""
    info = offer.info
    out: Info = {"source": offer.source, "uuid": info.uuid, "version": info.version}
    out["size"] = info.size
    for key in ("description", "platform", "architecture", "uploaded_at"):
        value = getattr(info, key)
        if value is not None:
            out[key] = value
    for key, text in (offer.extra or {}).items():
        out.setdefault(key, text)
    if offer.file is not None:
        out.update(_medium_info(offer.file))
    return out


def decision_kinds(settings: LinkSettings) -> dict[str, KindRules]:
    """The questions the service asks, and how each is decided (DESIGN §3)."""
    return {
        UPDATE: KindRules(
            "u",
            ("apply", "ignore", "reschedule"),
            settings.default_update,
            nobody="apply",  # nerves_hub_link's default client
            exclusive=True,
        ),
        ARCHIVE: KindRules(
            "a",
            ("download", "ignore", "reschedule"),
            settings.default_archive,
            nobody=settings.default_archive,
        ),
    }


def _info(subject: object) -> Info:
    if isinstance(subject, Offer):
        return update_info(subject)
    assert isinstance(subject, ArchiveOffer), subject
    return archive_info(subject)


class LinkCore:
    """See the module docstring."""

    def __init__(
        self, settings: LinkSettings, running_slot: Mapping[str, str], boot_token: str
    ) -> None:
        self.settings = settings
        self.slot = dict(running_slot)
        self.updates = UpdateManager(settings.reboot_delay_ms)
        self.archives = ArchiveManager()
        self.media = media.MediaManager()
        self.engine = DecisionEngine(
            kinds=decision_kinds(settings),
            timeout_s=settings.decision_timeout_ms / 1000,
            boot_token=boot_token,
            ignore_same_uuid=settings.ignore_same_uuid,
            running_uuid=self.slot.get("nerves_fw_uuid"),
        )
        self.fwup_keys = settings.fwup_keys
        self._pushed_archive_keys: tuple[str, ...] = ()
        self.connected = False
        self.progress = 0
        self.last_error = ""
        self._state = self.state

    # -- views ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.updates.state in (UpdateState.UPDATING, UpdateState.REBOOTING):
            return str(self.updates.state.value)
        questions = self.engine.questions(UPDATE)
        if questions:
            waiting = any(q in self.engine.waiting() for q in questions)
            state = UpdateState.AWAITING_DECISION if waiting else UpdateState.RESCHEDULED
            return str(state.value)
        return str(self.updates.state.value)

    @property
    def archive_keys(self) -> tuple[str, ...]:
        return self.settings.archive_keys or self.settings.fwup_keys or self._pushed_archive_keys

    def pending_requests(self) -> list[tuple[str, str, Info]]:
        """(request id, kind, info) of every question a face can answer now."""
        return [(q.request_id, q.kind, _info(q.subject)) for q in self.engine.waiting()]

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.engine.next_deadline(), self.updates.next_deadline()) if d]
        return min(deadlines, default=None)

    # -- inputs -----------------------------------------------------------------------------

    def set_deciders(self, count: int) -> None:
        self.engine.deciders = count

    def hub_event(self, event: hs.SessionEvent, now: float) -> list[Effect]:
        """What the hub connection reported (typed messages and lifecycle events)."""
        out: list[Effect] = []
        if isinstance(event, hm.UpdateInfo):
            out += self._offer_update(Offer(event, self.fwup_keys), now)
        elif isinstance(event, hm.ArchiveInfo):
            out += self._offer_archive(ArchiveOffer(event, self.archive_keys), now)
        elif isinstance(event, hm.FwupPublicKeys):
            self.fwup_keys = self.settings.fwup_keys or event.keys
            if not event.keys:
                out += self._error("the hub sent an empty firmware key list")
        elif isinstance(event, hm.ArchivePublicKeys):
            self._pushed_archive_keys = event.keys
        elif isinstance(event, hm.Reboot):
            if self.updates.state is not UpdateState.UPDATING:
                for question in self.engine.questions(UPDATE):
                    out += self._route(self.engine.withdraw(question.request_id), now)
            out += self._update_effects(self.updates.hub_reboot())
        elif isinstance(event, hm.Identify):
            out.append(IdentifyRequested())
        elif isinstance(event, hs.Connected):
            out += self._set_connected(True)
        elif isinstance(event, hs.Disconnected):
            if self.connected:
                out.append(ConnectionLost(event.reason))
            out += self._set_connected(False)
            out += self._error(f"hub connection: {event.reason}")
        elif isinstance(event, hs.ChannelDown):
            out += self._error(f"hub channel: {event.reason}")
        return self._with_state(out)

    def decide(
        self, request_id: str, decision: str, delay_ms: int, decided_by: str, now: float
    ) -> list[Effect]:
        """A face's ``Decide``; raises a RequestError and changes nothing if not valid."""
        effects = self.engine.answer(request_id, decision, delay_ms, decided_by, now)
        return self._with_state(self._route(effects, now))

    def install_keys(self) -> tuple[str, ...]:
        """The keys a local file must be signed with; NotPossible when none can be installed."""
        if not self.updates.accepts_offers:
            raise NotPossible(f"an update is {self.updates.state.value}: try again later")
        if not self.fwup_keys:
            raise NotPossible("no firmware signing keys are configured or were received")
        return self.fwup_keys

    def offer_file(self, offer: Offer, decided_by: str, now: float) -> tuple[str, list[Effect]]:
        """InstallFile: a verified local file, applied at once by the caller's request."""
        self.install_keys()  # the state may have changed while the file was checked
        request_id, effects = self.engine.ask_answered(
            UPDATE, offer.key, offer, "apply", decided_by
        )
        return request_id, self._with_state(self._route(effects, now))

    def tick(self, now: float) -> list[Effect]:
        out = self._route(self.engine.tick(now), now)
        out += self._update_effects(self.updates.tick(now))
        return self._with_state(out)

    def apply_progress(self, percent: int) -> list[Effect]:
        return self._update_effects(self.updates.progress_report(percent))

    def update_done(
        self, request_id: str, success: bool, message: str, now: float, *, applier_error: bool
    ) -> list[Effect]:
        effects = self.updates.finished(
            request_id, success, message, now, applier_error=applier_error
        )
        out: list[Effect] = [Downloading(None)] if effects else []
        return self._with_state(out + self._update_effects(effects))

    def archive_done(self, request_id: str, result: FetchResult, now: float) -> list[Effect]:
        """An archive fetch ended: the verified file, the archives it evicted, or why not."""
        started = self.archives.done(request_id)
        self.archives.unshelve(result.evicted)
        if started is None:
            return []
        offer = started.offer
        if result.path is not None:
            info = archive_info(offer)
            self.archives.shelve(offer.info.uuid, result.path, info)
            return [ArchiveReady(request_id, info, result.path)]
        if started.recheck and result.missing:
            # The shelf was wrong (the file was deleted or changed): ask afresh.
            self.archives.unshelve([offer.info.uuid])
            return self._with_state(
                self._route(self.engine.ask(ARCHIVE, offer.key, offer, now), now)
            )
        return self._error(f"archive {offer.info.uuid}: {result.error}")

    def archives_found(self, found: Sequence[tuple[str, str, Info]]) -> None:
        """(uuid, path, info) of the archives ready in the folder at start-up."""
        for uuid, path, info in found:
            self.archives.shelve(uuid, path, info)

    def ready_archives(self) -> list[tuple[str, Info]]:
        """(path, info) of every archive on the shelf (``GetArchives``), oldest first."""
        return [(ready.path, dict(ready.info)) for ready in self.archives.ready.values()]

    def media_event(self, event: media.MediaInput, now: float) -> list[Effect]:
        """What the media adapters saw: a medium came or went, a candidate was judged."""
        out: list[Effect] = []
        if isinstance(event, media.MediumAdded):
            out += self.media.added(event.device)
        elif isinstance(event, media.MediumChanged):
            out += self._medium_effects(self.media.changed(event.device), now)
        elif isinstance(event, media.MediumRemovedEvent):
            out += self._medium_effects(self.media.removed(event.sys_path), now)
        elif isinstance(event, media.MediumAttached):
            out += self.media.attached(event)
        elif isinstance(event, media.MediumFailed):
            if self.media.present(event.sys_path):
                self.media.failed(event.sys_path)
                out += self._error(f"removable medium: {event.reason}")
        elif isinstance(event, media.MediumDone):
            if self.media.present(event.sys_path):
                self.media.done(event.sys_path)
        elif not self.media.present(event.file.sys_path):
            if isinstance(event, media.ArchiveFound) and event.staged is not None:
                out.append(DiscardStaged(event.staged))
        elif isinstance(event, media.FirmwareFound):
            meta = hm.FirmwareMetadata(**event.meta)
            offer = Offer(hm.UpdateInfo("", meta), self.fwup_keys, "removable", event.file)
            out += self._offer_update(offer, now)
        elif isinstance(event, media.ArchiveFound):
            out += self._offer_archive(_media_archive_offer(event, self.archive_keys), now)
        else:
            out += self._error(
                f"removable medium {event.file.device}: {event.file.path} refused: {event.reason}"
            )
        return self._with_state(out)

    def error(self, message: str) -> list[Effect]:
        """A failure an adapter saw (e.g. the reboot could not be requested)."""
        return self._error(message)

    # -- internals --------------------------------------------------------------------------

    def _offer_update(self, offer: Offer, now: float) -> list[Effect]:
        if not self.updates.accepts_offers:
            return []  # ignored entirely, as nerves_hub_link 2.5.2 does
        if not offer.public_keys:
            return self._error(
                "firmware update refused: no firmware signing keys are "
                "configured or were received from the hub"
            )
        uuid = offer.info.firmware_meta.uuid
        return self._route(self.engine.ask(UPDATE, offer.key, offer, now, uuid=uuid), now)

    def _offer_archive(self, offer: ArchiveOffer, now: float) -> list[Effect]:
        dropped: list[Effect] = [DiscardStaged(offer.staged)] if offer.staged else []
        if not offer.public_keys:
            return dropped + self._error(
                f"archive {offer.info.uuid} refused: no archive or firmware signing keys "
                "are configured or were received from the hub"
            )
        if self.archives.is_downloading(offer.info.uuid):
            return dropped  # the same file is on its way
        if offer.info.uuid in self.archives.ready:
            # On the shelf already: ready again after a check of the file, not asked.
            _rid, effects = self.engine.ask_answered(
                ARCHIVE, offer.key, offer, "download", "policy"
            )
            return self._route(effects, now)
        return self._route(self.engine.ask(ARCHIVE, offer.key, offer, now), now)

    def _route(self, effects: Sequence[Asked | Decided | Withdrawn], now: float) -> list[Effect]:
        """The engine's effects become announcements, and decisions go to their owner."""
        out: list[Effect] = []
        for effect in effects:
            question = effect.question
            if isinstance(effect, Asked):
                info = _info(question.subject)
                out.append(Announce(question.kind, question.request_id, info))
            elif isinstance(effect, Withdrawn):
                out.append(RequestGone(question.request_id))
                if isinstance(question.subject, ArchiveOffer) and question.subject.staged:
                    out.append(DiscardStaged(question.subject.staged))
            else:
                out.append(
                    DecisionMade(
                        question.kind,
                        question.request_id,
                        effect.decision,
                        effect.delay_ms,
                        effect.decided_by,
                    )
                )
                out += self._perform_decision(effect)
        return out

    def _perform_decision(self, decided: Decided) -> list[Effect]:
        question, subject = decided.question, decided.question.subject
        if isinstance(subject, Offer):
            if decided.decision == "apply":
                effects = self.updates.start(question.request_id, subject)
                self.progress = 0
                return [
                    Downloading(subject.info.firmware_meta.uuid),
                    PropertiesChanged({"Progress": 0}),
                    *effects,
                ]
            if decided.final and self.updates.accepts_offers:
                self.updates.settle()
            return []
        if isinstance(subject, ArchiveOffer):
            if decided.decision == "download":
                recheck = subject.info.uuid in self.archives.ready
                return list(self.archives.start(question.request_id, subject, recheck=recheck))
            if decided.final and subject.staged:
                return [DiscardStaged(subject.staged)]
        return []

    def _medium_effects(self, effects: Sequence[media.MediaEffect], now: float) -> list[Effect]:
        """The media manager's effects; a medium that is gone takes its firmware offer along."""
        out: list[Effect] = list(effects)
        for effect in effects:
            if not isinstance(effect, media.DetachMedium):
                continue
            for question in self.engine.questions(UPDATE):
                medium = getattr(question.subject, "medium", None)
                if isinstance(medium, media.MediaFile) and medium.sys_path == effect.sys_path:
                    out += self._route(self.engine.withdraw(question.request_id), now)
        return out

    def _update_effects(self, effects: Sequence[UpdateEffect]) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, ReportError):
                out += self._error(effect.message)
                continue
            out.append(effect)
            if isinstance(effect, ReportProgress):
                self.progress = effect.percent
                out.append(PropertiesChanged({"Progress": effect.percent}))
        return out

    def _error(self, message: str) -> list[Effect]:
        self.last_error = message
        return [ReportError(message), PropertiesChanged({"LastError": message})]

    def _set_connected(self, value: bool) -> list[Effect]:
        if value == self.connected:
            return []
        self.connected = value
        return [PropertiesChanged({"Connected": value})]

    def _with_state(self, out: list[Effect]) -> list[Effect]:
        state = self.state
        if state != self._state:
            self._state = state
            out.append(PropertiesChanged({"State": state}))
        return out


def _media_archive_offer(found: media.ArchiveFound, keys: tuple[str, ...]) -> ArchiveOffer:
    """An archive found on a medium as an offer (its metadata in the hub's shape)."""
    meta = found.meta
    info = hm.ArchiveInfo(
        size=found.size,
        uuid=meta["uuid"],
        version=meta.get("version", ""),
        url="",
        description=meta.get("description"),
        platform=meta.get("platform"),
        architecture=meta.get("architecture"),
    )
    extra = {k: meta[k] for k in ("product", "author") if k in meta}
    return ArchiveOffer(info, keys, "removable", found.file, found.staged, extra)

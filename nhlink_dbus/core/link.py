"""The service's core: hub events and face requests in, effects out (DESIGN §1-3).

:class:`LinkCore` joins the decision engine (:mod:`~nhlink_dbus.core.decisions`),
the update lifecycle (:mod:`~nhlink_dbus.core.update_manager`) and the archive
fetches (:mod:`~nhlink_dbus.core.archive_manager`), keeps the signing keys and
the values the faces read (``State``, ``Connected``, ``Progress``,
``LastError``), and says what the composition root must do as effects. It is
sans-I/O: every input that depends on time takes ``now`` (seconds, monotonic);
the root wakes it at :meth:`LinkCore.next_deadline` with :meth:`LinkCore.tick`.

The newer device API beside updates (validation, extensions, network report,
update mode) is :class:`~nhlink_dbus.core.device_api.DeviceApi`'s, which LinkCore
owns and feeds. What the hub is told about an offer of its own (``received``,
``ignored``, ``rescheduled``, …) is :mod:`~nhlink_dbus.core.update_status`'s;
device-managed offers (metadata only, from ``check_update``) ask the hub for
the URL with ``request_update`` once applied (:mod:`~nhlink_dbus.core.update_mode`).

What a restart found of an update in flight (:mod:`~nhlink_dbus.core.recovery`)
comes in at construction (``recovery``) and out of :meth:`LinkCore.start`; the
journal is kept current with :class:`~nhlink_dbus.core.recovery.SaveJournal`
effects, and a report the hub has not heard is pushed after the next join.

Keys (protocol.md §3.1, §7.6): firmware keys are the configured ones, else those
the hub pushed; archive keys are the configured archive keys, else the
configured firmware keys, else those the hub pushed for archives. No key at all
→ the offer is refused with an ``Error`` (never applied or announced unverified).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nhlink_dbus.core import device_api as da
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import media
from nhlink_dbus.core import recovery as rec
from nhlink_dbus.core import update_mode as um
from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.archive_manager import (
    ArchiveManager,
    ArchiveOffer,
    DiscardStaged,
    FetchResult,
    StartArchiveDownload,
)
from nhlink_dbus.core.decisions import (
    Asked,
    Decided,
    DecisionEngine,
    KindRules,
    Question,
    Withdrawn,
)
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.core.update_manager import (
    Finished,
    Offer,
    ReportError,
    ReportProgress,
    UpdateEffect,
    UpdateManager,
    UpdateState,
    hub_reason,
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
    | rec.SaveJournal
    | da.DeviceApiEffect
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
    if offer.info.size is not None:
        out["size"] = offer.info.size
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


def _uuid_of(question: Question) -> str | None:
    subject = question.subject
    return subject.info.firmware_meta.uuid if isinstance(subject, Offer) else None


class LinkCore:
    """See the module docstring."""

    def __init__(
        self,
        settings: LinkSettings,
        running_slot: Mapping[str, str],
        boot_token: str,
        *,
        kv: Mapping[str, str] | None = None,
        device_api: da.DeviceApiSettings | None = None,
        recovery: rec.Recovery | None = None,
        boot_id: str = "",
    ) -> None:
        self.settings = settings
        self.slot = dict(running_slot)
        self.kv = dict(running_slot if kv is None else kv)  # as it describes the running fw
        self.device_api = da.DeviceApi(self.kv, device_api or da.DeviceApiSettings())
        # The update journal (core/recovery.py): what a restart must find.
        self.boot_id = boot_id
        self.recovery = recovery or rec.Recovery(rec.Found.NOTHING, self.kv)
        self.journal = self.recovery.record
        self.joined = False
        if self.recovery.reboot_pending and self.journal is not None:
            self.device_api.validation.freeze(self.journal.running.validated)
        # A device-managed offer decided apply, waiting for the hub's URL:
        # (its question, when to give up waiting).
        self._requested: tuple[Question, float] | None = None
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
        deadlines = [
            d
            for d in (
                self.engine.next_deadline(),
                self.updates.next_deadline(),
                self.device_api.next_deadline(),
                self._requested[1] if self._requested else None,
            )
            if d
        ]
        return min(deadlines, default=None)

    # -- inputs -----------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """What the start found of an update in flight: owed outcomes, a pending reboot."""
        found = self.recovery
        if found.found is rec.Found.NOTHING:
            return []
        out: list[Effect] = [rec.SaveJournal(self.journal)]
        if found.outcome is not None:
            out.append(Finished(*found.outcome))
        if found.found is rec.Found.UNREADABLE:
            out += self._error(found.error)
        elif found.error:
            self.updates.recovered_failure(found.error)
            out += self._error(f"firmware update failed: {found.error}")
        if found.reboot_pending:
            out += self._update_effects(self.updates.resume_reboot(now))
        return self._with_state(out)

    def hub_stopped(self) -> None:
        """The hub client has stopped (the service stops): what is pushed from now on
        is dropped, so an outcome reached now stays in the journal for the next start."""
        self.joined = False

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
        elif isinstance(event, hs.Joined):
            self.joined = True
            out += self._tell_hub()
        elif isinstance(event, hs.Disconnected):
            self.joined = False
            if self.connected:
                out.append(ConnectionLost(event.reason))
            out += self._set_connected(False)
            out += self._error(f"hub connection: {event.reason}")
        elif isinstance(event, hs.ChannelDown):
            self.joined = False
            out += self._error(f"hub channel: {event.reason}")
        elif isinstance(event, um.UpdateRejected):
            out += self._update_rejected(event, now)
        out += self._device_api(self.device_api.hub_event(event, now))
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
        out += self._device_api(self.device_api.tick(now))
        if self._requested is not None and now >= self._requested[1]:
            question = self._requested[0]
            self._requested = None
            out += self._error(
                f"update {question.request_id}: the hub did not answer request_update "
                "(does it support device-managed updates?)"
            )
        return self._with_state(out)

    def apply_progress(self, percent: int, now: float) -> list[Effect]:
        return self._update_effects(self.updates.progress_report(percent, now))

    def download_started(self, request_id: str, interface: str | None) -> list[Effect]:
        """The download of a running update connected (``started`` for the hub)."""
        return self._update_effects(self.updates.download_started(request_id, interface))

    def managed_offer(self, meta: hm.FirmwareMetadata, now: float) -> list[Effect]:
        """``check_update`` found firmware (device-managed): ask about it. No URL yet:
        applying it asks the hub for one (``request_update``)."""
        offer = Offer(hm.UpdateInfo("", meta), self.fwup_keys)
        return self._with_state(self._offer_update(offer, now))

    def device_api_effects(self, effects: Sequence[da.DeviceApiEffect]) -> list[Effect]:
        """Effects of ``self.device_api``'s answers (health, location, validation, …)."""
        return self._with_state(self._device_api(effects))

    def update_done(
        self, request_id: str, success: bool, message: str, now: float, *, applier_error: bool
    ) -> list[Effect]:
        effects = self.updates.finished(
            request_id, success, message, now, applier_error=applier_error
        )
        if not effects:
            return []
        out: list[Effect] = [Downloading(None)]
        record = self.journal
        if record is not None and record.request_id == request_id:
            # Before UpdateFinished and the reboot: what a restart must find. An
            # outcome pushed while not joined is dropped: the record keeps it.
            if success:
                self.journal = rec.applied(record, told=self.joined)
            else:
                reason = hub_reason(message, applier_error=applier_error)
                self.journal = None if self.joined else rec.failed(record, reason)
            out.append(rec.SaveJournal(self.journal))
        if success:
            # The KV store now describes the firmware that boots next.
            validation = self.device_api.validation
            validation.freeze(validation.validated)
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
            refused = self._error(
                "firmware update refused: no firmware signing keys are "
                "configured or were received from the hub"
            )
            if offer.source == "hub" and offer.info.firmware_url:
                refused.append(us.failed("refusing unverified firmware: no public keys available"))
            return refused
        uuid = offer.info.firmware_meta.uuid
        requested = self._requested
        if requested is not None and offer.info.firmware_url and uuid == _uuid_of(requested[0]):
            # The hub's answer to request_update: applied as decided, under the same id.
            self._requested = None
            return [us.received(), *self._start_update(requested[0].request_id, offer)]
        out: list[Effect] = []
        if offer.source == "hub" and offer.info.firmware_url:
            out.append(us.received())
        out += self._route(self.engine.ask(UPDATE, offer.key, offer, now, uuid=uuid), now)
        return out

    def _update_rejected(self, rejected: um.UpdateRejected, now: float) -> list[Effect]:
        """``update_rejected``: not now; the question comes back after ``delay_for``."""
        if self._requested is None:
            return []
        question, _ = self._requested
        self._requested = None
        effects = self.engine.reopen(question, rejected.delay_ms, "hub", now)
        return self._route(effects, now)

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
                out += self._perform_decision(effect, now)
        return out

    def _start_update(self, request_id: str, offer: Offer) -> list[Effect]:
        effects = self.updates.start(request_id, offer)
        self.progress = 0
        meta = offer.info.firmware_meta
        running = rec.running_firmware(self.kv, self.device_api.validation.validated)
        self.journal = rec.updating(
            request_id, meta.uuid or "", meta.version, offer.source, self.boot_id, running
        )
        return [
            rec.SaveJournal(self.journal),  # before the first byte reaches the applier
            Downloading(offer.info.firmware_meta.uuid),
            PropertiesChanged({"Progress": 0}),
            *self._update_effects(effects),
        ]

    def _device_api(self, effects: Sequence[da.DeviceApiEffect]) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, da.Changed):
                out.append(PropertiesChanged({effect.name: effect.value}))
            else:
                out.append(effect)
        return out

    def _perform_decision(self, decided: Decided, now: float) -> list[Effect]:
        question, subject = decided.question, decided.question.subject
        if isinstance(subject, Offer):
            if (
                decided.decision == "apply"
                and subject.source == "hub"
                and not subject.info.firmware_url
            ):
                # Device-managed: the URL is minted now (request_update).
                self._requested = (question, now + um.REQUEST_TIMEOUT_S)
                return [us.HubPush("request_update", {})]
            if decided.decision == "apply":
                return self._start_update(question.request_id, subject)
            out: list[Effect] = []
            if subject.source == "hub" and subject.info.firmware_url:
                same = subject.info.firmware_meta.uuid == self.slot.get("nerves_fw_uuid")
                reason = us.decision_reason(decided.decision, decided.decided_by, same_uuid=same)
                if decided.decision == "reschedule":
                    out.append(us.rescheduled(decided.delay_ms, reason))
                elif decided.decided_by != "hub":
                    out.append(us.ignored(reason))
            if decided.final and self.updates.accepts_offers:
                self.updates.settle()
            return out
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

    def _tell_hub(self) -> list[Effect]:
        """Joined: what the hub has not heard of the journal's update, once."""
        pushes = rec.hub_report(self.journal)
        if not pushes:
            return []
        self.journal = rec.told(self.journal)
        return [*pushes, rec.SaveJournal(self.journal)]

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

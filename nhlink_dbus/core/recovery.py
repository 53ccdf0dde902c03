"""What a restart finds of an update in flight, and what it does about it (sans-I/O).

The daemon can die at any moment (SIGKILL, the OOM killer, a crash) and be
started again, on the same boot or after one. Nothing of an update may be lost
silently then: no false success, no forgotten reboot, and the hub must hear
why the update it offered went nowhere. A small **journal** (one JSON record,
``<service.state_dir>/update-journal.json``, written atomically with fsync and
rename by ``aio/journal_store.py``) says what was in flight; :func:`recover`
decides at start-up what that means now. The rules:

* The journal is written (:class:`SaveJournal`) when an update is decided
  ``apply`` (phase ``updating``), before the first byte reaches the applier;
  again at the applier's OK (phase ``applied``), before ``UpdateFinished`` and
  before the reboot is requested; and removed once nothing is left to do or to
  tell. Every record carries the kernel's boot id (a new one every boot) and
  what was running when the update started (KV slot, UUID, validation).
* An outcome the hub has not heard yet (the connection was down, or the
  daemon died first) stays in the record (``report``) and is pushed after the
  next join: ``failed`` + reason, or ``fwup_progress 100`` + ``completed``.
  Offers of a local file or medium have nothing on the hub and report nothing.
* At start, with a record (same boot = the boot id is the recorded one):

  ==========  ====== ==================  ===========================================
  phase       boot   KV's active UUID    found
  ==========  ====== ==================  ===========================================
  updating    same   not the update's    **interrupted**: ``UpdateFinished(id,
                                         false)``, ``failed`` for the hub
  updating    same   the update's        **applied, reboot pending**: the applier
                                         finished unseen: ``UpdateFinished(id,
                                         true)``, ``completed`` for the hub
  applied     same   (any)               **reboot pending**: ``RebootScheduled``,
                                         the reboot after the configured delay
  updating    new    not the update's    **interrupted by a reboot**: as above
  any         new    the update's        **booted**: the update took (the hub sees
                                         the new UUID in the join); removed
  applied     new    not the update's    **reverted**: ``failed`` for the hub
  failed      any    (any)               an untold failure: told after the join
  ==========  ====== ==================  ===========================================

  *The update's* means the active slot holds the update's UUID and something
  changed (the active slot, or the UUID): re-applying the running firmware into
  the same slot cannot be told from an interrupted apply, and counts as
  interrupted (never a false success).
* While a reboot is pending the KV store already describes the firmware that
  boots next. The running firmware is the recorded one: its slot's metadata is
  what the join and ``CurrentFirmware`` report (never the new UUID: the hub
  would count an update that never booted as done), and validation is frozen
  at the recorded state (no re-read, no ``MarkValid``: it would validate the
  new firmware before it ever ran).
* Without a boot id (the file cannot be read) a restart cannot be told from a
  reboot: every record counts as from an earlier boot.
* What the hub makes of it (nerves_hub_web 0bb6b5cc5, ``device_link.ex``,
  ``firmware_updates.ex``): a join whose firmware UUID differs from the one on
  record counts as a successful update (``firmware_update_successful``) — hence
  the running slot's UUID while a reboot is pending; a join without
  ``currently_downloading_uuid`` clears the in-flight update, and a later
  ``status_update`` finds (or makes) one to record its reason in the audit log;
  ``failed`` puts the device in the deployment's penalty box, as any failed
  update (nerves_hub_link keeps nothing across restarts and says nothing).
* Pending questions (awaiting a decision, rescheduled) are not journaled:
  nothing was started. Their ids die with the process; the hub offers the
  update again (nerves_hub_web: after the join, or once a reschedule's
  ``delay_for`` has passed) and it is asked anew under a new id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final

from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.kv_format import active_slot_metadata
from nhlink_dbus.core.records import dataclass, replace
from nhlink_dbus.errors import JournalError

JOURNAL_FILE: Final = "update-journal.json"
JOURNAL_VERSION: Final = 1
UPDATING: Final = "updating"
APPLIED: Final = "applied"
FAILED: Final = "failed"
PHASES: Final = (UPDATING, APPLIED, FAILED)
REPORTS: Final = ("completed", "failed")

INTERRUPTED: Final = "the update was interrupted: nhlink-dbus stopped before it finished"
INTERRUPTED_BY_REBOOT: Final = "the update was interrupted by a restart of the device"
APPLIED_UNSEEN: Final = "applied before nhlink-dbus restarted; the reboot follows"


@dataclass(frozen=True, slots=True)
class RunningFirmware:
    """What ran when the update started: the KV's active slot (None on a single-slot
    system), its UUID, and whether it was validated."""

    slot: str | None
    uuid: str | None
    validated: bool


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One update in flight (see the module docstring)."""

    phase: str
    request_id: str
    uuid: str
    version: str | None
    source: str  # hub | file | removable
    boot_id: str
    running: RunningFirmware
    report: str | None = None  # what the hub has not heard yet: completed | failed
    reason: str = ""  # the failure, for report == "failed"

    @property
    def to_hub(self) -> bool:
        return self.source == "hub"


@dataclass(frozen=True, slots=True)
class SaveJournal:
    """Write ``record`` (None: remove the journal) before what follows it happens."""

    record: JournalRecord | None


class Found(Enum):
    NOTHING = "nothing"
    INTERRUPTED = "interrupted"
    PENDING_REBOOT = "pending-reboot"
    BOOTED = "booted"
    REVERTED = "reverted"
    UNTOLD = "untold"  # a failure the hub has not heard of
    UNREADABLE = "unreadable"  # the journal could not be read: removed, and said so


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :func:`recover` found and what follows from it.

    ``kv`` is the KV store as it describes the running firmware; ``record`` is
    what the journal must say from now on (None: nothing); ``outcome`` is an
    ``UpdateFinished`` still owed (request id, success, message).
    """

    found: Found
    kv: Mapping[str, str]
    record: JournalRecord | None = None
    outcome: tuple[str, bool, str] | None = None
    error: str = ""  # LastError / Error for the faces

    @property
    def reboot_pending(self) -> bool:
        return self.found is Found.PENDING_REBOOT


# -- building records ----------------------------------------------------------------------


def running_firmware(kv: Mapping[str, str], validated: bool) -> RunningFirmware:
    """What runs now, from the KV store as the core sees it."""
    return RunningFirmware(
        kv.get("nerves_fw_active") or None,
        active_slot_metadata(kv).get("nerves_fw_uuid"),
        validated,
    )


def updating(
    request_id: str,
    uuid: str,
    version: str | None,
    source: str,
    boot_id: str,
    running: RunningFirmware,
) -> JournalRecord:
    """The record written when an update is decided ``apply``."""
    return JournalRecord(UPDATING, request_id, uuid, version, source, boot_id, running)


def applied(record: JournalRecord, *, told: bool) -> JournalRecord:
    """The applier said OK (``told``: the hub heard ``completed`` already)."""
    report = None if told or not record.to_hub else "completed"
    return replace(record, phase=APPLIED, report=report, reason="")


def failed(record: JournalRecord, reason: str) -> JournalRecord | None:
    """An untold failure (None when the hub has nothing to hear)."""
    if not record.to_hub:
        return None
    return replace(record, phase=FAILED, report="failed", reason=reason)


def told(record: JournalRecord | None) -> JournalRecord | None:
    """The record once its report went to the hub (None: nothing left to keep)."""
    if record is None or record.phase == FAILED:
        return None
    return replace(record, report=None, reason="")


def hub_report(record: JournalRecord | None) -> list[us.HubPush]:
    """The pushes that tell the hub what ``record`` says it has not heard."""
    if record is None or record.report is None or not record.to_hub:
        return []
    if record.report == "completed":
        return [us.progress(us.STAGE_UPDATING, 100), us.completed()]
    return [us.failed(record.reason)]


# -- the rules at start-up -----------------------------------------------------------------


def installed(record: JournalRecord, kv: Mapping[str, str]) -> bool:
    """The KV's active slot holds the update (see the module docstring)."""
    now = running_firmware(kv, True)
    if now.uuid != record.uuid:
        return False
    was = record.running
    if was.slot is not None and now.slot is not None:
        return now.slot != was.slot or was.uuid != record.uuid
    return was.uuid != record.uuid


def running_view(kv: Mapping[str, str], record: JournalRecord) -> dict[str, str]:
    """The KV store as it describes the firmware that still runs (the recorded slot)."""
    view = dict(kv)
    if record.running.slot is not None:
        view["nerves_fw_active"] = record.running.slot
    return view


def recover(record: JournalRecord | None, boot_id: str, kv: Mapping[str, str]) -> Recovery:
    """What the journal ``record`` means now, on boot ``boot_id`` with ``kv``."""
    if record is None:
        return Recovery(Found.NOTHING, kv)
    same_boot = bool(boot_id) and boot_id == record.boot_id
    if record.phase == FAILED:
        return Recovery(Found.UNTOLD, kv, record, error=record.reason)
    took = installed(record, kv)
    if same_boot and (record.phase == APPLIED or took):
        outcome = None
        if record.phase == UPDATING:
            outcome = (record.request_id, True, APPLIED_UNSEEN)
        pending = record if record.phase == APPLIED else applied(record, told=False)
        return Recovery(Found.PENDING_REBOOT, running_view(kv, record), pending, outcome)
    if took:
        return Recovery(Found.BOOTED, kv)
    if record.phase == APPLIED:
        now = running_firmware(kv, True).uuid or "?"
        reason = (
            f"firmware {record.uuid} was applied, but the device restarted into {now} "
            "(the bootloader fell back, or the slot was switched back)"
        )
        return Recovery(Found.REVERTED, kv, failed(record, reason), error=reason)
    reason = INTERRUPTED if same_boot else INTERRUPTED_BY_REBOOT
    outcome = (record.request_id, False, reason)
    return Recovery(Found.INTERRUPTED, kv, failed(record, reason), outcome, error=reason)


def unreadable(kv: Mapping[str, str], problem: str) -> Recovery:
    """The journal could not be read: whatever it held is lost; say so, remove it."""
    return Recovery(
        Found.UNREADABLE,
        kv,
        error=f"the update journal could not be read ({problem}): an update in flight "
        "before this start cannot be reported",
    )


# -- the file's format ---------------------------------------------------------------------


def encode(record: JournalRecord) -> bytes:
    """The journal file's bytes for ``record``."""
    data = {
        "version": JOURNAL_VERSION,
        "phase": record.phase,
        "request_id": record.request_id,
        "uuid": record.uuid,
        "firmware_version": record.version,
        "source": record.source,
        "boot_id": record.boot_id,
        "running": {
            "slot": record.running.slot,
            "uuid": record.running.uuid,
            "validated": record.running.validated,
        },
        "report": record.report,
        "reason": record.reason,
    }
    return json.dumps(data, sort_keys=True, indent=1).encode() + b"\n"


def decode(data: bytes) -> JournalRecord:
    """The record in a journal file's bytes; raises :class:`JournalError`."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JournalError(f"not a journal record: {exc}") from None
    fields = _Fields(doc)
    version = fields.get("version", int)
    if version != JOURNAL_VERSION:
        raise JournalError(f"journal version {version} is not {JOURNAL_VERSION}")
    phase = fields.choice("phase", PHASES)
    running = _Fields(fields.get("running", dict))
    report = fields.get("report", str, optional=True)
    if report is not None and report not in REPORTS:
        raise JournalError(f"report must be one of {', '.join(REPORTS)}")
    return JournalRecord(
        phase,
        fields.get("request_id", str),
        fields.get("uuid", str),
        fields.get("firmware_version", str, optional=True),
        fields.get("source", str),
        fields.get("boot_id", str),
        RunningFirmware(
            running.get("slot", str, optional=True),
            running.get("uuid", str, optional=True),
            running.get("validated", bool),
        ),
        report,
        fields.get("reason", str),
    )


class _Fields:
    def __init__(self, doc: object) -> None:
        if not isinstance(doc, dict):
            raise JournalError("a journal record is a JSON object")
        self.doc: dict[str, Any] = doc

    def get(self, key: str, kind: type, *, optional: bool = False) -> Any:
        value = self.doc.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise JournalError(f"journal field {key!r} must be a {kind.__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in choices:
            raise JournalError(f"journal field {key!r} must be one of {', '.join(choices)}")
        assert isinstance(value, str)
        return value

"""The firmware update manager (protocol.md §6.1, §6.2, §6.7; DESIGN.md §3).

A sans-I/O state machine: the service feeds it offers, decisions, progress and
outcomes with the current time, and performs the effects it returns. Rules:

* An offer while ``updating`` or ``rebooting`` is ignored (nerves_hub_link PR
  #10: duplicates appear when deployments are edited). After a successful
  apply the device stays ``rebooting`` until it restarts: applying a second
  update before the reboot would write the slot that is running now.
* Otherwise a pending reschedule is cancelled and the offer needs a decision
  (``awaiting-decision``); a different offer supersedes an undecided one, while a
  repeat of the same firmware keeps its request id (the hub re-sends offers).
* No firmware signing keys (configured or received) → the offer is refused:
  firmware is never applied unverified.
* ``apply`` → ``updating``; ``ignore`` → ``idle``; ``reschedule`` → the same
  offer (same request id, same keys) is asked again after the delay.
* Progress is reported strictly increasing, without duplicates.
* Exactly one outcome per applied request: the first ``finished`` counts,
  later ones are dropped. Success → ``rebooting`` and a reboot request after
  the configured delay; failure → ``failed`` with the reason, pushed to the hub
  as ``fwup error <reason>``. The hub's ``reboot`` pushes ``rebooting`` first.

An illegal transition raises :class:`~nhlink_dbus.errors.StateError` and
changes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum

from nhlink_dbus.core.hub_messages import UpdateInfo
from nhlink_dbus.errors import StateError


class UpdateState(Enum):
    IDLE = "idle"
    AWAITING_DECISION = "awaiting-decision"
    RESCHEDULED = "rescheduled"
    UPDATING = "updating"
    REBOOTING = "rebooting"
    FAILED = "failed"


class Decision(Enum):
    APPLY = "apply"
    IGNORE = "ignore"
    RESCHEDULE = "reschedule"


@dataclass(frozen=True, slots=True)
class Offer:
    """An update that needs (or had) a decision."""

    request_id: str
    info: UpdateInfo
    public_keys: tuple[str, ...]
    source: str = "hub"  # hub | removable | file


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AskDecision:
    offer: Offer


@dataclass(frozen=True, slots=True)
class Superseded:
    """A pending request was replaced by a newer offer (its id is gone)."""

    request_id: str


@dataclass(frozen=True, slots=True)
class Decided:
    offer: Offer
    decision: Decision
    delay_ms: int
    decided_by: str


@dataclass(frozen=True, slots=True)
class StartUpdate:
    offer: Offer


@dataclass(frozen=True, slots=True)
class ReportProgress:
    percent: int


@dataclass(frozen=True, slots=True)
class PushStatus:
    status: str


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: str
    success: bool
    message: str


@dataclass(frozen=True, slots=True)
class RequestReboot:
    delay_ms: int
    announce: bool  # push "rebooting" first (hub-requested reboots)


@dataclass(frozen=True, slots=True)
class ReportError:
    message: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: UpdateState


Effect = (
    AskDecision
    | Superseded
    | Decided
    | StartUpdate
    | ReportProgress
    | PushStatus
    | Finished
    | RequestReboot
    | ReportError
    | StateChanged
)

# Which states accept which input (the one table of this module).
_ACCEPTS: dict[str, frozenset[UpdateState]] = {
    "decide": frozenset({UpdateState.AWAITING_DECISION}),
    "progress": frozenset({UpdateState.UPDATING}),
    "finished": frozenset({UpdateState.UPDATING}),
}


class UpdateManager:
    """See the module docstring. ``now`` is milliseconds on a monotonic clock."""

    def __init__(self, reboot_delay_ms: int = 5000, id_prefix: str = "u") -> None:
        self.state = UpdateState.IDLE
        self.reboot_delay_ms = reboot_delay_ms
        self.pending: Offer | None = None  # awaiting decision or rescheduled
        self.current: Offer | None = None  # being applied
        self.reschedule_at: float | None = None
        self.progress = -1
        self.last_error = ""
        self._ids = (f"{id_prefix}{n}" for n in itertools.count(1))

    def new_request_id(self) -> str:
        return next(self._ids)

    def _set(self, state: UpdateState, out: list[Effect]) -> None:
        if state is not self.state:
            self.state = state
            out.append(StateChanged(state))

    def _check(self, what: str) -> None:
        if self.state not in _ACCEPTS[what]:
            raise StateError(f"{what} is not possible while {self.state.value}")

    # -- inputs ------------------------------------------------------------------------------

    def offer(
        self,
        info: UpdateInfo,
        public_keys: tuple[str, ...],
        source: str = "hub",
        request_id: str | None = None,
    ) -> list[Effect]:
        """A new update offer (hub push, legacy join reply, update check, local file)."""
        out: list[Effect] = []
        if self.state in (UpdateState.UPDATING, UpdateState.REBOOTING):
            return out  # ignored entirely, as nerves_hub_link 2.5.2 does
        if not public_keys:
            out.append(
                ReportError(
                    "firmware update refused: no firmware signing keys are "
                    "configured or were received from the hub"
                )
            )
            return out
        uuid = info.firmware_meta.uuid
        same = (
            self.pending is not None
            and uuid is not None
            and self.pending.info.firmware_meta.uuid == uuid
            and self.pending.source == source
        )
        if same and self.state is UpdateState.AWAITING_DECISION:
            # The hub repeats an offer (its orchestrator runs every few minutes): the
            # question stands; keep its request id and take the fresher URL and keys.
            assert self.pending is not None
            self.pending = Offer(self.pending.request_id, info, public_keys, source)
            return out
        if self.pending is not None and not same:
            out.append(Superseded(self.pending.request_id))
        rid = self.pending.request_id if same and self.pending is not None else None
        self.reschedule_at = None
        self.pending = Offer(rid or request_id or self.new_request_id(), info, public_keys, source)
        self._set(UpdateState.AWAITING_DECISION, out)
        out.append(AskDecision(self.pending))
        return out

    def decide(
        self, request_id: str, decision: Decision, delay_ms: int, decided_by: str, now: float
    ) -> list[Effect]:
        """The answer to a pending offer. Raises StateError if there is none with this id."""
        self._check("decide")
        offer = self.pending
        if offer is None or offer.request_id != request_id:
            raise StateError(f"no pending update request {request_id}")
        if decision is Decision.RESCHEDULE and delay_ms <= 0:
            raise StateError("reschedule needs a positive delay")
        out: list[Effect] = [Decided(offer, decision, delay_ms, decided_by)]
        if decision is Decision.APPLY:
            self.pending = None
            self.current = offer
            self.progress = -1
            self._set(UpdateState.UPDATING, out)
            out.append(StartUpdate(offer))
        elif decision is Decision.IGNORE:
            self.pending = None
            self._set(UpdateState.IDLE, out)
        else:
            self.reschedule_at = now + delay_ms
            self._set(UpdateState.RESCHEDULED, out)
        return out

    def next_deadline(self) -> float | None:
        return self.reschedule_at

    def tick(self, now: float) -> list[Effect]:
        """Fire a due reschedule: the same offer is asked about again."""
        out: list[Effect] = []
        if (
            self.state is UpdateState.RESCHEDULED
            and self.reschedule_at is not None
            and now >= self.reschedule_at
            and self.pending is not None
        ):
            self.reschedule_at = None
            self._set(UpdateState.AWAITING_DECISION, out)
            out.append(AskDecision(self.pending))
        return out

    def progress_report(self, percent: int) -> list[Effect]:
        self._check("progress")
        if not 0 <= percent <= 100 or percent <= self.progress:
            return []
        self.progress = percent
        return [ReportProgress(percent)]

    def finished(self, success: bool, message: str, *, applier_error: bool = True) -> list[Effect]:
        """The one outcome of the running update (later calls are dropped)."""
        if self.state is not UpdateState.UPDATING or self.current is None:
            return []
        offer, self.current = self.current, None
        out: list[Effect] = [Finished(offer.request_id, success, message)]
        if success:
            self._set(UpdateState.REBOOTING, out)
            out.append(RequestReboot(self.reboot_delay_ms, announce=False))
        else:
            self.last_error = message
            # §14: report failures deterministically; the hub matches "fwup error".
            status = message if applier_error else f"download failed: {message}"
            out.append(PushStatus(f"fwup error {status}"))
            out.append(ReportError(f"firmware update failed: {status}"))
            self._set(UpdateState.FAILED, out)
        return out

    def hub_reboot(self) -> list[Effect]:
        """The hub asked for a reboot."""
        if self.state is UpdateState.UPDATING:
            return [
                ReportError(
                    "reboot requested by the hub while an update is being "
                    "written: refused (the update continues)"
                )
            ]
        out: list[Effect] = []
        self.pending = None
        self.reschedule_at = None
        self._set(UpdateState.REBOOTING, out)
        out.append(RequestReboot(0, announce=True))
        return out

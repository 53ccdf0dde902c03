"""The firmware update lifecycle (protocol.md §6.1, §6.2, §6.7; DESIGN §3-4).

A sans-I/O state machine for what happens once an update is decided: applying,
the one outcome, the reboot. Questions and answers are the decision engine's
(:mod:`nhlink_dbus.core.decisions`); :mod:`nhlink_dbus.core.link` joins the two.
``now`` is seconds on a monotonic clock. Rules:

* Offers are accepted only while ``idle`` or ``failed``: while ``updating`` or
  ``rebooting`` they are ignored entirely (nerves_hub_link PR #10: duplicates
  appear when deployments are edited). After a successful apply the device
  stays ``rebooting`` until it restarts: applying a second update before the
  reboot would write the slot that is running now.
* ``start`` → ``updating``; progress is reported strictly increasing, without
  duplicates, on the bus at most every ``PROGRESS_INTERVAL_S`` (a value that comes
  sooner is held back, and shown when the interval is over unless a higher one came
  meanwhile; 100 is shown at once, and a value still held back when the update ends is
  shown before its outcome), to the hub at most every 500 ms (:mod:`.update_status`).
  A progress bar moves as smoothly at 10 steps a second as at 100, and an update
  that runs at the speed of a disk (a local file, a fast network) costs two signals
  per percent otherwise, each a wake-up of every listener.
* Exactly one outcome per applied request: the first ``finished`` for the
  running request counts, any other is dropped. Success → ``rebooting``,
  ``RebootScheduled`` and, after the configured delay, ``RebootNow``; failure →
  ``failed`` with the reason. For an offer of the hub, the outcome is pushed
  too: ``fwup_progress 100`` and ``completed``, or ``failed`` + reason; so is
  ``started`` when the download connects.
* The hub's ``reboot``: ``rebooting`` is pushed first, then the reboot at once;
  refused while an update is being written.
* After a restart (:mod:`.recovery`): an applied update whose reboot never
  came is ``rebooting`` again with the full delay (``resume_reboot``); an
  update that was cut short leaves ``failed`` (``recovered_failure``).

An illegal transition raises :class:`~nhlink_dbus.errors.StateError` and
changes nothing.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from nhlink_dbus.core import update_status as us
from nhlink_dbus.core.hub_messages import UpdateInfo
from nhlink_dbus.core.media import MediaFile
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.core.update_status import HubPush
from nhlink_dbus.errors import StateError


class UpdateState(Enum):
    """The service's ``State`` values (DESIGN §2); the middle two are the engine's."""

    IDLE = "idle"
    AWAITING_DECISION = "awaiting-decision"
    RESCHEDULED = "rescheduled"
    UPDATING = "updating"
    REBOOTING = "rebooting"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Offer:
    """An update to decide on; its request id is the decision engine's."""

    info: UpdateInfo
    public_keys: tuple[str, ...]
    source: str = "hub"  # hub | removable | file
    medium: MediaFile | None = None  # removable: where the file is

    @property
    def key(self) -> str:
        """What makes two offers the same question (the hub repeats offers)."""
        return f"{self.source}:{self.info.firmware_meta.uuid}"


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartUpdate:
    request_id: str
    offer: Offer


@dataclass(frozen=True, slots=True)
class ReportProgress:
    percent: int


@dataclass(frozen=True, slots=True)
class PushRebooting:
    """Tell the hub (``rebooting {}``) before a reboot it asked for."""


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: str
    success: bool
    message: str


@dataclass(frozen=True, slots=True)
class RebootScheduled:
    delay_ms: int


@dataclass(frozen=True, slots=True)
class RebootNow:
    """Ask logind for the reboot now."""


@dataclass(frozen=True, slots=True)
class ReportError:
    message: str


UpdateEffect = (
    StartUpdate
    | ReportProgress
    | HubPush
    | PushRebooting
    | Finished
    | RebootScheduled
    | RebootNow
    | ReportError
)

# Which states accept which input (the one table of this module).
_ACCEPTS: dict[str, frozenset[UpdateState]] = {
    "start": frozenset({UpdateState.IDLE, UpdateState.FAILED}),
    "settle": frozenset({UpdateState.IDLE, UpdateState.FAILED}),
}


def hub_reason(message: str, *, applier_error: bool) -> str:
    """A failure as the hub hears it (§14: deterministic; 2.9+: ``failed`` + reason)."""
    return message if applier_error else f"download failed: {message}"


PROGRESS_INTERVAL_S: Final = 0.1  # bus progress at most ten times a second


class UpdateManager:
    """See the module docstring."""

    def __init__(self, reboot_delay_ms: int) -> None:
        self.state = UpdateState.IDLE
        self.reboot_delay_ms = reboot_delay_ms
        self.current: tuple[str, Offer] | None = None  # (request id, offer) being applied
        self.reboot_at: float | None = None
        self.progress = -1
        self.last_error = ""
        self._hub_progress: us.ProgressLimiter | None = None
        self._shown_at: float | None = None  # when progress last went to the bus
        self._held: int | None = None  # a higher percent not shown yet

    @property
    def accepts_offers(self) -> bool:
        return self.state in _ACCEPTS["start"]

    def _check(self, what: str) -> None:
        if self.state not in _ACCEPTS[what]:
            raise StateError(f"{what} is not possible while {self.state.value}")

    # -- inputs ------------------------------------------------------------------------------

    def start(self, request_id: str, offer: Offer) -> list[UpdateEffect]:
        """``apply`` was decided: the update runs."""
        self._check("start")
        self.current = (request_id, offer)
        self.progress = -1
        self._shown_at = self._held = None
        self._hub_progress = us.ProgressLimiter() if offer.source == "hub" else None
        self.state = UpdateState.UPDATING
        return [StartUpdate(request_id, offer)]

    def settle(self) -> None:
        """An offer was decided otherwise (ignored): a past failure is behind us."""
        self._check("settle")
        self.state = UpdateState.IDLE

    def progress_report(self, percent: int, now: float) -> list[UpdateEffect]:
        if self.state is not UpdateState.UPDATING:
            return []
        if not 0 <= percent <= 100 or percent <= self.progress:
            return []
        self.progress = percent
        out: list[UpdateEffect] = []
        if percent == 100 or self._shown_at is None or now >= self._shown_at + PROGRESS_INTERVAL_S:
            out.append(self._show(percent, now))
        else:
            self._held = percent
        push = None if self._hub_progress is None else self._hub_progress.offer(percent, now)
        if push is not None:
            out.append(push)
        return out

    def download_started(self, request_id: str, interface: str | None) -> list[UpdateEffect]:
        """The download of ``request_id`` connected (``interface``: the route's)."""
        if self.current is None or self.current[0] != request_id or self._hub_progress is None:
            return []
        return [us.started(interface)]

    def finished(
        self, request_id: str, success: bool, message: str, now: float, *, applier_error: bool
    ) -> list[UpdateEffect]:
        """The one outcome of the running update (any other call is dropped)."""
        if self.current is None or self.current[0] != request_id:
            return []
        self.current = None
        hub, self._hub_progress = self._hub_progress, None
        out: list[UpdateEffect] = []
        if self._held is not None:
            out.append(self._show(self._held, now))
        if success:
            if hub is not None:
                final = hub.finish()
                out += [final, us.completed()] if final is not None else [us.completed()]
            out.append(Finished(request_id, success, message))
            self.state = UpdateState.REBOOTING
            self.reboot_at = now + self.reboot_delay_ms / 1000
            out.append(RebootScheduled(self.reboot_delay_ms))
        else:
            self.last_error = message
            status = hub_reason(message, applier_error=applier_error)
            if hub is not None:
                out.append(us.failed(status))
            out.append(Finished(request_id, success, message))
            out.append(ReportError(f"firmware update failed: {status}"))
            self.state = UpdateState.FAILED
        return out

    def resume_reboot(self, now: float) -> list[UpdateEffect]:
        """A restart found an applied update whose reboot never came."""
        self._check("start")
        self.state = UpdateState.REBOOTING
        self.reboot_at = now + self.reboot_delay_ms / 1000
        return [RebootScheduled(self.reboot_delay_ms)]

    def recovered_failure(self, message: str) -> None:
        """A restart found an update that failed or was cut short."""
        self._check("settle")
        self.last_error = message
        self.state = UpdateState.FAILED

    def hub_reboot(self) -> list[UpdateEffect]:
        """The hub asked for a reboot."""
        if self.state is UpdateState.UPDATING:
            return [
                ReportError(
                    "reboot requested by the hub while an update is being "
                    "written: refused (the update continues)"
                )
            ]
        self.state = UpdateState.REBOOTING
        self.reboot_at = None
        return [PushRebooting(), RebootScheduled(0), RebootNow()]

    def next_deadline(self) -> float | None:
        shown = self._progress_due()
        if shown is None or self.reboot_at is None:
            return self.reboot_at if shown is None else shown
        return min(shown, self.reboot_at)

    def tick(self, now: float) -> list[UpdateEffect]:
        due = self._progress_due()
        if due is not None and now >= due:
            assert self._held is not None  # (there is a due time only for a held percent)
            return [self._show(self._held, now)]
        if self.reboot_at is not None and now >= self.reboot_at:
            self.reboot_at = None
            return [RebootNow()]
        return []

    def _progress_due(self) -> float | None:
        """When the held-back percent goes to the bus (None: none is held back)."""
        if self._held is None or self._shown_at is None:
            return None
        return self._shown_at + PROGRESS_INTERVAL_S

    def _show(self, percent: int, now: float) -> ReportProgress:
        self._shown_at, self._held = now, None
        return ReportProgress(percent)

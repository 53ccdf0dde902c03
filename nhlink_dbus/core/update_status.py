"""What the device tells the hub about an update it was offered (sans-I/O).

nerves_hub_link 2.9+ (``socket.ex`` ``send_update_status``, ``update_manager.ex``,
``updater.ex``; read at 388b391) and what nerves_hub_web does with it
(``lib/nerves_hub/device_link.ex``, ``lib/nerves_hub/firmware_updates.ex``;
read at 0bb6b5cc5). ``status_update`` payloads:

===========================  ===========================================================
``received``                 the offer arrived, before it is decided
``started``                  the download connected (+ ``downloader_network_interface``)
``ignored`` + ``reason``     decided not to take it: the server clears its in-flight
                             update and blocks updates for the deployment's
                             ``penalty_timeout_minutes``
``rescheduled`` +            not now: the server blocks updates until
``delay_for`` (+ ``reason``)  now + ``delay_for`` **milliseconds**
                             (``NaiveDateTime.add(delay_for, :millisecond)`` in
                             ``firmware_updates.ex``). nerves_hub_link sends minutes
                             (at least 5) there, which that server reads as ms; we
                             send milliseconds, the unit the server applies.
``failed`` + ``reason``      penalty box, as ``ignored``
``completed``                after ``fwup_progress {stage: updating, value: 100}``
===========================  ===========================================================

``fwup_progress {"stage": …, "value": n}``: only on increase, at least 500 ms
apart, except a final 100 that is always sent (``updater.ex`` ``send_update?``).
The download streams into the applier, so there is one stage, ``updating``
(nerves_hub_link's streaming updater reports the same).

These are sent only for offers that came from the hub: a local file or a
removable medium has no in-flight update on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from nhlink_dbus.core.records import dataclass

STAGE_UPDATING: Final = "updating"
PROGRESS_INTERVAL_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class HubPush:
    """Push ``event`` with ``payload`` on the ``device`` topic."""

    event: str
    payload: Mapping[str, Any]


def _status(status: str, **fields: Any) -> HubPush:
    return HubPush("status_update", {"status": status, **fields})


def received() -> HubPush:
    return _status("received")


def started(interface: str | None) -> HubPush:
    return _status("started", downloader_network_interface=interface)


def ignored(reason: str) -> HubPush:
    return _status("ignored", reason=reason)


def rescheduled(delay_ms: int, reason: str) -> HubPush:
    return _status("rescheduled", delay_for=int(delay_ms), reason=reason)


def failed(reason: str) -> HubPush:
    return _status("failed", reason=reason)


def completed() -> HubPush:
    return _status("completed")


def progress(stage: str, value: int) -> HubPush:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"progress must be an integer 0..100, got {value!r}")
    return HubPush("fwup_progress", {"stage": stage, "value": value})


def decision_reason(decision: str, decided_by: str, *, same_uuid: bool = False) -> str:
    """Why an offer was ignored or rescheduled, in words for the hub's audit log."""
    if decided_by == "policy":
        if same_uuid:
            return "the device is already running this firmware"
        return f"{decision} by the device's policy (nobody attached to decide)"
    if decided_by == "timeout":
        return f"{decision}: no decision in time, the configured default"
    if decided_by == "hub":
        return f"{decision} as the hub asked"
    return f"{decision} on the device (decided by {decided_by})"


class ProgressLimiter:
    """One update's ``fwup_progress`` pushes: increasing, rate-limited, a final 100."""

    def __init__(self, stage: str = STAGE_UPDATING, interval_s: float = PROGRESS_INTERVAL_S):
        self.stage = stage
        self.interval_s = interval_s
        self.last = -1
        self._sent_at: float | None = None

    def offer(self, value: int, now: float) -> HubPush | None:
        """The push for ``value`` now, or None (not higher, or too soon after the last)."""
        if value <= self.last or not 0 <= value <= 100:
            return None
        if value < 100 and self._sent_at is not None and now - self._sent_at < self.interval_s:
            return None
        self.last = value
        self._sent_at = now
        return progress(self.stage, value)

    def finish(self) -> HubPush | None:
        """The final 100 of the stage, unless it went out already."""
        if self.last >= 100:
            return None
        self.last = 100
        return progress(self.stage, 100)

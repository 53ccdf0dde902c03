"""Firmware validation, as a Nerves device keeps it in its KV store (sans-I/O).

What the store says (nerves_runtime ``lib/nerves_runtime.ex``,
``firmware_validation_status/0``; read at nerves_runtime 3d3754c):

* U-Boot's bootcount scheme first: ``upgrade_available`` ``"0"`` is validated,
  ``"1"`` is not;
* else the active slot's ``<slot>.nerves_fw_validated``, else the global
  ``nerves_fw_validated``: ``"1"`` validated, ``"0"`` not;
* anything else is *unknown*, and unknown counts as valid (``firmware_valid?/0``:
  the next boot runs the same firmware).

Marking valid (``validate_firmware/0``): the ``validate`` task of a system's
``ops.fw`` sets ``<active>.nerves_fw_validated=1`` (nerves_runtime's test
``ops.conf``); without one, ``upgrade_available=0``, ``bootcount=0`` and
``nerves_fw_validated=1`` when ``upgrade_available`` is in use, else
``nerves_fw_validated=1``. :func:`mark_valid_changes` writes what makes the
reader above say *validated*, touching only keys the scheme in use consults.

Auto-revert (nerves_hub_link ``Client.firmware_auto_revert_detected?/0``,
read at 388b391): the slot that is not running has ``nerves_fw_validated`` =
``"0"`` and non-empty ``nerves_fw_platform`` and ``nerves_fw_architecture``
(``prevent-revert`` clears those two) — the bootloader fell back from it.

:class:`FirmwareValidation` is the policy around it (nerves_hub_link
``socket.ex``): the join carries ``meta {firmware_validated,
firmware_auto_revert_detected}``; while the running firmware is not validated
the store is read again every 10 s, and once it is, ``firmware_validated {}`` is
pushed on ``device`` (if the join said otherwise). ``validate = "on-connect"``
marks it valid ``validate_after_ms`` after the first join of this start.

Once an update is applied and until the device reboots, the store describes
the firmware that boots next, not the one running (an upgrade task switches the
active slot and usually clears ``nerves_fw_validated``): :meth:`freeze` keeps
what was known of the running firmware, and nothing is re-read or marked —
marking now would validate the new firmware before it ever ran, and defeat the
bootloader's fall-back (:mod:`.recovery`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import NotPossible

RECHECK_S: Final = 10.0  # nerves_hub_link @firmware_validation_check_interval
VALIDATED_KEY: Final = "nerves_fw_validated"
POLICIES: Final = ("manual", "on-connect")


class Status(Enum):
    VALIDATED = "validated"
    UNVALIDATED = "unvalidated"
    UNKNOWN = "unknown"


def _active(kv: Mapping[str, str]) -> str | None:
    return kv.get("nerves_fw_active") or None


def validation_status(kv: Mapping[str, str]) -> Status:
    """``Nerves.Runtime.firmware_validation_status/0`` on a KV snapshot."""
    match kv.get("upgrade_available"):
        case "0":
            return Status.VALIDATED
        case "1":
            return Status.UNVALIDATED
    slot = _active(kv)
    raw = kv.get(f"{slot}.{VALIDATED_KEY}") if slot else None
    if raw is None:
        raw = kv.get(VALIDATED_KEY)
    if raw == "1":
        return Status.VALIDATED
    if raw == "0":
        return Status.UNVALIDATED
    return Status.UNKNOWN


def firmware_validated(kv: Mapping[str, str]) -> bool:
    """``firmware_valid?/0``: anything but *unvalidated* is valid."""
    return validation_status(kv) is not Status.UNVALIDATED


def previous_slot(kv: Mapping[str, str]) -> dict[str, str]:
    """The other slots' ``x.``-prefixed entries without the prefix (merged)."""
    active = _active(kv)
    out: dict[str, str] = {}
    for key, value in kv.items():
        if len(key) > 2 and key[1] == "." and key[0] != active:
            out[key[2:]] = value
    return out


def auto_revert_detected(kv: Mapping[str, str]) -> bool:
    """The bootloader fell back from the other slot (see the module docstring)."""
    other = previous_slot(kv)
    return (
        other.get(VALIDATED_KEY, "1") == "0"
        and other.get("nerves_fw_platform", "") != ""
        and other.get("nerves_fw_architecture", "") != ""
    )


def reverted_firmware(kv: Mapping[str, str]) -> dict[str, str]:
    """The firmware fallen back from: the other slot's ``nerves_fw_*`` without the prefix."""
    other = previous_slot(kv)
    return {k.removeprefix("nerves_fw_"): v for k, v in other.items() if k.startswith("nerves_fw_")}


def mark_valid_changes(kv: Mapping[str, str]) -> dict[str, str]:
    """The entries to write so that :func:`validation_status` says *validated*."""
    changes: dict[str, str] = {}
    if "upgrade_available" in kv:
        changes["upgrade_available"] = "0"
        changes["bootcount"] = "0"
    slot = _active(kv)
    slot_key = f"{slot}.{VALIDATED_KEY}" if slot else None
    if slot_key is not None and (slot_key in kv or VALIDATED_KEY not in kv):
        changes[slot_key] = "1"  # what ops.fw's validate task writes
    if VALIDATED_KEY in kv or slot_key is None:
        changes[VALIDATED_KEY] = "1"  # the fallback of validate_firmware/0
    return changes


def join_meta(validated: bool, auto_reverted: bool) -> dict[str, bool]:
    """The join's ``meta`` (nerves_hub_link 2.8.1+)."""
    return {"firmware_validated": validated, "firmware_auto_revert_detected": auto_reverted}


# -- the policy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadValidation:
    """Read the KV store again and report with :meth:`FirmwareValidation.observed`."""


@dataclass(frozen=True, slots=True)
class MarkValidNow:
    """Write :func:`mark_valid_changes` (the ``on-connect`` policy decided it)."""

    decided_by: str


@dataclass(frozen=True, slots=True)
class PushFirmwareValidated:
    """Push ``firmware_validated {}`` on ``device``."""


@dataclass(frozen=True, slots=True)
class ValidationChanged:
    """``FirmwareValidated`` changed (a property for the faces; the join ``meta`` follows)."""

    validated: bool


ValidationEffect = ReadValidation | MarkValidNow | PushFirmwareValidated | ValidationChanged


class FirmwareValidation:
    """See the module docstring. ``now`` is seconds on a monotonic clock."""

    def __init__(
        self, kv: Mapping[str, str], *, policy: str = "manual", validate_after_ms: int = 0
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"validation policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self.validate_after_s = validate_after_ms / 1000
        self.validated = firmware_validated(kv)
        self.auto_reverted = auto_revert_detected(kv)
        self.reverted = reverted_firmware(kv) if self.auto_reverted else {}
        self._joined = False
        self._told = self.validated  # what the hub was last told (join meta or push)
        self._recheck_at: float | None = None
        self._mark_at: float | None = None
        self._marked_by_policy = False
        self.frozen = False

    def freeze(self, validated: bool) -> None:
        """An applied update waits for its reboot (see the module docstring)."""
        self.frozen = True
        self.validated = validated
        self._told = validated
        self.auto_reverted = False
        self.reverted = {}
        self._recheck_at = None
        self._mark_at = None

    def check_markable(self) -> None:
        """Raise :class:`NotPossible` while marking would validate the next firmware."""
        if self.frozen:
            raise NotPossible(
                "an applied update waits for the reboot: the firmware running now cannot "
                "be marked valid (the KV store already describes the next one)"
            )

    def meta(self) -> dict[str, bool]:
        return join_meta(self.validated, self.auto_reverted)

    def next_deadline(self) -> float | None:
        due = [t for t in (self._recheck_at, self._mark_at) if t is not None]
        return min(due, default=None)

    def joined(self, now: float) -> list[ValidationEffect]:
        """``device`` joined with :meth:`meta` as it is now."""
        self._joined = True
        self._told = self.validated
        if self.validated or self.frozen:
            return []
        self._recheck_at = now + RECHECK_S
        if self.policy == "on-connect" and not self._marked_by_policy and self._mark_at is None:
            self._mark_at = now + self.validate_after_s
            if self.validate_after_s <= 0:
                return self.tick(now)
        return []

    def left(self) -> None:
        """The channel or connection went away (a push would be dropped)."""
        self._joined = False
        self._recheck_at = None

    def tick(self, now: float) -> list[ValidationEffect]:
        if self.frozen:
            return []
        out: list[ValidationEffect] = []
        if self._mark_at is not None and now >= self._mark_at:
            self._mark_at = None
            self._marked_by_policy = True
            if not self.validated:
                out.append(MarkValidNow("policy"))
        if self._recheck_at is not None and now >= self._recheck_at:
            self._recheck_at = now + RECHECK_S if self._joined and not self.validated else None
            out.append(ReadValidation())
        return out

    def observed(self, validated: bool, now: float) -> list[ValidationEffect]:
        """What the KV store says now (after a re-read or a write)."""
        if self.frozen:
            return []
        out: list[ValidationEffect] = []
        if validated != self.validated:
            self.validated = validated
            out.append(ValidationChanged(validated))
        if validated:
            self._recheck_at = None
            self._mark_at = None
            if self._joined and not self._told:
                self._told = True
                out.append(PushFirmwareValidated())
        elif self._joined and self._recheck_at is None:
            self._recheck_at = now + RECHECK_S
        return out

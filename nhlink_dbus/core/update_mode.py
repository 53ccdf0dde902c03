"""Device-managed updates: the messages and the device's side of the rules (sans-I/O).

Not in the newest sources fetched for this project (nerves_hub_link 388b391,
nerves_hub_web 0bb6b5cc5, both August 2026); built to nerves_hub_web's
``docs/device_managed_updates.md`` (PR nerves_hub_web#2978, client half
nerves_hub_link#473, merged 2026-08-29). On the ``device`` topic::

    server -> device   update_mode       {"mode": "automatic", "managed_updates_allowed": false}
    device -> server   check_update      {}
    server -> device   update_available  {"available": true, "firmware_meta": {..}}
    device -> server   request_update    {}
    server -> device   update            (the existing message, unchanged)
    server -> device   update_rejected   {"reason": "busy", "delay_for": 5}
    device -> server   set_update_mode   {"mode": "device_managed"}

* ``update_mode`` comes on join (to ``device_api_version >= 2.4.0``), on every
  change and as the answer to ``set_update_mode``; until it comes the mode is
  unknown (an older server), which counts as "not device managed".
* ``check_update`` is allowed in every mode and carries no URL; ``request_update``
  mints one (answered with ``update``) or is refused with ``update_rejected``,
  whose ``delay_for`` is in **minutes**: "not now", retry no sooner.
* A device may ask for ``automatic`` or ``device_managed`` (the latter needs
  the grant); ``off`` is the operator's alone.

Parsers return a value or raise :class:`ProtocolError`.
"""

from __future__ import annotations

from typing import Any, Final

from nhlink_dbus.core.hub_messages import FirmwareMetadata, parse_firmware_metadata
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import InvalidArgument, ProtocolError

MODES: Final = ("automatic", "device_managed", "off")
DEVICE_MAY_SET: Final = ("automatic", "device_managed")
DEVICE_MANAGED: Final = "device_managed"
MINUTE_MS: Final = 60_000
REQUEST_TIMEOUT_S: Final = 30.0  # no answer to request_update: give up (an older server)


@dataclass(frozen=True, slots=True)
class UpdateMode:
    """``update_mode``: the mode the hub holds for this device, and the grant."""

    mode: str
    managed_updates_allowed: bool


@dataclass(frozen=True, slots=True)
class UpdateAvailability:
    """``update_available`` (the answer to ``check_update``): metadata, never a URL."""

    available: bool
    firmware_meta: FirmwareMetadata | None


@dataclass(frozen=True, slots=True)
class UpdateRejected:
    """``update_rejected``: not now; ask again no sooner than ``delay_for_min``."""

    reason: str
    delay_for_min: int

    @property
    def delay_ms(self) -> int:
        return self.delay_for_min * MINUTE_MS


def parse_update_mode(payload: Any) -> UpdateMode:
    if not isinstance(payload, dict) or payload.get("mode") not in MODES:
        raise ProtocolError(f"update_mode: mode must be one of {', '.join(MODES)}")
    allowed = payload.get("managed_updates_allowed", False)
    if not isinstance(allowed, bool):
        raise ProtocolError("update_mode: managed_updates_allowed must be true or false")
    return UpdateMode(str(payload["mode"]), allowed)


def parse_update_available(payload: Any) -> UpdateAvailability:
    if not isinstance(payload, dict) or not isinstance(payload.get("available"), bool):
        raise ProtocolError("update_available: available must be true or false")
    meta = payload.get("firmware_meta")
    if not payload["available"]:
        return UpdateAvailability(False, None)
    return UpdateAvailability(True, parse_firmware_metadata(meta))


def parse_update_rejected(payload: Any) -> UpdateRejected:
    if not isinstance(payload, dict):
        raise ProtocolError("update_rejected payload must be an object")
    delay = payload.get("delay_for", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ProtocolError("update_rejected: delay_for must be a non-negative integer")
    reason = payload.get("reason", "")
    return UpdateRejected(reason if isinstance(reason, str) else str(reason), delay)


def set_update_mode_payload(mode: str) -> dict[str, str]:
    """``set_update_mode``; InvalidArgument for ``off`` or an unknown mode."""
    if mode not in DEVICE_MAY_SET:
        raise InvalidArgument(
            f"the device may ask for {' or '.join(DEVICE_MAY_SET)} (got {mode!r}); "
            "off is the operator's alone"
        )
    return {"mode": mode}

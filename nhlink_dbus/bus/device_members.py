"""``org.nerveshub.Link1`` members of the newer device API: firmware validation,
health values from kiosk apps, the update mode (translation only).

A mixin of :class:`~nhlink_dbus.bus.interface.LinkInterface`, which dispatches,
checks access and maps errors for these as for every method; the contract is
``introspection/org.nerveshub.Link1.xml``. No ``from __future__ import
annotations`` (dbus-next reads the signature strings); F821 is off for the same
reason as in ``interface.py``.
"""

# ruff: noqa: F821

from collections.abc import Callable, Mapping, Sequence
from typing import Any, no_type_check

from dbus_next.constants import PropertyAccess
from dbus_next.service import dbus_property, method, signal

from nhlink_dbus.service_api import Caller, LinkService

# Properties: D-Bus name → (service attribute, conversion to the D-Bus value).
PROPERTIES: Mapping[str, tuple[str, Callable[[Any], object]]] = {
    "FirmwareValidated": ("firmware_validated", bool),
    "AutoRevertDetected": ("auto_revert_detected", bool),
    "UpdateMode": ("update_mode", str),
    "ManagedUpdatesAllowed": ("managed_updates_allowed", bool),
    "Extensions": ("extensions", lambda v: [str(x) for x in v]),
    "NetworkInterface": ("network_interface", str),
}

OUT_ARG_NAMES: Mapping[str, Sequence[str]] = {
    "GetHealthReport": ("metrics", "checks", "alarms"),
    "SetUpdateMode": ("mode",),
}


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class DeviceApiMembers:
    """The members; see the module docstring."""

    _service: LinkService
    _caller: Callable[[], Caller]
    _read: Callable[[str], object]
    _emit: Callable[[Callable[[], object]], None]

    # -- methods ---------------------------------------------------------------------------

    @method()
    @no_type_check
    async def MarkValid(self) -> None:
        """Confirm that the running firmware works: marked valid in the KV store as
        Nerves.Runtime.validate_firmware does (so the bootloader keeps it), then
        firmware_validated is pushed to the hub. NotPossible if the store cannot be
        written."""
        await self._service.mark_valid(self._caller())

    @method()
    @no_type_check
    async def SetHealthMetric(self, name: "s", value: "d") -> None:
        """Add or change a metric of the health report (a finite number). Names: 1 to
        64 characters of A-Z a-z 0-9 _ . : -; at most 32; the service's own metrics
        cannot be set. Kept until the service restarts."""
        self._service.set_health_metric(name, value)

    @method()
    @no_type_check
    async def SetHealthCheck(self, name: "s", passed: "b", note: "s") -> None:
        """Add or change a check of the health report ({pass, note}; note at most 256
        characters); at most 32 checks."""
        self._service.set_health_check(name, passed, note)

    @method()
    @no_type_check
    async def RaiseAlarm(self, alarm_id: "s", description: "s") -> None:
        """Raise an alarm in the health report (id -> description); at most 32."""
        self._service.raise_alarm(alarm_id, description)

    @method()
    @no_type_check
    async def ClearAlarm(self, alarm_id: "s") -> None:
        """Clear an alarm raised with RaiseAlarm; NotPossible if it is not raised."""
        self._service.clear_alarm(alarm_id)

    @method()
    @no_type_check
    async def GetHealthReport(self) -> "a{sd}a{s(bs)}a{ss}":
        """The health report as the hub would get it now: metrics (the service's
        readings of /proc and /sys and those set with SetHealthMetric), checks
        (name -> (pass, note)) and alarms (id -> description)."""
        report = await self._service.health_report()
        metrics = {str(k): _number(v) for k, v in report.get("metrics", {}).items()}
        checks = {
            str(k): [bool(c.get("pass")), str(c.get("note", ""))]
            for k, c in report.get("checks", {}).items()
        }
        alarms = {str(k): str(v) for k, v in report.get("alarms", {}).items()}
        return [metrics, checks, alarms]

    @method()
    @no_type_check
    async def SetUpdateMode(self, mode: "s") -> "s":
        """Ask the hub for update mode automatic or device_managed (off is the
        operator's alone). Returns the mode the hub holds afterwards: the same unless
        it refused (device_managed needs the hub's grant, ManagedUpdatesAllowed).
        NotPossible when the hub has not said it supports update modes."""
        return await self._service.set_update_mode(mode)

    # -- signals ---------------------------------------------------------------------------

    @signal()
    @no_type_check
    def AutoReverted(self, firmware) -> "a{ss}":
        """Sent at start when the bootloader fell back from the other slot's firmware
        (it was never validated): that firmware's metadata, without the nerves_fw_
        prefix. The hub is told in the join's meta."""
        return firmware

    # -- properties ------------------------------------------------------------------------

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def FirmwareValidated(self) -> "b":
        """Whether the running firmware is validated (Nerves.Runtime's reading of the
        KV store: upgrade_available, else nerves_fw_validated; unknown counts as valid)."""
        return self._read("FirmwareValidated")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def AutoRevertDetected(self) -> "b":
        """Whether the bootloader fell back from the other slot's firmware (see
        AutoReverted)."""
        return self._read("AutoRevertDetected")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def UpdateMode(self) -> "s":
        """The update mode the hub holds: automatic, device_managed or off; empty until
        the hub says (an older hub never does). device_managed: CheckForUpdate asks
        check_update and an apply decision asks the hub for the firmware
        (request_update)."""
        return self._read("UpdateMode")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def ManagedUpdatesAllowed(self) -> "b":
        """Whether the hub lets this device choose device_managed itself."""
        return self._read("ManagedUpdatesAllowed")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def Extensions(self) -> "as":
        """The hub extensions attached now (health, geo)."""
        return self._read("Extensions")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def NetworkInterface(self) -> "s":
        """The network interface of the route to the hub, as reported to it; empty
        until known."""
        return self._read("NetworkInterface")

    # -- LinkListener ----------------------------------------------------------------------

    def auto_reverted(self, firmware: Mapping[str, str]) -> None:
        values = {str(k): str(v) for k, v in firmware.items()}
        self._emit(lambda: self.AutoReverted(values))


__all__ = ["OUT_ARG_NAMES", "PROPERTIES", "DeviceApiMembers"]

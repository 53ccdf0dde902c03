"""The newer device API beside updates (sans-I/O): firmware validation, the health
and geo extensions, the network interface report, the update mode.

:class:`DeviceApi` is owned by :class:`~nhlink_dbus.core.link.LinkCore`, which
hands it the hub's events and turns its :class:`Changed` into
``PropertiesChanged``. What needs I/O comes out as effects the root performs and
answers (``CollectHealth`` → :meth:`DeviceApi.health_sampled`, ``Locate`` →
:meth:`DeviceApi.located`, ``FindNetworkInterface`` →
:meth:`DeviceApi.network_found`, ``ReadValidation``/``MarkValidNow`` →
:meth:`DeviceApi.validation_observed`). Rules:

* On every ``device`` join: the validation policy (:mod:`.validation`) and the
  network interface report (``report_network_interface {"interface": …}``,
  nerves_hub_link 2.11 sends it after each join; we add ``"type"``, see
  :data:`INTERFACE_TYPES`).
* ``health:check`` → a ``health:report``; ``geo:location:request`` → a
  ``geo:location:update`` (:mod:`.extensions` only delivers events of attached
  extensions, and the hub client drops pushes of detached ones).
* ``update_mode`` is kept as the hub says it (``None`` until it does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from nhlink_dbus.core import extensions as ext
from nhlink_dbus.core import geo
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import update_mode as um
from nhlink_dbus.core import validation as val
from nhlink_dbus.core.bounds import bounded, check_bounds
from nhlink_dbus.core.health import HealthRegistry, HealthSample, build_report
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.core.update_status import HubPush

logger = logging.getLogger(__name__)

# What an interface is (nerves_hub_link DeviceStatus ``interface_type``); the
# server itself only looks at the name (``humanized_network_interface_name``:
# wlan* wifi, eth*/en* ethernet, wwan* cellular, else unknown).
INTERFACE_TYPES: Final = ("ethernet", "wifi", "mobile", "local", "unknown")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceApiSettings:
    """The configuration of this part (``Config.device_api_settings()``); each default
    is here once and the configuration reader takes it from these fields."""

    validate: str = "manual"  # [firmware] validate: manual | on-connect
    validate_after_ms: int = bounded(0, 0)  # [firmware] validate_after_ms
    extensions: tuple[str, ...] = ("health", "geo")  # [extensions] offer

    def __post_init__(self) -> None:
        check_bounds(self, "firmware")
        if self.validate not in val.POLICIES:
            raise ValueError(f"validate must be one of {', '.join(val.POLICIES)}")
        unknown = sorted(set(self.extensions) - set(ext.IMPLEMENTED))
        if unknown:
            raise ValueError(f"unknown extension(s): {', '.join(unknown)}")


# -- effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectHealth:
    """Sample the system (/proc, /sys) and answer with :meth:`DeviceApi.health_sampled`."""


@dataclass(frozen=True, slots=True)
class Locate:
    """Find the device's location and answer with :meth:`DeviceApi.located`."""


@dataclass(frozen=True, slots=True)
class FindNetworkInterface:
    """Find the interface of the route to the hub and answer with :meth:`network_found`."""


@dataclass(frozen=True, slots=True)
class ExtensionPush:
    """Push ``<name>:<event>`` on ``extensions`` (dropped unless ``name`` is attached)."""

    name: str
    event: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class JoinMeta:
    """The join's ``meta`` changed: use it from the next join on."""

    meta: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Changed:
    """A value the faces show changed (a D-Bus property name and its new value)."""

    name: str
    value: object


DeviceApiEffect = (
    CollectHealth
    | Locate
    | FindNetworkInterface
    | ExtensionPush
    | HubPush
    | JoinMeta
    | Changed
    | val.ReadValidation
    | val.MarkValidNow
)


class DeviceApi:
    """See the module docstring."""

    def __init__(self, kv: Mapping[str, str], settings: DeviceApiSettings) -> None:
        self.settings = settings
        self.validation = val.FirmwareValidation(
            kv, policy=settings.validate, validate_after_ms=settings.validate_after_ms
        )
        self.health = HealthRegistry()
        self.mode: um.UpdateMode | None = None
        self.attached: tuple[str, ...] = ()
        self.network: tuple[str, str] | None = None  # (interface, type) of the hub route
        self.connected = False

    @property
    def offered_extensions(self) -> dict[str, str]:
        return {name: ext.IMPLEMENTED[name] for name in self.settings.extensions}

    @property
    def managed(self) -> bool:
        """The hub said this device is device-managed."""
        return self.mode is not None and self.mode.mode == um.DEVICE_MANAGED

    def next_deadline(self) -> float | None:
        return self.validation.next_deadline()

    def tick(self, now: float) -> list[DeviceApiEffect]:
        return self._validation_effects(self.validation.tick(now))

    # -- the hub -----------------------------------------------------------------------------

    def hub_event(self, event: object, now: float) -> list[DeviceApiEffect]:
        """Events of the hub connection this part handles (others give [])."""
        out: list[DeviceApiEffect] = []
        if isinstance(event, hs.Joined):
            self.connected = True
            out += self._validation_effects(self.validation.joined(now))
            out.append(FindNetworkInterface())
        elif isinstance(event, hs.Disconnected | hs.ChannelDown):
            self.connected = False
            self.validation.left()
        elif isinstance(event, ext.Deliver):
            out += self._deliver(event)
        elif isinstance(event, ext.AttachedChanged):
            self.attached = event.attached
            out.append(Changed("Extensions", list(event.attached)))
        elif isinstance(event, um.UpdateMode):
            logger.info(
                "update mode: %s (device may choose: %s)",
                event.mode,
                event.managed_updates_allowed,
            )
            self.mode = event
            out.append(Changed("UpdateMode", event.mode))
            out.append(Changed("ManagedUpdatesAllowed", event.managed_updates_allowed))
        return out

    def _deliver(self, event: ext.Deliver) -> list[DeviceApiEffect]:
        if (event.name, event.event) == ("health", "check"):
            return [CollectHealth()]
        if (event.name, event.event) == ("geo", "location:request"):
            return [Locate()]
        logger.info("extension event %s:%s ignored", event.name, event.event)
        return []

    # -- answers of the root -----------------------------------------------------------------

    def health_sampled(self, sample: HealthSample, wall_s: float) -> list[DeviceApiEffect]:
        """The system sample for a pending ``health:check``: push the report."""
        report = build_report(
            sample,
            self.health,
            wall_s,
            alarms=self._own_alarms(),
            connectivity=self._connectivity(),
        )
        return [ExtensionPush("health", "report", {"value": report})]

    def located(self, result: geo.Location | geo.LocationError) -> list[DeviceApiEffect]:
        return [ExtensionPush("geo", "location:update", geo.update_payload(result))]

    def network_found(self, interface: str | None, kind: str) -> list[DeviceApiEffect]:
        """The interface of the route to the hub (None: unknown, nothing is reported)."""
        if interface is None:
            logger.warning("could not tell which network interface reaches the hub")
            return []
        if kind not in INTERFACE_TYPES:
            kind = "unknown"
        self.network = (interface, kind)
        logger.info("hub reached through %s (%s)", interface, kind)
        return [
            HubPush("report_network_interface", {"interface": interface, "type": kind}),
            Changed("NetworkInterface", interface),
        ]

    def validation_observed(self, validated: bool, now: float) -> list[DeviceApiEffect]:
        return self._validation_effects(self.validation.observed(validated, now))

    # -- internals ---------------------------------------------------------------------------

    def _validation_effects(self, effects: list[val.ValidationEffect]) -> list[DeviceApiEffect]:
        out: list[DeviceApiEffect] = []
        for effect in effects:
            if isinstance(effect, val.PushFirmwareValidated):
                logger.info("firmware validated: telling the hub")
                out.append(HubPush("firmware_validated", {}))
            elif isinstance(effect, val.ValidationChanged):
                out.append(JoinMeta(self.validation.meta()))
                out.append(Changed("FirmwareValidated", effect.validated))
            else:
                out.append(effect)
        return out

    def _own_alarms(self) -> dict[str, str]:
        if self.validation.auto_reverted:
            version = self.validation.reverted.get("version", "?")
            return {"nhlink.FirmwareReverted": f"the bootloader fell back from {version}"}
        return {}

    def _connectivity(self) -> dict[str, Any]:
        if self.network is None:
            return {}
        interface, kind = self.network
        return {
            interface: {
                "type": kind,
                "present": True,
                "state": "configured",
                "connection_status": "internet" if self.connected else "disconnected",
                "metrics": {},
                "metadata": {},
            }
        }

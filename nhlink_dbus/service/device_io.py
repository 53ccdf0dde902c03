"""The root's half for the newer device API: its adapters (:class:`DeviceIO`), the
handlers of ``core/device_api.py``'s effects, and the requests faces make of it
(firmware validation, health values, the update mode).

Like the rest of the root this only wires: every rule is the core's. Work that
does I/O (a health sample, a location, the KV store) runs under the service's
supervisor and feeds its answer back into the core.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from nhlink_dbus.aio.geoclue import FixedLocation, GeoClue, Locator
from nhlink_dbus.aio.health_probe import HealthProbe
from nhlink_dbus.aio.hub_client import HubClient, NoHub
from nhlink_dbus.aio.network_info import NetworkProbe
from nhlink_dbus.aio.supervisor import Supervisor
from nhlink_dbus.config import Config
from nhlink_dbus.core import device_api as da
from nhlink_dbus.core import link
from nhlink_dbus.core import validation as val
from nhlink_dbus.core.geo import Location, LocationError
from nhlink_dbus.core.health import HealthSample
from nhlink_dbus.core.kv_format import KVError
from nhlink_dbus.core.partials import PartVerifier
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.core.update_manager import Offer
from nhlink_dbus.errors import HubConnectionError, NotPossible, StateError
from nhlink_dbus.kv_store import read_kv, update_kv
from nhlink_dbus.service.listeners import Listeners
from nhlink_dbus.service_api import Caller, Info

logger = logging.getLogger(__name__)


@dataclass
class DeviceIO:
    """Everything outside the process the device API needs (tests pass their own)."""

    sample_health: Callable[[], HealthSample]  # blocking: run in a thread
    locate: Callable[[], Awaitable[Location | LocationError]]
    route: Callable[[str, int], Awaitable[tuple[str | None, str]]]  # (interface, kind)
    read_kv: Callable[[], dict[str, str]]  # blocking
    update_kv: Callable[[Mapping[str, str]], dict[str, str]]  # blocking
    wall_clock: Callable[[], float] = time.time

    @classmethod
    def from_config(cls, config: Config, system_bus: Any = None) -> DeviceIO:
        """The real adapters; GeoClue2 and NetworkManager through ``system_bus`` if any."""
        geo = config.geo
        fixed = None
        if geo.latitude is not None and geo.longitude is not None:
            fixed = FixedLocation(geo.latitude, geo.longitude, geo.accuracy_m)
        geoclue = None
        if geo.geoclue and system_bus is not None:
            geoclue = GeoClue(
                system_bus, desktop_id=geo.desktop_id, timeout_s=geo.geoclue_timeout_ms / 1000
            )
        spec = config.firmware.kv
        return cls(
            sample_health=HealthProbe(disk_path=config.health.disk_path).sample,
            locate=Locator(geoclue, fixed).locate,
            route=NetworkProbe(system_bus).route,
            read_kv=lambda: read_kv(spec),
            update_kv=lambda changes: update_kv(spec, changes),
        )


class DeviceRequests:
    """The device-API half of :class:`~nhlink_dbus.service.root.NhlinkService`."""

    config: Config
    core: link.LinkCore
    hub: HubClient | NoHub
    listeners: Listeners
    tasks: Supervisor
    clock: Callable[[], float]
    device_io: DeviceIO
    _kv_lock: asyncio.Lock | None = None

    def perform(self, effects: Sequence[link.Effect]) -> None:
        raise NotImplementedError

    def _device(self, effects: Sequence[da.DeviceApiEffect]) -> None:
        self.perform(self.core.device_api_effects(effects))

    # -- effects of core/device_api.py -----------------------------------------------------

    def device_effects(self) -> dict[type[Any], Callable[[Any], object]]:
        """Handlers for the root's effect table."""
        return {
            da.CollectHealth: lambda e: self.tasks.spawn("health", self._collect_health()),
            da.Locate: lambda e: self.tasks.spawn("geo", self._locate()),
            da.FindNetworkInterface: lambda e: self.tasks.spawn("network", self._find_route()),
            da.ExtensionPush: lambda e: self.hub.push_extension(e.name, e.event, dict(e.payload)),
            da.JoinMeta: lambda e: self.hub.set_meta(dict(e.meta)),
            da.Changed: lambda e: self.listeners.properties_changed({e.name: e.value}),
            val.ReadValidation: lambda e: self.tasks.spawn("validation", self._read_validation()),
            val.MarkValidNow: lambda e: self.tasks.spawn("validate", self._mark_valid_policy()),
        }

    def announce_start(self) -> None:
        """Say once what the start found (the bootloader fell back)."""
        validation = self.core.device_api.validation
        if validation.auto_reverted:
            logger.warning(
                "the bootloader fell back from firmware %s",
                validation.reverted.get("version", "?"),
            )
            self.listeners.auto_reverted(dict(validation.reverted))

    async def _collect_health(self) -> None:
        sample = await asyncio.to_thread(self.device_io.sample_health)
        self._device(self.core.device_api.health_sampled(sample, self.device_io.wall_clock()))

    async def _locate(self) -> None:
        self._device(self.core.device_api.located(await self.device_io.locate()))

    async def _find_route(self) -> None:
        parts = urlsplit(self.hub.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        interface, kind = await self.device_io.route(parts.hostname or "", port)
        self._device(self.core.device_api.network_found(interface, kind))

    def _lock(self) -> asyncio.Lock:
        if self._kv_lock is None:
            self._kv_lock = asyncio.Lock()
        return self._kv_lock

    async def _read_validation(self) -> None:
        async with self._lock():
            try:
                kv = await asyncio.to_thread(self.device_io.read_kv)
            except KVError as exc:
                logger.warning("cannot read the KV store: %s", exc)
                return
        validated = val.firmware_validated(kv)
        self._device(self.core.device_api.validation_observed(validated, self.clock()))

    async def _write_valid(self) -> None:
        async with self._lock():
            kv = await asyncio.to_thread(self.device_io.read_kv)
            changes = val.mark_valid_changes(kv)
            logger.info("marking the running firmware valid: %s", ", ".join(sorted(changes)))
            kv = await asyncio.to_thread(self.device_io.update_kv, changes)
        validated = val.firmware_validated(kv)
        self._device(self.core.device_api.validation_observed(validated, self.clock()))
        if not validated:
            raise KVError("the KV store still says the firmware is not validated")

    async def _mark_valid_policy(self) -> None:
        try:
            await self._write_valid()
        except KVError as exc:
            self.perform(self.core.error(f"could not mark the firmware valid: {exc}"))

    # -- downloads the hub described ---------------------------------------------------------

    def download_verifier(self, offer: Offer) -> PartVerifier | None:
        info = offer.info
        if offer.source != "hub" or (
            info.size is None and info.checksum is None and not info.partials_checksums
        ):
            return None
        return PartVerifier(info.size, info.checksum, info.partials_checksums)

    def download_connected(self, request_id: str, url: str, journaled: Awaitable[None]) -> None:
        self.tasks.spawn("route", self._download_route(request_id, url, journaled))

    async def _download_route(self, request_id: str, url: str, journaled: Awaitable[None]) -> None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        interface, _kind = await self.device_io.route(parts.hostname or "", port)
        # The hub hears "started" once the update journal is on disk: a restart after it
        # tells the hub how the update ended (README, "... the daemon is killed").
        await asyncio.shield(journaled)
        self.perform(self.core.download_started(request_id, interface))

    # -- what faces ask (service_api.LinkService) ------------------------------------------

    async def mark_valid(self, caller: Caller) -> None:
        """``MarkValid``: the running firmware works; keep it (and tell the hub)."""
        logger.info("MarkValid by %s", caller.describe())
        self.core.device_api.validation.check_markable()
        try:
            await self._write_valid()
        except (KVError, OSError) as exc:
            raise NotPossible(f"could not mark the firmware valid: {exc}") from None

    def set_health_metric(self, name: str, value: float) -> None:
        self.core.device_api.health.set_metric(name, value)

    def set_health_check(self, name: str, passed: bool, note: str) -> None:
        self.core.device_api.health.set_check(name, passed, note)

    def raise_alarm(self, alarm_id: str, description: str) -> None:
        self.core.device_api.health.raise_alarm(alarm_id, description)

    def clear_alarm(self, alarm_id: str) -> None:
        if not self.core.device_api.health.clear_alarm(alarm_id):
            raise NotPossible(f"no alarm {alarm_id!r} is raised")

    async def health_report(self) -> dict[str, Any]:
        """The report a ``health:check`` would get now."""
        sample = await asyncio.to_thread(self.device_io.sample_health)
        api = self.core.device_api
        report = api.health_sampled(sample, self.device_io.wall_clock())[0]
        assert isinstance(report, da.ExtensionPush)
        return dict(report.payload["value"])

    async def set_update_mode(self, mode: str) -> str:
        """``set_update_mode``; the mode the hub holds afterwards."""
        if self.core.device_api.mode is None:
            raise NotPossible("the hub has not said it supports update modes")
        try:
            answer = await self.hub.set_update_mode(mode)
        except (StateError, HubConnectionError) as exc:
            raise NotPossible(f"cannot change the update mode: {exc}") from None
        return answer.mode

    async def check_for_update(self) -> Info:
        """Device-managed: ``check_update`` (no URL until applied); else the old way."""
        if not self.core.device_api.managed:
            return await super().check_for_update()  # type: ignore[misc,no-any-return]
        try:
            answer = await self.hub.check_update()
        except (StateError, HubConnectionError) as exc:
            raise NotPossible(f"cannot ask the hub: {exc}") from None
        if not answer.available or answer.firmware_meta is None:
            return {"update_available": 0}
        self.perform(self.core.managed_offer(answer.firmware_meta, self.clock()))
        out: dict[str, str | int] = {"update_available": 1}
        for key in ("uuid", "version", "product"):
            value = getattr(answer.firmware_meta, key)
            if value is not None:
                out[key] = value
        return out

    # -- properties --------------------------------------------------------------------------

    @property
    def firmware_validated(self) -> bool:
        return self.core.device_api.validation.validated

    @property
    def auto_revert_detected(self) -> bool:
        return self.core.device_api.validation.auto_reverted

    @property
    def update_mode(self) -> str:
        mode = self.core.device_api.mode
        return "" if mode is None else mode.mode

    @property
    def managed_updates_allowed(self) -> bool:
        mode = self.core.device_api.mode
        return mode is not None and mode.managed_updates_allowed

    @property
    def extensions(self) -> list[str]:
        return list(self.core.device_api.attached)

    @property
    def network_interface(self) -> str:
        network = self.core.device_api.network
        return "" if network is None else network[0]

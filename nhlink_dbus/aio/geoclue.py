"""Where the device is: GeoClue2 on the system bus, else a configured fixed location
(the I/O side of ``core/geo.py``).

GeoClue2's D-Bus API (``org.freedesktop.GeoClue2``, its documentation
``org.freedesktop.GeoClue2.{Manager,Client,Location}.xml``): the manager's
``GetClient()`` gives a client object; its ``DesktopId`` must be set before
``Start()`` (GeoClue's agent and ``/etc/geoclue/geoclue.conf`` authorise by it:
a system service needs ``[nhlink-dbus] allowed=true system=true`` there), and
``RequestedAccuracyLevel`` says how precise. After ``Start()`` the client
signals ``LocationUpdated(o old, o new)``; the new object carries
``Latitude``, ``Longitude`` (degrees) and ``Accuracy`` (metres). We subscribe
before ``Start()`` (a fix that comes at once is not missed), read the first
location, ``Stop()`` and ``DeleteClient()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from dbus_next.aio.message_bus import MessageBus

from nhlink_dbus import names
from nhlink_dbus.aio.dbus_calls import CallError, SignalWatch, call, get_property, set_property
from nhlink_dbus.core.geo import NO_LOCATION, Location, LocationError
from nhlink_dbus.core.records import dataclass

logger = logging.getLogger(__name__)

# GClueAccuracyLevel: NONE 0, COUNTRY 1, CITY 4, NEIGHBORHOOD 5, STREET 6, EXACT 8.
ACCURACY_EXACT: Final = 8


@dataclass(frozen=True, slots=True)
class FixedLocation:
    """A location from the configuration (``[geo] latitude/longitude/accuracy_m``)."""

    latitude: float
    longitude: float
    accuracy_m: float | None = None


class GeoClue:
    """One GeoClue2 question per :meth:`locate`; raises :class:`CallError` when GeoClue
    is not there, refuses, or gives no fix within ``timeout_s``."""

    def __init__(
        self, bus: MessageBus, *, desktop_id: str = "nhlink-dbus", timeout_s: float = 10.0
    ) -> None:
        self._bus = bus
        self.desktop_id = desktop_id
        self.timeout_s = timeout_s

    async def locate(self) -> Location:
        (client,) = await call(
            self._bus,
            names.GEOCLUE_BUS_NAME,
            names.GEOCLUE_MANAGER_PATH,
            names.GEOCLUE_MANAGER_INTERFACE,
            "GetClient",
        )
        try:
            return await self._locate_with(str(client))
        finally:
            with contextlib.suppress(CallError):
                await call(
                    self._bus,
                    names.GEOCLUE_BUS_NAME,
                    names.GEOCLUE_MANAGER_PATH,
                    names.GEOCLUE_MANAGER_INTERFACE,
                    "DeleteClient",
                    "o",
                    [client],
                )

    async def _locate_with(self, client: str) -> Location:
        bus = self._bus
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def updated(body: list[object]) -> None:
            if not found.done() and len(body) == 2 and str(body[1]) not in ("", "/"):
                found.set_result(str(body[1]))

        for prop, signature, value in (
            ("DesktopId", "s", self.desktop_id),
            ("RequestedAccuracyLevel", "u", ACCURACY_EXACT),
        ):
            await set_property(
                bus, names.GEOCLUE_BUS_NAME, client, names.GEOCLUE_CLIENT_INTERFACE, prop,
                signature, value,
            )  # fmt: skip
        watch = SignalWatch(
            bus,
            sender=names.GEOCLUE_BUS_NAME,
            path=client,
            interface=names.GEOCLUE_CLIENT_INTERFACE,
            member="LocationUpdated",
            on_signal=updated,
        )
        await watch.start()
        try:
            await call(bus, names.GEOCLUE_BUS_NAME, client, names.GEOCLUE_CLIENT_INTERFACE, "Start")
            try:
                # A client that already has a fix may have it before our match applied.
                current = await get_property(
                    bus, names.GEOCLUE_BUS_NAME, client, names.GEOCLUE_CLIENT_INTERFACE,
                    "Location",
                )  # fmt: skip
                if str(current) not in ("", "/") and not found.done():
                    found.set_result(str(current))
                async with asyncio.timeout(self.timeout_s):
                    where = await found
            except TimeoutError:
                raise CallError("nhlink.Timeout", f"no fix within {self.timeout_s:g} s") from None
            finally:
                with contextlib.suppress(CallError):
                    await call(
                        bus, names.GEOCLUE_BUS_NAME, client, names.GEOCLUE_CLIENT_INTERFACE, "Stop"
                    )
        finally:
            await watch.stop()
        values = {}
        for prop in ("Latitude", "Longitude", "Accuracy"):
            values[prop] = await get_property(
                bus, names.GEOCLUE_BUS_NAME, where, names.GEOCLUE_LOCATION_INTERFACE, prop
            )
        try:
            return Location(
                "geoclue",
                float(values["Latitude"]),
                float(values["Longitude"]),
                float(values["Accuracy"]),
            )
        except (TypeError, ValueError) as exc:
            raise CallError("nhlink.BadLocation", str(exc)) from None


class Locator:
    """GeoClue2 where present, else the fixed location, else the error reply."""

    def __init__(self, geoclue: GeoClue | None, fixed: FixedLocation | None) -> None:
        self.geoclue = geoclue
        self.fixed = fixed

    async def locate(self) -> Location | LocationError:
        problem = "GeoClue2 is not used (geo.geoclue = false)"
        if self.geoclue is not None:
            try:
                location = await self.geoclue.locate()
                logger.info("location from GeoClue2 (accuracy %s m)", location.accuracy_m)
                return location
            except CallError as exc:
                problem = f"GeoClue2: {exc}"
                logger.info("no location from GeoClue2: %s", exc)
        if self.fixed is not None:
            f = self.fixed
            return Location("manual", f.latitude, f.longitude, f.accuracy_m)
        return LocationError(NO_LOCATION, f"{problem}; no fixed location is configured")

"""The geo extension's answer (sans-I/O): ``geo:location:update``.

nerves_hub_link ``extensions/geo`` (388b391): the server pushes
``geo:location:request {}`` when the extension attaches (and every
``FEATURES_GEO_INTERVAL_MINUTES`` if set, nerves_hub_web ``extensions/geo.ex``);
the device answers ``{source, latitude, longitude, accuracy?}`` or
``{error_code, error_description}``; the server stores the map as the
connection's ``location``.

Where the location comes from (first that answers): GeoClue2 on the system
bus, else a fixed location from the configuration (``[geo]``), else the error.
"""

from __future__ import annotations

import math
from typing import Any, Final

from nhlink_dbus.core.records import dataclass

NO_LOCATION: Final = "NO_LOCATION"


@dataclass(frozen=True, slots=True)
class Location:
    """A position: degrees, and the accuracy radius in metres where known."""

    source: str
    latitude: float
    longitude: float
    accuracy_m: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latitude) and -90 <= self.latitude <= 90):
            raise ValueError(f"latitude {self.latitude!r} is not between -90 and 90")
        if not (math.isfinite(self.longitude) and -180 <= self.longitude <= 180):
            raise ValueError(f"longitude {self.longitude!r} is not between -180 and 180")
        if self.accuracy_m is not None and not (
            math.isfinite(self.accuracy_m) and self.accuracy_m >= 0
        ):
            raise ValueError("accuracy must be a finite number of metres >= 0")


@dataclass(frozen=True, slots=True)
class LocationError:
    code: str
    description: str


def update_payload(result: Location | LocationError) -> dict[str, Any]:
    """The ``geo:location:update`` payload (accuracy in whole metres, as a pos_integer)."""
    if isinstance(result, LocationError):
        return {"error_code": result.code, "error_description": result.description}
    out: dict[str, Any] = {
        "source": result.source,
        "latitude": result.latitude,
        "longitude": result.longitude,
    }
    if result.accuracy_m is not None:
        out["accuracy"] = max(1, round(result.accuracy_m))
    return out

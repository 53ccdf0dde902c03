"""The health extension's report (sans-I/O): parsers of /proc and /sys, the default
metrics, what kiosk apps add over D-Bus, and the ``health:report`` payload.

The report is nerves_hub_link's ``DeviceStatus`` (extensions/health, read at
388b391): ``{timestamp, metadata, alarms, metrics, checks, connectivity}``,
timestamp ISO-8601 UTC; alarms ``{id: description}``; metrics ``{name: number}``;
checks ``{name: {pass, note}}``. nerves_hub_web stores it and the metrics apart
(``lib/nerves_hub/extensions/health.ex``, read at 0bb6b5cc5).

Default metrics (the names of nerves_hub_link's metric sets CPU, Disk, Memory
and NetworkTraffic), each only where the system has it:

==============================  ===========================================================
``cpu_temp``                    °C, ``/sys/class/thermal/thermal_zone0/temp`` / 1000
``cpu_usage_percent``           busy share of ``/proc/stat``'s ``cpu`` line since the
                                previous sample, 2 decimals (os_mon's ``cpu_sup:util/0``)
``load_1min`` … ``load_15min``  ``/proc/loadavg``
``mem_size_mb``, ``mem_used_mb``  ``MemTotal`` and ``MemTotal - MemAvailable`` (``free``'s
                                *used*), kB / 1000 rounded, as nerves_hub_link divides
``mem_used_percent``            ``round(used_mb / size_mb * 100)``
``disk_total_kb``,              ``statvfs`` of the configured path (``/`` by default; the
``disk_available_kb``,          Elixir client reads ``/root``): size, space available to
``disk_used_percentage``        users, and ``df``'s Use% (used / (used + available), up)
``<iface>_bytes_received_total``  ``/proc/net/dev``, every interface but ``lo``
``<iface>_bytes_sent_total``
==============================  ===========================================================

Every parser returns a value or raises :class:`HealthParseError`.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import InvalidArgument, NotPossible

# Bounds on what kiosk apps may add (DESIGN: counts bounded, names validated).
MAX_APP_METRICS: Final = 32
MAX_CHECKS: Final = 32
MAX_ALARMS: Final = 32
MAX_TEXT: Final = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

DEFAULT_METRICS: Final = (
    "cpu_temp",
    "cpu_usage_percent",
    "load_1min",
    "load_5min",
    "load_15min",
    "mem_size_mb",
    "mem_used_mb",
    "mem_used_percent",
    "disk_total_kb",
    "disk_available_kb",
    "disk_used_percentage",
)
_TRAFFIC_SUFFIXES: Final = ("_bytes_received_total", "_bytes_sent_total")


class HealthParseError(ValueError):
    """A /proc or /sys text that is not what the kernel writes."""


# -- parsers -------------------------------------------------------------------------------


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """``/proc/loadavg``: the 1, 5 and 15 minute load averages."""
    parts = text.split()
    if len(parts) < 3:
        raise HealthParseError("loadavg: fewer than three fields")
    try:
        values = tuple(float(p) for p in parts[:3])
    except ValueError:
        raise HealthParseError("loadavg: not numbers") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise HealthParseError("loadavg: out of range")
    return values[0], values[1], values[2]


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat`` in clock ticks."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    """``/proc/stat``: user nice system idle iowait irq softirq steal of the ``cpu`` line
    (guest time is already counted in user and nice); idle and iowait are not busy."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            if len(fields) < 5:
                raise HealthParseError("stat: short cpu line")
            try:
                ticks = [int(f) for f in fields[1:9]]
            except ValueError:
                raise HealthParseError("stat: cpu times are not integers") from None
            if any(t < 0 for t in ticks):
                raise HealthParseError("stat: negative cpu time")
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            total = sum(ticks)
            return CpuTimes(total - idle, total)
    raise HealthParseError("stat: no cpu line")


def cpu_usage_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy share between two samples, 0..100 with 2 decimals; None without ticks between."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy < 0:
        return None
    return round(min(100.0, 100.0 * busy / total), 2)


@dataclass(frozen=True, slots=True)
class MemInfo:
    total_kb: int
    available_kb: int


def _ascii_digits(text: str) -> bool:
    # The kernel writes ASCII; str.isdigit() also takes "²", which int() refuses.
    return text.isascii() and text.isdigit()


def parse_meminfo(text: str) -> MemInfo:
    """``/proc/meminfo``: MemTotal and MemAvailable (kernels before 3.14: free + buffers +
    cached, what ``free`` shows as available there)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if parts and _ascii_digits(parts[0]):
            values[name.strip()] = int(parts[0])
    if "MemTotal" not in values:
        raise HealthParseError("meminfo: no MemTotal")
    total = values["MemTotal"]
    if "MemAvailable" in values:
        available = values["MemAvailable"]
    elif "MemFree" in values:
        available = values["MemFree"] + values.get("Buffers", 0) + values.get("Cached", 0)
    else:
        raise HealthParseError("meminfo: neither MemAvailable nor MemFree")
    if total <= 0:
        raise HealthParseError("meminfo: MemTotal is 0")
    return MemInfo(total, min(available, total))


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/net/dev``: ``{interface: (bytes received, bytes sent)}`` without ``lo``."""
    out: dict[str, tuple[int, int]] = {}
    lines = text.splitlines()
    if len(lines) < 2 or "|" not in lines[0]:
        raise HealthParseError("net/dev: no header")
    for line in lines[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            if line.strip():
                raise HealthParseError("net/dev: a line without an interface")
            continue
        fields = rest.split()
        if len(fields) < 16 or not all(_ascii_digits(f) for f in fields):
            raise HealthParseError("net/dev: bad counters")
        iface = name.strip()
        if not iface:
            raise HealthParseError("net/dev: empty interface name")
        if iface != "lo":
            out[iface] = (int(fields[0]), int(fields[8]))
    return out


def parse_thermal(text: str) -> float:
    """A thermal zone's ``temp`` (millidegrees Celsius) in °C."""
    try:
        millidegrees = int(text.strip())
    except ValueError:
        raise HealthParseError("thermal: not an integer") from None
    if not -273_150 <= millidegrees <= 1_000_000:
        raise HealthParseError("thermal: out of range")
    return millidegrees / 1000


@dataclass(frozen=True, slots=True)
class DiskStats:
    """The ``statvfs`` fields a report needs."""

    frsize: int
    blocks: int
    bfree: int
    bavail: int


def disk_metrics(disk: DiskStats) -> dict[str, int]:
    """Size and free space in kB and ``df``'s Use% (rounded up)."""
    if disk.blocks <= 0 or disk.frsize <= 0:
        return {}
    used = disk.blocks - disk.bfree
    denominator = used + disk.bavail
    percent = 0 if denominator <= 0 else -(-used * 100 // denominator)
    return {
        "disk_total_kb": disk.blocks * disk.frsize // 1024,
        "disk_available_kb": disk.bavail * disk.frsize // 1024,
        "disk_used_percentage": percent,
    }


# -- a sample of the system --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthSample:
    """What the readers found (None: not present on this system)."""

    loadavg: tuple[float, float, float] | None = None
    cpu_usage: float | None = None
    memory: MemInfo | None = None
    disk: DiskStats | None = None
    cpu_temp: float | None = None
    traffic: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def default_metrics(sample: HealthSample) -> dict[str, float | int]:
    """The metrics of the module docstring's table that the sample has."""
    out: dict[str, float | int] = {}
    if sample.cpu_temp is not None:
        out["cpu_temp"] = sample.cpu_temp
    if sample.cpu_usage is not None:
        out["cpu_usage_percent"] = sample.cpu_usage
    if sample.loadavg is not None:
        out["load_1min"], out["load_5min"], out["load_15min"] = sample.loadavg
    if sample.memory is not None:
        size_mb = round(sample.memory.total_kb / 1000)
        used_mb = round((sample.memory.total_kb - sample.memory.available_kb) / 1000)
        out["mem_size_mb"] = size_mb
        out["mem_used_mb"] = used_mb
        if size_mb > 0:
            out["mem_used_percent"] = round(used_mb / size_mb * 100)
    if sample.disk is not None:
        out.update(disk_metrics(sample.disk))
    for iface, (received, sent) in sorted(sample.traffic.items()):
        out[f"{iface}_bytes_received_total"] = received
        out[f"{iface}_bytes_sent_total"] = sent
    return out


# -- what kiosk apps add ---------------------------------------------------------------------


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{kind} {name!r}: 1 to 64 characters of A-Z a-z 0-9 _ . : -, "
            "starting with a letter or digit"
        )


def _check_text(kind: str, text: str) -> None:
    if len(text) > MAX_TEXT or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidArgument(f"{kind}: at most {MAX_TEXT} characters, no control characters")


@dataclass(frozen=True, slots=True)
class Check:
    passed: bool
    note: str


class HealthRegistry:
    """Metrics, checks and alarms set over D-Bus; each setter refuses a bad value with
    :class:`InvalidArgument` (and a new name past the bound with :class:`NotPossible`)
    and changes nothing then."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.checks: dict[str, Check] = {}
        self.alarms: dict[str, str] = {}

    def set_metric(self, name: str, value: float) -> None:
        _check_name("metric", name)
        if name in DEFAULT_METRICS or name.endswith(_TRAFFIC_SUFFIXES):
            raise InvalidArgument(f"metric {name!r} is one of the service's own")
        if not math.isfinite(value):
            raise InvalidArgument(f"metric {name!r}: the value must be a finite number")
        if name not in self.metrics and len(self.metrics) >= MAX_APP_METRICS:
            raise NotPossible(f"at most {MAX_APP_METRICS} metrics can be set")
        self.metrics[name] = float(value)

    def set_check(self, name: str, passed: bool, note: str) -> None:
        _check_name("check", name)
        _check_text("note", note)
        if name not in self.checks and len(self.checks) >= MAX_CHECKS:
            raise NotPossible(f"at most {MAX_CHECKS} checks can be set")
        self.checks[name] = Check(bool(passed), note)

    def raise_alarm(self, alarm_id: str, description: str) -> None:
        _check_name("alarm", alarm_id)
        _check_text("description", description)
        if alarm_id not in self.alarms and len(self.alarms) >= MAX_ALARMS:
            raise NotPossible(f"at most {MAX_ALARMS} alarms can be raised")
        self.alarms[alarm_id] = description

    def clear_alarm(self, alarm_id: str) -> bool:
        """Clear an alarm; False when it was not raised (nothing changes)."""
        _check_name("alarm", alarm_id)
        return self.alarms.pop(alarm_id, None) is not None


# -- the report ----------------------------------------------------------------------------


def iso_timestamp(wall_s: float) -> str:
    """``2026-12-07T10:11:12.345678Z``, as Elixir's DateTime encodes UTC."""
    moment = datetime.datetime.fromtimestamp(wall_s, datetime.UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def build_report(
    sample: HealthSample,
    registry: HealthRegistry,
    wall_s: float,
    *,
    alarms: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    connectivity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``value`` of ``health:report``: the service's own ``alarms`` with the apps'."""
    metrics: dict[str, float | int] = default_metrics(sample)
    metrics.update(registry.metrics)
    return {
        "timestamp": iso_timestamp(wall_s),
        "metadata": dict(metadata or {}),
        "alarms": {**dict(alarms or {}), **registry.alarms},
        "metrics": metrics,
        "checks": {n: {"pass": c.passed, "note": c.note} for n, c in registry.checks.items()},
        "connectivity": dict(connectivity or {}),
    }

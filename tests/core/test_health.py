"""The health report (core/health.py): /proc and /sys parsers (property tests: what the
kernel writes round-trips, anything else is HealthParseError), the default metrics,
what kiosk apps may add, and the DeviceStatus payload."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core import health
from nhlink_dbus.errors import InvalidArgument, NotPossible

ticks = st.integers(min_value=0, max_value=2**40)
iface = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)


def never_other_error(parse: Callable[[str], object], text: str) -> None:
    with contextlib.suppress(health.HealthParseError):
        parse(text)


@given(st.text())
def test_parsers_give_a_value_or_their_one_error(text: str) -> None:
    for parse in (
        health.parse_loadavg,
        health.parse_proc_stat,
        health.parse_meminfo,
        health.parse_net_dev,
        health.parse_thermal,
    ):
        never_other_error(parse, text)


@given(st.tuples(*[st.floats(0, 1000, allow_nan=False).map(lambda f: round(f, 2))] * 3))
def test_loadavg_round_trip(values: tuple[float, float, float]) -> None:
    text = " ".join(f"{v:.2f}" for v in values) + " 1/345 6789\n"
    assert health.parse_loadavg(text) == values


@given(st.lists(ticks, min_size=8, max_size=10))
def test_proc_stat_cpu_line(fields: list[int]) -> None:
    text = "cpu  " + " ".join(map(str, fields)) + "\ncpu0 1 2 3 4\nintr 5\n"
    times = health.parse_proc_stat(text)
    idle = fields[3] + fields[4]
    assert times == health.CpuTimes(sum(fields[:8]) - idle, sum(fields[:8]))


def test_cpu_usage_between_samples() -> None:
    before, after = health.CpuTimes(100, 1000), health.CpuTimes(175, 1100)
    assert health.cpu_usage_percent(before, after) == 75.0
    assert health.cpu_usage_percent(after, after) is None


@given(st.integers(1, 2**40), st.integers(0, 2**40), st.booleans())
def test_meminfo_round_trip(total: int, available: int, has_available: bool) -> None:
    lines = [f"MemTotal:       {total} kB", "MemFree:        7 kB", "Buffers: 1 kB"]
    if has_available:
        lines.append(f"MemAvailable:   {available} kB")
    info = health.parse_meminfo("\n".join(lines) + "\nHugePages_Total:       0\n")
    expected = min(available, total) if has_available else min(8, total)
    assert info == health.MemInfo(total, expected)


@given(st.dictionaries(iface, st.tuples(ticks, ticks), max_size=5), st.integers(1, 10))
def test_net_dev_round_trip_any_split(counters: dict[str, tuple[int, int]], cut: int) -> None:
    head = (
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
    )
    rows = ["    lo: 9 1 0 0 0 0 0 0 9 1 0 0 0 0 0 0"]
    for name, (rx, tx) in counters.items():
        rows.append(f"{name:>6}: {rx} 3 0 0 0 0 0 0 {tx} 4 0 0 0 0 0 0")
    text = head + "\n".join(rows) + "\n"
    assert health.parse_net_dev(text) == {k: v for k, v in counters.items() if k != "lo"}
    with pytest.raises(health.HealthParseError):
        health.parse_net_dev(text[:cut])  # a header cut short is refused


def test_thermal_and_disk() -> None:
    assert health.parse_thermal("48312\n") == 48.312
    with pytest.raises(health.HealthParseError):
        health.parse_thermal("hot")
    # df: Use% = used / (used + available), rounded up
    assert health.disk_metrics(health.DiskStats(4096, 1000, 300, 250)) == {
        "disk_total_kb": 4000,
        "disk_available_kb": 1000,
        "disk_used_percentage": 74,
    }
    assert health.disk_metrics(health.DiskStats(4096, 0, 0, 0)) == {}


def test_default_metrics_names_and_units() -> None:
    sample = health.HealthSample(
        loadavg=(0.5, 0.25, 0.125),
        cpu_usage=12.5,
        memory=health.MemInfo(total_kb=8_000_000, available_kb=6_000_000),
        disk=health.DiskStats(1024, 100, 50, 40),
        cpu_temp=41.5,
        traffic={"eth0": (10, 20)},
    )
    assert health.default_metrics(sample) == {
        "cpu_temp": 41.5,
        "cpu_usage_percent": 12.5,
        "load_1min": 0.5,
        "load_5min": 0.25,
        "load_15min": 0.125,
        "mem_size_mb": 8000,
        "mem_used_mb": 2000,
        "mem_used_percent": 25,
        "disk_total_kb": 100,
        "disk_available_kb": 40,
        "disk_used_percentage": 56,
        "eth0_bytes_received_total": 10,
        "eth0_bytes_sent_total": 20,
    }
    assert health.default_metrics(health.HealthSample()) == {}


def test_this_machine_parses() -> None:
    """The real /proc of the test machine is what the kernel writes."""
    proc = Path("/proc")
    assert health.parse_loadavg((proc / "loadavg").read_text())
    assert health.parse_proc_stat((proc / "stat").read_text()).total > 0
    assert health.parse_meminfo((proc / "meminfo").read_text()).total_kb > 0
    assert isinstance(health.parse_net_dev((proc / "net/dev").read_text()), dict)


def test_registry_validates_and_bounds() -> None:
    r = health.HealthRegistry()
    r.set_metric("queue_depth", 3)
    r.set_check("printer", True, "ready")
    r.raise_alarm("door_open", "the cabinet door is open")
    for bad in ("", "-x", "a b", "é", "x" * 65):
        with pytest.raises(InvalidArgument):
            r.set_metric(bad, 1)
    with pytest.raises(InvalidArgument, match="service's own"):
        r.set_metric("cpu_temp", 1)
    with pytest.raises(InvalidArgument, match="service's own"):
        r.set_metric("eth0_bytes_sent_total", 1)
    with pytest.raises(InvalidArgument):
        r.set_metric("nan", math.nan)
    with pytest.raises(InvalidArgument):
        r.set_check("c", True, "x" * 257)
    with pytest.raises(InvalidArgument):
        r.raise_alarm("a", "line\nbreak")
    for i in range(health.MAX_APP_METRICS - 1):
        r.set_metric(f"m{i}", i)
    with pytest.raises(NotPossible):
        r.set_metric("one_too_many", 1)
    r.set_metric("queue_depth", 4)  # changing an existing one is fine at the bound
    assert r.metrics["queue_depth"] == 4.0 and len(r.metrics) == health.MAX_APP_METRICS
    assert r.clear_alarm("door_open") and not r.clear_alarm("door_open")


def test_report_is_device_status() -> None:
    r = health.HealthRegistry()
    r.set_metric("queue_depth", 3)
    r.set_check("printer", False, "paper out")
    r.raise_alarm("door_open", "open")
    report = health.build_report(
        health.HealthSample(loadavg=(1.0, 2.0, 3.0)),
        r,
        1_700_000_000.25,
        alarms={"nhlink.FirmwareReverted": "x"},
        connectivity={"eth0": {"type": "ethernet"}},
    )
    assert report == {
        "timestamp": "2023-11-14T22:13:20.250000Z",
        "metadata": {},
        "alarms": {"nhlink.FirmwareReverted": "x", "door_open": "open"},
        "metrics": {"load_1min": 1.0, "load_5min": 2.0, "load_15min": 3.0, "queue_depth": 3.0},
        "checks": {"printer": {"pass": False, "note": "paper out"}},
        "connectivity": {"eth0": {"type": "ethernet"}},
    }

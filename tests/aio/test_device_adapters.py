"""The device API's adapters against real peers: GeoClue2 (our dbusmock template) and
NetworkManager (dbusmock's) on a private system bus, the kernel's route table, and
/proc read by the health probe."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_next.aio.message_bus import MessageBus

from nhlink_dbus.aio.dbus_calls import CallError
from nhlink_dbus.aio.geoclue import FixedLocation, GeoClue, Locator
from nhlink_dbus.aio.health_probe import HealthProbe
from nhlink_dbus.aio.network_info import NetworkProbe, interface_of, networkmanager_kind, sysfs_kind
from nhlink_dbus.core.geo import Location, LocationError
from nhlink_dbus.core.health import parse_meminfo
from tests.harness import PrivateSystemBus, system_bus_connection
from tests.harness.system_mocks import GeoClueMock, NetworkManagerMock


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


@pytest.fixture
async def bus(system_bus: PrivateSystemBus) -> AsyncIterator[MessageBus]:
    async with system_bus_connection() as connection:
        yield connection


async def test_geoclue_gives_its_fix_after_start(
    system_bus: PrivateSystemBus, bus: MessageBus
) -> None:
    mock = GeoClueMock(system_bus, latitude=52.52, longitude=13.405, accuracy=25.0, delay_ms=300)
    try:
        location = await GeoClue(bus, timeout_s=10).locate()
        assert location == Location("geoclue", 52.52, 13.405, 25.0)
        calls = mock.log()
        # DesktopId before Start (GeoClue's agent refuses a client without one), then
        # Stop and DeleteClient: nothing is left running.
        assert calls.index("Start") < calls.index("Stop") < calls.index("DeleteClient")
    finally:
        mock.stop()


async def test_geoclue_without_a_fix_times_out_and_the_locator_falls_back(
    system_bus: PrivateSystemBus, bus: MessageBus
) -> None:
    mock = GeoClueMock(system_bus, fix=False)
    try:
        with pytest.raises(CallError, match=r"no fix within 0\.3 s"):
            await GeoClue(bus, timeout_s=0.3).locate()
        fixed = FixedLocation(48.85, 2.35, 1000.0)
        assert await Locator(GeoClue(bus, timeout_s=0.3), fixed).locate() == Location(
            "manual", 48.85, 2.35, 1000.0
        )
    finally:
        mock.stop()
    # No GeoClue2 on the bus at all, and nothing configured: the error answer.
    answer = await Locator(GeoClue(bus, timeout_s=5), None).locate()
    assert isinstance(answer, LocationError) and answer.code == "NO_LOCATION"
    assert "ServiceUnknown" in answer.description or "NameHasNoOwner" in answer.description


async def test_networkmanager_classifies_by_device_type(
    system_bus: PrivateSystemBus, bus: MessageBus
) -> None:
    mock = NetworkManagerMock(system_bus)
    try:
        mock.add_wifi("wifi0", "wlp2s0")  # the hub's name rule calls this "unknown"
        mock.add_ethernet("eth0", "enp0s3")
        assert await networkmanager_kind(bus, "wlp2s0") == "wifi"
        assert await networkmanager_kind(bus, "enp0s3") == "ethernet"
        assert await networkmanager_kind(bus, "nosuch0") is None
        probe = NetworkProbe(bus)
        assert await probe.kind("wlp2s0") == "wifi"
        assert await probe.kind("lo") == "local"  # NetworkManager does not know it: sysfs
    finally:
        mock.stop()


async def test_route_to_a_host_names_its_interface() -> None:
    assert await NetworkProbe().route("127.0.0.1", 4000) == ("lo", "local")
    assert interface_of("127.0.0.1") == "lo"
    assert await NetworkProbe().route("host.invalid", 1) == (None, "unknown")


def test_sysfs_kind(tmp_path: Path) -> None:
    def iface(name: str, arp: int, uevent: str, *extra: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "type").write_text(f"{arp}\n")
        (folder / "uevent").write_text(uevent)
        for item in extra:
            (folder / item).mkdir()

    iface("wlp2s0", 1, "INTERFACE=wlp2s0\nDEVTYPE=wlan\n", "wireless", "device")
    iface("enp0s3", 1, "INTERFACE=enp0s3\n", "device")
    iface("br0", 1, "DEVTYPE=bridge\nINTERFACE=br0\n")
    iface("wwan0", 65534, "DEVTYPE=wwan\n", "device")
    iface("lo", 772, "INTERFACE=lo\n")
    kinds = {name: sysfs_kind(name, tmp_path) for name in os.listdir(tmp_path)}
    assert kinds == {
        "wlp2s0": "wifi",
        "enp0s3": "ethernet",
        "br0": "unknown",
        "wwan0": "mobile",
        "lo": "local",
    }
    assert sysfs_kind("missing", tmp_path) == "unknown"


def test_health_probe_reads_this_system() -> None:
    probe = HealthProbe()
    sample = probe.sample()
    meminfo = parse_meminfo(Path("/proc/meminfo").read_text())
    assert sample.memory is not None and sample.memory.total_kb == meminfo.total_kb
    assert sample.loadavg is not None and sample.disk is not None
    assert sample.cpu_usage is None or 0 <= sample.cpu_usage <= 100
    assert "lo" not in sample.traffic


def test_health_probe_leaves_out_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "loadavg").write_text("garbage\n")
    probe = HealthProbe(disk_path=str(tmp_path / "none"), proc=tmp_path, thermal=tmp_path / "t")
    sample = probe.sample()
    assert (sample.loadavg, sample.memory, sample.disk, sample.cpu_temp) == (None,) * 4
    assert sample.traffic == {} and sample.cpu_usage is None

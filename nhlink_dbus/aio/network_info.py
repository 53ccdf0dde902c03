"""Which network interface reaches a host, and what kind it is (for
``report_network_interface``, ``started``'s ``downloader_network_interface`` and
the health report's connectivity).

* The interface: the kernel's route to the host, asked without sending a packet
  (a UDP socket ``connect()`` then ``getsockname()``), and the interface that
  holds that local address (IPv4: ``SIOCGIFADDR`` per interface; IPv6:
  ``/proc/net/if_inet6``). nerves_hub_link does the same from its socket's
  address (``network_interface.ex``).
* The kind, honestly: NetworkManager's ``DeviceType`` of that interface over
  D-Bus where NetworkManager runs (``GetDeviceByIpIface``; ``NM_DEVICE_TYPE``
  1 ethernet, 2 wifi, 8 modem, 32 loopback), else what ``/sys/class/net``
  says (``wireless``/``phy80211`` → wifi, ``DEVTYPE=wwan`` → mobile, loopback →
  local, a physical Ethernet device → ethernet), else unknown. A name alone is
  not trusted (``wlp2s0`` is wifi though the hub's own rule calls it unknown).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import socket
import struct
from pathlib import Path
from typing import Final

from dbus_next.aio.message_bus import MessageBus

from nhlink_dbus import names
from nhlink_dbus.aio.dbus_calls import CallError, call, get_property

logger = logging.getLogger(__name__)

SIOCGIFADDR: Final = 0x8915
NM_TYPES: Final = {1: "ethernet", 2: "wifi", 8: "mobile", 32: "local"}
ARPHRD_ETHER: Final = 1
ARPHRD_LOOPBACK: Final = 772


def local_address_to(host: str, port: int) -> str | None:
    """The local address the kernel would use to reach ``host`` (blocking: DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        logger.debug("route to %s: %s", host, exc)
        return None
    for family, kind, proto, _name, address in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)
                return str(probe.getsockname()[0])
        except OSError as exc:
            logger.debug("route to %s via %s: %s", host, address[0], exc)
    return None


def _ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def interface_of(address: str, if_inet6: Path = Path("/proc/net/if_inet6")) -> str | None:
    """The interface that holds ``address`` (blocking)."""
    ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
    if ip.version == 4:
        for _index, name in socket.if_nameindex():
            if _ipv4_of(name) == str(ip):
                return name
        return None
    try:
        lines = if_inet6.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and ipaddress.ip_address(bytes.fromhex(fields[0])) == ip:
            return fields[5]
    return None


def sysfs_kind(name: str, root: Path = Path("/sys/class/net")) -> str:
    """The kind of ``name`` from ``/sys/class/net`` (see the module docstring)."""
    base = root / name
    if (base / "wireless").exists() or (base / "phy80211").exists():
        return "wifi"
    try:
        uevent = (base / "uevent").read_text()
        arp_type = int((base / "type").read_text().strip())
    except (OSError, ValueError):
        return "unknown"
    if "DEVTYPE=wwan" in uevent.split():
        return "mobile"
    if arp_type == ARPHRD_LOOPBACK:
        return "local"
    if arp_type == ARPHRD_ETHER and (base / "device").exists() and "DEVTYPE=" not in uevent:
        return "ethernet"
    return "unknown"


async def networkmanager_kind(bus: MessageBus, name: str) -> str | None:
    """NetworkManager's type of ``name``; None when NetworkManager does not know it."""
    try:
        (device,) = await call(
            bus, names.NM_BUS_NAME, names.NM_PATH, names.NM_INTERFACE,
            "GetDeviceByIpIface", "s", [name], timeout=5.0,
        )  # fmt: skip
        kind = await get_property(
            bus, names.NM_BUS_NAME, str(device), names.NM_DEVICE_INTERFACE, "DeviceType",
            timeout=5.0,
        )  # fmt: skip
    except CallError as exc:
        logger.debug("NetworkManager does not classify %s: %s", name, exc)
        return None
    return NM_TYPES.get(int(kind), "unknown")


class NetworkProbe:
    """Answers "which interface reaches HOST:PORT, and what is it" (NetworkManager
    through ``bus`` when given)."""

    def __init__(self, bus: MessageBus | None = None) -> None:
        self._bus = bus

    async def route(self, host: str, port: int) -> tuple[str | None, str]:
        address = await asyncio.to_thread(local_address_to, host, port)
        if address is None:
            return None, "unknown"
        name = await asyncio.to_thread(interface_of, address)
        if name is None:
            return None, "unknown"
        return name, await self.kind(name)

    async def kind(self, name: str) -> str:
        if self._bus is not None:
            kind = await networkmanager_kind(self._bus, name)
            if kind is not None:
                return kind
        return await asyncio.to_thread(sysfs_kind, name)

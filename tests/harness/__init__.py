"""Reusable test harness: a private system bus and a mock logind on it.

Fixtures (``tests/conftest.py``): ``system_bus`` (a :class:`PrivateSystemBus`,
with ``DBUS_SYSTEM_BUS_ADDRESS`` pointing at it for the test) and
``logind_mock`` (a :class:`LogindMock` on that bus).
"""

from tests.harness.bus import PrivateSystemBus, busctl, private_system_bus, start_system_bus
from tests.harness.clients import close_dbus_next, system_bus_connection
from tests.harness.logind import InhibitorRecord, LogindMock

__all__ = [
    "InhibitorRecord",
    "LogindMock",
    "PrivateSystemBus",
    "busctl",
    "close_dbus_next",
    "private_system_bus",
    "start_system_bus",
    "system_bus_connection",
]

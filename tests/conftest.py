"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import LogindMock, PrivateSystemBus, start_system_bus


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateSystemBus]:
    """A private system-type dbus-daemon for this test; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    bus = start_system_bus()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
def logind_mock(system_bus: PrivateSystemBus) -> Iterator[LogindMock]:
    """python-dbusmock's logind template, owning org.freedesktop.login1 on ``system_bus``."""
    mock = LogindMock(system_bus)
    try:
        yield mock
    finally:
        mock.stop()

"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True, scope="session")
def _no_journal_on_the_host() -> Iterator[None]:
    """Tests keep the update journal in their own folders ([service] state_dir), never
    in the real state directory of the machine running them."""
    from nhlink_dbus.config import ServiceConfig  # noqa: PLC0415

    journal = Path(ServiceConfig().journal_path)
    before = journal.exists()
    yield
    assert before or not journal.exists(), f"a test wrote {journal}"

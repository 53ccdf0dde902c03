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
def _nothing_of_ours_on_the_host() -> Iterator[None]:
    """Tests keep the update journal, the archives and media mounts in their own folders
    ([service] state_dir, [archives] dir, [media] mount_dir), never in the real folders
    of the machine running them."""
    from nhlink_dbus.config import ArchivesConfig, MediaConfig, ServiceConfig  # noqa: PLC0415

    paths = [
        Path(ServiceConfig().journal_path),
        Path(ServiceConfig().state_dir),
        Path(ArchivesConfig().dir),
        Path(MediaConfig().mount_dir),
    ]
    before = {path: path.exists() for path in paths}
    yield
    made = [str(path) for path in paths if path.exists() and not before[path]]
    assert not made, f"tests wrote {made} on the host"

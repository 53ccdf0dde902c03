"""aio.logind against python-dbusmock's logind on a private system bus."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_next.aio.message_bus import MessageBus

from nhlink_dbus import names
from nhlink_dbus.aio.logind import Inhibitor, Logind
from nhlink_dbus.errors import LogindError
from tests.harness import (
    InhibitorRecord,
    LogindMock,
    PrivateSystemBus,
    close_dbus_next,
    system_bus_connection,
)


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


@pytest.fixture
async def bus(logind_mock: LogindMock) -> AsyncIterator[MessageBus]:
    async with system_bus_connection() as connection:
        yield connection


@pytest.fixture
def logind(bus: MessageBus) -> Logind:
    return Logind(bus)


def wait_for_inhibitors(mock: LogindMock, count: int) -> list[InhibitorRecord]:
    """logind drops an entry when it sees the hang-up; give it a moment."""
    deadline = time.monotonic() + 60  # guards a hang only
    while len(found := mock.inhibitors()) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return found


# --- Inhibit ------------------------------------------------------------------------


async def test_inhibitor_listed_while_held_and_gone_after_release(
    logind: Logind, logind_mock: LogindMock
) -> None:
    assert logind_mock.inhibitors() == []
    inhibitor = await logind.inhibit()
    try:
        (record,) = logind_mock.inhibitors()
        assert record.what == (
            "shutdown:sleep:idle:handle-power-key:handle-suspend-key:"
            "handle-hibernate-key:handle-lid-switch"
        )
        assert (record.who, record.why, record.mode) == (
            "nhlink-dbus",
            "Applying a firmware update",
            "block",
        )
        assert inhibitor.held
        assert not os.get_inheritable(inhibitor.fileno())
    finally:
        inhibitor.release()
    assert not inhibitor.held
    assert wait_for_inhibitors(logind_mock, 0) == []
    inhibitor.release()  # a second release changes nothing


async def test_inhibitor_as_async_context_manager(logind: Logind, logind_mock: LogindMock) -> None:
    async with await logind.inhibit(what="sleep", why="test", mode="delay") as inhibitor:
        assert [(r.what, r.why, r.mode) for r in logind_mock.inhibitors()] == [
            ("sleep", "test", "delay")
        ]
        fd = inhibitor.fileno()
    assert wait_for_inhibitors(logind_mock, 0) == []
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="released"):
        inhibitor.fileno()


async def test_unreleased_inhibitor_warns_and_closes(
    logind: Logind, logind_mock: LogindMock
) -> None:
    inhibitor = await logind.inhibit()
    with pytest.warns(ResourceWarning, match="unreleased logind inhibitor"):
        inhibitor.__del__()
    assert not inhibitor.held
    assert wait_for_inhibitors(logind_mock, 0) == []


async def test_inhibit_refused_when_logind_is_gone(logind: Logind, logind_mock: LogindMock) -> None:
    logind_mock.stop()
    with pytest.raises(LogindError, match="ServiceUnknown"):
        await logind.inhibit()


async def test_a_bus_without_fd_passing_is_refused(logind_mock: LogindMock) -> None:
    # The daemon would never deliver Inhibit's reply (it carries a descriptor).
    async with system_bus_connection(negotiate_unix_fd=False) as plain:
        with pytest.raises(ValueError, match="negotiate_unix_fd=True"):
            Logind(plain)


# --- Reboot -------------------------------------------------------------------------


async def test_reboot_calls_reboot_false_once(logind: Logind, logind_mock: LogindMock) -> None:
    await logind.reboot(retries=3, retry_delay=1.0)
    assert logind_mock.reboot_calls() == [False]


async def test_reboot_retries_until_logind_accepts(
    logind: Logind, logind_mock: LogindMock, tmp_path: Path
) -> None:
    logind_mock.fail_reboot(times=2)
    marker = tmp_path / "fallback-ran"
    await logind.reboot(retries=3, retry_delay=0.01, fallback_command=["touch", str(marker)])
    assert logind_mock.reboot_calls() == [False, False, False]
    assert not marker.exists()


async def test_reboot_waits_between_attempts(logind: Logind, logind_mock: LogindMock) -> None:
    logind_mock.fail_reboot(times=1)
    started = time.monotonic()
    await logind.reboot(retries=1, retry_delay=0.3)
    assert time.monotonic() - started >= 0.3
    assert logind_mock.reboot_calls() == [False, False]


async def test_reboot_falls_back_to_the_command(
    logind: Logind, logind_mock: LogindMock, tmp_path: Path
) -> None:
    logind_mock.fail_reboot()
    marker = tmp_path / "fallback-ran"
    await logind.reboot(
        retries=2,
        retry_delay=0,
        fallback_command=[sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"],
    )
    assert marker.read_text() == "x"
    assert logind_mock.reboot_calls() == [False, False, False]


async def test_reboot_total_failure_names_both_causes(
    logind: Logind, logind_mock: LogindMock
) -> None:
    logind_mock.fail_reboot()
    with pytest.raises(LogindError) as caught:
        await logind.reboot(
            retries=1, retry_delay=0, fallback_command=["sh", "-c", "echo no way >&2; exit 3"]
        )
    message = str(caught.value)
    assert "org.freedesktop.login1.OperationInProgress: mock logind refuses to reboot" in message
    assert message.endswith("sh exited with status 3: no way")
    assert logind_mock.reboot_calls() == [False, False]


async def test_reboot_without_fallback_raises(logind: Logind, logind_mock: LogindMock) -> None:
    logind_mock.fail_reboot()
    with pytest.raises(LogindError, match=r"^reboot failed: logind: .*OperationInProgress"):
        await logind.reboot(retries=0, retry_delay=0)
    assert logind_mock.reboot_calls() == [False]


async def test_reboot_fallback_command_missing(logind: Logind, logind_mock: LogindMock) -> None:
    logind_mock.fail_reboot()
    with pytest.raises(LogindError, match="/nonexistent/reboot: No such file or directory"):
        await logind.reboot(retries=0, retry_delay=0, fallback_command=["/nonexistent/reboot"])


async def test_reboot_fallback_command_hangs(logind: Logind, logind_mock: LogindMock) -> None:
    logind_mock.fail_reboot()
    with pytest.raises(LogindError, match=r"sleep: no exit within 0\.2 s"):
        await logind.reboot(
            retries=0, retry_delay=0, fallback_command=["sleep", "30"], fallback_timeout=0.2
        )


async def test_reboot_without_logind_uses_fallback(
    logind: Logind, logind_mock: LogindMock, tmp_path: Path
) -> None:
    logind_mock.stop()
    marker = tmp_path / "fallback-ran"
    await logind.reboot(retries=1, retry_delay=0, fallback_command=["touch", str(marker)])
    assert marker.exists()


async def test_reboot_on_a_closed_bus_fails_fast(
    bus: MessageBus, logind_mock: LogindMock, tmp_path: Path
) -> None:
    await close_dbus_next(bus)
    marker = tmp_path / "fallback-ran"
    async with asyncio.timeout(5):
        await Logind(bus).reboot(retries=2, retry_delay=0, fallback_command=["touch", str(marker)])
    assert marker.exists()
    assert logind_mock.reboot_calls() == []


async def test_reboot_rejects_negative_retries(logind: Logind) -> None:
    with pytest.raises(ValueError):
        await logind.reboot(retries=-1, retry_delay=0)


def test_inhibitor_repr_shows_state() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    inhibitor = Inhibitor(read_end, names.INHIBIT_WHAT, "block")
    assert f"fd={read_end}" in repr(inhibitor)
    inhibitor.release()
    assert "fd=None" in repr(inhibitor)


async def test_system_bus_fixture_points_dbus_next_at_the_private_bus(
    system_bus: PrivateSystemBus, bus: MessageBus
) -> None:
    assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == system_bus.address
    assert bus.connected

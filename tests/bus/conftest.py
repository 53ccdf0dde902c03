"""Fixtures for the bus face: the fake service served on the private system bus,
client connections, and running Debian's python as another uid."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dbus_next.aio.message_bus import MessageBus

from nhlink_dbus.bus.server import BusFace, serve
from tests.bus.fake_service import FakeLinkService
from tests.harness import PrivateSystemBus, system_bus_connection
from tests.harness.users import NOBODY, SYSTEM_PYTHON, GroupMember, as_user_argv, group_member

__all__ = ["NOBODY", "SYSTEM_PYTHON", "GroupMember", "as_user_argv"]


def _tree_for_other_uids() -> Path:
    """A world-readable copy of what other uids run: our package, dbus-next, call_as.py.

    The checkout (and its venv) may sit below a folder only root can enter (a CI
    clone in a mktemp -d folder does), so other uids must not read them in place.
    """
    import dbus_next  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="nhlink-other-uid-", dir="/tmp"))
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "nhlink_dbus", root / "nhlink_dbus", ignore=skip
    )
    shutil.copytree(Path(dbus_next.__file__).parent, root / "dbus_next", ignore=skip)
    shutil.copyfile(Path(__file__).with_name("call_as.py"), root / "call_as.py")
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    atexit.register(shutil.rmtree, root, True)
    return root


OTHER_UID_ROOT = _tree_for_other_uids()
CALL_AS = OTHER_UID_ROOT / "call_as.py"


@pytest.fixture(autouse=True)
async def _asyncio_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


@pytest.fixture(autouse=True)
def _no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """dbus-next and asyncio report mishandled replies as ERROR logs, not exceptions.

    A test expecting an ERROR record checks it and then clears ``caplog``.
    """
    caplog.set_level(logging.DEBUG)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
def service() -> FakeLinkService:
    return FakeLinkService()


@pytest.fixture
async def face(system_bus: PrivateSystemBus, service: FakeLinkService) -> AsyncIterator[BusFace]:
    served = await serve(service)
    try:
        yield served
    finally:
        await served.close()


@pytest.fixture
async def client(face: BusFace) -> AsyncIterator[MessageBus]:
    async with system_bus_connection() as bus:
        yield bus


@pytest.fixture(scope="session")
def nhlink_member() -> Iterator[GroupMember]:
    """A user whose only supplementary group is ``nhlink`` (created, then removed)."""
    with group_member("nhlink") as member:
        yield member


def system_python_env(bus: PrivateSystemBus) -> dict[str, str]:
    return {
        **bus.env,
        "PYTHONPATH": str(OTHER_UID_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
    }


async def run_as(
    bus: PrivateSystemBus, uid: int, *args: str, init_groups: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run Debian's python as ``uid`` with ``args`` (in a thread: the service must answer)."""
    argv = [*as_user_argv(uid, init_groups=init_groups), SYSTEM_PYTHON, *args]
    return await asyncio.to_thread(
        subprocess.run,
        argv,
        env=system_python_env(bus),
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

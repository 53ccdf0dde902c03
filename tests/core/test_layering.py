"""``core/`` stays sans-I/O (docs/architecture.md): it imports nothing of the adapters,
the bus, the service, the daemon's tools or the dev tools, and no clock, file, socket,
process or thread module. Read from the sources, so a new import fails here at once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nhlink_dbus.core

CORE = Path(nhlink_dbus.core.__file__).parent
MODULES = sorted(CORE.glob("*.py"))

# Ours that core may use; everything else of ours is an outer room.
OURS_ALLOWED = ("nhlink_dbus.core", "nhlink_dbus.errors")
OURS = ("nhlink_dbus", "nhlink_devtools", "nhlink_kiosk")
# The standard library's clocks, files, sockets, processes, threads and event loops.
IO_MODULES = {
    "asyncio", "fcntl", "http", "io", "mmap", "pathlib", "select", "selectors", "shutil",
    "signal", "socket", "ssl", "subprocess", "tempfile", "threading", "time",
}  # fmt: skip
# os is allowed for its entropy only (backoff.csprng seeds as nerves_hub_link does).
OS_ALLOWED = {"urandom"}


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_core_imports_no_outer_room_and_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for name in imported(tree):
        top = name.split(".")[0]
        if top in OURS and not name.startswith(OURS_ALLOWED):
            bad.append(name)
        if top in IO_MODULES or name.startswith("urllib.request"):
            bad.append(name)
    assert bad == [], f"{path.name} imports {sorted(set(bad))}"


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_core_opens_no_file_and_uses_no_os_call_but_entropy(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "open" not in calls and "print" not in calls and "input" not in calls
    os_uses = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    }
    assert os_uses <= OS_ALLOWED, f"{path.name} uses os.{sorted(os_uses - OS_ALLOWED)}"


def test_the_check_sees_every_core_module() -> None:
    assert len(MODULES) > 20 and (CORE / "decisions.py") in MODULES

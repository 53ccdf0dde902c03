"""The prompts stand apart from the daemon (so they can be packaged apart), and their
command lines; the Qt prompt's binding module; the shipped autostart files."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from nhlink_kiosk import cli, qt
from nhlink_kiosk.prompt import DEFAULT_LATER_DELAY_S
from tests.kiosk.gui import XServer

REPO = Path(__file__).resolve().parents[2]
KIOSK = REPO / "nhlink_kiosk"


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_the_daemon_never_imports_the_prompts() -> None:
    for package in ("nhlink_dbus", "nhlink_devtools"):
        offenders = [
            p for p in (REPO / package).rglob("*.py") if "nhlink_kiosk" in p.read_text("utf-8")
        ]
        assert offenders == []


def test_the_prompts_need_nothing_of_ours_but_the_d_bus_api() -> None:
    for path in KIOSK.glob("*.py"):
        roots = {name.split(".")[0] for name in imported(path)}
        assert not roots & {"nhlink_dbus", "nhlink_devtools"}, path
    # The Qt prompt speaks D-Bus through QtDBus only.
    for module in ("qt.py", "qt_binding.py"):
        roots = {name.split(".")[0] for name in imported(KIOSK / module)}
        assert not roots & {"dbus_next", "dbus", "gi", "jeepney", "dbus_fast"}, module
    # The shared rules import neither a toolkit nor a D-Bus library.
    roots = {name.split(".")[0] for name in imported(KIOSK / "prompt.py")}
    assert roots <= {"__future__", "enum", "math", "collections", "dataclasses"}, roots


def test_importing_the_daemon_loads_no_gui_library(tmp_path: Path) -> None:
    # (dbus_next itself imports gi.repository.GLib when it is installed: not a GUI)
    code = (
        "import sys, nhlink_dbus.daemon, nhlink_dbus.ctl\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('nhlink_kiosk', 'gbulb', 'PyQt5', 'PyQt6') or m.startswith('gi.repository.G')"
        " and m != 'gi.repository.GLib'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "delay"), [([], DEFAULT_LATER_DELAY_S), (["--later-delay", "3"], 3)]
)
def test_later_delay(argv: list[str], delay: int) -> None:
    assert cli.parser("x", "").parse_args(argv).later_delay == delay


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be 1..604800 seconds, not 0"),
        ("604801", "must be 1..604800 seconds, not 604801"),
        ("1.5", "not a whole number of seconds: '1.5'"),
    ],
)
def test_a_bad_later_delay_is_refused_by_name(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.parser("nhlink-kiosk-gtk", "").parse_args(["--later-delay", value])
    assert exit_info.value.code == 2
    assert f"argument --later-delay: {message}" in capsys.readouterr().err


def run_prompt(prompt: str, *python_options: str, **env: str) -> tuple[int, list[str]]:
    """Run a prompt as the package does; its exit status and its own stderr lines."""
    done = subprocess.run(
        ["/usr/bin/python3", *python_options, "-m", f"nhlink_kiosk.{prompt}"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    mine = [
        line for line in done.stderr.splitlines() if line.startswith(f"nhlink-kiosk-{prompt}: ")
    ]
    return done.returncode, mine


@pytest.mark.parametrize("prompt", ["gtk", "qt"])
def test_without_a_system_bus_a_prompt_says_so(
    prompt: str, tmp_path: Path, xserver: XServer
) -> None:
    status, lines = run_prompt(
        prompt, DISPLAY=xserver.display, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/none"
    )
    assert status == 1
    assert lines[-1].startswith(f"nhlink-kiosk-{prompt}: cannot use the system bus: "), lines


@pytest.mark.parametrize("prompt", ["gtk", "qt"])
def test_without_a_display_a_prompt_says_so(prompt: str) -> None:
    status, lines = run_prompt(prompt)
    assert status == 1
    assert lines[-1].startswith(f"nhlink-kiosk-{prompt}: cannot open the display"), lines


def test_qt_mnemonics() -> None:
    assert qt.mnemonic("_Install now") == "&Install now"
    assert qt.mnemonic("Fish _& chips") == "Fish &&& chips"


def test_the_autostart_files_run_the_installed_commands() -> None:
    for prompt in ("gtk", "qt"):
        desktop = configparser.ConfigParser(interpolation=None)
        desktop.optionxform = str  # type: ignore[assignment,method-assign]
        desktop.read(REPO / "kiosk" / f"nhlink-kiosk-{prompt}.desktop")
        entry = desktop["Desktop Entry"]
        assert entry["Type"] == "Application"
        assert entry["Exec"].split()[0] == f"nhlink-kiosk-{prompt}"
        unit = (REPO / "kiosk" / f"nhlink-kiosk-{prompt}.service").read_text()
        assert f"ExecStart=/usr/bin/nhlink-kiosk-{prompt}" in unit


@pytest.mark.parametrize(("prompt", "module"), [("gtk", "gi"), ("qt", "PyQt5")])
def test_without_its_libraries_a_prompt_says_which(prompt: str, module: str) -> None:
    status, lines = run_prompt(prompt, "-S")  # -S: none of Debian's python3-* packages
    assert status == 2
    assert lines[-1].startswith(f"nhlink-kiosk-{prompt}: cannot start: "), lines
    assert module in lines[-1]

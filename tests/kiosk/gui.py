"""Real windows for the kiosk prompt tests: Xvfb, the prompts as processes, xdotool,
screenshots, and a recorder of the service's signals.

* :class:`XServer` — ``Xvfb -displayfd`` (the server picks a free display: other
  helpers may run X too), no window manager.
* :class:`KioskPrompt` — ``nhlink-kiosk-gtk`` / ``nhlink-kiosk-qt`` as a child
  process, by default as the packaged prompt runs: Debian's ``/usr/bin/python3``
  with python3-gi, python3-gbulb, python3-pyqt5 and python3-dbus-next, and only
  ``nhlink_kiosk`` itself on ``PYTHONPATH`` (a world-readable copy: other uids run
  it; nothing of nhlink_dbus is importable there). No session bus.
* :class:`DecideCalls` — every ``Decide`` call on the bus (``dbus-monitor``).
* Screenshots go to :data:`SCREENSHOTS` (``$NHLINK_TEST_ARTIFACTS/screenshots``,
  default ``test-artifacts/screenshots`` in the checkout; the README names it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nhlink_dbus import names
from tests.harness import PrivateSystemBus
from tests.harness.users import SYSTEM_PYTHON, as_user_argv

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("NHLINK_TEST_ARTIFACTS", REPO / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
HANG_GUARD_S = 60.0  # only ever reached when something hangs
POLL_S = 0.05


def kiosk_tree() -> Path:
    """A world-readable copy of ``nhlink_kiosk`` (the checkout may sit below a 0700 folder)."""
    root = Path(tempfile.mkdtemp(prefix="nhlink-kiosk-", dir="/tmp"))
    shutil.copytree(
        REPO / "nhlink_kiosk",
        root / "nhlink_kiosk",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return root


class XServer:
    """``Xvfb -displayfd``: it chooses a free display number and writes it to a pipe."""

    def __init__(self, screens: int = 2, width: int = 1024, height: int = 768) -> None:
        read_fd, write_fd = os.pipe()
        geometry = []
        for screen in range(screens):
            geometry += ["-screen", str(screen), f"{width}x{height}x24"]
        self.process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), *geometry, "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                number = pipe.readline().strip()  # EOF if Xvfb dies: then fail below
            if not number.isdigit():
                raise RuntimeError(f"Xvfb did not start (status {self.process.poll()})")
        except BaseException:
            self.stop()
            raise
        self.display = f":{number.decode()}"

    def screen(self, number: int) -> str:
        """DISPLAY for one screen: two prompts on two screens never cover each other."""
        return f"{self.display}.{number}"

    def run(self, *argv: str, screen: int = 0) -> str:
        """An X client (xdotool, import) against this display; its stdout."""
        done = subprocess.run(
            argv,
            env={**os.environ, "DISPLAY": self.screen(screen)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode not in (0, 1):  # xdotool search: 1 = nothing found
            raise RuntimeError(f"{argv} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def windows(self, pid: int, title: str = "", visible: bool = True) -> list[str]:
        """Window ids of process ``pid`` whose title matches the regex ``title``."""
        args = ["xdotool", "search", "--all"]
        if visible:
            args.append("--onlyvisible")
        args += ["--pid", str(pid), "--name", title or "."]
        return self.run(*args).split()

    def title(self, window: str) -> str:
        return self.run("xdotool", "getwindowname", window).rstrip("\n")

    def focused(self) -> str:
        """The window with the keyboard focus ("" when none: PointerRoot)."""
        out = self.run("xdotool", "getwindowfocus")
        return out.strip()

    def key(self, window: str, *keys: str, focus: bool = True) -> None:
        """Type ``keys`` (XTEST), after giving ``window`` the keyboard focus as a click
        would (``focus``), or to whichever window has it."""
        focusing = ["windowfocus", "--sync", window] if focus else []
        self.run("xdotool", *focusing, "key", "--clearmodifiers", *keys)

    def screenshot(self, window: str, name: str, screen: int = 0) -> Path:
        """The window (on ``screen``) as a PNG under :data:`SCREENSHOTS`."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        self.run("import", "-window", window, str(path), screen=screen)
        assert path.stat().st_size > 1000, path
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class PromptRun:
    """How a prompt is started: which interpreter, as whom, with what on its path."""

    python: str = SYSTEM_PYTHON
    uid: int | None = None  # None: as root (the test's user)
    init_groups: bool = True  # with the user's groups (nhlink), or none at all
    pythonpath: Path | None = None  # the kiosk tree; None: the checkout (root only)


class KioskPrompt:
    """``python -m nhlink_kiosk.<toolkit> --verbose ARGS`` on ``x`` and ``bus``."""

    def __init__(
        self,
        toolkit: str,
        x: XServer,
        bus: PrivateSystemBus,
        log: Path,
        how: PromptRun,
        args: Sequence[str] = (),
        screen: int = 0,
    ) -> None:
        self.toolkit = toolkit
        self.x = x
        self.screen = screen
        self.log = log
        argv = [how.python, "-m", f"nhlink_kiosk.{toolkit}", "--verbose", *args]
        if how.uid is not None:
            argv = [*as_user_argv(how.uid, init_groups=how.init_groups), *argv]
        # No DBUS_SESSION_BUS_ADDRESS: a kiosk session may have no session bus.
        environment = {
            "PATH": "/usr/bin:/bin",
            "DISPLAY": x.screen(screen),
            "DBUS_SYSTEM_BUS_ADDRESS": bus.address,
            "HOME": "/nonexistent" if how.uid is not None else os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(how.pythonpath or REPO),
        }
        self._fh = log.open("ab")
        self.process = subprocess.Popen(
            argv,
            env=environment,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def until(self, what: str, check: Callable[[], Any]) -> Any:
        """Poll ``check`` until it returns something true (or the prompt exits)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + HANG_GUARD_S
        while True:
            value = check()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.toolkit} prompt exited ({self.process.returncode}) waiting for "
                    f"{what}\n{self.text()}"
                )
            if loop.time() > end:
                raise AssertionError(f"timed out waiting for {what}\n{self.text()[-4000:]}")
            await asyncio.sleep(POLL_S)

    async def wait_log(self, pattern: str, count: int = 1) -> re.Match[str]:
        """The ``count``-th match of the regex ``pattern`` in the prompt's stderr."""

        def found() -> re.Match[str] | None:
            matches = list(re.finditer(pattern, self.text(), re.MULTILINE))
            return matches[count - 1] if len(matches) >= count else None

        match: re.Match[str] = await self.until(f"log {pattern!r} (#{count})", found)
        return match

    async def wait_window(self, title: str) -> str:
        """The prompt's visible window whose title matches ``title``."""
        windows: list[str] = await self.until(
            f"a window titled {title!r}", lambda: self.x.windows(self.pid, title)
        )
        assert len(windows) == 1, windows
        return windows[0]

    def screenshot(self, window: str, name: str) -> Path:
        return self.x.screenshot(window, name, self.screen)

    async def type_keys(self, window: str, *keys: str) -> None:
        """Type ``keys`` once ``window`` has the keyboard focus, which the prompt takes
        itself (there is no window manager to give it)."""
        await self.until(f"the keyboard focus on {window}", lambda: self.x.focused() == window)
        self.x.key(window, *keys, focus=False)

    async def wait_hidden(self) -> None:
        await self.until("no visible window", lambda: not self.x.windows(self.pid))

    async def wait_title(self, window: str, pattern: str) -> str:
        title: str = await self.until(
            f"title {pattern!r}",
            lambda: (t := self.x.title(window)) and re.search(pattern, t) and t,
        )
        return title

    def stop(self) -> int:
        """SIGTERM; the prompt's exit status (0: it stopped cleanly)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._fh.close()
        return self.process.returncode


class DecideCalls:
    """Every ``Decide`` method call on the bus, as root's ``dbus-monitor`` sees it."""

    def __init__(self, bus: PrivateSystemBus, path: Path) -> None:
        self.path = path
        self._fh = path.open("wb")
        rule = f"type='method_call',interface='{names.INTERFACE}',member='Decide'"
        self.process = subprocess.Popen(
            ["dbus-monitor", "--system", rule],
            env=bus.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def request_ids(self) -> list[str]:
        """The first argument of each call seen so far."""
        text = self.path.read_text(errors="replace")
        return re.findall(r'member=Decide\n\s+string "([^"]*)"', text)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        self._fh.close()

"""nhlinkctl against the fake service on the private system bus.

Most commands run in-process (``ctl.run``: the same code as the console script,
on the test's loop so the service can answer); the console script itself, the
not-running message and the refusal of another uid run as real processes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nhlink_dbus import ctl
from nhlink_dbus.bus.server import BusFace
from tests.bus.conftest import NOBODY, run_as
from tests.bus.fake_service import FakeLinkService
from tests.harness import PrivateSystemBus

NHLINKCTL = Path(sys.executable).with_name("nhlinkctl")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def nhlinkctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await ctl.run(argv, out, err)
    return status, out.getvalue(), err.getvalue()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- one-shot commands -----------------------------------------------------------------


async def test_status(face: BusFace) -> None:
    status, out, err = await nhlinkctl("status")
    assert (status, err) == (0, "")
    assert "state:      awaiting-decision" in out
    assert "connected:  yes" in out
    assert "firmware:   version 1.1.0 (product kiosk, uuid running-uuid)" in out
    assert "decisions:  apply after 30000 ms" in out


async def test_status_json(face: BusFace) -> None:
    status, out, _ = await nhlinkctl("--json", "status")
    assert status == 0
    data = json.loads(out)
    assert data["State"] == "awaiting-decision"
    assert data["CurrentFirmware"]["uuid"] == "running-uuid"
    assert data["ReconnectBackoff"] == []


async def test_pending(face: BusFace) -> None:
    status, out, _ = await nhlinkctl("pending")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("u-1  update  version 1.2.0 (")
    assert lines[1] == "a-1  archive  version 0.3 (source hub, uuid arch-1)"
    status, out, _ = await nhlinkctl("--json", "pending")
    assert json.loads(out)[0]["info"]["size"] == 123456789


async def test_pending_none(face: BusFace, service: FakeLinkService) -> None:
    service.pending.clear()
    assert await nhlinkctl("pending") == (0, "no pending requests\n", "")
    assert await nhlinkctl("--json", "pending") == (0, "[]\n", "")


async def test_decide(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("decide", "u-1", "apply") == (0, "u-1: apply\n", "")
    status, out, _ = await nhlinkctl("--json", "decide", "a-1", "reschedule", "--delay", "60000")
    assert status == 0
    assert json.loads(out) == {"request_id": "a-1", "decision": "reschedule", "delay_ms": 60000}
    assert [c[1:4] for c in service.calls] == [("u-1", "apply", 0), ("a-1", "reschedule", 60000)]


async def test_decide_refused_by_the_service_says_why(face: BusFace) -> None:
    status, out, err = await nhlinkctl("decide", "u-1", "download")
    assert (status, out) == (1, "")
    assert (
        err == "nhlinkctl: 'download' is not a decision for an update (apply, ignore, reschedule)\n"
    )
    status, _, err = await nhlinkctl("decide", "zzz", "apply")
    assert err == "nhlinkctl: no pending request 'zzz'\n"


async def test_decide_usage_errors(face: BusFace, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        await nhlinkctl("decide", "u-1", "maybe")
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert (await nhlinkctl("decide", "u-1", "reschedule", "--delay", "-5"))[0] == 2


async def test_check(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("check") == (0, "no update available\n", "")
    service.check_result = {"version": "2.0.0", "uuid": "n", "url": "https://x/y?sig=1"}
    assert await nhlinkctl("check") == (0, "update available: version 2.0.0 (uuid n)\n", "")
    _, out, _ = await nhlinkctl("--json", "check")
    assert json.loads(out) == {"version": "2.0.0", "uuid": "n"}


async def test_install_passes_the_file_as_a_descriptor(
    face: BusFace, service: FakeLinkService, tmp_path: Path
) -> None:
    fw = tmp_path / "update.fw"
    fw.write_bytes(b"firmware bytes")
    status, out, err = await nhlinkctl("install", str(fw))
    assert (status, err) == (0, "")
    assert out == f"installing {fw}: request file-1\n"
    assert service.installed == [b"firmware bytes"]
    status, out, _ = await nhlinkctl("--json", "install", str(fw))
    assert json.loads(out) == {"request_id": "file-1"}


async def test_install_missing_file(face: BusFace, service: FakeLinkService) -> None:
    status, _, err = await nhlinkctl("install", "/nonexistent/x.fw")
    assert status == 1
    assert err == "nhlinkctl: cannot open /nonexistent/x.fw: No such file or directory\n"
    assert service.calls == []


async def test_reconnect(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("reconnect") == (0, "reconnecting\n", "")
    assert service.calls == [("reconnect",)]


async def test_backoff(face: BusFace, service: FakeLinkService) -> None:
    assert await nhlinkctl("backoff") == (0, "backoff: default\n", "")
    assert await nhlinkctl("backoff", "1000", "5000") == (0, "backoff: 1000 5000 ms\n", "")
    assert service.reconnect_backoff == [1000, 5000]
    _, out, _ = await nhlinkctl("--json", "backoff", "--reset")
    assert json.loads(out) == {"ReconnectBackoff": []}
    assert service.reconnect_backoff == []


# --- watch -----------------------------------------------------------------------------


async def test_watch_follows_events(face: BusFace, service: FakeLinkService) -> None:
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(ctl.run(["watch"], out, err))
    try:
        await wait_for(lambda: "state awaiting-decision" in out.getvalue())
        face_listener = service.listeners[0]
        face_listener.decision_made("u-1", "apply", 0, "uid=0 :1.7")
        face_listener.properties_changed({"State": "updating"})
        for percent in (0, 50, 100):
            face_listener.fwup_progress(percent)
        face_listener.update_finished("u-1", True, "")
        face_listener.reboot_scheduled(5000)
        await wait_for(lambda: "reboot scheduled" in out.getvalue())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert out.getvalue().splitlines() == [
        "state awaiting-decision, connected, version 0.1.0",
        "decided u-1: apply by uid=0 :1.7",
        "State: updating",
        "[..............................]   0%",
        "[###############...............]  50%",
        "[##############################] 100%",
        "update u-1 succeeded",
        "reboot scheduled in 5 s",
    ]


async def test_watch_on_a_terminal_draws_a_bar_and_counts_down(
    face: BusFace, service: FakeLinkService
) -> None:
    out = Terminal()
    task = asyncio.create_task(ctl.run(["watch"], out, io.StringIO()))
    try:
        await wait_for(lambda: "state" in out.getvalue())
        service.listeners[0].fwup_progress(30)
        service.listeners[0].reboot_scheduled(1200)
        await wait_for(lambda: "rebooting now" in out.getvalue())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    text = out.getvalue()
    assert "\r\x1b[K[#########.....................]  30%\n" in text
    assert "\r\x1b[Krebooting in 2 s\r\x1b[Krebooting in 1 s\r\x1b[Krebooting now" in text


async def test_watch_json_and_service_restart(
    system_bus: PrivateSystemBus, service: FakeLinkService
) -> None:
    out = io.StringIO()
    task = asyncio.create_task(ctl.run(["--json", "watch"], out, io.StringIO()))
    from nhlink_dbus.bus.server import serve  # noqa: PLC0415

    try:
        await wait_for(lambda: '"running": false' in out.getvalue())
        face = await serve(service)
        try:
            await wait_for(lambda: '"running": true' in out.getvalue())
            service.listeners[0].fwup_message("error", 0, "corrupt")
            await wait_for(lambda: "FwupMessage" in out.getvalue())
        finally:
            await face.close()
        await wait_for(lambda: out.getvalue().count('"running": false') == 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events == [
        {"event": "status", "running": False},
        {"event": "service", "running": True},
        {"event": "FwupMessage", "kind": "error", "code": 0, "message": "corrupt"},
        {"event": "service", "running": False},
    ]


# --- processes: the console script, not running, refused ------------------------------


def test_console_script_not_running(system_bus: PrivateSystemBus) -> None:
    result = subprocess.run(
        [str(NHLINKCTL), "status"],
        env=system_bus.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"nhlinkctl: {ctl.NOT_RUNNING}\n"


def test_no_system_bus(tmp_path: Path) -> None:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none"}
    result = subprocess.run(
        [sys.executable, "-m", "nhlink_dbus.ctl", "reconnect"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("nhlinkctl: cannot connect to the system bus: ")


async def test_another_user_is_told_how_to_get_access(
    system_bus: PrivateSystemBus, face: BusFace, service: FakeLinkService
) -> None:
    refused = await run_as(system_bus, NOBODY, "-m", "nhlink_dbus.ctl", "decide", "u-1", "apply")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "nhlinkctl: not allowed: run as root or as a member of group nhlink\n"
    shown = await run_as(system_bus, NOBODY, "-m", "nhlink_dbus.ctl", "--json", "status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["State"] == "awaiting-decision"
    assert service.calls == []

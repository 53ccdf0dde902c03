"""The composition root in-process with fake adapters (no subprocess, no bus).

A fake hub (records pushes, lets the test deliver events), a fake logind and a
fake update runner stand where the real adapters go; the root and the real
core decide everything in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import pytest

from nhlink_dbus.aio.appliers import OnMessage, OnProgress
from nhlink_dbus.aio.journal_store import JournalStore
from nhlink_dbus.aio.logind import Logind
from nhlink_dbus.aio.update_runner import UpdateJob, UpdateOutcome
from nhlink_dbus.config import Config, load_config
from nhlink_dbus.core import hub_messages as hm
from nhlink_dbus.core import hub_session as hs
from nhlink_dbus.core import link, records, recovery
from nhlink_dbus.core import update_status as us
from nhlink_dbus.errors import NotPossible, UnknownRequest
from nhlink_dbus.service import NhlinkService
from nhlink_dbus.service_api import Caller, Info
from tests.harness.fresh import run_fresh

ROOT_CALLER = Caller(0, ":1.42")
FWKEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SIGNED_URL = "https://files.example/fw.fw?X-Amz-Signature=s3cr3t"
KV = {
    "nerves_fw_active": "a",
    "a.nerves_fw_uuid": "running-uuid",
    "a.nerves_fw_version": "1.0.0",
    "nerves_serial_number": "kiosk-7",
}


class FakeHub:
    """Stands for HubClient: the service's events arrive through ``deliver``."""

    instances: list[FakeHub] = []

    def __init__(self, settings: object, device: object, *, on_event: Callable[..., object],
                 reconnect_backoff: Callable[[], object]) -> None:  # fmt: skip
        self.on_event = on_event
        self.device = device
        self.url = "wss://hub.example/socket?token=abc"
        self.pushes: list[tuple[str, object]] = []
        self.stopped = asyncio.Event()
        FakeHub.instances.append(self)

    def deliver(self, event: object) -> None:
        self.on_event(event)

    async def run(self) -> None:
        await self.stopped.wait()

    def push(self, event: str, payload: dict[str, Any]) -> None:
        self.pushes.append((event, payload))

    def push_extension(self, name: str, event: str, payload: dict[str, Any]) -> None:
        self.pushes.append((f"{name}:{event}", payload))

    def set_meta(self, meta: dict[str, bool]) -> None:
        self.pushes.append(("meta", meta))

    def push_rebooting(self) -> None:
        self.pushes.append(("rebooting", None))

    def set_downloading(self, uuid: str | None) -> None:
        self.pushes.append(("downloading", uuid))

    def set_backoff(self, delays: object) -> None:
        self.pushes.append(("backoff", delays))

    def reconnect(self) -> None:
        self.pushes.append(("reconnect", None))


class FakeLogind:
    def __init__(self) -> None:
        self.reboots: list[tuple[int, float, object]] = []
        self.rebooted = asyncio.Event()

    async def reboot(self, *, retries: int, retry_delay: float, fallback_command: object) -> None:
        self.reboots.append((retries, retry_delay, fallback_command))
        self.rebooted.set()


class Recorder:
    """A LinkListener that records every call and wakes waiters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.changed = asyncio.Event()

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        self.changed.set()

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]

    async def wait_for(self, name: str, count: int = 1) -> list[tuple[Any, ...]]:
        async with asyncio.timeout(30):
            while len(self.named(name)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.named(name)

    def update_available(self, request_id: str, info: Info) -> None:
        self._record("update_available", request_id, info)

    def archive_available(self, request_id: str, info: Info) -> None:
        self._record("archive_available", request_id, info)

    def archive_ready(self, request_id: str, info: Info, path: str) -> None:
        self._record("archive_ready", request_id, info, path)

    def decision_made(self, request_id: str, decision: str, delay_ms: int, by: str) -> None:
        self._record("decision_made", request_id, decision, delay_ms, by)

    def fwup_progress(self, percent: int) -> None:
        self._record("fwup_progress", percent)

    def fwup_message(self, kind: str, code: int, message: str) -> None:
        self._record("fwup_message", kind, code, message)

    def update_finished(self, request_id: str, success: bool, message: str) -> None:
        self._record("update_finished", request_id, success, message)

    def error(self, message: str) -> None:
        self._record("error", message)

    def identify(self) -> None:
        self._record("identify")

    def disconnected(self, reason: str) -> None:
        self._record("disconnected", reason)

    def reboot_scheduled(self, delay_ms: int) -> None:
        self._record("reboot_scheduled", delay_ms)

    def properties_changed(self, changed: Mapping[str, object]) -> None:
        self._record("properties_changed", dict(changed))

    def media_added(self, device: str, mount_point: str, candidates: int) -> None:
        self._record("media_added", device, mount_point, candidates)

    def media_removed(self, device: str) -> None:
        self._record("media_removed", device)


def make_config(tmp_path: Path, extra: str = "") -> Config:
    (tmp_path / "secret").write_text("s" * 32 + "\n")
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "kv.env").write_text("".join(f"{k}={v}\n" for k, v in KV.items()))
    (tmp_path / "boot_id").write_text("boot-1\n")
    path = tmp_path / "nhlink.toml"
    path.write_text(
        f"""
[hub]
url = "wss://hub.example"
[hub.shared_secret]
key = "nhp_product"
secret_file = "{tmp_path / "secret"}"
[firmware]
kv = "file:{tmp_path / "kv.env"}"
devpath = "{tmp_path / "disk.img"}"
applier = "builtin"
public_keys = ["{FWKEY}"]
[reboot]
delay_ms = 0
retries = 2
retry_delay_ms = 250
command = ["/sbin/reboot", "-f"]
[service]
state_dir = "{tmp_path / "state"}"
boot_id_file = "{tmp_path / "boot_id"}"
[archives]
dir = "{tmp_path / "archives"}"
{extra}
"""
    )
    return load_config(str(path))


class Runner:
    """A fake update runner: reports progress, then the outcome it was given."""

    def __init__(self, outcome: UpdateOutcome | BaseException) -> None:
        self.outcome = outcome
        self.jobs: list[UpdateJob] = []

    async def __call__(
        self, job: UpdateJob, logind: Logind | None, on_progress: OnProgress, on_message: OnMessage
    ) -> UpdateOutcome:
        self.jobs.append(job)
        for percent in (0, 50, 50, 100):
            on_progress(percent)
        on_message("ok", 0, "")
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class PausingRunner(Runner):
    """Reports 0 and 40 at once, then 100 only after ``resume`` is set."""

    def __init__(self, outcome: UpdateOutcome) -> None:
        super().__init__(outcome)
        self.resume = asyncio.Event()

    async def __call__(
        self, job: UpdateJob, logind: Logind | None, on_progress: OnProgress, on_message: OnMessage
    ) -> UpdateOutcome:
        self.jobs.append(job)
        on_progress(0)
        on_progress(40)
        await self.resume.wait()
        on_progress(100)
        on_message("ok", 0, "")
        assert not isinstance(self.outcome, BaseException)
        return self.outcome


class NoUdev:
    """Stands for UdevMonitor: no device is ever seen (the host's udev stays untouched)."""

    def __init__(self, on_device: Callable[..., object]) -> None:
        self.on_device = on_device

    def start(self) -> list[object]:
        return []

    def close(self) -> None:
        pass


async def started(config: Config, runner: Runner, **kw: Any) -> tuple[NhlinkService, Recorder]:
    FakeHub.instances.clear()
    kw.setdefault("udev_monitor", NoUdev)
    service = await NhlinkService.create(
        config, hub_factory=FakeHub, logind=FakeLogind(), run_update=runner, boot_token="boot", **kw
    )
    recorder = Recorder()
    service.add_listener(recorder, decides=True)
    return service, recorder


async def test_held_back_progress_reaches_the_bus_when_its_interval_is_over(
    tmp_path: Path,
) -> None:
    """40 comes right after 0 and is held back; the service's timer shows it once the
    100 ms are over, while the update is still running (the runner waits until then)."""
    runner = PausingRunner(UpdateOutcome(True, "", True))
    service, rec = await started(make_config(tmp_path), runner)
    hub = FakeHub.instances[0]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        hub.deliver(hs.Connected())
        hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new", version="2.0.0")))
        ((rid, _info),) = await rec.wait_for("update_available")
        service.decide(rid, "apply", 0, ROOT_CALLER)
        assert await rec.wait_for("fwup_progress", 2) == [(0,), (40,)]
        assert ({"Progress": 40},) in rec.named("properties_changed")
        runner.resume.set()
        await rec.wait_for("update_finished")
        hub.stopped.set()
        await task
    assert rec.named("fwup_progress") == [(0,), (40,), (100,)]


async def test_update_from_hub_offer_to_logind_reboot(tmp_path: Path) -> None:
    runner = Runner(UpdateOutcome(True, "", True))
    service, rec = await started(make_config(tmp_path), runner)
    hub = FakeHub.instances[0]
    assert service.device_identifier == "kiosk-7"
    assert "token" not in service.server_url
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        hub.deliver(hs.Connected())
        hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new", version="2.0.0")))
        ((rid, info),) = await rec.wait_for("update_available")
        assert rid.startswith("u-boot-") and info["uuid"] == "new"
        assert "s3cr3t" not in repr(rec.calls)
        assert service.state == "awaiting-decision"
        assert [p.request_id for p in service.pending_requests()] == [rid]
        service.decide(rid, "apply", 0, ROOT_CALLER)
        await rec.wait_for("update_finished")
        logind = service.logind
        assert isinstance(logind, FakeLogind)
        await asyncio.wait_for(logind.rebooted.wait(), 30)
        hub.stopped.set()
        await task
    assert rec.named("decision_made") == [(rid, "apply", 0, "uid=0 :1.42")]
    # On the bus at most every 100 ms: 50 came right after 0, and 100 (shown at once)
    # passed it over.
    assert rec.named("fwup_progress") == [(0,), (100,)]
    assert rec.named("update_finished") == [(rid, True, "")]
    assert rec.named("reboot_scheduled") == [(0,)]
    # [reboot] reaches logind as configured: retries, their delay, the fallback.
    assert logind.reboots == [(2, 0.25, ("/sbin/reboot", "-f"))]
    # 2.9+ statuses; progress to the hub at most every 500 ms, a final 100 always.
    updating = [p for e, p in hub.pushes if e == "fwup_progress"]
    assert updating[0] == {"stage": "updating", "value": 0}
    assert updating[-1] == {"stage": "updating", "value": 100}
    assert [p for p in hub.pushes if p[0] != "fwup_progress"] == [
        ("status_update", {"status": "received"}),
        ("downloading", "new"),
        ("downloading", None),
        ("status_update", {"status": "completed"}),
    ]
    (job,) = runner.jobs
    assert job.url == SIGNED_URL and job.request.devpath == str(tmp_path / "disk.img")
    assert job.request.public_keys == (FWKEY,) and "s3cr3t" not in repr(job)
    assert service.state == "rebooting"
    with pytest.raises(UnknownRequest):
        service.decide(rid, "apply", 0, ROOT_CALLER)


async def test_decision_timeout_comes_from_the_engine(tmp_path: Path) -> None:
    config = make_config(tmp_path, '[decisions]\ntimeout_ms = 50\ndefault_update = "ignore"')
    service, rec = await started(config, Runner(UpdateOutcome(True, "", True)))
    hub = FakeHub.instances[0]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
        ((_rid, decision, _delay, by),) = await rec.wait_for("decision_made")
        hub.stopped.set()
        await task
    assert (decision, by) == ("ignore", "timeout") and service.state == "idle"


async def test_a_failing_runner_is_never_lost(tmp_path: Path) -> None:
    service, rec = await started(make_config(tmp_path), Runner(RuntimeError("boom")))
    hub = FakeHub.instances[0]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        service.core.set_deciders(0)  # nobody to ask: the default client applies
        hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
        ((_rid, ok, message),) = await rec.wait_for("update_finished")
        errors = await rec.wait_for("error", 2)
        hub.stopped.set()
        await task
    assert (ok, message) == (False, "internal error: RuntimeError")
    failed = {"status": "failed", "reason": "internal error: RuntimeError"}
    assert ("status_update", failed) in hub.pushes
    assert any("update task" in e[0] for e in errors), errors
    assert service.state == "failed"


class Hanging(Runner):
    """An update that never ends; ``gate`` is set once it would write its first byte
    (after the job's ``before_first_byte``, as the real runner waits for it)."""

    def __init__(self) -> None:
        super().__init__(UpdateOutcome(True, "", True))
        self.gate = asyncio.Event()

    async def __call__(self, job: UpdateJob, *args: Any) -> UpdateOutcome:
        assert job.before_first_byte is not None
        await job.before_first_byte
        self.gate.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")


async def test_service_stop_ends_a_running_update_with_one_outcome(tmp_path: Path) -> None:
    hanging = Hanging()
    service, rec = await started(make_config(tmp_path), hanging)
    hub = FakeHub.instances[0]
    task = asyncio.create_task(service.run())
    service.core.set_deciders(0)
    hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
    await asyncio.wait_for(hanging.gate.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ((_rid, ok, message),) = rec.named("update_finished")
    assert (ok, message) == (False, "the service stopped during the update")
    assert service.tasks.running == 0


async def test_not_configured_runs_says_so_and_contacts_no_hub(tmp_path: Path) -> None:
    # The file the Debian package installs has no [hub] table.
    (tmp_path / "kv.env").write_text("".join(f"{k}={v}\n" for k, v in KV.items()))
    path = tmp_path / "nhlink.toml"
    path.write_text(
        f'[firmware]\nkv = "file:{tmp_path / "kv.env"}"\n'
        # nothing of the host's: its state and archives folders, its udev
        f'[service]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[archives]\ndir = "{tmp_path / "archives"}"\n[media]\nenabled = false\n'
    )
    service, rec = await started(load_config(str(path)), Runner(UpdateOutcome(True, "", True)))
    assert FakeHub.instances == []  # no hub client was built
    assert (service.device_identifier, service.server_url) == ("kiosk-7", "")
    assert service.current_firmware["uuid"] == "running-uuid"
    message = f"not configured: {path} has no [hub] table, so no hub is contacted"
    task = asyncio.create_task(service.run())
    assert await rec.wait_for("error") == [(message,)]
    assert {"LastError": message} in [args[0] for args in rec.named("properties_changed")]
    assert (service.last_error, service.connected, service.state) == (message, False, "idle")
    with pytest.raises(NotPossible, match=r"^not configured: "):
        await service.check_for_update()
    with pytest.raises(NotPossible, match=r"^not configured: "):
        service.reconnect()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_every_core_effect_has_a_handler(tmp_path: Path) -> None:
    service, _ = await started(make_config(tmp_path), Runner(UpdateOutcome(True, "", True)))
    handled = set(service._effects)
    assert handled == set(get_args(link.Effect))


def test_the_daemon_imports_no_dev_tool(tmp_path: Path) -> None:
    code = (
        "import sys, nhlink_dbus.daemon, nhlink_dbus.service, nhlink_dbus.bus.server, "
        "nhlink_dbus.ctl, nhlink_dbus.fwup.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith('nhlink_devtools')))"
    )
    assert run_fresh(code, tmp_path).strip() == "[]"


def test_the_service_imports_no_downloader_applier_or_crypto(tmp_path: Path) -> None:
    # What the daemon imports before its name is on the bus (PyGObject kept out, as the
    # daemon does): the downloader (httpx) and the applier are loaded afterwards, in a
    # thread (update_runner.preload); cryptography by what needs it (issue 13: start-up).
    code = (
        "import sys\n"
        "sys.modules['gi'] = None\n"
        "import nhlink_dbus.daemon, nhlink_dbus.service, nhlink_dbus.bus.server, "
        "nhlink_dbus.aio.dbus_compat, nhlink_dbus.aio.logind\n"
        "heavy = ('httpx', 'h11', 'cryptography', 'nhlink_dbus.aio.downloader', "
        "'nhlink_dbus.aio.appliers', 'nhlink_dbus.fwup.session', 'nhlink_dbus.fwup.target')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    assert run_fresh(code, tmp_path).strip() == "[]"


def test_no_shipped_module_names_the_dev_tools() -> None:
    package = Path(__file__).resolve().parents[2] / "nhlink_dbus"
    offenders: Sequence[Path] = [
        p for p in package.rglob("*.py") if "nhlink_devtools" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


# -- the update journal across restarts (core/recovery.py) ---------------------------------


def journal_of(tmp_path: Path) -> recovery.JournalRecord | None:
    return JournalStore(str(tmp_path / "state" / recovery.JOURNAL_FILE)).load()


async def test_a_stop_mid_update_is_told_to_the_hub_after_the_next_start(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    hanging = Hanging()
    service, recorder = await started(config, hanging)
    hub = FakeHub.instances[0]
    task = asyncio.create_task(service.run())
    service.core.set_deciders(0)
    hub.deliver(hs.Joined({}))
    hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
    await asyncio.wait_for(hanging.gate.wait(), 30)
    assert journal_of(tmp_path) == service.core.journal  # on disk before the first byte
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The hub client stopped first: the failure the hub did not hear waits in the journal.
    kept = journal_of(tmp_path)
    assert kept is not None and (kept.phase, kept.report) == (recovery.FAILED, "failed")
    assert kept.reason == "the service stopped during the update"
    service, recorder = await started(config, Runner(UpdateOutcome(True, "", True)))
    hub = FakeHub.instances[0]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        await recorder.wait_for("error")
        assert service.state == "failed"
        hub.deliver(hs.Joined({}))
        assert ("status_update", us.failed(kept.reason).payload) in hub.pushes
        hub.stopped.set()
        await task
    assert journal_of(tmp_path) is None


async def test_a_stop_while_the_journal_is_written_still_ends_the_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The update's journal is written beside its start; the runner fails at once, and the
    # service stops while that write is still going on: the outcome is still recorded.
    config = make_config(tmp_path)
    service, _recorder = await started(config, Runner(UpdateOutcome(False, "http 404", False)))
    writing = asyncio.Event()

    async def slow_sync() -> None:
        writing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(service, "sync_journal", slow_sync)
    hub = FakeHub.instances[0]
    task = asyncio.create_task(service.run())
    service.core.set_deciders(0)
    hub.deliver(hs.Joined({}))
    hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
    await asyncio.wait_for(writing.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = journal_of(tmp_path)
    assert kept is not None and kept.phase == recovery.FAILED
    assert kept.reason == "download failed: http 404"


async def test_an_update_path_that_cannot_load_is_an_error_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the real runner the service loads the update path once it runs (in a thread);
    # a broken install is told then, not at the first update.
    from nhlink_dbus.aio import update_runner  # noqa: PLC0415

    def broken() -> None:
        raise ModuleNotFoundError("No module named 'h11'")

    monkeypatch.setattr(update_runner, "preload", broken)
    service, recorder = await started(make_config(tmp_path), update_runner.run_update)
    task = asyncio.create_task(service.run())
    ((message,),) = await recorder.wait_for("error")
    assert message == "cannot load the update path: ModuleNotFoundError(\"No module named 'h11'\")"
    assert service.last_error == message
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_hub_hears_started_only_once_the_journal_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The download's answer comes while the journal is still being written: "started"
    # (after which a restart tells the hub how the update ended) waits for the journal.
    config = make_config(tmp_path)

    class Connecting(Hanging):
        async def __call__(self, job: UpdateJob, *args: Any) -> UpdateOutcome:
            assert job.on_connected is not None
            job.on_connected()
            return await super().__call__(job, *args)

    service, _recorder = await started(config, Connecting())
    routed, written, told = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def route(host: str, port: int) -> tuple[str | None, str]:
        routed.set()
        return "eth0", "ethernet"

    sync = service.sync_journal

    async def held_sync() -> None:
        await written.wait()
        await sync()

    monkeypatch.setattr(service, "device_io", records.replace(service.device_io, route=route))
    monkeypatch.setattr(service, "sync_journal", held_sync)
    hub = FakeHub.instances[0]
    push = hub.push

    def watched_push(event: str, payload: dict[str, Any]) -> None:
        push(event, payload)
        if payload.get("status") == "started":
            told.set()

    monkeypatch.setattr(hub, "push", watched_push)
    task = asyncio.create_task(service.run())
    service.core.set_deciders(0)
    hub.deliver(hs.Joined({}))
    hub.deliver(hm.UpdateInfo(SIGNED_URL, hm.FirmwareMetadata(uuid="new")))
    await asyncio.wait_for(routed.wait(), 30)  # (the route task's step is over by now)
    statuses = [p["status"] for e, p in hub.pushes if e == "status_update"]
    assert statuses == ["received"] and journal_of(tmp_path) is None
    written.set()
    await asyncio.wait_for(told.wait(), 30)
    assert journal_of(tmp_path) == service.core.journal
    assert ("status_update", us.started("eth0").payload) in hub.pushes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_applied_update_whose_reboot_never_came_is_rebooted(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    running = recovery.RunningFirmware("a", "running-uuid", True)
    applied = recovery.applied(
        recovery.updating("u-gone-1", "new", "2.0.0", "hub", "boot-1", running), told=True
    )
    store = JournalStore(config.service.journal_path)
    store.want(applied)
    store.sync_now()
    # The upgrade switched the KV store to slot b before the daemon died.
    switched = KV | {"nerves_fw_active": "b", "b.nerves_fw_uuid": "new", "b.nerves_fw_version": "2"}
    (tmp_path / "kv.env").write_text("".join(f"{k}={v}\n" for k, v in switched.items()))
    service, recorder = await started(config, Runner(UpdateOutcome(True, "", True)))
    hub = FakeHub.instances[0]
    assert hub.device.kv["nerves_fw_uuid"] == "running-uuid"  # type: ignore[attr-defined]
    assert service.current_firmware["uuid"] == "running-uuid"
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        logind = service.logind
        assert isinstance(logind, FakeLogind)
        await asyncio.wait_for(logind.rebooted.wait(), 30)
        hub.stopped.set()
        await task
    assert recorder.named("reboot_scheduled") == [(0,)]
    assert recorder.named("update_finished") == []
    assert journal_of(tmp_path) == applied  # kept until the boot id changes
    # After the reboot (a new boot id) it is done, and v2 is what runs.
    (tmp_path / "boot_id").write_text("boot-2\n")
    service, recorder = await started(config, Runner(UpdateOutcome(True, "", True)))
    assert FakeHub.instances[0].device.kv["nerves_fw_uuid"] == "new"  # type: ignore[attr-defined]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        FakeHub.instances[0].stopped.set()
        await task
    assert journal_of(tmp_path) is None and recorder.named("reboot_scheduled") == []


async def test_an_unreadable_journal_is_reported_and_removed(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    Path(config.service.state_dir).mkdir()
    Path(config.service.journal_path).write_text("{ not json")
    service, recorder = await started(config, Runner(UpdateOutcome(True, "", True)))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        ((message,),) = await recorder.wait_for("error")
        FakeHub.instances[0].stopped.set()
        await task
    assert "could not be read" in message and service.state == "idle"
    assert journal_of(tmp_path) is None

"""A fake ``LinkService`` for the bus face's tests: records calls, judges answers
with the real decision engine (UnknownRequest, InvalidDecision, InvalidArgument
for the face to translate), and fans its reports out to listeners."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nhlink_dbus.core.decisions import DecisionEngine
from nhlink_dbus.core.health import HealthRegistry
from nhlink_dbus.core.link import LinkSettings, decision_kinds
from nhlink_dbus.core.update_mode import set_update_mode_payload
from nhlink_dbus.errors import NotPossible, UnknownRequest
from nhlink_dbus.service_api import Caller, Info, LinkListener, PendingRequest, ReadyArchive

UPDATE_INFO: dict[str, str | int] = {
    "uuid": "7b3a1f0e-0000-4000-8000-000000000001",
    "version": "1.2.0",
    "product": "kiosk",
    "platform": "x86_64",
    "architecture": "x86_64",
    "author": "ACME",
    "description": "monthly update",
    "misc": "",
    "vcs_identifier": "abc123",
    "deployment_id": 42,
    "size": 123456789,
    "source": "hub",
}
ARCHIVE_INFO: dict[str, str | int] = {"uuid": "arch-1", "version": "0.3", "source": "hub"}


@dataclass
class FakeLinkService:
    listeners: list[LinkListener] = field(default_factory=list)
    calls: list[tuple[object, ...]] = field(default_factory=list)
    pending: dict[str, PendingRequest] = field(default_factory=dict)
    check_result: dict[str, str | int] = field(default_factory=dict)
    fail_with: BaseException | None = None  # raised by the next method call
    installed: list[bytes] = field(default_factory=list)
    archives: list[ReadyArchive] = field(default_factory=list)

    state: str = "awaiting-decision"
    connected: bool = True
    progress: int = 0
    current_firmware: dict[str, str] = field(
        default_factory=lambda: {"uuid": "running-uuid", "version": "1.1.0", "product": "kiosk"}
    )
    device_identifier: str = "kiosk-0042"
    server_url: str = "wss://devices.example.com/socket"
    last_error: str = ""
    reconnect_backoff: list[int] = field(default_factory=list)
    decision_timeout_ms: int = 30000
    default_decision: str = "apply"
    version: str = "0.1.0"
    firmware_validated: bool = False
    auto_revert_detected: bool = False
    update_mode: str = "automatic"
    managed_updates_allowed: bool = True
    extensions: list[str] = field(default_factory=lambda: ["health"])
    network_interface: str = "eth0"
    health: HealthRegistry = field(default_factory=HealthRegistry)

    def __post_init__(self) -> None:
        self.pending["u-1"] = PendingRequest("u-1", "update", UPDATE_INFO)
        self.pending["a-1"] = PendingRequest("a-1", "archive", ARCHIVE_INFO)
        # The real decision rules (core/decisions.py) judge every answer; the fake
        # only keeps its short ids ("u-1") in front of the engine's.
        self.engine = DecisionEngine(
            decision_kinds(
                LinkSettings(
                    decision_timeout_ms=self.decision_timeout_ms,
                    default_update=self.default_decision,
                    default_archive="ignore",
                    ignore_same_uuid=True,
                    reboot_delay_ms=0,
                )
            ),
            30.0,
            "fake",
            deciders=1,
        )
        self.engine_ids: dict[str, str] = {}
        for request in self.pending.values():
            (asked,) = self.engine.ask(request.kind, request.request_id, request, now=0.0)
            self.engine_ids[request.request_id] = asked.question.request_id

    def _maybe_fail(self) -> None:
        exc, self.fail_with = self.fail_with, None
        if exc is not None:
            raise exc

    # -- LinkService -------------------------------------------------------------------

    def add_listener(self, listener: LinkListener, decides: bool = False) -> None:
        self.listeners.append(listener)

    def decide(self, request_id: str, decision: str, delay_ms: int, caller: Caller) -> None:
        self._maybe_fail()
        engine_id = self.engine_ids.get(request_id, request_id)
        try:
            self.engine.answer(engine_id, decision, delay_ms, caller.describe(), now=0.0)
        except UnknownRequest:  # name the id the caller used
            raise UnknownRequest(f"no pending request {request_id!r}") from None
        del self.pending[request_id]
        self.calls.append(("decide", request_id, decision, delay_ms, caller))
        for listener in self.listeners:
            listener.decision_made(request_id, decision, delay_ms, caller.describe())

    def pending_requests(self) -> Sequence[PendingRequest]:
        self._maybe_fail()
        return list(self.pending.values())

    def ready_archives(self) -> Sequence[ReadyArchive]:
        self._maybe_fail()
        return list(self.archives)

    async def check_for_update(self) -> Info:
        self._maybe_fail()
        self.calls.append(("check",))
        return dict(self.check_result)

    async def install_file(self, fd: int, options: Mapping[str, object], caller: Caller) -> str:
        try:
            self._maybe_fail()
            with os.fdopen(os.dup(fd), "rb") as stream:
                self.installed.append(stream.read())
            self.calls.append(("install", dict(options), caller))
            return "file-1"
        finally:
            os.close(fd)  # the service owns the descriptor it is given

    def reconnect(self) -> None:
        self._maybe_fail()
        self.calls.append(("reconnect",))

    def set_reconnect_backoff(self, delays_ms: Sequence[int]) -> None:
        self._maybe_fail()
        self.reconnect_backoff = list(delays_ms)
        self.calls.append(("backoff", list(delays_ms)))
        for listener in self.listeners:
            listener.properties_changed({"ReconnectBackoff": list(delays_ms)})

    # -- the newer device API (real rules: core/health.py, core/update_mode.py) -----------

    async def mark_valid(self, caller: Caller) -> None:
        self._maybe_fail()
        self.calls.append(("mark_valid", caller))
        self.firmware_validated = True
        for listener in self.listeners:
            listener.properties_changed({"FirmwareValidated": True})

    def set_health_metric(self, name: str, value: float) -> None:
        self.health.set_metric(name, value)
        self.calls.append(("metric", name, value))

    def set_health_check(self, name: str, passed: bool, note: str) -> None:
        self.health.set_check(name, passed, note)
        self.calls.append(("check_health", name, passed, note))

    def raise_alarm(self, alarm_id: str, description: str) -> None:
        self.health.raise_alarm(alarm_id, description)

    def clear_alarm(self, alarm_id: str) -> None:
        if not self.health.clear_alarm(alarm_id):
            raise NotPossible(f"no alarm {alarm_id!r} is raised")

    async def health_report(self) -> Mapping[str, Any]:
        return {
            "metrics": {"load_1min": 0.5, **self.health.metrics},
            "checks": {
                n: {"pass": c.passed, "note": c.note} for n, c in self.health.checks.items()
            },
            "alarms": dict(self.health.alarms),
        }

    async def set_update_mode(self, mode: str) -> str:
        set_update_mode_payload(mode)
        self.update_mode = mode
        self.calls.append(("mode", mode))
        return mode

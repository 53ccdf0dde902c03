"""Typed fan-out of the service's reports to every attached face (``LinkListener``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from nhlink_dbus.service_api import Info, LinkListener

logger = logging.getLogger(__name__)


class Listeners(LinkListener):
    """Calls every listener in turn; one failing listener never breaks the service."""

    def __init__(self) -> None:
        self.items: list[LinkListener] = []

    def _each(self, what: str, call: Callable[[LinkListener], None]) -> None:
        for listener in list(self.items):
            try:
                call(listener)
            except Exception:
                logger.exception("listener %r failed in %s", listener, what)

    def update_available(self, request_id: str, info: Info) -> None:
        self._each("update_available", lambda x: x.update_available(request_id, info))

    def archive_available(self, request_id: str, info: Info) -> None:
        self._each("archive_available", lambda x: x.archive_available(request_id, info))

    def archive_ready(self, request_id: str, info: Info, path: str) -> None:
        self._each("archive_ready", lambda x: x.archive_ready(request_id, info, path))

    def decision_made(self, request_id: str, decision: str, delay_ms: int, decided_by: str) -> None:
        self._each(
            "decision_made", lambda x: x.decision_made(request_id, decision, delay_ms, decided_by)
        )

    def fwup_progress(self, percent: int) -> None:
        self._each("fwup_progress", lambda x: x.fwup_progress(percent))

    def fwup_message(self, kind: str, code: int, message: str) -> None:
        self._each("fwup_message", lambda x: x.fwup_message(kind, code, message))

    def update_finished(self, request_id: str, success: bool, message: str) -> None:
        self._each("update_finished", lambda x: x.update_finished(request_id, success, message))

    def error(self, message: str) -> None:
        self._each("error", lambda x: x.error(message))

    def identify(self) -> None:
        self._each("identify", lambda x: x.identify())

    def disconnected(self, reason: str) -> None:
        self._each("disconnected", lambda x: x.disconnected(reason))

    def reboot_scheduled(self, delay_ms: int) -> None:
        self._each("reboot_scheduled", lambda x: x.reboot_scheduled(delay_ms))

    def auto_reverted(self, firmware: Mapping[str, str]) -> None:
        self._each("auto_reverted", lambda x: x.auto_reverted(firmware))

    def media_added(self, device: str, mount_point: str, candidates: int) -> None:
        self._each("media_added", lambda x: x.media_added(device, mount_point, candidates))

    def media_removed(self, device: str) -> None:
        self._each("media_removed", lambda x: x.media_removed(device))

    def properties_changed(self, changed: Mapping[str, object]) -> None:
        self._each("properties_changed", lambda x: x.properties_changed(changed))

"""The simulator's side of the newer device API, as nerves_hub_web does it.

Read in nerves_hub_web (0bb6b5cc5) and its ``docs/device_managed_updates.md``:

* **extensions** (``device_link.ex`` ``maybe_request_extensions``,
  ``extensions_channel.ex``, ``extensions/dispatch.ex``, ``health.ex``,
  ``geo.ex``): after a ``device`` join with ``device_api_version >= 2.2.0`` the
  server pushes ``extensions:get {}``; the ``extensions`` join is answered with
  the list of offered names the server enables (versions ``~> 0.0.1``);
  ``<name>:attached`` starts the extension: health pushes ``health:check {}`` at
  once and then every interval, geo ``geo:location:request {}`` at once (and on
  an interval if set). A push for an extension that is not attached is answered
  ``{"status": "error", "response": "detach"}``.
* **status_update** (``firmware_updates.ex``): ``ignored`` and ``failed`` put the
  device in the penalty box (``updates_blocked_until``), ``rescheduled`` blocks
  it for ``delay_for`` *milliseconds*.
* **update modes** (device-managed updates): ``update_mode`` on join to
  ``device_api_version >= 2.4.0``; ``check_update`` → ``update_available``
  (metadata, no URL); ``request_update`` → ``update`` or ``update_rejected``
  (``delay_for`` minutes; also while the device is in the penalty box or off);
  ``set_update_mode`` → ``update_mode`` (``off`` and an ungranted
  ``device_managed`` refused: the answer carries the mode unchanged).
* **delta updates** (``update_tool/fwup.ex`` ``device_update_type/2``):
  :func:`device_update_type`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from nhlink_devtools.hubsim.frames import SimFrame, reply

if TYPE_CHECKING:
    from nhlink_devtools.hubsim.sim import DeviceRecord, HubSim, _Session

logger = logging.getLogger(__name__)

# nerves_hub_web update_tool/fwup.ex: @very_safe_version and @oldest_version.
DELTA_DEFAULT_FWUP_VERSION: Final = "1.13.0"
OLDEST_FWUP_VERSION: Final = "0.2.0"
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def _semver_key(text: str) -> tuple[Any, ...]:
    """Elixir ``Version`` ordering; ValueError for what ``Version.parse`` refuses."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    pre: tuple[Any, ...]
    if match[4] is None:
        pre = (1,)  # a release sorts after its pre-releases
    else:
        ids = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in match[4].split(".")]
        pre = (0, *ids)
    return (int(match[1]), int(match[2]), int(match[3]), pre)


def device_update_type(
    device_fwup_version: str | None, delta_fwup_version: str | None, delta_exists: bool = True
) -> str:
    """``"delta"`` or ``"full"``, as ``UpdateTool.Fwup.device_update_type/2`` decides:
    a delta is sent only if one exists and its required fwup version (default
    1.13.0) is ``<=`` the device's ``fwup_version`` (a device that sent none counts
    as 0.2.0); anything that fails to parse or compare means full."""
    if not delta_exists:
        return "full"
    try:
        needed = _semver_key(delta_fwup_version or DELTA_DEFAULT_FWUP_VERSION)
        device = _semver_key(device_fwup_version or OLDEST_FWUP_VERSION)
    except ValueError:
        return "full"
    return "delta" if needed <= device else "full"


def version_at_least(text: object, minimum: str) -> bool:
    try:
        return _semver_key(str(text)) >= _semver_key(minimum)
    except ValueError:
        return False


@dataclass
class DeviceApiState:
    """What the sim keeps per device for the newer API."""

    update_mode: str = "automatic"
    managed_updates_allowed: bool = False
    blocked_until: float | None = None  # the penalty box (sim clock, seconds)
    extensions_offered: dict[str, str] = field(default_factory=dict)
    extensions_attached: dict[str, str] = field(default_factory=dict)  # name -> attached ref
    health_checks_sent: int = 0
    update_types: list[str] = field(default_factory=list)  # "delta"/"full" per offer


class DeviceApiSim:
    """Hooks :class:`~nhlink_devtools.hubsim.sim.HubSim` calls for the newer API."""

    def __init__(self, sim: HubSim) -> None:
        self.sim = sim
        self._timers: dict[int, list[asyncio.Task[None]]] = {}

    def state(self, device: DeviceRecord) -> DeviceApiState:
        return device.api

    def in_penalty_box(self, device: DeviceRecord) -> bool:
        until = device.api.blocked_until
        return until is not None and self.sim.config.clock() < until

    # -- joins -----------------------------------------------------------------------------

    def after_join_pushes(
        self, device: DeviceRecord, params: dict[str, Any]
    ) -> list[tuple[str, Any]]:
        """Pushes to add after a ``device`` join (the server's after_join order)."""
        pushes: list[tuple[str, Any]] = []
        version = params.get("device_api_version", "1.0.0")
        cfg = self.sim.config
        if cfg.update_modes and version_at_least(version, "2.4.0"):
            pushes.append(("update_mode", self._mode_payload(device)))
        if cfg.extensions and version_at_least(version, "2.2.0"):
            pushes.append(("extensions:get", {}))
        return pushes

    async def extensions_join(self, session: _Session, frame: SimFrame) -> None:
        device = session.device
        offered = frame.payload if isinstance(frame.payload, dict) else {}
        api = device.api
        api.extensions_offered = {str(k): str(v) for k, v in offered.items()}
        api.extensions_attached = {}
        attach = [
            name
            for name, version in api.extensions_offered.items()
            if name in self.sim.config.extensions and version_at_least(version, "0.0.1")
            and not version_at_least(version, "0.1.0")
        ]  # fmt: skip
        device.joined_topics["extensions"] = frame.join_ref or ""
        await self.sim._send(session, reply(frame, frame.join_ref, "ok", attach))
        self.sim._changed()

    # -- frames from the device ----------------------------------------------------------------

    async def extension_message(self, session: _Session, frame: SimFrame, join_ref: str) -> None:
        api = session.device.api
        name, _, event = frame.event.partition(":")
        allowed = name in self.sim.config.extensions and name in api.extensions_offered
        if not allowed:
            await self.sim._send(session, reply(frame, join_ref, "error", "detach"))
            return
        if event == "attached":
            api.extensions_attached[name] = frame.ref or ""
            self._start_extension(session, name)
        elif event in ("detached", "error"):
            api.extensions_attached.pop(name, None)
            self._stop_timers(session, name)
        self.sim._changed()

    async def device_message(self, session: _Session, frame: SimFrame, join_ref: str) -> bool:
        """Events of the ``device`` topic this module answers; False for the others."""
        device, event, payload = session.device, frame.event, frame.payload
        if event == "status_update" and isinstance(payload, dict):
            self._status(device, payload)
            return True
        if event == "check_update":
            update = self.sim.updates.get(device.identifier)
            if update is None or self.in_penalty_box(device):
                answer: dict[str, Any] = {"available": False, "firmware_meta": None}
            else:
                answer = {"available": True, "firmware_meta": update["firmware_meta"]}
            await self.sim._push_on(session, "update_available", answer)
            return True
        if event == "request_update":
            await self._request_update(session)
            return True
        if event == "set_update_mode" and isinstance(payload, dict):
            mode = payload.get("mode")
            api = device.api
            if mode == "automatic" or (mode == "device_managed" and api.managed_updates_allowed):
                api.update_mode = str(mode)
            await self.sim._push_on(session, "update_mode", self._mode_payload(device))
            return True
        return False

    def _status(self, device: DeviceRecord, payload: dict[str, Any]) -> None:
        status = payload.get("status")
        now = self.sim.config.clock()
        if status in ("ignored", "failed"):
            device.api.blocked_until = now + self.sim.config.penalty_box_s
        elif status == "rescheduled" and isinstance(payload.get("delay_for"), int):
            device.api.blocked_until = now + payload["delay_for"] / 1000  # milliseconds
        self.sim._changed()

    async def _request_update(self, session: _Session) -> None:
        device = session.device
        cfg = self.sim.config
        update = self.sim.updates.get(device.identifier)
        refuse = device.api.update_mode == "off" or self.in_penalty_box(device)
        if update is not None and not refuse and cfg.request_update_busy > 0:
            cfg.request_update_busy -= 1
            refuse = True
        if update is None or refuse:
            answer = {"reason": "busy", "delay_for": cfg.busy_delay_for_min}
            await self.sim._push_on(session, "update_rejected", answer)
            return
        await self.sim._push_on(session, "update", update)

    # -- operator actions ---------------------------------------------------------------------

    async def set_mode(
        self, device_id: str, mode: str | None = None, allowed: bool | None = None
    ) -> dict[str, Any]:
        """The operator changes the mode or the grant; pushed if the device is joined."""
        device = self.sim.devices[device_id]
        if mode is not None:
            device.api.update_mode = mode
        if allowed is not None:
            device.api.managed_updates_allowed = allowed
        payload = self._mode_payload(device)
        params = device.join_params or {}
        if device.joined and version_at_least(params.get("device_api_version"), "2.4.0"):
            await self.sim.push(device_id, "update_mode", payload)
        return payload

    # -- timers --------------------------------------------------------------------------------

    def _start_extension(self, session: _Session, name: str) -> None:
        cfg = self.sim.config
        if name == "health":
            self._every(session, name, "health:check", cfg.health_interval_s)
        elif name == "geo":
            self._every(session, name, "geo:location:request", cfg.geo_interval_s)

    def _every(self, session: _Session, name: str, event: str, interval: float | None) -> None:
        async def run() -> None:
            while True:
                if "extensions" not in session.device.joined_topics:
                    return
                if event == "health:check":
                    session.device.api.health_checks_sent += 1
                await self.sim._push_on(session, event, {}, topic="extensions")
                if interval is None:
                    return
                await asyncio.sleep(interval)

        self._spawn(session, name, run)

    def _spawn(
        self, session: _Session, name: str, run: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        task = asyncio.ensure_future(run())
        task.set_name(name)
        self._timers.setdefault(id(session), []).append(task)
        self.sim._spawn_task(task)

    def _stop_timers(self, session: _Session, name: str | None = None) -> None:
        for task in self._timers.get(id(session), []):
            if name is None or task.get_name() == name:
                task.cancel()

    def session_ended(self, session: _Session) -> None:
        self._stop_timers(session)
        self._timers.pop(id(session), None)
        session.device.api.extensions_attached = {}

    def _mode_payload(self, device: DeviceRecord) -> dict[str, Any]:
        api = device.api
        return {"mode": api.update_mode, "managed_updates_allowed": api.managed_updates_allowed}

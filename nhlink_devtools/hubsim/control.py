"""The simulator's control API: JSON over HTTP on its own port (plain HTTP, 127.0.0.1).

It is a development tool's back door: anyone who can reach the port can make
the sim serve any file the sim's user can read. Bind it to loopback only.

=======  ======================  =====================================================
method   path                    body (JSON) → answer
=======  ======================  =====================================================
GET      /_sim/info              → URLs, PKI paths, devices, connected devices
GET      /_sim/devices           → ``[device summary]`` (no frames)
GET      /_sim/devices/<id>      → device with ``join_params``, ``frames_received``,
                                 ``frames_sent``, ``disconnects``
GET      /_sim/handshakes        → every upgrade request: path, status, reason
POST     /_sim/push              ``{device, event, payload?, topic?, fastlane?}``
POST     /_sim/update            ``{device, file, firmware_meta?, deployment_id?,
                                 push?, delta?, delta_fwup_version?}`` →
                                 UpdatePayload (``file``/``delta``: paths; relative
                                 paths resolve against ``fw_dir``)
POST     /_sim/mode              ``{device, mode?, allowed?}``: the operator sets the
                                 update mode / the grant (pushed if joined)
POST     /_sim/archive           ``{device, file, info?}`` → ArchiveInfo
POST     /_sim/keys              ``{kind: "fwup"|"archive", keys: [...], device?}``:
                                 sets the keys answered to ``"on_connect"``; with
                                 ``device`` also pushes ``<kind>_public_keys``
POST     /_sim/close             ``{device, code?=1000, reason?}``
POST     /_sim/break             ``{device}``: TCP abort, no close frame
POST     /_sim/channel           ``{device, event: "phx_error"|"phx_close", topic?}``
POST     /_sim/drain             ``{code?=1012}``: close every connection
POST     /_sim/config            any of ``join_reply``, ``reply_heartbeats``,
                                 ``fastlane``, ``health_check``, ``idle_timeout_s``,
                                 ``push_update_on_join``, ``require_url_token``,
                                 ``update_modes``, ``request_update_busy``,
                                 ``busy_delay_for_min``, ``penalty_box_s``,
                                 ``health_interval_s``, ``geo_interval_s``
GET      /_sim/faults            → faults; POST adds one (:class:`Fault` fields);
DELETE   /_sim/faults            removes all
GET      /_sim/http-log          → every file request; DELETE clears the log
GET      /_sim/files             → served paths and their URLs
=======  ======================  =====================================================

Errors: ``{"error": message}`` with 400 (bad request), 404 (unknown path),
409 (the device is not connected or has not joined).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nhlink_dbus.errors import ConfigError, StateError
from nhlink_devtools.hubsim._http import HttpRequest, send_simple
from nhlink_devtools.hubsim.files import Fault

if TYPE_CHECKING:
    from nhlink_devtools.hubsim.sim import HubSim

logger = logging.getLogger(__name__)

PREFIX = "/_sim"
_LIVE_SETTINGS = {
    "join_reply": str,
    "reply_heartbeats": bool,
    "fastlane": bool,
    "health_check": bool,
    "push_update_on_join": bool,
    "update_modes": bool,
    "request_update_busy": int,
    "busy_delay_for_min": int,
}
_LIVE_SECONDS = ("penalty_box_s", "health_interval_s", "geo_interval_s")


class _NotFound(Exception):
    pass


def _dumps(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise ConfigError(f"field {name!r} is required ({getattr(kind, '__name__', kind)})")
    return value


class ControlApi:
    """Routes control requests to a :class:`HubSim`."""

    def __init__(self, sim: HubSim) -> None:
        self.sim = sim

    async def handle(
        self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The :class:`HttpServer` handler."""
        try:
            body: Any = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(body, dict):
                raise ConfigError("the request body must be a JSON object")
            status, answer = 200, await self._route(request.method, request.path, body)
        except _NotFound:
            status, answer = 404, {"error": f"no such endpoint: {request.method} {request.path}"}
        except StateError as exc:
            status, answer = 409, {"error": str(exc)}
        except (ConfigError, ValueError, OSError) as exc:
            status, answer = 400, {"error": str(exc)}
        logger.debug("control %s %s -> %d", request.method, request.path, status)
        await send_simple(writer, status, _dumps(answer), "application/json")

    def _file(self, body: dict[str, Any], name: str = "file") -> Path:
        path = Path(_field(body, name))
        fw_dir = self.sim.config.fw_dir
        if not path.is_absolute() and fw_dir is not None:
            path = fw_dir / path
        if not path.is_file():
            raise ConfigError(f"no such file: {path}")
        return path

    async def _route(self, method: str, path: str, body: dict[str, Any]) -> Any:
        sim = self.sim
        if not path.startswith(PREFIX + "/"):
            raise _NotFound
        route = path.removeprefix(PREFIX)
        if method == "GET":
            if route == "/info":
                return sim.summary()
            if route == "/devices":
                return [d.to_json(frames=False) for d in sim.devices.values()]
            if route.startswith("/devices/"):
                device = sim.devices.get(route.removeprefix("/devices/"))
                if device is None:
                    raise _NotFound
                return device.to_json()
            if route == "/handshakes":
                return [h.to_json() for h in sim.handshakes]
            if route == "/faults":
                return [f.to_json() for f in sim.files.faults]
            if route == "/http-log":
                return [e.to_json() for e in sim.http_log]
            if route == "/files":
                return {p: sim.files.url_for(p) for p in sorted(sim.files.files)}
        if method == "DELETE":
            if route == "/faults":
                sim.clear_faults()
                return {}
            if route == "/http-log":
                sim.http_log.clear()
                return {}
        if method == "POST":
            return await self._post(route, body)
        raise _NotFound

    async def _post(self, route: str, body: dict[str, Any]) -> Any:
        sim = self.sim
        if route == "/push":
            frame = await sim.push(
                _field(body, "device"),
                _field(body, "event"),
                body.get("payload"),
                topic=body.get("topic", "device"),
                fastlane=body.get("fastlane"),
            )
            return frame.to_json()
        if route == "/update":
            return await sim.offer_update(
                _field(body, "device"),
                self._file(body),
                firmware_meta=body.get("firmware_meta"),
                deployment_id=body.get("deployment_id"),
                push=bool(body.get("push", True)),
                delta=self._file(body, "delta") if body.get("delta") else None,
                delta_fwup_version=body.get("delta_fwup_version"),
            )
        if route == "/mode":
            allowed = body.get("allowed")
            if allowed is not None and not isinstance(allowed, bool):
                raise ConfigError("allowed must be true or false")
            mode = body.get("mode")
            if mode is not None and mode not in ("automatic", "device_managed", "off"):
                raise ConfigError("mode must be automatic, device_managed or off")
            return await sim.set_update_mode(_field(body, "device"), mode, allowed=allowed)
        if route == "/archive":
            return await sim.offer_archive(
                _field(body, "device"), self._file(body), info=body.get("info")
            )
        if route == "/keys":
            kind = _field(body, "kind")
            keys = [str(k) for k in _field(body, "keys", list)]
            if kind not in ("fwup", "archive"):
                raise ConfigError("kind must be 'fwup' or 'archive'")
            setattr(sim.config, f"{kind}_public_keys", keys)
            if body.get("device"):
                await sim.push(body["device"], f"{kind}_public_keys", {"keys": keys})
            return {"keys": keys}
        if route == "/close":
            code = int(body.get("code", 1000))
            await sim.close_device(_field(body, "device"), code, str(body.get("reason", "")))
            return {}
        if route == "/break":
            sim.break_connection(_field(body, "device"))
            return {}
        if route == "/channel":
            event = body.get("event", "phx_error")
            await sim.channel_error(_field(body, "device"), event, body.get("topic", "device"))
            return {}
        if route == "/drain":
            await sim.drain(int(body.get("code", 1012)))
            return {}
        if route == "/config":
            return self._configure(body)
        if route == "/faults":
            return sim.set_fault(Fault.from_json(body)).to_json()
        raise _NotFound

    def _configure(self, body: dict[str, Any]) -> dict[str, Any]:
        sim = self.sim
        for name, value in body.items():
            if name in _LIVE_SETTINGS:
                if not isinstance(value, _LIVE_SETTINGS[name]):
                    raise ConfigError(f"{name}: wrong type")
                if name == "join_reply" and value not in ("ok", "error", "legacy", "none"):
                    raise ConfigError("join_reply must be ok, error, legacy or none")
                setattr(sim.config, name, value)
            elif name == "idle_timeout_s":
                sim.config.idle_timeout_s = None if value is None else float(value)
            elif name in _LIVE_SECONDS:
                if name == "penalty_box_s" and value is None:
                    raise ConfigError("penalty_box_s: a number of seconds")
                setattr(sim.config, name, None if value is None else float(value))
            elif name == "require_url_token":
                sim.files.require_token = bool(value)
            else:
                raise ConfigError(f"unknown or read-only setting {name!r}")
        return {
            **{name: getattr(sim.config, name) for name in _LIVE_SETTINGS},
            "idle_timeout_s": sim.config.idle_timeout_s,
            "require_url_token": sim.files.require_token,
            **{name: getattr(sim.config, name) for name in _LIVE_SECONDS},
        }

"""The simulator itself: :class:`HubSim` (see the package docstring for the tour)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import secrets as _secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from nhlink_dbus.core.redact import redact_text
from nhlink_dbus.errors import ConfigError, ProtocolError, StateError
from nhlink_devtools.hubsim import _ws
from nhlink_devtools.hubsim._http import HttpServer
from nhlink_devtools.hubsim.auth import Accepted, HttpAnswer, SharedSecret, decide
from nhlink_devtools.hubsim.certs import CertPair, SimPKI, issue_device_cert, load_or_generate_pki
from nhlink_devtools.hubsim.certs import server_context as _server_context
from nhlink_devtools.hubsim.device_api import DeviceApiSim, DeviceApiState, device_update_type
from nhlink_devtools.hubsim.files import Fault, FileServer, HttpLogEntry, file_checksums
from nhlink_devtools.hubsim.files import firmware_meta as read_firmware_meta
from nhlink_devtools.hubsim.frames import SimFrame, reply

logger = logging.getLogger(__name__)

T = TypeVar("T")

JOIN_REPLIES = ("ok", "error", "legacy", "none")
NOTHING_AVAILABLE: dict[str, Any] = {
    "update_available": False,
    "firmware_url": None,
    "firmware_meta": None,
    "deployment_id": None,
}


@dataclass
class HubSimConfig:
    """Everything :class:`HubSim` can be told. Fields marked *live* may be changed
    on ``sim.config`` while it runs and apply to the next join/frame/request."""

    host: str = "127.0.0.1"
    ws_port: int = 0  # 0: any free port (kept across stop()/start())
    http_port: int = 0
    control_port: int | None = None  # None: no control API server (the in-process API is enough)
    tls: bool = False  # wss:// with TLS 1.2 and optional device certificates
    http_tls: bool = False  # https:// for the file server (same server certificate)
    cert_dir: Path | None = None  # test PKI folder (reused if complete); default a temp dir
    shared_secrets: Sequence[SharedSecret] = ()
    nh1_max_age_s: int = 90
    idle_timeout_s: float | None = 180.0  # live; None disables it
    fw_dir: Path | None = None  # files served at /firmware/<name>
    require_url_token: bool = True  # file requests need the signed query (live: sim.files)
    fwup_public_keys: list[str] = field(default_factory=list)  # live: "on_connect" answers
    archive_public_keys: list[str] = field(default_factory=list)  # live
    health_check: bool = True  # live: push check_health {} after join (Oct 2024 server)
    join_reply: str = "ok"  # live: "ok" | "error" | "legacy" | "none"
    reply_heartbeats: bool = True  # live
    fastlane: bool = False  # live: pushes as [null, null, "device", ...]
    push_update_on_join: bool = False  # live: re-push the offered update after each join
    topics: frozenset[str] = frozenset({"device", "console", "extensions"})
    # The newer device API (hubsim/device_api.py); all live.
    extensions: tuple[str, ...] = ("health", "geo")  # enabled: extensions:get to >= 2.2.0
    health_interval_s: float | None = 3600.0  # health:check on attach, then this often
    geo_interval_s: float | None = None  # geo:location:request on attach (and this often)
    update_modes: bool = True  # update_mode on join to >= 2.4.0
    penalty_box_s: float = 3600.0  # ignored/failed block updates this long
    request_update_busy: int = 0  # answer this many request_update with update_rejected
    busy_delay_for_min: int = 5  # update_rejected's delay_for (minutes)
    clock: Callable[[], float] = time.time  # seconds; NH1 expiry is checked against it


@dataclass(eq=False)
class DeviceRecord:
    """What the simulator knows about one device identifier (kept across reconnects)."""

    identifier: str
    connected: bool = False
    auth: Accepted | None = None  # how the latest connection authenticated
    join_params: dict[str, Any] | None = None  # payload of the latest "device" phx_join
    joins: list[SimFrame] = field(default_factory=list)  # every phx_join, any topic
    frames_received: list[SimFrame] = field(default_factory=list)  # every frame the device sent
    frames_sent: list[SimFrame] = field(default_factory=list)  # every frame the sim sent it
    joined_topics: dict[str, str] = field(default_factory=dict)  # topic -> join_ref (live)
    connections: int = 0  # accepted WebSocket connections so far
    disconnects: list[str] = field(default_factory=list)  # why each connection ended
    api: DeviceApiState = field(default_factory=DeviceApiState)  # update mode, penalty, …

    def events(self, event: str, topic: str = "device") -> list[Any]:
        """Payloads of the frames the device sent with this event on ``topic``."""
        return [f.payload for f in self.frames_received if f.event == event and f.topic == topic]

    @property
    def joined(self) -> bool:
        return self.connected and "device" in self.joined_topics

    def to_json(self, *, frames: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "identifier": self.identifier,
            "connected": self.connected,
            "joined_topics": dict(self.joined_topics),
            "auth": None
            if self.auth is None
            else {"kind": self.auth.auth, "key": self.auth.key, "path": self.auth.path},
            "join_params": self.join_params,
            "connections": self.connections,
            "disconnects": list(self.disconnects),
        }
        if frames:
            data["frames_received"] = [f.to_json() for f in self.frames_received]
            data["frames_sent"] = [f.to_json() for f in self.frames_sent]
        return data


@dataclass(frozen=True, slots=True)
class HandshakeRecord:
    """One upgrade request and what the sim answered (101 for accepted)."""

    path: str
    status: int
    reason: str
    identifier: str | None
    auth: str | None
    time: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "identifier": self.identifier,
            "auth": self.auth,
            "time": self.time,
        }


class _Session:
    """One accepted WebSocket connection of a device."""

    def __init__(self, conn: _ws.WsConnection, device: DeviceRecord) -> None:
        self.conn = conn
        self.device = device
        self.closing_reason: str | None = None


def _version_at_least(text: object, minimum: tuple[int, ...]) -> bool:
    try:
        parts = tuple(int(p) for p in str(text).split("-")[0].split("."))
    except ValueError:
        return False
    return parts >= minimum


class HubSim:
    """A NervesHub stand-in on 127.0.0.1. Use ``async with HubSim(config) as sim:``."""

    def __init__(self, config: HubSimConfig | None = None) -> None:
        self.config = config or HubSimConfig()
        if self.config.join_reply not in JOIN_REPLIES:
            raise ConfigError(f"join_reply must be one of {', '.join(JOIN_REPLIES)}")
        self.devices: dict[str, DeviceRecord] = {}
        self.handshakes: list[HandshakeRecord] = []
        self.updates: dict[str, dict[str, Any]] = {}  # device -> UpdatePayload offered
        self.archives: dict[str, dict[str, Any]] = {}  # device -> ArchiveInfo offered
        self.pki: SimPKI | None = None
        self.files = FileServer(
            token=_secrets.token_urlsafe(24),
            require_token=self.config.require_url_token,
            fw_dir=self.config.fw_dir,
            on_change=self._changed,
        )
        self._sessions: dict[str, _Session] = {}
        self._ws: _ws.WsServer | None = None
        self._http = HttpServer(self.files.handle, "files")
        self._control: HttpServer | None = None
        self._ws_port = self.config.ws_port
        self._http_port = self.config.http_port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._changed_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.device_api = DeviceApiSim(self)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> HubSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen (again, on the same ports after :meth:`stop`)."""
        if self._ws is not None:
            return
        ws_ssl = http_ssl = None
        if self.config.tls or self.config.http_tls:
            if self.pki is None:
                folder = self.config.cert_dir
                if folder is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="nhlink-hub-sim-")
                    folder = Path(self._tmp.name)
                self.pki = load_or_generate_pki(folder)
            if self.config.tls:
                ws_ssl = _server_context(self.pki, client_certs=True)
            if self.config.http_tls:
                http_ssl = _server_context(self.pki, client_certs=False)
        self._ws = await _ws.start_server(
            self.config.host, self._ws_port, ws_ssl, self._decide, self._handle
        )
        self._ws_port = self._ws.port
        await self._http.start(self.config.host, self._http_port, http_ssl)
        self._http_port = self._http.port
        self.files.base_url = self.http_url
        if self.config.control_port is not None and self._control is None:
            from nhlink_devtools.hubsim.control import ControlApi  # noqa: PLC0415 (import cycle)

            self._control = HttpServer(ControlApi(self).handle, "control")
            await self._control.start(self.config.host, self.config.control_port, None)
        logger.info("hub sim listening: ws %s, http %s", self.ws_url, self.http_url)

    async def stop(self, *, abort: bool = True) -> None:
        """Stop serving WebSocket and files, as a killed server (TCP abort) or, with
        ``abort=False``, closing connections with 1001. State and logs are kept."""
        if self._ws is None:
            return
        ws, self._ws = self._ws, None
        for session in list(self._sessions.values()):
            session.closing_reason = "server stopped"
        await ws.stop(abort=abort)
        await self._http.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        logger.info("hub sim stopped")

    async def close(self) -> None:
        """Stop everything, the control API too, and remove generated certificates."""
        await self.stop()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def ws_port(self) -> int:
        return self._ws_port

    @property
    def ws_url(self) -> str:
        """Base URL for the device (``ws://`` or ``wss://``), without path."""
        scheme = "wss" if self.config.tls else "ws"
        return f"{scheme}://{self._url_host}:{self._ws_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.http_tls else "http"
        return f"{scheme}://{self._url_host}:{self._http_port}"

    @property
    def control_url(self) -> str | None:
        if self._control is None:
            return None
        return f"http://{self._url_host}:{self._control.port}"

    @property
    def _url_host(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    # ------------------------------------------------------------- observation

    def _changed(self) -> None:
        self._changed_event.set()
        self._changed_event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every change the sim
        sees: frames, connections, HTTP requests) and return its value; raise
        TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                await self._changed_event.wait()

    async def wait_for_join(self, device_id: str, timeout: float = 5.0) -> DeviceRecord:
        """Wait until ``device_id`` is connected and has joined "device"."""

        def joined() -> DeviceRecord | None:
            device = self.devices.get(device_id)
            return device if device is not None and device.joined else None

        return await self.wait_for(joined, timeout)

    async def wait_for_event(
        self, device_id: str, event: str, count: int = 1, timeout: float = 5.0
    ) -> list[Any]:
        """Wait until the device has sent ``event`` on "device" ``count`` times; the payloads."""

        def enough() -> list[Any] | None:
            device = self.devices.get(device_id)
            payloads = device.events(event) if device is not None else []
            return payloads if len(payloads) >= count else None

        return await self.wait_for(enough, timeout)

    @property
    def http_log(self) -> list[HttpLogEntry]:
        return self.files.log

    # ---------------------------------------------------------------- commands

    def _session(self, device_id: str) -> _Session:
        session = self._sessions.get(device_id)
        if session is None:
            raise StateError(f"device {device_id!r} is not connected")
        return session

    async def send_frame(self, device_id: str, frame: SimFrame) -> None:
        """Send any frame to a connected device (for protocol edge cases)."""
        await self._send(self._session(device_id), frame)

    async def push(
        self,
        device_id: str,
        event: str,
        payload: Any = None,
        *,
        topic: str = "device",
        fastlane: bool | None = None,
    ) -> SimFrame:
        """Push ``event`` to a device that joined ``topic``; return the frame sent."""
        return await self._push_on(self._session(device_id), event, payload, topic, fastlane)

    async def _push_on(
        self,
        session: _Session,
        event: str,
        payload: Any,
        topic: str = "device",
        fastlane: bool | None = None,
    ) -> SimFrame:
        join_ref = session.device.joined_topics.get(topic)
        if fastlane if fastlane is not None else self.config.fastlane:
            join_ref = None
        elif join_ref is None:
            raise StateError(f"device {session.device.identifier!r} has not joined {topic!r}")
        frame = SimFrame(join_ref, None, topic, event, {} if payload is None else payload)
        await self._send(session, frame)
        return frame

    async def channel_error(
        self, device_id: str, event: str = "phx_error", topic: str = "device"
    ) -> None:
        """End the device's channel with ``phx_error`` (crash) or ``phx_close`` (graceful)."""
        if event not in ("phx_error", "phx_close"):
            raise ConfigError("event must be phx_error or phx_close")
        session = self._session(device_id)
        join_ref = session.device.joined_topics.pop(topic, None)
        if join_ref is None:
            raise StateError(f"device {device_id!r} has not joined {topic!r}")
        await self._send(session, SimFrame(join_ref, join_ref, topic, event, {}))
        self._changed()

    async def close_device(self, device_id: str, code: int = 1000, reason: str = "") -> None:
        """WebSocket close handshake with ``code`` (1012 = server drain)."""
        session = self._session(device_id)
        session.closing_reason = f"closed by sim ({code})"
        await session.conn.close(code, reason)

    def break_connection(self, device_id: str) -> None:
        """Abort the device's TCP connection: no close frame."""
        session = self._session(device_id)
        session.closing_reason = "broken by sim"
        session.conn.abort()

    async def drain(self, code: int = 1012) -> None:
        """Close every connection, as a deploy drains a node (close code 1012)."""
        await asyncio.gather(
            *(self.close_device(device_id, code) for device_id in list(self._sessions)),
            return_exceptions=True,
        )

    def add_file(self, source: Path | str | bytes, url_path: str | None = None) -> str:
        """Serve a file (or bytes) at ``url_path`` (default ``/firmware/<name>``);
        return its pre-signed URL."""
        if isinstance(source, str):
            source = Path(source)
        if url_path is None:
            if isinstance(source, bytes):
                raise ConfigError("url_path is required for bytes")
            url_path = f"/firmware/{source.name}"
        return self.files.add(source, url_path)

    async def offer_update(
        self,
        device_id: str,
        firmware: Path | str,
        *,
        firmware_meta: dict[str, Any] | None = None,
        deployment_id: int | None = None,
        push: bool = True,
        delta: Path | str | None = None,
        delta_fwup_version: str | None = None,
    ) -> dict[str, Any]:
        """Serve ``firmware`` and offer it to ``device_id`` (UpdatePayload, §4.1).

        ``firmware_meta`` entries override those read from the ``.fw``'s
        meta.conf (uuid = fwup's meta-uuid). The offer is pushed now if the
        device has joined (and ``push``), answers ``check_update_available``,
        goes into a legacy join reply and, with ``push_update_on_join``, is
        pushed after every join. As newer servers, it carries the served file's
        ``size``, ``checksum`` and ``partials_checksums``. With ``delta`` (a delta
        ``.fw`` from the running firmware to ``firmware``, needing fwup
        ``delta_fwup_version``, default 1.13.0) the delta is served instead when
        the server's rule allows it for the fwup_version the device joined with
        (hubsim/device_api.py ``device_update_type``; the choice is appended to
        ``sim.devices[id].api.update_types``). Returns the payload."""
        path = Path(firmware)
        meta: dict[str, Any] = read_firmware_meta(path) | (firmware_meta or {})
        device = self.devices.get(device_id)
        if delta is not None:
            joined = (device.join_params or {}) if device is not None else {}
            kind = device_update_type(joined.get("fwup_version"), delta_fwup_version)
            if device is not None:
                device.api.update_types.append(kind)
            if kind == "delta":
                path = Path(delta)
        url = self.add_file(path)
        size, checksum, partials = file_checksums(path)
        payload = {
            "update_available": True,
            "firmware_url": url,
            "firmware_meta": meta,
            "deployment_id": deployment_id,
            "size": size,
            "checksum": checksum,
            "partials_checksums": partials,
        }
        self.updates[device_id] = payload
        if push and device is not None and device.joined:
            await self.push(device_id, "update", payload)
        return payload

    async def set_update_mode(
        self, device_id: str, mode: str | None = None, *, allowed: bool | None = None
    ) -> dict[str, Any]:
        """The operator sets a device's update mode and/or grant (pushed if joined)."""
        if device_id not in self.devices:
            self.devices[device_id] = DeviceRecord(device_id)
        return await self.device_api.set_mode(device_id, mode, allowed)

    def clear_update(self, device_id: str) -> None:
        """Forget the offered update (check_update_available then answers "nothing")."""
        self.updates.pop(device_id, None)

    async def offer_archive(
        self,
        device_id: str,
        archive: Path | str,
        *,
        info: dict[str, Any] | None = None,
        push: bool = True,
    ) -> dict[str, Any]:
        """Serve ``archive`` at ``/archives/<uuid>.fw`` and offer it (ArchiveInfo, §4.1).

        It is pushed now if the device has joined (and ``push``) and again after
        every join, as the server does. ``info`` overrides fields. Returns it."""
        path = Path(archive)
        meta = read_firmware_meta(path)
        archive_uuid = str((info or {}).get("uuid") or meta["uuid"])
        url = self.add_file(path, f"/archives/{archive_uuid}.fw")
        uploaded = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
        payload: dict[str, Any] = {
            "size": path.stat().st_size,
            "uuid": archive_uuid,
            "version": meta["version"],
            "description": meta["description"],
            "platform": meta["platform"],
            "architecture": meta["architecture"],
            "uploaded_at": uploaded.isoformat(),
            "url": url,
        } | (info or {})
        self.archives[device_id] = payload
        device = self.devices.get(device_id)
        if push and device is not None and device.joined:
            await self.push(device_id, "archive", payload)
        return payload

    def clear_archive(self, device_id: str) -> None:
        self.archives.pop(device_id, None)

    def set_fault(self, fault: Fault | None = None, /, **fields: Any) -> Fault:
        """Add a file-server fault: ``set_fault(Fault(...))`` or
        ``set_fault(kind="cut", path="/firmware/x.fw", after=1000, times=1)``."""
        if fault is None:
            if "attempts" in fields and fields["attempts"] is not None:
                fields["attempts"] = frozenset(fields["attempts"])
            fault = Fault(**fields)
        self.files.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.files.faults.clear()

    def issue_device_cert(self, identifier: str, folder: Path | None = None) -> CertPair:
        """A device certificate (CN = identifier) the sim accepts (needs ``tls``)."""
        if self.pki is None:
            raise StateError("no PKI: start the sim with tls=True or http_tls=True")
        return issue_device_cert(self.pki.device_ca, identifier, folder or self.pki.folder)

    # ------------------------------------------------------- connection handling

    def _decide(
        self, target: str, headers: dict[str, str], peercert: _ws.PeerCert | None
    ) -> object:
        secrets = {s.key: s for s in self.config.shared_secrets}
        now_ms = int(self.config.clock() * 1000)
        decision = decide(
            target,
            headers,
            peercert,
            secrets=secrets,
            now_ms=now_ms,
            max_age_s=self.config.nh1_max_age_s,
        )
        if isinstance(decision, HttpAnswer):
            path = target.split("?", maxsplit=1)[0]
            self.handshakes.append(
                HandshakeRecord(path, decision.status, decision.reason, None, None, time.time())
            )
            logger.info("upgrade %s answered %d (%s)", path, decision.status, decision.reason)
            self._changed()
            return _ws.Reject(decision.status, decision.body, decision.headers)
        self.handshakes.append(
            HandshakeRecord(
                decision.path, 101, "accepted", decision.identifier, decision.auth, time.time()
            )
        )
        return decision

    async def _handle(self, conn: _ws.WsConnection, context: object) -> None:
        assert isinstance(context, Accepted)
        identifier = context.identifier
        device = self.devices.get(identifier)
        if device is None:
            device = self.devices[identifier] = DeviceRecord(identifier)
        old = self._sessions.get(identifier)
        session = _Session(conn, device)
        self._sessions[identifier] = session
        device.connected = True
        device.auth = context
        device.connections += 1
        device.joined_topics = {}
        logger.info("device %s connected (%s)", identifier, context.auth)
        self._changed()
        if old is not None:
            # A newer connection for the same device closes the older one (§2).
            old.closing_reason = "replaced by a newer connection"
            self._spawn(old.conn.close(1000, ""))
        try:
            await self._receive_loop(session)
        finally:
            reason = session.closing_reason or f"closed by device ({conn.close_code})"
            self.device_api.session_ended(session)
            device.disconnects.append(reason)
            if self._sessions.get(identifier) is session:
                del self._sessions[identifier]
                device.connected = False
                device.joined_topics = {}
            logger.info("device %s disconnected: %s", identifier, reason)
            self._changed()

    async def _receive_loop(self, session: _Session) -> None:
        conn = session.conn
        while True:
            try:
                async with asyncio.timeout(self.config.idle_timeout_s):
                    message = await conn.recv()
            except TimeoutError:
                session.closing_reason = "idle timeout"
                await conn.close(1000, "")
                return
            if message is None:
                return
            if isinstance(message, bytes):
                session.closing_reason = "binary frame"
                await conn.close(1003, "")
                return
            try:
                frame = SimFrame.decode(message)
            except ProtocolError as exc:
                # Phoenix's serializer crashes the socket process on a bad frame.
                session.closing_reason = f"bad frame: {exc}"
                await conn.close(1011, "")
                return
            logger.debug("< %s %s", session.device.identifier, redact_text(message))
            session.device.frames_received.append(frame)
            self._changed()
            await self._dispatch(session, frame)

    async def _send(self, session: _Session, frame: SimFrame) -> None:
        text = frame.encode()
        logger.debug("> %s %s", session.device.identifier, redact_text(text))
        if await session.conn.send(text):
            session.device.frames_sent.append(frame)
            self._changed()

    async def _dispatch(self, session: _Session, frame: SimFrame) -> None:
        device = session.device
        topic, event = frame.topic, frame.event
        if topic == "phoenix" and event == "heartbeat":
            if self.config.reply_heartbeats:
                await self._send(session, reply(frame, None, "ok", {}))
            return
        if event == "phx_join":
            await self._join(session, frame)
            return
        join_ref = device.joined_topics.get(topic)
        if join_ref is None:
            await self._send(session, reply(frame, None, "error", {"reason": "unmatched topic"}))
            return
        if topic == "extensions" and event != "phx_leave":
            await self.device_api.extension_message(session, frame, join_ref)
            return
        if topic == "device" and await self.device_api.device_message(session, frame, join_ref):
            return
        if event == "phx_leave":
            del device.joined_topics[topic]
            await self._send(session, reply(frame, join_ref, "ok", {}))
            await self._send(session, SimFrame(join_ref, join_ref, topic, "phx_close", {}))
            self._changed()
        elif topic == "device" and event == "check_update_available":
            payload = self.updates.get(device.identifier, NOTHING_AVAILABLE)
            if self.device_api.in_penalty_box(device):
                payload = NOTHING_AVAILABLE
            await self._send(session, reply(frame, join_ref, "ok", payload))
        elif topic == "device" and event == "location:update":
            await self._send(session, reply(frame, join_ref, "ok", {}))

    async def _join(self, session: _Session, frame: SimFrame) -> None:
        device = session.device
        topic = frame.topic
        if topic not in self.config.topics:
            await self._send(session, reply(frame, None, "error", {"reason": "unmatched topic"}))
            return
        old_ref = device.joined_topics.pop(topic, None)
        if old_ref is not None:
            # Phoenix closes the old channel of a duplicate join, then joins anew.
            await self._send(session, SimFrame(old_ref, old_ref, topic, "phx_close", {}))
        device.joins.append(frame)
        params = frame.payload if isinstance(frame.payload, dict) else {}
        if topic == "extensions":
            await self.device_api.extensions_join(session, frame)
            return
        if topic != "device":
            device.joined_topics[topic] = frame.join_ref or ""
            await self._send(session, reply(frame, frame.join_ref, "ok", {}))
            self._changed()
            return
        device.join_params = params
        mode = self.config.join_reply
        if mode == "none":
            self._changed()
            return
        if mode == "error":
            await self._send(
                session, reply(frame, frame.join_ref, "error", {"error": "could not connect"})
            )
            self._changed()
            return
        response: dict[str, Any] = {}
        if mode == "legacy":
            response = dict(self.updates.get(device.identifier, {"update_available": False}))
        device.joined_topics[topic] = frame.join_ref or ""
        await self._send(session, reply(frame, frame.join_ref, "ok", response))
        await self._after_join(session, params)

    async def _after_join(self, session: _Session, params: dict[str, Any]) -> None:
        """The server's after-join pushes, in its order (protocol.md §3.2)."""
        device_id = session.device.identifier
        pushes: list[tuple[str, Any]] = []
        if params.get("fwup_public_keys") == "on_connect":
            pushes.append(("fwup_public_keys", {"keys": self.config.fwup_public_keys}))
        if params.get("archive_public_keys") == "on_connect":
            pushes.append(("archive_public_keys", {"keys": self.config.archive_public_keys}))
        archive = self.archives.get(device_id)
        if archive is not None and _version_at_least(
            params.get("device_api_version", "1.0.0"), (2, 0, 0)
        ):
            pushes.append(("archive", archive))
        if self.config.health_check:
            pushes.append(("check_health", {}))
        pushes += self.device_api.after_join_pushes(session.device, params)
        update = self.updates.get(device_id)
        blocked = self.device_api.in_penalty_box(session.device)
        if update is not None and self.config.push_update_on_join and not blocked:
            pushes.append(("update", update))
        for event, payload in pushes:
            await self._push_on(session, event, payload)

    def _spawn(self, coro: Any) -> None:
        self._spawn_task(asyncio.ensure_future(coro))

    def _spawn_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------- views

    def summary(self) -> dict[str, Any]:
        """URLs and counters, as the control API's ``GET /_sim/info`` shows them."""
        return {
            "ws_url": self.ws_url,
            "http_url": self.http_url,
            "control_url": self.control_url,
            "tls": self.config.tls,
            "pki": None
            if self.pki is None
            else {
                "folder": str(self.pki.folder),
                "ca": str(self.pki.ca.cert),
                "device_ca": str(self.pki.device_ca.cert),
                "device_ca_key": str(self.pki.device_ca.key),
            },
            "devices": sorted(self.devices),
            "connected": sorted(self._sessions),
        }


def dumps(value: Any) -> bytes:
    """JSON for the control API and CLI."""
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"

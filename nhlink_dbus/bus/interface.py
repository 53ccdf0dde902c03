"""The ``org.nerveshub.Link1`` service object (DESIGN §2): translation only.

Every exported method goes through one dispatcher (:meth:`LinkInterface.handle_message`,
a dbus-next message handler) instead of dbus-next's own method handler, because
dbus-next 0.2.3 (also Debian 12's) cannot do what the contract needs:

* its handler does not tell a method who called; we need the caller's unique
  name to look up its uid (access control, ``DecisionMade.decided_by``);
* it answers any non-``DBusError`` exception with the formatted traceback, and
  even a ``DBusError`` from a method escapes its reply callback and is logged as
  "Exception in callback". Our dispatcher builds every reply and error itself,
  so no exception ever reaches dbus-next and no traceback reaches a caller.

The ``@method`` declarations stay the single source of names and signatures
(introspection is dbus-next's, plus argument names and documentation); the
dispatcher calls them with dbus-next's own body conversion helpers, reached
through :mod:`nhlink_dbus.aio.dbus_compat` (the one place for its private names).

No ``from __future__ import annotations`` here: dbus-next reads the signature
strings from the annotations at class creation. Those strings are D-Bus
signatures, not Python names: the members carrying them are ``@no_type_check``
for mypy and F821 is off for ruff in this file.
"""

# ruff: noqa: F821

import contextlib
import inspect
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, no_type_check

from dbus_next import introspection as intr
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import ArgDirection, MessageFlag, MessageType, PropertyAccess
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.service import ServiceInterface, dbus_property, method, signal

from nhlink_dbus import names
from nhlink_dbus.aio.dbus_compat import MethodInfo, body_to_args, exported_methods, result_to_body
from nhlink_dbus.aio.supervisor import Supervisor
from nhlink_dbus.bus import device_members
from nhlink_dbus.bus.access import AccessPolicy
from nhlink_dbus.bus.info import UINT32_MAX, UINT64_MAX, info_to_variants, unwrap
from nhlink_dbus.core.redact import redact_text, redact_url
from nhlink_dbus.errors import InvalidArgument, NhlinkError, RequestError
from nhlink_dbus.service_api import Caller, Info, LinkService

logger = logging.getLogger(__name__)

_OUT: Any = ArgDirection.OUT  # intr.Arg's annotation says list; it takes the enum

INTERNAL_MESSAGE = "internal error in nhlink-dbus; the service log has the details"

# Who is calling the method that runs in this task (set by the dispatcher).
_CALLER: ContextVar[Caller] = ContextVar("nhlink_bus_caller")

# Names of output arguments (dbus-next names only input arguments).
_OUT_ARG_NAMES: Mapping[str, Sequence[str]] = {
    "GetPendingRequests": ("requests",),
    "CheckForUpdate": ("update",),
    "InstallFile": ("request_id",),
    **device_members.OUT_ARG_NAMES,
    "GetArchives": ("archives",),
}


def error_for(exc: BaseException) -> tuple[str, str]:
    """The D-Bus error name and message a caller gets for ``exc`` (STYLE habit 3)."""
    if isinstance(exc, RequestError):
        return names.ERROR_PREFIX + type(exc).__name__, redact_text(str(exc))
    if isinstance(exc, NhlinkError):
        return names.ERROR_FAILED, redact_text(str(exc))
    return names.ERROR_INTERNAL, INTERNAL_MESSAGE


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _close_fds(fds: Sequence[int]) -> None:
    # dbus-next never closes descriptors it received; each message's are ours.
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _doc(obj: object) -> str:
    """An object's docstring as one line (the DocString annotation's value)."""
    return " ".join(inspect.cleandoc(getattr(obj, "__doc__", None) or "").split())


# Properties: D-Bus name → (service attribute, conversion to the D-Bus value).
_PROPERTIES: Mapping[str, tuple[str, Callable[[Any], object]]] = {
    "State": ("state", str),
    "Connected": ("connected", bool),
    "Progress": ("progress", lambda v: _clamp(v, 0, 100)),
    "CurrentFirmware": ("current_firmware", lambda v: {str(k): str(x) for k, x in v.items()}),
    "DeviceIdentifier": ("device_identifier", str),
    "ServerUrl": ("server_url", lambda v: redact_url(str(v)) if v else ""),
    "LastError": ("last_error", lambda v: redact_text(str(v))),
    "ReconnectBackoff": ("reconnect_backoff", lambda v: [_clamp(x, 0, UINT64_MAX) for x in v]),
    "DecisionTimeout": ("decision_timeout_ms", lambda v: _clamp(v, 0, UINT64_MAX)),
    "DefaultDecision": ("default_decision", str),
    "Version": ("version", str),
    **device_members.PROPERTIES,
}


class LinkInterface(device_members.DeviceApiMembers, ServiceInterface):
    """NervesHub device client: firmware update and archive decisions, progress and reboot.
    Methods are open to root and one configured group (default nhlink); properties,
    signals and introspection to everyone. Errors are org.nerveshub.Link1.Error.*:
    UnknownRequest, InvalidDecision, InvalidArgument, AccessDenied, NotPossible,
    Failed, Internal."""

    def __init__(self, service: LinkService, group: str = names.DEFAULT_ACCESS_GROUP) -> None:
        super().__init__(names.INTERFACE)
        self._service = service
        self.group = group
        self._bus: MessageBus | None = None
        self._access: AccessPolicy | None = None
        self._calls = Supervisor()  # method calls being answered
        self._methods = exported_methods(self)

    def attach(self, bus: MessageBus) -> None:
        """Export on ``bus`` at ``/org/nerveshub/Link`` and take over our method calls."""
        self._bus = bus
        self._access = AccessPolicy(bus, self.group)
        bus.add_message_handler(self.handle_message)
        bus.export(names.OBJECT_PATH, self)

    async def detach(self) -> None:
        """Stop answering: unexport, and cancel calls still running (no reply for them)."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.remove_message_handler(self.handle_message)
            bus.unexport(names.OBJECT_PATH, self)
        calls, self._calls = self._calls, Supervisor()
        await calls.aclose()

    # -- dispatch --------------------------------------------------------------------------

    def handle_message(self, msg: Message) -> bool | None:
        """dbus-next message handler: take over calls of our methods (see module docstring)."""
        if (
            self._bus is None
            or msg.message_type != MessageType.METHOD_CALL
            or msg.path != names.OBJECT_PATH
            or msg.interface not in (names.INTERFACE, None)
        ):
            return None
        declared = self._methods.get(msg.member)
        if declared is None or msg.signature != declared.in_signature:
            return None  # dbus-next answers UnknownMethod
        self._calls.spawn(f"call {msg.member}", self._dispatch(msg, declared))
        return True

    async def _dispatch(self, msg: Message, declared: MethodInfo) -> None:
        assert self._bus is not None and self._access is not None
        bus = self._bus
        try:
            try:
                caller = await self._access.check(msg.sender)
                if "h" in declared.in_signature and not msg.unix_fds:
                    raise InvalidArgument("no file descriptor was passed (fd passing is needed)")
                args = body_to_args(msg)
                _CALLER.set(caller)
                logger.debug("< %s from %s", msg.member, caller.describe())
                result = await declared.fn(self, *args)
                body, fds = result_to_body(result, declared)
                reply = Message.new_method_return(msg, declared.out_signature, body, fds)
            finally:
                _close_fds(msg.unix_fds)
        except Exception as exc:
            name, text = error_for(exc)
            if name == names.ERROR_INTERNAL:
                logger.error("%s failed", msg.member, exc_info=exc)
            else:
                logger.debug("> %s error %s: %s", msg.member, name, text)
            reply = Message.new_error(msg, name, text)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return
        try:
            await bus.send(reply)
        except Exception as exc:  # the bus is gone: nobody to answer
            logger.debug("could not answer %s: %s", msg.member, exc)

    @staticmethod
    def _caller() -> Caller:
        return _CALLER.get()

    # -- methods (DESIGN §2) ---------------------------------------------------------------

    @method()
    @no_type_check
    async def Decide(self, request_id: "s", decision: "s", delay_ms: "t") -> None:
        """Answer a pending request. Updates: apply, ignore, reschedule; archives:
        download, ignore, reschedule. delay_ms > 0 only with reschedule. The first
        valid answer wins; later ones get UnknownRequest."""
        self._service.decide(request_id, decision, delay_ms, self._caller())

    @method()
    @no_type_check
    async def GetPendingRequests(self) -> "a(ssa{sv})":
        """Requests waiting for a decision: (request_id, kind update or archive, info)."""
        return [
            [request.request_id, request.kind, info_to_variants(request.info)]
            for request in self._service.pending_requests()
        ]

    @method()
    @no_type_check
    async def CheckForUpdate(self) -> "a{sv}":
        """Ask the hub now; an available update then enters the normal decision path
        (UpdateAvailable). Returns the hub's answer as an info dictionary (empty: none)."""
        return info_to_variants(await self._service.check_for_update())

    @method()
    @no_type_check
    async def InstallFile(self, fd: "h", options: "a{sv}") -> "s":
        """Install a local .fw passed as an open file descriptor (never a path): verified
        first, then the same apply, progress and reboot path. options: none are defined yet
        (pass an empty dictionary). Returns the request id."""
        owned = os.dup(fd)  # the service owns this copy; the message's own fd is closed
        return await self._service.install_file(owned, unwrap(options), self._caller())

    @method()
    @no_type_check
    async def GetArchives(self) -> "a(sa{sv})":
        """Archives ready in the archives folder: (path, info), as ArchiveReady announced
        them (after a restart, what each file's metadata says). For a UI that starts late."""
        return [
            [archive.path, info_to_variants(archive.info)]
            for archive in self._service.ready_archives()
        ]

    @method()
    @no_type_check
    async def Reconnect(self) -> None:
        """Drop and re-open the hub connection."""
        self._service.reconnect()

    @method()
    @no_type_check
    async def SetReconnectBackoff(self, delays_ms: "at") -> None:
        """Delays (ms) for the next reconnects; empty: the default back-off."""
        self._service.set_reconnect_backoff(list(delays_ms))

    # -- signals ---------------------------------------------------------------------------

    @signal()
    @no_type_check
    def UpdateAvailable(self, request_id, update) -> "sa{sv}":
        """An update needs a decision (again after a reschedule, with the same id)."""
        return [request_id, update]

    @signal()
    @no_type_check
    def ArchiveAvailable(self, request_id, archive) -> "sa{sv}":
        """An archive needs a decision."""
        return [request_id, archive]

    @signal()
    @no_type_check
    def ArchiveReady(self, request_id, archive, path) -> "sa{sv}s":
        """An archive was downloaded or copied and verified; path is where it is."""
        return [request_id, archive, path]

    @signal()
    @no_type_check
    def DecisionMade(self, request_id, decision, delay_ms, decided_by) -> "ssts":
        """A request was decided. decided_by names the caller (uid and unique name),
        or is timeout or policy, or hub (a device-managed update the hub refused for
        now: rescheduled by its delay)."""
        return [request_id, decision, delay_ms, decided_by]

    @signal()
    @no_type_check
    def FwupProgress(self, percent) -> "u":
        """Progress of the update being applied, 0..100, monotonic within one update; at
        most every 100 ms (the latest value at most 100 ms late, 100 at once)."""
        return percent

    @signal()
    @no_type_check
    def FwupMessage(self, kind, code, message) -> "sus":
        """A message of the applier; kind is ok, warning or error."""
        return [kind, code, message]

    @signal()
    @no_type_check
    def UpdateFinished(self, request_id, success, message) -> "sbs":
        """Once per applied request, whether it worked or failed; for a request cut
        short by a restart of the service, sent by the next start (with the old id)."""
        return [request_id, success, message]

    @signal()
    @no_type_check
    def Error(self, message) -> "s":
        """A connection failure, a download failure or refused firmware."""
        return message

    @signal()
    @no_type_check
    def Identify(self) -> None:
        """The hub asked the device to identify itself."""

    @signal()
    @no_type_check
    def Disconnected(self, reason) -> "s":
        """The hub connection dropped (sent before the reconnect wait)."""
        return reason

    @signal()
    @no_type_check
    def RebootScheduled(self, delay_ms) -> "t":
        """A reboot will be requested from logind after delay_ms (again after a
        restart of the service, for an applied update whose reboot never came)."""
        return delay_ms

    @signal()
    @no_type_check
    def MediaAdded(self, device, mount_point, candidates) -> "ssu":
        """A removable medium was found (device node), where it is read (empty when read
        without mounting it), and how many .fw files on it will be verified."""
        return [device, mount_point, candidates]

    @signal()
    @no_type_check
    def MediaRemoved(self, device) -> "s":
        """A removable medium went away; work on its files stopped."""
        return device

    # -- properties (read-only; PropertiesChanged on change) -------------------------------

    def _read(self, name: str) -> object:
        attribute, convert = _PROPERTIES[name]
        try:
            return convert(getattr(self._service, attribute))
        except Exception as exc:
            logger.error("reading property %s failed", name, exc_info=exc)
            raise DBusError(names.ERROR_INTERNAL, INTERNAL_MESSAGE) from None  # type: ignore[no-untyped-call]

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def State(self) -> "s":
        """idle, awaiting-decision, rescheduled, updating, rebooting or failed."""
        return self._read("State")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def Connected(self) -> "b":
        """Whether the hub connection is up (joined)."""
        return self._read("Connected")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def Progress(self) -> "u":
        """Percent of the update being applied (0..100)."""
        return self._read("Progress")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def CurrentFirmware(self) -> "a{ss}":
        """The running slot's nerves_fw_* metadata, without the prefix."""
        return self._read("CurrentFirmware")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def DeviceIdentifier(self) -> "s":
        """The device identifier (serial) the hub knows this device by."""
        return self._read("DeviceIdentifier")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def ServerUrl(self) -> "s":
        """The hub's URL, never with credentials."""
        return self._read("ServerUrl")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def LastError(self) -> "s":
        """The last error reported (as the Error signal), or empty."""
        return self._read("LastError")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def ReconnectBackoff(self) -> "at":
        """Delays (ms) used for the next reconnects; empty: the default back-off."""
        return self._read("ReconnectBackoff")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def DecisionTimeout(self) -> "t":
        """How long (ms) a request waits for a decision before the default applies."""
        return self._read("DecisionTimeout")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def DefaultDecision(self) -> "s":
        """The decision taken for an update when nobody answers in time."""
        return self._read("DefaultDecision")

    @dbus_property(access=PropertyAccess.READ)
    @no_type_check
    def Version(self) -> "s":
        """The version of nhlink-dbus."""
        return self._read("Version")

    # -- LinkListener: the service's reports become signals --------------------------------

    def _emit(self, emit: Callable[[], object]) -> None:
        # A listener must never raise into the service (a gone bus, a bad value).
        try:
            emit()
        except Exception:
            logger.exception("could not emit a signal")

    def update_available(self, request_id: str, info: Info) -> None:
        self._emit(lambda: self.UpdateAvailable(request_id, info_to_variants(info)))

    def archive_available(self, request_id: str, info: Info) -> None:
        self._emit(lambda: self.ArchiveAvailable(request_id, info_to_variants(info)))

    def archive_ready(self, request_id: str, info: Info, path: str) -> None:
        self._emit(lambda: self.ArchiveReady(request_id, info_to_variants(info), path))

    def decision_made(self, request_id: str, decision: str, delay_ms: int, decided_by: str) -> None:
        self._emit(
            lambda: self.DecisionMade(
                request_id, decision, _clamp(delay_ms, 0, UINT64_MAX), decided_by
            )
        )

    def fwup_progress(self, percent: int) -> None:
        self._emit(lambda: self.FwupProgress(_clamp(percent, 0, 100)))

    def fwup_message(self, kind: str, code: int, message: str) -> None:
        self._emit(
            lambda: self.FwupMessage(kind, _clamp(code, 0, UINT32_MAX), redact_text(message))
        )

    def update_finished(self, request_id: str, success: bool, message: str) -> None:
        self._emit(lambda: self.UpdateFinished(request_id, bool(success), redact_text(message)))

    def error(self, message: str) -> None:
        self._emit(lambda: self.Error(redact_text(message)))

    def identify(self) -> None:
        self._emit(self.Identify)

    def disconnected(self, reason: str) -> None:
        self._emit(lambda: self.Disconnected(redact_text(reason)))

    def reboot_scheduled(self, delay_ms: int) -> None:
        self._emit(lambda: self.RebootScheduled(_clamp(delay_ms, 0, UINT64_MAX)))

    def media_added(self, device: str, mount_point: str, candidates: int) -> None:
        self._emit(lambda: self.MediaAdded(device, mount_point, _clamp(candidates, 0, UINT32_MAX)))

    def media_removed(self, device: str) -> None:
        self._emit(lambda: self.MediaRemoved(device))

    def properties_changed(self, changed: Mapping[str, object]) -> None:
        values: dict[str, object] = {}
        for name, value in changed.items():
            if name not in _PROPERTIES:
                logger.warning("ignored a change of unknown property %r", name)
                continue
            try:
                values[name] = _PROPERTIES[name][1](value)
            except Exception:
                logger.exception("bad value for property %s", name)
        if values:
            self._emit(lambda: self.emit_properties_changed(values))

    # -- introspection ---------------------------------------------------------------------

    def introspect(self) -> intr.Interface:
        """dbus-next's introspection plus argument names and DocString annotations."""
        base = super().introspect()
        cls = type(self)
        docs: dict[tuple[str, str], str] = {("interface", self.name): _doc(cls)}
        methods = []
        for m in base.methods:
            docs["method", m.name] = _doc(getattr(cls, m.name))
            out_names = _OUT_ARG_NAMES.get(m.name, ())
            out_args = [
                intr.Arg(arg.signature, _OUT, name)
                for arg, name in zip(m.out_args, out_names, strict=True)
            ]
            methods.append(intr.Method(m.name, m.in_args, out_args))
        signals = []
        for s in base.signals:
            fn = getattr(cls, s.name)
            docs["signal", s.name] = _doc(fn)
            arg_names = list(inspect.signature(fn).parameters)[1:]
            signals.append(
                intr.Signal(
                    s.name,
                    [
                        intr.Arg(arg.signature, _OUT, name)
                        for arg, name in zip(s.args, arg_names, strict=True)
                    ],
                )
            )
        for p in base.properties:
            docs["property", p.name] = _doc(getattr(cls, p.name))
        return _DocumentedInterface(self.name, methods, signals, base.properties, docs)


class _DocumentedInterface(intr.Interface):
    """An ``intr.Interface`` whose XML carries a DocString annotation on every member."""

    def __init__(
        self,
        name: str,
        methods: list[intr.Method],
        signals: list[intr.Signal],
        properties: list[intr.Property],
        docs: Mapping[tuple[str, str], str],
    ) -> None:
        super().__init__(name, methods=methods, signals=signals, properties=properties)
        self._docs = docs

    def to_xml(self) -> ET.Element:
        element: ET.Element = super().to_xml()
        for child in (element, *element):
            doc = self._docs.get((child.tag, child.get("name", "")))
            if doc:
                child.insert(
                    0,
                    ET.Element("annotation", name=names.DOCSTRING_ANNOTATION, value=doc),
                )
        return element


def contract_xml() -> str:
    """The introspection XML of the interface alone: what ``introspection/`` commits.

    ``python -m nhlink_dbus.bus.interface > introspection/org.nerveshub.Link1.xml``
    rewrites the committed contract after a deliberate change.
    """
    node = ET.Element("node")
    # Introspection needs no service; nothing is called on it.
    node.append(LinkInterface(service=None).introspect().to_xml())  # type: ignore[arg-type]
    ET.indent(node)
    doctype = (
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
    )
    return doctype + ET.tostring(node, encoding="unicode") + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(contract_xml())

"""``nhlinkctl``: the command-line client of ``org.nerveshub.Link`` on the system bus.

    nhlinkctl [--json] status
    nhlinkctl [--json] watch                 live state, progress bar, reboot countdown
    nhlinkctl [--json] pending
    nhlinkctl [--json] archives              archives ready in the archives folder
    nhlinkctl [--json] decide ID apply|ignore|download|reschedule [--delay MS]
    nhlinkctl [--json] check
    nhlinkctl [--json] install FILE          the file is opened here and passed as an fd
    nhlinkctl [--json] reconnect
    nhlinkctl [--json] backoff [MS ...] [--reset]
    nhlinkctl [--json] health | mark-valid | mode [MODE] | metric NAME VALUE | alarm …
                                             (see ctl_device.py)

Reading the properties (status, watch) is open to everyone; the other commands
need root or membership of the service's group (``nhlink`` by default). Exit status:
0 done, 1 refused or failed (one line on stderr), 2 bad usage, 130 interrupted.
``DBUS_SYSTEM_BUS_ADDRESS`` is honoured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.errors import DBusError
from dbus_next.message import Message

from nhlink_dbus import ctl_device, names
from nhlink_dbus.bus.info import unwrap
from nhlink_dbus.bus.server import close_connection

NOT_ALLOWED = "not allowed: run as root or as a member of group nhlink"
NOT_RUNNING = (
    f"the nhlink-dbus service is not running (nobody owns {names.BUS_NAME} on the system bus)"
)
DECISIONS = ("apply", "ignore", "download", "reschedule")
BAR_WIDTH = 30

# Signals shown by ``watch`` and their argument names (DESIGN §2).
SIGNAL_ARGS: Mapping[str, tuple[str, ...]] = {
    "UpdateAvailable": ("request_id", "update"),
    "ArchiveAvailable": ("request_id", "archive"),
    "ArchiveReady": ("request_id", "archive", "path"),
    "DecisionMade": ("request_id", "decision", "delay_ms", "decided_by"),
    "FwupProgress": ("percent",),
    "FwupMessage": ("kind", "code", "message"),
    "UpdateFinished": ("request_id", "success", "message"),
    "Error": ("message",),
    "Identify": (),
    "Disconnected": ("reason",),
    "RebootScheduled": ("delay_ms",),
    "AutoReverted": ("firmware",),
    "MediaAdded": ("device", "mount_point", "candidates"),
    "MediaRemoved": ("device",),
}


class CtlError(Exception):
    """A refusal or failure to tell the user in one line (exit status 1)."""


class Client:
    """Calls on ``org.nerveshub.Link``, with D-Bus errors turned into :class:`CtlError`."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    async def call(
        self,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        interface: str = names.INTERFACE,
        unix_fds: Sequence[int] = (),
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(
                destination=names.BUS_NAME,
                path=names.OBJECT_PATH,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
                unix_fds=list(unix_fds),
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise CtlError(_error_text(reply.error_name or "", text))
        return list(reply.body)

    async def properties(self) -> dict[str, Any]:
        [values] = await self.call(
            "GetAll", "s", [names.INTERFACE], interface=names.DBUS_PROPERTIES
        )
        return {key: unwrap(value) for key, value in values.items()}


def _error_text(name: str, text: str) -> str:
    if name in (names.DBUS_ERROR_ACCESS_DENIED, names.ERROR_PREFIX + "AccessDenied"):
        return NOT_ALLOWED
    if name in (names.DBUS_ERROR_SERVICE_UNKNOWN, names.DBUS_ERROR_NAME_HAS_NO_OWNER):
        return NOT_RUNNING
    if name.startswith(names.ERROR_PREFIX):
        return text or name.removeprefix(names.ERROR_PREFIX)
    return f"{text} ({name})" if text else name


# -- formatting -------------------------------------------------------------------------


def _describe_info(info: Mapping[str, Any]) -> str:
    """``version 1.2.0 (uuid …, product …, …)`` from an info dictionary."""
    rest = ", ".join(f"{k} {v}" for k, v in sorted(info.items()) if k != "version" and v != "")
    head = f"version {info['version']}" if "version" in info else "(no version)"
    return f"{head} ({rest})" if rest else head


def _describe_status(props: Mapping[str, Any]) -> list[str]:
    firmware = props.get("CurrentFirmware") or {}
    backoff = props.get("ReconnectBackoff") or []
    rows = [
        ("state", props.get("State", "?")),
        ("connected", "yes" if props.get("Connected") else "no"),
        ("progress", f"{props.get('Progress', 0)}%"),
        ("firmware", _describe_info(firmware) if firmware else "-"),
        ("device", props.get("DeviceIdentifier") or "-"),
        ("server", props.get("ServerUrl") or "-"),
        ("last error", props.get("LastError") or "-"),
        ("backoff", " ".join(f"{d}" for d in backoff) + " ms" if backoff else "default"),
        (
            "decisions",
            f"{props.get('DefaultDecision', '?')} after {props.get('DecisionTimeout', '?')} ms",
        ),
        ("version", props.get("Version", "?")),
        *ctl_device.status_rows(props),
    ]
    return [f"{key + ':':<12}{value}" for key, value in rows]


def _bar(percent: int) -> str:
    filled = BAR_WIDTH * max(0, min(100, percent)) // 100
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d}%"


class Output:
    """Writes results as text or JSON; ``watch`` redraws in place on a terminal."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.json = as_json
        self.tty = stream.isatty() and not as_json
        self._inline = False  # a progress bar / countdown is on the current line

    def data(self, value: Any) -> None:
        self.line(json.dumps(value, sort_keys=True))

    def result(self, value: Any, text: str) -> None:
        """A command's result: ``value`` as JSON with ``--json``, else ``text``."""
        if self.json:
            self.data(value)
        else:
            self.line(text)

    def line(self, text: str) -> None:
        if self._inline:
            self.stream.write("\n")
            self._inline = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def inline(self, text: str) -> None:
        """On a terminal: overwrite the current line; elsewhere: one line each."""
        if not self.tty:
            self.line(text)
            return
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._inline = True


# -- commands ---------------------------------------------------------------------------


async def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> None:
    props = await client.properties()
    if out.json:
        out.data(props)
    else:
        for row in _describe_status(props):
            out.line(row)


def _show_items(out: Output, items: list[dict[str, Any]], none: str, first: str) -> None:
    """A list as JSON, or one line per item (``first`` fields, then the info), or ``none``."""
    if out.json:
        out.data(items)
        return
    if not items:
        out.line(none)
    for item in items:
        head = "  ".join(str(item[key]) for key in first.split())
        out.line(f"{head}  {_describe_info(item['info'])}")


async def cmd_pending(client: Client, args: argparse.Namespace, out: Output) -> None:
    [requests] = await client.call("GetPendingRequests")
    items = [
        {"request_id": rid, "kind": kind, "info": unwrap(info)} for rid, kind, info in requests
    ]
    _show_items(out, items, "no pending requests", "request_id kind")


async def cmd_archives(client: Client, args: argparse.Namespace, out: Output) -> None:
    [archives] = await client.call("GetArchives")
    items = [{"path": path, "info": unwrap(info)} for path, info in archives]
    _show_items(out, items, "no archives ready", "path")


async def cmd_decide(client: Client, args: argparse.Namespace, out: Output) -> None:
    await client.call("Decide", "sst", [args.request_id, args.decision, args.delay])
    if out.json:
        out.data({"request_id": args.request_id, "decision": args.decision, "delay_ms": args.delay})
    else:
        delay = f" (in {args.delay} ms)" if args.delay else ""
        out.line(f"{args.request_id}: {args.decision}{delay}")


async def cmd_check(client: Client, args: argparse.Namespace, out: Output) -> None:
    [info] = await client.call("CheckForUpdate")
    update = unwrap(info)
    if out.json:
        out.data(update)
    elif update:
        out.line(f"update available: {_describe_info(update)}")
    else:
        out.line("no update available")


async def cmd_install(client: Client, args: argparse.Namespace, out: Output) -> None:
    try:
        fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CtlError(f"cannot open {args.file}: {exc.strerror}") from exc
    try:
        [request_id] = await client.call("InstallFile", "ha{sv}", [0, {}], unix_fds=[fd])
    finally:
        os.close(fd)
    if out.json:
        out.data({"request_id": request_id})
    else:
        out.line(f"installing {args.file}: request {request_id}")


async def cmd_reconnect(client: Client, args: argparse.Namespace, out: Output) -> None:
    await client.call("Reconnect")
    if out.json:
        out.data({"reconnect": True})
    else:
        out.line("reconnecting")


async def cmd_backoff(client: Client, args: argparse.Namespace, out: Output) -> None:
    if args.delays or args.reset:
        if args.delays and args.reset:
            raise CtlError("give delays or --reset, not both")
        await client.call("SetReconnectBackoff", "at", [list(args.delays)])
    delays = (await client.properties()).get("ReconnectBackoff", [])
    if out.json:
        out.data({"ReconnectBackoff": delays})
    else:
        out.line("backoff: " + (" ".join(map(str, delays)) + " ms" if delays else "default"))


class Watcher:
    """``watch``: signals and property changes of the service as they happen."""

    def __init__(self, client: Client, out: Output) -> None:
        self.client = client
        self.out = out
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self._countdown: asyncio.Task[None] | None = None

    def _on_message(self, msg: Message) -> None:
        if msg.message_type == MessageType.SIGNAL:
            self.events.put_nowait(msg)

    async def run(self) -> None:
        bus = self.client.bus
        # Subscribe before reading the initial state, so that nothing falls between.
        bus.add_message_handler(self._on_message)
        rules = (
            f"type='signal',sender='{names.BUS_NAME}',path='{names.OBJECT_PATH}',"
            f"interface='{names.INTERFACE}'",
            f"type='signal',sender='{names.BUS_NAME}',path='{names.OBJECT_PATH}',"
            f"interface='{names.DBUS_PROPERTIES}',member='PropertiesChanged'",
            f"type='signal',sender='{names.DBUS_NAME}',interface='{names.DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{names.BUS_NAME}'",
        )
        for rule in rules:
            await self._bus_call("AddMatch", "s", [rule])
        try:
            props = await self.client.properties()
        except CtlError as exc:
            if str(exc) != NOT_RUNNING:
                raise
            props = {}
            self._show("status", {"running": False}, "waiting for the service to start")
        else:
            self._show_status(props)
        try:
            while True:
                self._handle(await self.events.get())
        finally:
            if self._countdown is not None:
                self._countdown.cancel()

    async def _bus_call(self, member: str, signature: str, body: list[Any]) -> None:
        reply = await self.client.bus.call(
            Message(
                destination=names.DBUS_NAME,
                path=names.DBUS_PATH,
                interface=names.DBUS_INTERFACE,
                member=member,
                signature=signature,
                body=body,
            )
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            raise CtlError(f"cannot watch the service: {reply.body if reply else 'no reply'}")

    def _show(self, event: str, data: Mapping[str, Any], text: str) -> None:
        if self.out.json:
            self.out.data({"event": event, **data})
        else:
            self.out.line(text)

    def _show_status(self, props: Mapping[str, Any]) -> None:
        if self.out.json:
            self.out.data({"event": "status", "properties": dict(props)})
            return
        state = props.get("State", "?")
        connected = "connected" if props.get("Connected") else "not connected"
        self.out.line(f"state {state}, {connected}, version {props.get('Version', '?')}")
        if state == "updating":
            self.out.inline(_bar(int(props.get("Progress", 0))))

    def _handle(self, msg: Message) -> None:
        if msg.member == "NameOwnerChanged":
            _name, _old, new = msg.body
            running = bool(new)
            self._show(
                "service",
                {"running": running},
                "service started" if running else "service stopped",
            )
            return
        if msg.member == "PropertiesChanged":
            _iface, changed, _invalidated = msg.body
            values = {k: unwrap(v) for k, v in changed.items()}
            if self.out.json:
                self.out.data({"event": "PropertiesChanged", "changed": values})
                return
            for key, value in sorted(values.items()):
                if key == "Progress":
                    continue  # drawn from FwupProgress
                self.out.line(f"{key}: {value}")
            return
        arg_names = SIGNAL_ARGS.get(msg.member or "")
        if arg_names is None:
            return
        args = dict(zip(arg_names, (unwrap(v) for v in msg.body), strict=False))
        if self.out.json:
            self.out.data({"event": msg.member, **args})
            if msg.member == "RebootScheduled":
                return
        else:
            self._describe(msg.member or "", args)
        if msg.member == "RebootScheduled":
            self._start_countdown(int(args["delay_ms"]))

    def _describe(self, member: str, a: Mapping[str, Any]) -> None:
        out = self.out
        if member == "FwupProgress":
            percent = int(a["percent"])
            # Off a terminal (logs, pipes) every tenth percent is enough.
            if out.tty or percent % 10 == 0 or percent == 100:
                out.inline(_bar(percent))
        elif member == "UpdateAvailable":
            out.line(f"update available: {a['request_id']}: {_describe_info(a['update'])}")
        elif member == "ArchiveAvailable":
            out.line(f"archive available: {a['request_id']}: {_describe_info(a['archive'])}")
        elif member == "ArchiveReady":
            out.line(f"archive ready: {a['request_id']}: {a['path']}")
        elif member == "DecisionMade":
            delay = f" in {a['delay_ms']} ms" if a["delay_ms"] else ""
            out.line(f"decided {a['request_id']}: {a['decision']}{delay} by {a['decided_by']}")
        elif member == "FwupMessage":
            out.line(f"fwup {a['kind']} {a['code']}: {a['message']}")
        elif member == "UpdateFinished":
            result = "succeeded" if a["success"] else "failed"
            tail = f": {a['message']}" if a["message"] else ""
            out.line(f"update {a['request_id']} {result}{tail}")
        elif member == "Error":
            out.line(f"error: {a['message']}")
        elif member == "Identify":
            out.line("identify requested")
        elif member == "Disconnected":
            out.line(f"disconnected from the hub: {a['reason']}")
        elif member == "RebootScheduled":
            out.line(f"reboot scheduled in {int(a['delay_ms']) / 1000:g} s")
        elif member == "AutoReverted":
            out.line(f"the bootloader fell back from {_describe_info(a['firmware'])}")
        elif member == "MediaAdded":
            where = f" at {a['mount_point']}" if a["mount_point"] else ""
            out.line(f"medium {a['device']}{where}: {a['candidates']} .fw file(s) to check")
        elif member == "MediaRemoved":
            out.line(f"medium {a['device']} removed")

    def _start_countdown(self, delay_ms: int) -> None:
        if self._countdown is not None:
            self._countdown.cancel()
        if self.out.tty:
            self._countdown = asyncio.get_running_loop().create_task(self._count_down(delay_ms))

    async def _count_down(self, delay_ms: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_ms / 1000
        while (left := deadline - loop.time()) > 0:
            self.out.inline(f"rebooting in {math.ceil(left)} s")
            await asyncio.sleep(left - (math.ceil(left) - 1))  # to the next whole second
        self.out.inline("rebooting now")


async def cmd_watch(client: Client, args: argparse.Namespace, out: Output) -> None:
    await Watcher(client, out).run()


# -- entry points -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nhlinkctl",
        description="Control and watch the nhlink-dbus service (org.nerveshub.Link).",
    )
    p.add_argument("--json", action="store_true", help="print JSON (watch: one object a line)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="the service's properties").set_defaults(run=cmd_status)
    sub.add_parser("watch", help="follow events: progress bar, reboot countdown").set_defaults(
        run=cmd_watch
    )
    sub.add_parser("pending", help="requests waiting for a decision").set_defaults(run=cmd_pending)
    sub.add_parser("archives", help="archives ready in the archives folder").set_defaults(
        run=cmd_archives
    )
    d = sub.add_parser("decide", help="answer a pending request")
    d.add_argument("request_id", metavar="ID")
    d.add_argument("decision", choices=DECISIONS)
    d.add_argument("--delay", type=int, default=0, metavar="MS", help="with reschedule")
    d.set_defaults(run=cmd_decide)
    sub.add_parser("check", help="ask the hub for an update now").set_defaults(run=cmd_check)
    i = sub.add_parser("install", help="install a local .fw file")
    i.add_argument("file", metavar="FILE")
    i.set_defaults(run=cmd_install)
    sub.add_parser("reconnect", help="re-open the hub connection").set_defaults(run=cmd_reconnect)
    b = sub.add_parser("backoff", help="show or set the reconnect delays")
    b.add_argument("delays", type=int, nargs="*", metavar="MS")
    b.add_argument("--reset", action="store_true", help="back to the default back-off")
    b.set_defaults(run=cmd_backoff)
    ctl_device.add_commands(sub)
    return p


async def run(argv: Sequence[str], stdout: TextIO, stderr: TextIO) -> int:
    """Run one command; the exit status (errors are written to ``stderr``)."""
    args = _parser().parse_args(argv)
    if any(d < 0 for d in getattr(args, "delays", ())) or getattr(args, "delay", 0) < 0:
        stderr.write("nhlinkctl: delays are milliseconds, 0 or more\n")
        return 2
    out = Output(stdout, args.json)
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    except (OSError, DBusError, ValueError) as exc:
        stderr.write(f"nhlinkctl: cannot connect to the system bus: {exc}\n")
        return 1
    try:
        await args.run(Client(bus), args, out)
    except CtlError as exc:
        stderr.write(f"nhlinkctl: {exc}\n")
        return 1
    finally:
        await close_connection(bus)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())

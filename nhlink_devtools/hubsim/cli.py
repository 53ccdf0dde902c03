"""``nhlink-hub-sim``: run the simulator, or drive a running one through its control API.

::

    nhlink-hub-sim serve --port 4001 --http-port 4002 --control-port 4003 \\
        --shared-secret-file secrets.txt --fw ./firmware [--tls --cert-dir ./pki]
    nhlink-hub-sim devices [--device ID]
    nhlink-hub-sim push update --device ID --file x.fw [--version 2.0.0] [--meta key=value]
    nhlink-hub-sim push archive|reboot|identify|keys|event ...
    nhlink-hub-sim close --device ID [--code 1012] | break --device ID | drain
    nhlink-hub-sim fault add --kind cut --path /firmware/x.fw --after 4096 [--times 1]
    nhlink-hub-sim fault list | fault clear | http-log [--clear] | handshakes | info
    nhlink-hub-sim cert --cert-dir ./pki --device ID     (offline: issue a device certificate)
    nhlink-hub-sim config join_reply=error reply_heartbeats=false idle_timeout_s=5

``serve`` prints one JSON line (URLs, PKI paths) on stdout once it listens, then
logs to stderr until SIGINT/SIGTERM. Every other command prints the control
API's JSON answer; the control URL comes from ``--control``, else the
environment variable ``NHLINK_HUB_SIM_CONTROL``, else ``http://127.0.0.1:4003``.
Exit status: 0 ok, 1 the control API refused (message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from nhlink_dbus.errors import ConfigError
from nhlink_devtools.hubsim.auth import SharedSecret
from nhlink_devtools.hubsim.certs import issue_device_cert, load_or_generate_pki
from nhlink_devtools.hubsim.files import FAULT_KINDS
from nhlink_devtools.hubsim.sim import JOIN_REPLIES, HubSim, HubSimConfig

DEFAULT_CONTROL = "http://127.0.0.1:4003"
CONTROL_ENV = "NHLINK_HUB_SIM_CONTROL"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nhlink-hub-sim",
        description="A NervesHub stand-in for development and tests (127.0.0.1 only).",
    )
    parser.add_argument("--control", help=f"control API URL (default ${CONTROL_ENV} or 4003)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the simulator")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4001, help="WebSocket port (0: any)")
    serve.add_argument("--http-port", type=int, default=4002, help="file server port")
    serve.add_argument("--control-port", type=int, default=4003, help="control API port")
    serve.add_argument("--tls", action="store_true", help="wss:// with device certificates")
    serve.add_argument("--http-tls", action="store_true", help="https:// file server")
    serve.add_argument("--cert-dir", type=Path, help="where the test PKI is written")
    serve.add_argument(
        "--shared-secret",
        action="append",
        default=[],
        metavar="KEY:SECRET[:IDENTIFIER]",
        help="an NH1 key (visible in ps; prefer --shared-secret-file)",
    )
    serve.add_argument(
        "--shared-secret-file", type=Path, help="file with one KEY:SECRET[:IDENTIFIER] per line"
    )
    serve.add_argument("--fw", type=Path, help="serve DIR's files at /firmware/<name>")
    serve.add_argument("--idle-timeout", type=float, default=180.0, help="seconds (0: none)")
    serve.add_argument("--nh1-max-age", type=int, default=90, help="seconds")
    serve.add_argument("--fwup-key", action="append", default=[], help="fwup public key")
    serve.add_argument("--archive-key", action="append", default=[], help="archive public key")
    serve.add_argument("--no-health-check", action="store_true", help="no check_health push")
    serve.add_argument("--join-reply", choices=JOIN_REPLIES, default="ok")
    serve.add_argument("--fastlane", action="store_true", help="pushes with join_ref null")
    serve.add_argument("--no-url-token", action="store_true", help="serve unsigned URLs too")
    serve.add_argument("-v", "--verbose", action="store_true", help="log frames (DEBUG)")

    cert = commands.add_parser("cert", help="issue a device certificate (no server needed)")
    cert.add_argument("--cert-dir", type=Path, required=True, help="the serve --cert-dir")
    cert.add_argument("--device", required=True, help="identifier (the certificate CN)")

    commands.add_parser("info", help="URLs and connected devices")
    devices = commands.add_parser("devices", help="devices, or one device with its frames")
    devices.add_argument("--device")
    commands.add_parser("handshakes", help="every upgrade request and its answer")

    push = commands.add_parser("push", help="push a message to a device")
    kinds = push.add_subparsers(dest="kind", required=True)
    update = kinds.add_parser("update", help="serve a firmware file and offer it")
    update.add_argument("--device", required=True)
    update.add_argument("--file", required=True)
    update.add_argument("--version")
    update.add_argument("--uuid")
    update.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    update.add_argument("--deployment-id", type=int)
    update.add_argument("--no-push", action="store_true", help="only answer check_update")
    update.add_argument("--delta", help="a delta .fw, served if the device's fwup allows")
    update.add_argument("--delta-fwup-version", help="the fwup the delta needs (1.13.0)")
    archive = kinds.add_parser("archive", help="serve an archive and offer it")
    archive.add_argument("--device", required=True)
    archive.add_argument("--file", required=True)
    archive.add_argument("--uuid")
    archive.add_argument("--version")
    for name in ("reboot", "identify"):
        simple = kinds.add_parser(name, help=f"push {name}")
        simple.add_argument("--device", required=True)
    keys = kinds.add_parser("keys", help="set (and push) a public key list")
    keys.add_argument("--kind", dest="key_kind", choices=("fwup", "archive"), required=True)
    keys.add_argument("--key", action="append", default=[])
    keys.add_argument("--device", help="also push the list to this device now")
    event = kinds.add_parser("event", help="push any event")
    event.add_argument("--device", required=True)
    event.add_argument("--event", required=True)
    event.add_argument("--payload", default="{}", help="JSON object")
    event.add_argument("--topic", default="device")
    event.add_argument("--fastlane", action="store_true")

    close = commands.add_parser("close", help="close a device's WebSocket")
    close.add_argument("--device", required=True)
    close.add_argument("--code", type=int, default=1000)
    close.add_argument("--reason", default="")
    brk = commands.add_parser("break", help="abort a device's TCP connection")
    brk.add_argument("--device", required=True)
    channel = commands.add_parser("channel", help="send phx_error or phx_close")
    channel.add_argument("--device", required=True)
    channel.add_argument("--event", choices=("phx_error", "phx_close"), default="phx_error")
    drain = commands.add_parser("drain", help="close every connection (1012)")
    drain.add_argument("--code", type=int, default=1012)
    mode = commands.add_parser("mode", help="set a device's update mode / grant (operator)")
    mode.add_argument("--device", required=True)
    mode.add_argument("--mode", choices=("automatic", "device_managed", "off"))
    mode.add_argument("--allowed", action=argparse.BooleanOptionalAction, default=None,
                      help="may the device choose device_managed itself")  # fmt: skip
    config = commands.add_parser("config", help="change live settings (KEY=JSON value)")
    config.add_argument("settings", nargs="*", metavar="KEY=VALUE")

    fault = commands.add_parser("fault", help="file-server faults")
    fault_commands = fault.add_subparsers(dest="action", required=True)
    add = fault_commands.add_parser("add")
    add.add_argument("--kind", choices=FAULT_KINDS, required=True)
    add.add_argument("--path", help="URL path (default: every file)")
    add.add_argument("--after", type=int, default=0, help="body bytes before cut/stall")
    add.add_argument("--seconds", type=float, help="stall duration (default: forever)")
    add.add_argument("--status", type=int, help="status for status/redirect faults")
    add.add_argument("--location", help="redirect target")
    add.add_argument("--attempt", type=int, action="append", help="only these attempts")
    add.add_argument("--times", type=int, help="use this many times (default: always)")
    add.add_argument("--length", type=int, default=1, help="corrupt: bytes from --after")
    fault_commands.add_parser("list")
    fault_commands.add_parser("clear")
    log = commands.add_parser("http-log", help="file requests")
    log.add_argument("--clear", action="store_true")
    return parser


def _secrets(args: argparse.Namespace) -> list[SharedSecret]:
    lines: list[str] = list(args.shared_secret)
    if args.shared_secret_file is not None:
        try:
            text = args.shared_secret_file.read_text()
        except OSError as exc:
            raise ConfigError(f"{args.shared_secret_file}: {exc.strerror}") from exc
        lines += [line.strip() for line in text.splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith("#")]
    return [SharedSecret.parse(line) for line in lines]


async def _serve(args: argparse.Namespace) -> None:
    config = HubSimConfig(
        host=args.host,
        ws_port=args.port,
        http_port=args.http_port,
        control_port=args.control_port,
        tls=args.tls,
        http_tls=args.http_tls,
        cert_dir=args.cert_dir.resolve() if args.cert_dir else None,
        shared_secrets=_secrets(args),
        nh1_max_age_s=args.nh1_max_age,
        idle_timeout_s=args.idle_timeout or None,
        fw_dir=args.fw.resolve() if args.fw else None,
        require_url_token=not args.no_url_token,
        fwup_public_keys=args.fwup_key,
        archive_public_keys=args.archive_key,
        health_check=not args.no_health_check,
        join_reply=args.join_reply,
        fastlane=args.fastlane,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with HubSim(config) as sim:
        print(json.dumps(sim.summary()), flush=True)
        await stop.wait()


def _control_request(base: str, method: str, path: str, body: Any = None) -> Any:
    try:
        response = httpx.request(method, f"{base}/_sim{path}", json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the control API at {base}: {exc}") from exc
    answer = response.json()
    if response.status_code != 200:
        raise ConfigError(str(answer.get("error", answer)))
    return answer


def _file_argument(text: str) -> str:
    # A path that exists here is sent absolute; otherwise the server resolves it in --fw.
    path = Path(text)
    return str(path.resolve()) if path.exists() else text


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _command(args: argparse.Namespace) -> Any:
    base = (args.control or os.environ.get(CONTROL_ENV) or DEFAULT_CONTROL).rstrip("/")
    command = args.command
    if command == "info":
        return _control_request(base, "GET", "/info")
    if command == "devices":
        return _control_request(
            base, "GET", f"/devices/{args.device}" if args.device else "/devices"
        )
    if command == "handshakes":
        return _control_request(base, "GET", "/handshakes")
    if command == "push":
        return _push(base, args)
    if command == "close":
        body = {"device": args.device, "code": args.code, "reason": args.reason}
        return _control_request(base, "POST", "/close", body)
    if command == "break":
        return _control_request(base, "POST", "/break", {"device": args.device})
    if command == "channel":
        return _control_request(
            base, "POST", "/channel", {"device": args.device, "event": args.event}
        )
    if command == "drain":
        return _control_request(base, "POST", "/drain", {"code": args.code})
    if command == "config":
        settings: dict[str, Any] = {}
        for item in args.settings:
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"config: expected KEY=VALUE, got {item!r}")
            settings[name] = _parse_value(value)
        return _control_request(base, "POST", "/config", settings)
    if command == "fault":
        if args.action == "list":
            return _control_request(base, "GET", "/faults")
        if args.action == "clear":
            return _control_request(base, "DELETE", "/faults")
        body = {
            "kind": args.kind,
            "path": args.path,
            "after": args.after,
            "seconds": args.seconds,
            "status": args.status,
            "location": args.location,
            "attempts": args.attempt,
            "times": args.times,
            "length": args.length,
        }
        return _control_request(base, "POST", "/faults", body)
    if command == "mode":
        body = {"device": args.device, "mode": args.mode, "allowed": args.allowed}
        return _control_request(base, "POST", "/mode", body)
    if command == "http-log":
        return _control_request(base, "DELETE" if args.clear else "GET", "/http-log")
    raise ConfigError(f"unknown command {command}")


def _push(base: str, args: argparse.Namespace) -> Any:
    kind = args.kind
    if kind == "update":
        meta: dict[str, Any] = {}
        for item in args.meta:
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--meta: expected KEY=VALUE, got {item!r}")
            meta[name] = value
        if args.version:
            meta["version"] = args.version
        if args.uuid:
            meta["uuid"] = args.uuid
        body = {
            "device": args.device,
            "file": _file_argument(args.file),
            "firmware_meta": meta,
            "deployment_id": args.deployment_id,
            "push": not args.no_push,
            "delta": _file_argument(args.delta) if args.delta else None,
            "delta_fwup_version": args.delta_fwup_version,
        }
        return _control_request(base, "POST", "/update", body)
    if kind == "archive":
        info = {k: v for k, v in (("uuid", args.uuid), ("version", args.version)) if v}
        body = {"device": args.device, "file": _file_argument(args.file), "info": info}
        return _control_request(base, "POST", "/archive", body)
    if kind in ("reboot", "identify"):
        return _control_request(base, "POST", "/push", {"device": args.device, "event": kind})
    if kind == "keys":
        body = {"kind": args.key_kind, "keys": args.key, "device": args.device}
        return _control_request(base, "POST", "/keys", body)
    payload = _parse_value(args.payload)
    body = {
        "device": args.device,
        "event": args.event,
        "payload": payload,
        "topic": args.topic,
        "fastlane": args.fastlane or None,
    }
    return _control_request(base, "POST", "/push", body)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nhlink-hub-sim`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            logging.basicConfig(
                level=logging.DEBUG if args.verbose else logging.INFO,
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
            )
            if not args.verbose:
                logging.getLogger("websockets").setLevel(logging.WARNING)
            asyncio.run(_serve(args))
            return 0
        if args.command == "cert":
            pki = load_or_generate_pki(args.cert_dir)
            pair = issue_device_cert(pki.device_ca, args.device, pki.folder)
            answer: Any = {"cert": str(pair.cert), "key": str(pair.key), "ca": str(pki.ca.cert)}
        else:
            answer = _command(args)
    except ConfigError as exc:
        print(f"nhlink-hub-sim: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"nhlink-hub-sim: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

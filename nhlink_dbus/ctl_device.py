"""``nhlinkctl`` commands of the newer device API (firmware validation, health, the
update mode) and their lines in ``nhlinkctl status``::

    nhlinkctl [--json] health                 the health report as the hub would get it
    nhlinkctl [--json] mark-valid             the running firmware works: keep it
    nhlinkctl [--json] mode [automatic|device_managed]
    nhlinkctl [--json] metric NAME VALUE      add a metric to the health report
    nhlinkctl [--json] alarm raise ID TEXT | alarm clear ID
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nhlink_dbus.ctl import Client, Output


def status_rows(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``status`` lines of the device API."""
    validated = "yes" if props.get("FirmwareValidated") else "no (not yet confirmed)"
    if props.get("AutoRevertDetected"):
        validated += "; the bootloader fell back from the other slot"
    mode = props.get("UpdateMode") or "unknown (the hub has not said)"
    if props.get("UpdateMode"):
        mode += " (device may choose)" if props.get("ManagedUpdatesAllowed") else ""
    extensions = props.get("Extensions") or []
    return [
        ("validated", validated),
        ("update mode", mode),
        ("extensions", ", ".join(extensions) if extensions else "-"),
        ("interface", props.get("NetworkInterface") or "-"),
    ]


async def cmd_health(client: Client, args: argparse.Namespace, out: Output) -> None:
    metrics, checks, alarms = await client.call("GetHealthReport")
    if out.json:
        report = {
            "metrics": dict(metrics),
            "checks": {k: {"pass": bool(p), "note": n} for k, (p, n) in checks.items()},
            "alarms": dict(alarms),
        }
        out.data(report)
        return
    for name, value in sorted(metrics.items()):
        out.line(f"{name + ':':<32}{value:g}")
    for name, (passed, note) in sorted(checks.items()):
        out.line(f"check {name}: {'pass' if passed else 'FAIL'}{f' ({note})' if note else ''}")
    for alarm_id, text in sorted(alarms.items()):
        out.line(f"alarm {alarm_id}: {text}")


async def cmd_mark_valid(client: Client, args: argparse.Namespace, out: Output) -> None:
    await client.call("MarkValid")
    out.result({"FirmwareValidated": True}, "the running firmware is marked valid")


async def cmd_mode(client: Client, args: argparse.Namespace, out: Output) -> None:
    if args.mode:
        [mode] = await client.call("SetUpdateMode", "s", [args.mode])
    else:
        mode = (await client.properties()).get("UpdateMode", "")
    if out.json:
        out.data({"UpdateMode": mode})
    else:
        out.line(f"update mode: {mode or 'unknown (the hub has not said)'}")
        if args.mode and mode != args.mode:
            out.line("the hub kept it: device_managed needs the hub's grant")


async def cmd_metric(client: Client, args: argparse.Namespace, out: Output) -> None:
    await client.call("SetHealthMetric", "sd", [args.name, args.value])
    out.result({"metric": args.name, "value": args.value}, f"metric {args.name} = {args.value:g}")


async def cmd_alarm(client: Client, args: argparse.Namespace, out: Output) -> None:
    if args.action == "raise":
        await client.call("RaiseAlarm", "ss", [args.alarm_id, " ".join(args.text)])
    else:
        await client.call("ClearAlarm", "s", [args.alarm_id])
    raised = args.action == "raise"
    text = f"alarm {args.alarm_id} {'raised' if raised else 'cleared'}"
    out.result({"alarm": args.alarm_id, "raised": raised}, text)


def add_commands(sub: Any) -> None:
    """Register the commands on ``nhlinkctl``'s subparsers."""
    sub.add_parser("health", help="the health report as the hub would get it").set_defaults(
        run=cmd_health
    )
    sub.add_parser("mark-valid", help="confirm the running firmware works").set_defaults(
        run=cmd_mark_valid
    )
    m = sub.add_parser("mode", help="show or ask for the update mode")
    m.add_argument("mode", nargs="?", choices=("automatic", "device_managed"))
    m.set_defaults(run=cmd_mode)
    metric = sub.add_parser("metric", help="add a metric to the health report")
    metric.add_argument("name", metavar="NAME")
    metric.add_argument("value", type=float, metavar="VALUE")
    metric.set_defaults(run=cmd_metric)
    a = sub.add_parser("alarm", help="raise or clear an alarm of the health report")
    a.add_argument("action", choices=("raise", "clear"))
    a.add_argument("alarm_id", metavar="ID")
    a.add_argument("text", nargs="*", metavar="TEXT", help="with raise: the description")
    a.set_defaults(run=cmd_alarm)

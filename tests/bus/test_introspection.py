"""The committed contract (introspection/org.nerveshub.Link1.xml) is what the
running object introspects as: members, signatures, directions, argument names,
property access and documentation. Read with real gdbus and busctl."""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from nhlink_dbus import names
from nhlink_dbus.bus.interface import contract_xml
from nhlink_dbus.bus.server import BusFace
from tests.bus.conftest import NOBODY, as_user_argv
from tests.bus.device_api_contract import (
    DEVICE_API_METHODS,
    DEVICE_API_PROPERTIES,
    DEVICE_API_SIGNALS,
)
from tests.harness import PrivateSystemBus, busctl

CONTRACT = Path(__file__).resolve().parents[2] / "introspection" / "org.nerveshub.Link1.xml"


def canonical(xml_text: str) -> dict[str, Any]:
    """Our interface from introspection XML, as comparable data."""
    root = ET.fromstring(xml_text)
    (iface,) = [i for i in root.iter("interface") if i.get("name") == names.INTERFACE]

    def doc(element: ET.Element) -> str | None:
        for annotation in element.findall("annotation"):
            if annotation.get("name") == names.DOCSTRING_ANNOTATION:
                return annotation.get("value")
        return None

    def args(element: ET.Element, default_direction: str) -> list[tuple[str, str, str]]:
        return [
            (
                str(a.get("name")),
                str(a.get("type")),
                a.get("direction", default_direction),
            )
            for a in element.findall("arg")
        ]

    return {
        "doc": doc(iface),
        "methods": {m.get("name"): (args(m, "in"), doc(m)) for m in iface.findall("method")},
        "signals": {s.get("name"): (args(s, "out"), doc(s)) for s in iface.findall("signal")},
        "properties": {
            p.get("name"): (p.get("type"), p.get("access"), doc(p))
            for p in iface.findall("property")
        },
    }


def gdbus_introspect(bus: PrivateSystemBus, *extra: str, uid: int | None = None) -> str:
    argv = [
        "gdbus",
        "introspect",
        "--system",
        "--dest",
        names.BUS_NAME,
        "--object-path",
        names.OBJECT_PATH,
        *extra,
    ]
    if uid is not None:
        argv = [*as_user_argv(uid), *argv]
    env = {**bus.env, "HOME": "/nonexistent"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_committed_file_is_generated_from_the_code() -> None:
    assert CONTRACT.read_text() == contract_xml(), (
        "regenerate: python -m nhlink_dbus.bus.interface > introspection/org.nerveshub.Link1.xml"
    )


def test_contract_is_design_section_2() -> None:
    contract = canonical(CONTRACT.read_text())
    signatures = {
        name: "".join(t for _, t, d in a if d == "in")
        + "->"
        + "".join(t for _, t, d in a if d == "out")
        for name, (a, _) in contract["methods"].items()
    }
    assert signatures == DEVICE_API_METHODS | {
        "Decide": "sst->",
        "GetPendingRequests": "->a(ssa{sv})",
        "CheckForUpdate": "->a{sv}",
        "InstallFile": "ha{sv}->s",
        "Reconnect": "->",
        "SetReconnectBackoff": "at->",
        "GetArchives": "->a(sa{sv})",  # issue 10
    }
    signals = contract["signals"].items()
    assert {n: "".join(t for _, t, _ in a) for n, (a, _) in signals} == DEVICE_API_SIGNALS | {
        "UpdateAvailable": "sa{sv}",
        "ArchiveAvailable": "sa{sv}",
        "ArchiveReady": "sa{sv}s",
        "DecisionMade": "ssts",
        "FwupProgress": "u",
        "FwupMessage": "sus",
        "UpdateFinished": "sbs",
        "Error": "s",
        "Identify": "",
        "Disconnected": "s",
        "RebootScheduled": "t",
        "MediaAdded": "ssu",  # issue 10
        "MediaRemoved": "s",
    }
    properties = contract["properties"].items()
    assert {n: (t, a) for n, (t, a, _) in properties} == DEVICE_API_PROPERTIES | {
        "State": ("s", "read"),
        "Connected": ("b", "read"),
        "Progress": ("u", "read"),
        "CurrentFirmware": ("a{ss}", "read"),
        "DeviceIdentifier": ("s", "read"),
        "ServerUrl": ("s", "read"),
        "LastError": ("s", "read"),
        "ReconnectBackoff": ("at", "read"),
        "DecisionTimeout": ("t", "read"),
        "DefaultDecision": ("s", "read"),
        "Version": ("s", "read"),
    }
    assert contract["methods"]["Decide"][0] == [
        ("request_id", "s", "in"),
        ("decision", "s", "in"),
        ("delay_ms", "t", "in"),
    ]
    assert contract["signals"]["DecisionMade"][0] == [
        ("request_id", "s", "out"),
        ("decision", "s", "out"),
        ("delay_ms", "t", "out"),
        ("decided_by", "s", "out"),
    ]
    documented = [
        contract["doc"],
        *(d for _, d in contract["methods"].values()),
        *(d for _, d in contract["signals"].values()),
        *(d for *_, d in contract["properties"].values()),
    ]
    assert all(documented), "every member carries a DocString annotation"


async def test_live_introspection_equals_the_committed_file(
    system_bus: PrivateSystemBus, face: BusFace
) -> None:
    live = await asyncio.to_thread(gdbus_introspect, system_bus, "--xml")
    assert canonical(live) == canonical(CONTRACT.read_text())
    # The same through busctl (sd-bus) and the Introspectable method itself.
    raw = await asyncio.to_thread(
        busctl,
        system_bus,
        "call",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.DBUS_INTROSPECTABLE,
        "Introspect",
        json=True,
    )
    import json  # noqa: PLC0415

    assert canonical(json.loads(raw.stdout)["data"][0]) == canonical(CONTRACT.read_text())


async def test_gdbus_shows_the_interface_to_everyone(
    system_bus: PrivateSystemBus, face: BusFace
) -> None:
    shown = await asyncio.to_thread(gdbus_introspect, system_bus, uid=NOBODY)
    assert f"interface {names.INTERFACE} {{" in shown
    assert "Decide(in  s request_id," in shown
    assert "signal" in shown and "DecisionMade(s request_id," in shown
    assert "readonly s State = 'awaiting-decision';" in shown
    assert '@org.freedesktop.DBus.DocString("The version of nhlink-dbus.")' in shown

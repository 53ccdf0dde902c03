"""Canary for the dbus-next internals behind aio/dbus_compat.py.

If one of these fails, the installed dbus-next changed a private name we rely
on: the message says which version and which name.
"""

from __future__ import annotations

import inspect
import os
from importlib.metadata import version
from typing import no_type_check

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message
from dbus_next.service import ServiceInterface, method

from nhlink_dbus.aio import dbus_compat
from tests.harness import PrivateSystemBus

DBUS_NEXT = version("dbus-next")


def _need(owner: object, name: str) -> object:
    assert hasattr(owner, name), (
        f"dbus-next {DBUS_NEXT}: {getattr(owner, '__name__', owner)}.{name} is gone; "
        "update nhlink_dbus/aio/dbus_compat.py"
    )
    return getattr(owner, name)


class _Probe(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.example.Probe")

    @method()
    @no_type_check
    def Echo(self, text: s, fd: h) -> s:  # noqa: F821
        return text


def test_private_helpers_exist_with_their_signatures() -> None:
    for name, params in (
        ("_get_methods", ["interface"]),
        ("_msg_body_to_args", ["msg"]),
        ("_fn_result_to_body", ["result", "signature_tree"]),
    ):
        fn = _need(ServiceInterface, name)
        got = list(inspect.signature(fn).parameters)  # type: ignore[arg-type]
        assert got == params, f"dbus-next {DBUS_NEXT}: ServiceInterface.{name}{tuple(got)}"
    init = inspect.signature(MessageBus.__init__).parameters
    assert "negotiate_unix_fd" in init, f"dbus-next {DBUS_NEXT}: MessageBus(negotiate_unix_fd)"


def test_round_trip_through_the_shim() -> None:
    methods = dbus_compat.exported_methods(_Probe())
    assert set(methods) == {"Echo"}, f"dbus-next {DBUS_NEXT}: {methods}"
    echo = methods["Echo"]
    assert (echo.in_signature, echo.out_signature) == ("sh", "s"), f"dbus-next {DBUS_NEXT}"
    read, write = os.pipe()
    try:
        msg = Message(
            destination="org.example.Probe",
            path="/",
            interface="org.example.Probe",
            member="Echo",
            signature="sh",
            body=["hello", 0],
            unix_fds=[read],
            message_type=MessageType.METHOD_CALL,
        )
        args = dbus_compat.body_to_args(msg)
        assert args == ["hello", read], f"dbus-next {DBUS_NEXT}: body_to_args gave {args}"
        result = echo.fn(_Probe(), *args)
        assert dbus_compat.result_to_body(result, echo) == (["hello"], []), DBUS_NEXT
    finally:
        os.close(read)
        os.close(write)


async def test_bus_private_attributes_exist(system_bus: PrivateSystemBus) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    try:
        assert dbus_compat.negotiates_unix_fd(bus) is True, f"dbus-next {DBUS_NEXT}"
        for name in ("_sock", "_stream"):
            _need(bus, name)
    finally:
        await dbus_compat.disconnect_and_close(bus)
    assert bus._sock.fileno() == -1, f"dbus-next {DBUS_NEXT}: the socket stayed open"

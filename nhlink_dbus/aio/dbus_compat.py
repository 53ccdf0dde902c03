"""The one place that touches dbus-next's private names.

Checked against dbus-next 0.2.3: Debian 12's ``python3-dbus-next`` and, at the
time of writing, also the newest release on PyPI (the two trees are identical).
``tests/aio/test_dbus_compat.py`` is the canary: it fails naming the installed
version and the name that moved if any of these changes.

What each private name is for:

* ``ServiceInterface._get_methods(interface)`` -> list of ``service._Method``:
  the ``@method()`` declarations (``name``, ``disabled``, ``in_signature``,
  ``out_signature``, ``out_signature_tree``, ``fn``). Our own dispatcher
  (``bus/interface.py``) answers method calls from them, because dbus-next's
  handler does not tell a method who called and answers exceptions with
  tracebacks.
* ``ServiceInterface._msg_body_to_args(msg)``: a call's body as the method's
  arguments, with ``'h'`` indices replaced by the received descriptors.
* ``ServiceInterface._fn_result_to_body(result, signature_tree)``: a method's
  return value as a reply body plus the descriptors to send (``'h'``).
  These two are what dbus-next's own handler uses, so values convert exactly
  as there.
* ``MessageBus._sock`` / ``MessageBus._stream``: the socket and its file object.
  ``disconnect()`` only shuts the socket down and never closes it, so an
  abandoned bus warns ``ResourceWarning: unclosed <socket ...>``.
* ``MessageBus._negotiate_unix_fd``: whether the bus asked for descriptor
  passing (the constructor argument is not kept anywhere public).

Nothing outside this module may reach a dbus-next private name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.message import Message
from dbus_next.service import ServiceInterface
from dbus_next.signature import SignatureTree

# The private helpers are untyped static methods; reach them through Any once.
_SERVICE: Any = ServiceInterface


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One enabled ``@method()`` of a :class:`ServiceInterface`.

    ``fn`` is the undecorated function: call it as ``fn(interface, *args)``.
    """

    name: str
    in_signature: str
    out_signature: str
    out_signature_tree: SignatureTree
    fn: Callable[..., Any]


def exported_methods(interface: ServiceInterface) -> Mapping[str, MethodInfo]:
    """The enabled methods of ``interface`` by D-Bus member name."""
    found: dict[str, MethodInfo] = {}
    for declared in _SERVICE._get_methods(interface):
        if declared.disabled:
            continue
        found[declared.name] = MethodInfo(
            name=declared.name,
            in_signature=declared.in_signature,
            out_signature=declared.out_signature,
            out_signature_tree=declared.out_signature_tree,
            fn=declared.fn,
        )
    return found


def body_to_args(msg: Message) -> list[Any]:
    """The arguments for a method from a call's body (``'h'`` → the received fd)."""
    args: list[Any] = _SERVICE._msg_body_to_args(msg)
    return args


def result_to_body(result: object, method: MethodInfo) -> tuple[list[Any], list[int]]:
    """A method's return value as (reply body, descriptors to send).

    Raises dbus-next's ``SignatureBodyMismatchError`` if the value does not fit
    ``method.out_signature``.
    """
    body, fds = _SERVICE._fn_result_to_body(result, method.out_signature_tree)
    return body, fds


def negotiates_unix_fd(bus: MessageBus) -> bool:
    """Whether ``bus`` was created with ``negotiate_unix_fd=True``."""
    return bool(bus._negotiate_unix_fd)


def close_bus_socket(bus: MessageBus) -> None:
    """Close the socket (and its file object) of a disconnected ``bus``; idempotent."""
    bus._stream.close()
    bus._sock.close()


async def disconnect_and_close(bus: MessageBus) -> None:
    """Disconnect ``bus`` (if still connected), wait for it, then close its socket."""
    if bus.connected:
        bus.disconnect()  # type: ignore[no-untyped-call]
    with contextlib.suppress(Exception):  # a connection that died says why; we only close
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    close_bus_socket(bus)

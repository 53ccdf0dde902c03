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
* ``message_bus._MessageWriter`` and ``MessageBus._writer``: the queue of
  outgoing messages. dbus-next's writer takes a full socket (``EAGAIN``: the bus
  daemon is not reading fast enough, e.g. while it is busy) for a broken one
  and closes the connection; a service then silently drops off the bus
  (python-dbus-next issue #153, open). :func:`system_bus` gives a bus whose
  writer waits until the socket is writable again.

Nothing outside this module may reach a dbus-next private name.
"""

from __future__ import annotations

import array
import contextlib
import socket
from collections.abc import Callable, Mapping
from typing import Any

from dbus_next.aio import message_bus as _aio_message_bus
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType
from dbus_next.message import Message
from dbus_next.service import ServiceInterface
from dbus_next.signature import SignatureTree

from nhlink_dbus.core.records import dataclass

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


class _PatientWriter(_aio_message_bus._MessageWriter):
    """dbus-next's outgoing queue, except that a full socket means "wait".

    The queue holds (bytes, descriptors, future) per message; the loop calls
    :meth:`write_callback` whenever the socket is writable, until the queue is
    empty. A message may go out in several pieces; its descriptors go with the
    first. ``BlockingIOError`` leaves everything as it is and returns: the loop
    calls again once the bus daemon has read. Any other error ends the
    connection, as in dbus-next.
    """

    def write_callback(self) -> None:
        try:
            while True:
                if self.buf is None:
                    if self.messages.qsize() == 0:
                        self.loop.remove_writer(self.fd)
                        return
                    data, self.unix_fds, self.fut = self.messages.get_nowait()
                    self.buf, self.offset = memoryview(data), 0
                pending = self.buf[self.offset :]
                try:
                    if self.unix_fds and self.negotiate_unix_fd:
                        rights = array.array("i", self.unix_fds)
                        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)]
                        self.offset += self.sock.sendmsg([pending], ancillary)
                        self.unix_fds = None
                    else:
                        self.offset += self.sock.send(pending)
                except BlockingIOError:
                    return  # full: called again when writable
                if self.offset < len(self.buf):
                    return  # partly sent: the rest when writable
                self.buf = None
                if self.fut is not None and not self.fut.done():
                    self.fut.set_result(None)
        except Exception as exc:
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(exc)
            self.bus._finalize(exc)


def system_bus(*, negotiate_unix_fd: bool = True) -> MessageBus:
    """A system-bus ``MessageBus`` (not yet connected: ``await bus.connect()``) that
    survives a full socket (module docstring). ``DBUS_SYSTEM_BUS_ADDRESS`` is
    honoured, as by every ``MessageBus``."""
    bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=negotiate_unix_fd)
    bus._writer = _PatientWriter(bus)  # type: ignore[no-untyped-call]
    return bus


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

"""Fuzz target: every method of ``org.nerveshub.Link1`` with any arguments, through a
real private system bus (the shipped policy) to the real daemon (with dbusmock's
logind and nhlink-hub-sim), called as root.

Contract: every call is answered, within :data:`ANSWER_S`, with a return or a
documented error: ``org.nerveshub.Link1.Error.{UnknownRequest, InvalidDecision,
InvalidArgument, NotPossible, Failed}``, or the bus's and dbus-next's own answers
to calls that do not fit the contract (``UnknownMethod``, ``InvalidArgs``,
``AccessDenied`` for ``Properties.Set``...). Never ``Error.Internal`` (a bug, by
definition), never silence, and the daemon stays up with no traceback in its log.

Arguments are valid D-Bus values (the bus daemon itself disconnects a client that
sends an invalid message; that is not the service's business): any strings
without NUL, any integers of the type's range, arrays, ``a{sv}`` dictionaries of
many types, and descriptors of every kind (``/dev/null``, a random file, the
firmware itself or a damaged copy, a pipe, a directory, a socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant
from hypothesis import strategies as st

from nhlink_dbus import names
from tests.fuzz.targets import ContractBroken, fast_mutate

T = TypeVar("T")
ANSWER_S = 60.0
FD_KINDS = ("null", "random", "firmware", "damaged", "pipe", "directory", "socket")

DOCUMENTED = frozenset(
    {names.ERROR_PREFIX + n for n in ("UnknownRequest", "InvalidDecision", "InvalidArgument")}
    | {names.ERROR_PREFIX + n for n in ("NotPossible", "Failed")}
    | {
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        names.DBUS_ERROR_ACCESS_DENIED,  # the policy: Properties.Set is nobody's
    }
)

# (member, signature): the contract's methods, then calls that do not fit it.
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("Decide", "sst"),
    ("GetPendingRequests", ""),
    ("CheckForUpdate", ""),
    ("InstallFile", "ha{sv}"),
    ("Reconnect", ""),
    ("SetReconnectBackoff", "at"),
    ("GetArchives", ""),
    ("GetHealthReport", ""),
    ("MarkValid", ""),
    ("SetUpdateMode", "s"),
    ("RaiseAlarm", "ss"),
    ("ClearAlarm", "s"),
    ("SetHealthCheck", "sbs"),
    ("SetHealthMetric", "sd"),
    ("Decide", "ss"),
    ("Decide", "ssi"),
    ("InstallFile", "a{sv}"),
    ("SetReconnectBackoff", "ai"),
    ("GetPendingRequests", "s"),
    ("NoSuchMethod", ""),
    ("Get", "ss"),  # org.freedesktop.DBus.Properties
    ("GetAll", "s"),
    ("Set", "ssv"),
)
_PROPERTIES_MEMBERS = {"Get", "GetAll", "Set"}


@dataclass
class Call:
    member: str
    signature: str
    body: list[Any]
    fds: list[str] = field(default_factory=list)  # FD_KINDS, one per 'h'


# -- values --------------------------------------------------------------------------------

_WORDS = ("apply", "ignore", "reschedule", "download", "", "u-0-1", "a-0-1", "org.nerveshub.Link1",
          "automatic", "device_managed", "off", "cpu_temp", "disk")  # fmt: skip
_PROPS = ("State", "Connected", "Progress", "LastError", "ServerUrl", "Nope", "")


def _string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(_WORDS)
    if roll < 0.7:
        return "".join(chr(rng.randint(1, 0x7F)) for _ in range(rng.randint(0, 20)))
    chars = []
    for _ in range(rng.randint(0, 30)):
        code = rng.randint(1, 0x10FFFF)
        if 0xD800 <= code <= 0xDFFF:
            code = 0xFFFD  # no surrogates: D-Bus strings are UTF-8
        chars.append(chr(code))
    return "".join(chars)


def _unsigned(rng: random.Random, bits: int) -> int:
    return rng.choice([0, 1, (1 << bits) - 1, 1 << (bits - 1), rng.getrandbits(bits)])


def _signed(rng: random.Random, bits: int) -> int:
    return _unsigned(rng, bits) - (1 << (bits - 1))


def _variant(rng: random.Random, depth: int = 0) -> Variant:
    kind = rng.choice(["s", "u", "i", "b", "x", "t", "d", "as", "ay", "a{sv}", "o", "g"])
    if kind == "a{sv}" and depth > 2:
        kind = "s"
    value: Any
    match kind:
        case "s":
            value = _string(rng)
        case "u":
            value = _unsigned(rng, 32)
        case "t":
            value = _unsigned(rng, 64)
        case "i":
            value = _signed(rng, 32)
        case "x":
            value = _signed(rng, 64)
        case "b":
            value = rng.random() < 0.5
        case "d":
            value = rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan")])
        case "as":
            value = [_string(rng) for _ in range(rng.randint(0, 4))]
        case "ay":
            value = rng.randbytes(rng.randint(0, 40))
        case "o":
            value = rng.choice(["/", "/org/nerveshub/Link", "/a/b_c"])
        case "g":
            value = rng.choice(["", "s", "a{sv}", "(ii)"])
        case _:
            value = _dictionary(rng, depth + 1)
    return Variant(kind, value)


def _dictionary(rng: random.Random, depth: int = 0) -> dict[str, Variant]:
    keys = ["force", "task", "", "x", *_WORDS]
    return {
        rng.choice(keys) + _string(rng)[:3]: _variant(rng, depth) for _ in range(rng.randint(0, 3))
    }


def _argument(code: str, rng: random.Random, fds: list[str]) -> Any:
    match code:
        case "s":
            return _string(rng)
        case "t":
            return _unsigned(rng, 64)
        case "i":
            return _signed(rng, 32)
        case "b":
            return rng.random() < 0.5
        case "d":
            return rng.choice([0.0, -1.0, 42.5, 1e308, -1e308, float("inf"), float("nan")])
        case "v":
            return _variant(rng)
        case "h":
            fds.append(rng.choice(FD_KINDS))
            return len(fds) - 1
        case "at":
            return [_unsigned(rng, 64) for _ in range(rng.choice([0, 1, 2, 5, 30]))]
        case "ai":
            return [_signed(rng, 32) for _ in range(rng.randint(0, 5))]
        case "a{sv}":
            return _dictionary(rng)
    raise AssertionError(code)


_CODES = {
    "sst": ["s", "s", "t"],
    "ss": ["s", "s"],
    "ssi": ["s", "s", "i"],
    "ha{sv}": ["h", "a{sv}"],
    "a{sv}": ["a{sv}"],
    "at": ["at"],
    "ai": ["ai"],
    "s": ["s"],
    "": [],
    "ssv": ["s", "s", "v"],
    "sbs": ["s", "b", "s"],
    "sd": ["s", "d"],
}


def random_call(
    rng: random.Random, member: str | None = None, signature: str | None = None
) -> Call:
    if member is None or signature is None:
        member, signature = rng.choice(SIGNATURES)
    fds: list[str] = []
    body = [_argument(code, rng, fds) for code in _CODES[signature]]
    if member in _PROPERTIES_MEMBERS:
        body[0] = rng.choice([names.INTERFACE, names.INTERFACE, "org.example.Nope"])
        if len(body) > 1:
            body[1] = rng.choice(_PROPS)
    return Call(member, signature, body, fds)


def calls() -> st.SearchStrategy[Call]:
    return st.builds(
        lambda pick, seed: random_call(random.Random(seed), *SIGNATURES[pick]),
        st.integers(0, len(SIGNATURES) - 1),
        st.integers(0, 2**32 - 1),
    )


def derive_call(base: Call, rng: random.Random) -> Call:
    """Another call: the same member and signature with other arguments, or any call."""
    if rng.random() < 0.7:
        return random_call(rng, base.member, base.signature)
    return random_call(rng)


# -- the daemon under test -----------------------------------------------------------------


class BusFuzzEnvironment:
    """A private bus, logind, the hub simulator and the daemon; calls from another thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.folder = Path(tempfile.mkdtemp(prefix="nhlink-fuzz-bus-"))
        self.client: MessageBus | None = None
        self.daemon: Any = None
        self._stack = contextlib.ExitStack()

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = ANSWER_S) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise

    def __enter__(self) -> BusFuzzEnvironment:
        from nhlink_devtools.hubsim import HubSim  # noqa: PLC0415
        from tests.harness import LogindMock, start_system_bus  # noqa: PLC0415
        from tests.integration.daemon_helpers import (  # noqa: PLC0415
            DEVICE,
            Daemon,
            install_complete,
            make_firmware,
            sim_config,
            write_config,
        )

        self.thread.start()
        try:
            bus = start_system_bus()
            self._stack.callback(bus.stop)
            logind = LogindMock(bus)
            self._stack.callback(logind.stop)
            v1 = make_firmware(self.folder, "1.0.0", 16 << 10)
            v2 = make_firmware(self.folder, "2.0.0", 16 << 10)
            self.firmware = v2.path.read_bytes()
            image = self.folder / "disk.img"
            install_complete(image, v1)
            sim = HubSim(sim_config())
            self.on_loop(sim.start())
            self._stack.callback(lambda: self.on_loop(sim.close()))
            cfg = write_config(self.folder, ws_url=sim.ws_url, image=image)
            self.daemon = Daemon(cfg, self.folder / "daemon.log", bus.address, export_bus=True)
            self._stack.callback(self.daemon.stop)
            self.on_loop(sim.wait_for_join(DEVICE, timeout=30))
            self.client = self.on_loop(_connect(bus.address))
            self._stack.callback(lambda: self.on_loop(_close(self.client)))
            self._wait_for_service()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_for_service(self) -> None:
        for _ in range(400):
            reply = self.send(Call("GetPendingRequests", "", []))
            if reply.message_type == MessageType.METHOD_RETURN:
                return
            self.on_loop(asyncio.sleep(0.05))
        raise RuntimeError(f"the daemon did not appear on the bus\n{self.daemon.text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        try:
            self._stack.close()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- calls ------------------------------------------------------------------------------

    def _open(self, kind: str) -> int:
        match kind:
            case "null":
                return os.open("/dev/null", os.O_RDONLY)
            case "directory":
                return os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            case "pipe":
                read, write = os.pipe()
                os.write(write, b"PK\x03\x04")
                os.close(write)
                return read
            case "socket":
                left, right = socket.socketpair()
                right.close()
                return left.detach()
        path = self.folder / f"input-{threading.get_ident()}-{random.getrandbits(32)}"
        data = {"random": os.urandom(random.randint(0, 4096)), "firmware": self.firmware}.get(
            kind, fast_mutate(self.firmware, random.Random())
        )
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        path.unlink()
        return fd

    def send(self, call: Call) -> Message:
        return self.send_all([call])[0]

    def send_all(self, batch: list[Call]) -> list[Message]:
        """Send every call at once (pipelined) and return the replies in order."""
        opened = [[self._open(kind) for kind in call.fds] for call in batch]
        try:
            return self.on_loop(self._send_all(batch, opened))
        finally:
            for fds in opened:
                for fd in fds:
                    os.close(fd)

    async def _send_all(self, batch: list[Call], opened: list[list[int]]) -> list[Message]:
        assert self.client is not None
        client = self.client

        async def one(call: Call, fds: list[int]) -> Message:
            properties = call.member in _PROPERTIES_MEMBERS
            reply = await client.call(
                Message(
                    destination=names.BUS_NAME,
                    path=names.OBJECT_PATH,
                    interface=names.DBUS_PROPERTIES if properties else names.INTERFACE,
                    member=call.member,
                    signature=call.signature,
                    body=call.body,
                    unix_fds=fds,
                )
            )
            assert reply is not None
            return reply

        return list(await asyncio.gather(*(one(c, f) for c, f in zip(batch, opened, strict=True))))

    def alive(self) -> None:
        if self.daemon.proc.poll() is not None:
            raise ContractBroken(f"the daemon exited\n{self.daemon.text()[-3000:]}")


async def _connect(address: str) -> MessageBus:
    # built on the loop's own thread: MessageBus() takes the current event loop
    return await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()


async def _close(bus: MessageBus | None) -> None:
    from tests.harness import close_dbus_next  # noqa: PLC0415

    if bus is not None:
        await close_dbus_next(bus)


def judge(call: Call, reply: Message) -> None:
    """The contract for one call's reply."""
    if reply.message_type == MessageType.METHOD_RETURN:
        return
    name = str(reply.error_name)
    if name not in DOCUMENTED:
        text = reply.body[0] if reply.body else ""
        raise ContractBroken(f"{call.member}({call.signature}) answered {name}: {text}")


@contextlib.contextmanager
def environment() -> Iterator[BusFuzzEnvironment]:
    with BusFuzzEnvironment() as env:
        yield env
        env.alive()
        log = env.daemon.text()
        found = [log.find(mark) for mark in (" ERROR ", "Traceback") if mark in log]
        if found:
            raise ContractBroken(f"the daemon logged an error:\n{log[min(found) - 200 :][:4000]}")

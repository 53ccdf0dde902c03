"""systemd-logind through dbus-next: a block inhibitor while firmware is written, and the reboot.

``org.freedesktop.login1(5)``: ``Inhibit(what, who, why, mode)`` returns a file
descriptor and the lock lasts exactly as long as that descriptor is open;
``Reboot(interactive)`` asks for a reboot (``false``: never prompt for
authentication). The bus must be connected with ``negotiate_unix_fd=True`` or
the inhibitor's descriptor cannot reach us.

Release the inhibitor before calling :meth:`Logind.reboot`: logind ignores block
inhibitors held by the caller's own uid, but another process's would refuse it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.errors import LogindError

logger = logging.getLogger(__name__)

# The reference D-Bus implementation's default method call timeout.
CALL_TIMEOUT_S = 25.0


class _ErrorReply(Exception):
    """logind answered a call with a D-Bus error."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


class Inhibitor:
    """A held logind inhibitor lock: the open descriptor logind gave us.

    :meth:`release` (or leaving ``async with``) closes it, which drops the lock.
    Releasing twice is harmless.
    """

    def __init__(self, fd: int, what: str, mode: str) -> None:
        self._fd: int | None = fd
        self.what = what
        self.mode = mode

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("inhibitor already released")
        return self._fd

    def release(self) -> None:
        """Close the descriptor; logind drops the lock when it sees the hang-up."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            logger.debug("= inhibitor released (%s)", self.what)

    async def __aenter__(self) -> Inhibitor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # Like an unclosed socket: a lock that is never released is a bug.
        if self._fd is not None:
            warnings.warn(f"unreleased logind inhibitor {self!r}", ResourceWarning, stacklevel=1)
            self.release()

    def __repr__(self) -> str:
        return f"<Inhibitor fd={self._fd} what={self.what!r} mode={self.mode!r}>"


class Logind:
    """The logind manager object on a connected system bus."""

    def __init__(self, bus: MessageBus) -> None:
        # Without descriptor passing the daemon never delivers Inhibit's reply (it
        # carries one), so the call would only time out: refuse such a bus now.
        if not getattr(bus, "_negotiate_unix_fd", True):
            raise ValueError("Logind needs a MessageBus(..., negotiate_unix_fd=True)")
        self._bus = bus

    async def inhibit(
        self,
        what: str = names.INHIBIT_WHAT,
        who: str = names.INHIBIT_WHO,
        why: str = names.INHIBIT_WHY,
        mode: str = names.INHIBIT_MODE_BLOCK,
    ) -> Inhibitor:
        """Take an inhibitor lock; raises :class:`LogindError` if logind refuses."""
        try:
            reply = await self._call(names.LOGIND_INHIBIT, "ssss", [what, who, why, mode])
        except (_ErrorReply, TimeoutError, OSError, EOFError) as exc:
            raise LogindError(f"logind refused the inhibitor lock: {_describe(exc)}") from exc
        fds = list(reply.unix_fds)
        index = reply.body[0] if reply.body else None
        if not isinstance(index, int) or not 0 <= index < len(fds):
            for fd in fds:
                os.close(fd)
            raise LogindError(
                "logind's Inhibit reply carried no file descriptor "
                "(is the bus connected with negotiate_unix_fd=True?)"
            )
        fd = fds.pop(index)
        for extra in fds:
            os.close(extra)
        # Received descriptors are inheritable; a child (fwup) must not keep the lock alive.
        os.set_inheritable(fd, False)
        logger.info("inhibitor taken (%s, %s)", what, mode)
        return Inhibitor(fd, what, mode)

    async def reboot(
        self,
        *,
        retries: int,
        retry_delay: float,
        fallback_command: Sequence[str] | None = None,
        fallback_timeout: float = 60.0,
    ) -> None:
        """Ask logind for a reboot: ``Reboot(false)``.

        A failed call (an error reply, no answer within 25 s, a broken bus) is
        retried ``retries`` more times, ``retry_delay`` seconds apart. If every
        attempt fails, ``fallback_command`` (e.g. ``["systemctl", "reboot"]``) is
        run and must exit 0. Raises :class:`LogindError` when nothing worked.
        """
        if retries < 0 or retry_delay < 0:
            raise ValueError("retries and retry_delay must be >= 0")
        failure = "not attempted"
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(retry_delay)
            try:
                await self._call(names.LOGIND_REBOOT, "b", [False])
            except (_ErrorReply, TimeoutError, OSError, EOFError) as exc:
                failure = _describe(exc)
                logger.warning(
                    "logind Reboot failed (attempt %d of %d): %s", attempt + 1, retries + 1, failure
                )
                continue
            logger.info("reboot requested from logind")
            return
        if not fallback_command:
            raise LogindError(f"reboot failed: logind: {failure}")
        problem = await _run_fallback(list(fallback_command), fallback_timeout)
        if problem is not None:
            raise LogindError(f"reboot failed: logind: {failure}; {problem}")
        logger.info("reboot requested with %s", fallback_command[0])

    async def _call(self, member: str, signature: str, body: list[Any]) -> Message:
        if not self._bus.connected:
            # dbus-next would queue the call and never answer it.
            raise ConnectionError("the system bus connection is closed")
        message = Message(
            destination=names.LOGIND_BUS_NAME,
            path=names.LOGIND_PATH,
            interface=names.LOGIND_MANAGER_INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = await self._bus.call(message)
        assert reply is not None  # a method call always gets a reply
        if reply.message_type is MessageType.ERROR:
            for fd in reply.unix_fds:
                os.close(fd)
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise _ErrorReply(str(reply.error_name), text)
        return reply


async def _run_fallback(command: list[str], timeout: float) -> str | None:
    """Run the fallback reboot command; None on success, else what went wrong."""
    logger.warning("falling back to %s", command[0])
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        return f"{command[0]}: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"{command[0]}: no exit within {timeout:g} s"
    if process.returncode != 0:
        last = output.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        detail = f": {last[0]}" if last[0] else ""
        return f"{command[0]} exited with status {process.returncode}{detail}"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _ErrorReply):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CALL_TIMEOUT_S:g} s"
    return f"bus connection lost ({exc.__class__.__name__}: {exc})"

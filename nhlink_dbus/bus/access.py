"""Who may call ``org.nerveshub.Link1`` methods: root and members of one group.

DESIGN §2 enforces this twice: by the policy file (``dbus-policy/``) and here,
so a mistaken policy drop-in cannot open the methods to everyone. The caller is
identified by the bus daemon, never by anything the caller sends:
``org.freedesktop.DBus.GetConnectionCredentials`` (D-Bus specification, "Message
Bus Messages") gives ``UnixUserID``, ``ProcessID`` and, on buses that know them
(dbus-broker, dbus-daemon ≥ 1.15.2), ``UnixGroupIDs``. Without the group list the
groups are read from ``/proc/PID/status`` (``Gid:`` and ``Groups:``).

The verdict is kept per connection (its unique name; the bus never reuses one):
a connection's credentials are fixed when it connects, and the bus policy judges
it on those too. So a client calling 1,000 times a second costs one lookup, and
a refused one is logged once, not once per call (issue 14: ``Decide`` floods).
The most recent :data:`VERDICTS_KEPT` connections are remembered.
"""

from __future__ import annotations

import asyncio
import grp
import logging
from collections import OrderedDict
from collections.abc import Iterable

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.errors import AccessDenied
from nhlink_dbus.service_api import Caller

logger = logging.getLogger(__name__)

VERDICTS_KEPT = 1024


class AccessPolicy:
    """Checks callers of the exported methods against uid 0 and ``group``."""

    def __init__(self, bus: MessageBus, group: str = names.DEFAULT_ACCESS_GROUP) -> None:
        self._bus = bus
        self.group = group
        self._verdicts: OrderedDict[str, Caller | None] = OrderedDict()  # None: refused
        self._judging: dict[str, asyncio.Future[Caller]] = {}

    def denial_message(self) -> str:
        return f"not allowed: run as root or as a member of group {self.group}"

    async def check(self, sender: str | None) -> Caller:
        """The caller behind ``sender`` (a unique bus name); ``AccessDenied`` if refused."""
        if not sender:
            raise AccessDenied(self.denial_message())
        if sender in self._verdicts:
            self._verdicts.move_to_end(sender)
            known = self._verdicts[sender]
            if known is None:
                raise AccessDenied(self.denial_message())
            return known
        # Calls that arrive together share one lookup.
        judging = self._judging.get(sender)
        if judging is None:
            judging = asyncio.ensure_future(self._judge_and_remember(sender))
            self._judging[sender] = judging
            judging.add_done_callback(lambda done: self._judged(sender, done))
        return await asyncio.shield(judging)

    def _judged(self, sender: str, done: asyncio.Future[Caller]) -> None:
        self._judging.pop(sender, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone

    async def _judge_and_remember(self, sender: str) -> Caller:
        try:
            caller = await self._judge(sender)
        except _Gone as gone:
            # Not remembered; and the caller sees the documented name, not this class's.
            raise AccessDenied(str(gone)) from None
        except AccessDenied:
            self._remember(sender, None)
            raise
        self._remember(sender, caller)
        return caller

    def _remember(self, sender: str, verdict: Caller | None) -> None:
        self._verdicts[sender] = verdict
        while len(self._verdicts) > VERDICTS_KEPT:
            self._verdicts.popitem(last=False)

    async def _judge(self, sender: str) -> Caller:
        reply = await self._bus.call(
            Message(
                destination=names.DBUS_NAME,
                path=names.DBUS_PATH,
                interface=names.DBUS_INTERFACE,
                member="GetConnectionCredentials",
                signature="s",
                body=[sender],
            )
        )
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            # The caller left before we asked: nobody to grant anything to (and,
            # unique names never coming back, nobody to remember).
            logger.info("refused a call from %s: its credentials are unknown", sender)
            raise _Gone(self.denial_message())
        credentials = reply.body[0]
        uid = int(credentials["UnixUserID"].value)
        caller = Caller(uid=uid, unique_name=sender)
        if uid == 0:
            return caller
        gid = self._group_id()
        if gid is not None:
            if "UnixGroupIDs" in credentials:
                groups: Iterable[int] = credentials["UnixGroupIDs"].value
            elif "ProcessID" in credentials:
                groups = _process_groups(int(credentials["ProcessID"].value))
            else:
                groups = ()
            if gid in groups:
                return caller
        logger.info(
            "refused a call from %s: not root and not in group %s", caller.describe(), self.group
        )
        raise AccessDenied(self.denial_message())

    def _group_id(self) -> int | None:
        # Looked up per call: the group may be created after the service started.
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            return None


class _Gone(AccessDenied):
    """Refused because the caller left: not a verdict about a connection."""


def _process_groups(pid: int) -> set[int]:
    """The effective gid and supplementary groups of ``pid`` (empty if it is gone)."""
    groups: set[int] = set()
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                fields = value.split()
                if key == "Gid" and len(fields) >= 2:
                    groups.add(int(fields[1]))  # real, effective, saved, fs: the effective one
                elif key == "Groups":
                    groups.update(int(field) for field in fields)
    except (OSError, ValueError):
        return set()
    return groups

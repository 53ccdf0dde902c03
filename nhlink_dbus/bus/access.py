"""Who may call ``org.nerveshub.Link1`` methods: root and members of one group.

DESIGN §2 enforces this twice: by the policy file (``dbus-policy/``) and here,
so a mistaken policy drop-in cannot open the methods to everyone. The caller is
identified by the bus daemon, never by anything the caller sends:
``org.freedesktop.DBus.GetConnectionCredentials`` (D-Bus specification, "Message
Bus Messages") gives ``UnixUserID``, ``ProcessID`` and, on buses that know them
(dbus-broker, dbus-daemon ≥ 1.15.2), ``UnixGroupIDs``. Without the group list the
groups are read from ``/proc/PID/status`` (``Gid:`` and ``Groups:``).
"""

from __future__ import annotations

import grp
import logging
from collections.abc import Iterable

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from nhlink_dbus import names
from nhlink_dbus.errors import AccessDenied
from nhlink_dbus.service_api import Caller

logger = logging.getLogger(__name__)


class AccessPolicy:
    """Checks callers of the exported methods against uid 0 and ``group``."""

    def __init__(self, bus: MessageBus, group: str = names.DEFAULT_ACCESS_GROUP) -> None:
        self._bus = bus
        self.group = group

    def denial_message(self) -> str:
        return f"not allowed: run as root or as a member of group {self.group}"

    async def check(self, sender: str | None) -> Caller:
        """The caller behind ``sender`` (a unique bus name); ``AccessDenied`` if refused."""
        if not sender:
            raise AccessDenied(self.denial_message())
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
            # The caller left before we asked: nobody to grant anything to.
            logger.info("refused a call from %s: its credentials are unknown", sender)
            raise AccessDenied(self.denial_message())
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

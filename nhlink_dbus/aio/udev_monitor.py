"""Block devices coming and going, from udev (pyudev) on the event loop.

The monitor's netlink socket is watched with ``loop.add_reader``: no thread,
no polling loop, no sleep. :meth:`UdevMonitor.start` subscribes *before* it
lists the devices present, so a stick inserted meanwhile is seen at least once
(the core ignores a second ``add``). What a device is, and whether it is a
medium, is the core's (:class:`nhlink_dbus.core.media.BlockDevice`); this
adapter only turns pyudev devices into plain values.

Works the same with pyudev 0.24.0 (Debian 12) and current PyPI; under
umockdev (tests) the monitor receives the test bed's uevents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pyudev

from nhlink_dbus.core.media import BlockDevice
from nhlink_dbus.errors import TargetError

logger = logging.getLogger(__name__)

OnDevice = Callable[[str, BlockDevice], None]  # (action, device)


def _removable(device: pyudev.Device) -> bool:
    """The ``removable`` attribute of the disk the device is (or is a partition of)."""
    disk = device if device.device_type == "disk" else device.find_parent("block", "disk")
    if disk is None:
        return False
    try:
        value = disk.attributes.get("removable")
    except (OSError, KeyError):
        return False  # gone from sysfs already (a remove event)
    return value is not None and bytes(value).strip() == b"1"


def block_device(device: pyudev.Device) -> BlockDevice:
    """The core's value for a pyudev device (the properties its uevent carried)."""
    properties = {str(k): str(v) for k, v in device.properties.items()}
    return BlockDevice.from_udev(device.sys_path, properties, _removable(device))


class UdevMonitor:
    """Calls ``on_device(action, device)`` for every block device event."""

    def __init__(self, on_device: OnDevice, context: pyudev.Context | None = None) -> None:
        self._on_device = on_device
        self._context = context
        self._monitor: pyudev.Monitor | None = None
        self._fd = -1

    def start(self) -> list[BlockDevice]:
        """Subscribe, then return the block devices present now."""
        try:
            context = self._context or pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context)
            monitor.filter_by("block")
            monitor.start()
        except (OSError, ImportError) as exc:
            raise TargetError(f"cannot watch udev: {exc}") from exc
        self._context, self._monitor = context, monitor
        self._fd = monitor.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._ready)
        return [block_device(d) for d in context.list_devices(subsystem="block")]

    def _ready(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                device = self._monitor.poll(timeout=0)  # the socket is readable: no wait
            except OSError as exc:
                logger.warning("udev: %s", exc)
                return
            if device is None:
                return
            action = device.action or ""
            logger.debug("< udev %s %s", action, device.sys_path)
            try:
                self._on_device(action, block_device(device))
            except Exception:
                logger.exception("handling udev %s of %s failed", action, device.sys_path)

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = -1
        self._monitor = None

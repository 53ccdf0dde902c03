"""Reading the system for a health report: /proc, /sys and statvfs (the I/O side of
``core/health.py``).

:meth:`HealthProbe.sample` is blocking file I/O (call it in a thread). It keeps
the previous ``/proc/stat`` sample, so ``cpu_usage_percent`` is the busy share
since the previous report (since the probe was made, for the first one), as
os_mon's ``cpu_sup:util/0`` is since its previous call. A file that is missing
or unreadable leaves its metrics out; one the parser refuses is logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nhlink_dbus.core import health

logger = logging.getLogger(__name__)

T = TypeVar("T")


class HealthProbe:
    """Samples of one system; paths are arguments so tests can point them elsewhere."""

    def __init__(
        self,
        *,
        disk_path: str = "/",
        proc: Path = Path("/proc"),
        thermal: Path = Path("/sys/class/thermal/thermal_zone0/temp"),
    ) -> None:
        self.disk_path = disk_path
        self.proc = proc
        self.thermal = thermal
        self._lock = threading.Lock()
        self._cpu: health.CpuTimes | None = self._read("stat", health.parse_proc_stat)

    def _read(self, name: str, parse: Callable[[str], T], path: Path | None = None) -> T | None:
        where = path if path is not None else self.proc / name
        try:
            text = where.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            logger.debug("health: %s not read: %s", where, exc)
            return None
        try:
            return parse(text)
        except health.HealthParseError as exc:
            logger.warning("health: %s: %s", where, exc)
            return None

    def sample(self) -> health.HealthSample:
        """What the system says now (blocking)."""
        with self._lock:
            cpu = self._read("stat", health.parse_proc_stat)
            usage = None
            if cpu is not None and self._cpu is not None:
                usage = health.cpu_usage_percent(self._cpu, cpu)
            if cpu is not None:
                self._cpu = cpu
        disk = None
        try:
            st = os.statvfs(self.disk_path)
            disk = health.DiskStats(st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail)
        except OSError as exc:
            logger.debug("health: statvfs(%s): %s", self.disk_path, exc)
        return health.HealthSample(
            loadavg=self._read("loadavg", health.parse_loadavg),
            cpu_usage=usage,
            memory=self._read("meminfo", health.parse_meminfo),
            disk=disk,
            cpu_temp=self._read("", health.parse_thermal, self.thermal),
            traffic=self._read("net/dev", health.parse_net_dev) or {},
        )

"""The real fwup the benchmarks compare with, and the facts every benchmark prints.

The reference is found as the differential tests find it (tests/fwup_diff/reference.py:
``FWUP_REF``, else the build of ``../shared/tools/fwup/build.sh`` under ``.tools/fwup``).
Without one, a benchmark says so and compares with what it can, labelled as such.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One finder for the differential tests and the benchmarks.
from tests.fwup_diff.reference import VERSION, find_reference  # noqa: E402

__all__ = ["VERSION", "compile_bytecode", "find_fwup", "machine", "median_ratio", "run_measured"]


def find_fwup() -> tuple[Path | None, str]:
    """(the reference fwup or None, where it comes from or why there is none)."""
    reference = find_reference()
    return reference.fwup, reference.reason


def compile_bytecode() -> None:
    """Write the package's .pyc files first, as installing it does (Debian compiles at
    install time): a start-up measured with PYTHONDONTWRITEBYTECODE=1 and no .pyc would
    count compiling the sources on every run."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "nhlink_dbus")],
        stdout=subprocess.DEVNULL,
        check=True,
    )


def machine() -> str:
    """One line: date, CPU, cores, kernel, Python, and how busy the machine is."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, "
        f"Linux {platform.release()}, Python {platform.python_version()}, load average {load}"
    )


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    """Median of the per-pair ratios anchor/ours (above 1: ours is faster)."""
    return statistics.median(anchor / ours for anchor, ours in pairs)


GNU_TIME = "/usr/bin/time"


def run_measured(argv: list[str], **kwargs: object) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one run of ``argv``, which must succeed.

    The peak RSS comes from GNU time, which forks from its own small process: the
    rusage of a child forked from this (larger) Python counts this process's pages
    until the child execs.
    """
    import tempfile  # noqa: PLC0415

    with tempfile.NamedTemporaryFile("r", prefix="nhlink-bench-rss-") as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", out.name, *argv],
            stdout=subprocess.DEVNULL,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
        return wall, int(out.read().split()[-1])

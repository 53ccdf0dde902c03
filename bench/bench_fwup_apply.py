"""Benchmark: nhlink-fwup applying a signed .fw into a file.

Prints, for a 256 MiB resource: the apply throughput (MiB/s, median of runs),
its ratio to a raw copy of the same bytes into the same kind of file (with the
same fsync at the end, since the applier syncs), and its ratio to fwup's own
throughput measured on this machine class (about 585 MiB/s, issue #2); and the
applier's peak RSS for 64 MiB and 256 MiB firmware (it must not grow with the
size). Not a test: run with ``make bench``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nhlink_devtools.fw_builder import create_fw, load_private_key

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "fwup"
FWUP_REFERENCE_MIB_S = 585.0
RUNS = 5
BODY = 'task "upgrade" {\non-resource "rootfs.img" {\nfunlist={2,raw_write,0}\n}\n}\n'


def make_fw(folder: Path, mib: int) -> tuple[Path, Path]:
    resource = folder / f"rootfs-{mib}.img"
    with resource.open("wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(1 << 20))
    fw = folder / f"bench-{mib}.fw"
    key = load_private_key((FIXTURES / "test-only-fwup-key.priv").read_text())
    # Level 0 deflate = stored blocks, as fwup stores incompressible data.
    create_fw(
        fw,
        {"meta-product": "bench", "meta-version": "1.0.0"},
        {"rootfs.img": resource},
        BODY,
        key,
        compresslevel=0,
    )
    return fw, resource


def fresh_target(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)


def run_measured(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss


def apply_cmd(fw: Path, target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nhlink_dbus.fwup.cli",
        "-a",
        "-q",
        "-d",
        str(target),
        "-t",
        "upgrade",
        "-i",
        str(fw),
        "-p",
        str(FIXTURES / "fwup-key.pub"),
    ]


def copy_cmd(resource: Path, target: Path) -> list[str]:
    return ["dd", f"if={resource}", f"of={target}", "bs=1M", "conv=notrunc,fsync", "status=none"]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nhlink-bench-", dir=os.environ.get("BENCH_DIR")) as d:
        folder = Path(d)
        target = folder / "target.img"
        rss: dict[int, int] = {}
        for mib in (64, 256):
            fw, resource = make_fw(folder, mib)
            applies, copies = [], []
            for _ in range(RUNS):
                fresh_target(target, (mib + 16) << 20)
                wall, peak = run_measured(apply_cmd(fw, target))
                applies.append(wall)
                rss[mib] = max(rss.get(mib, 0), peak)
                fresh_target(target, (mib + 16) << 20)
                copies.append(run_measured(copy_cmd(resource, target))[0])
            # Compare in chunks: the parent must stay small, since a child started with
            # vfork reports the parent's pages in its peak RSS until it execs.
            with target.open("rb") as got, resource.open("rb") as want:
                while chunk := want.read(1 << 20):
                    if got.read(len(chunk)) != chunk:
                        raise SystemExit("benchmark image differs from the resource")
            apply_s, copy_s = statistics.median(applies), statistics.median(copies)
            rate = mib / apply_s
            print(
                f"{mib:4d} MiB: apply {apply_s:.3f} s = {rate:6.1f} MiB/s (median of {RUNS}, "
                f"process start and fsync included); raw copy {copy_s:.3f} s = "
                f"{mib / copy_s:6.1f} MiB/s; apply/copy throughput ratio {copy_s / apply_s:.2f}; "
                f"vs fwup's {FWUP_REFERENCE_MIB_S:.0f} MiB/s: {rate / FWUP_REFERENCE_MIB_S:.2f}x"
            )
            fw.unlink()
            resource.unlink()
        print(
            f"peak RSS: 64 MiB firmware {rss[64] / 1024:.1f} MiB, "
            f"256 MiB firmware {rss[256] / 1024:.1f} MiB "
            f"(growth {(rss[256] - rss[64]) / 1024:+.1f} MiB)"
        )


if __name__ == "__main__":
    main()

"""Benchmark: nhlink-fwup against the real fwup, applying the same archives.

Archives are made by the real fwup (``fwup -c``, then ``fwup -S``) from incompressible
data (random bytes, as a squashfs root file system is) and compressible data (bytes of
4-bit entropy, about 2:1 under deflate), 128 MiB and 1 GiB, with one ``raw_write``.
Each is applied into a regular file and, where the machine allows (root, a free loop
device), into a loop block device, and at the first size into a regular file from a pipe
(``cat FW | TOOL -i -``, as ``curl URL | fwup`` reads it); the tools run in turns (fwup,
ours, fwup, ours, ...), each on a fresh target with the page cache written back (sync)
before it, and the figure is the median of the per-pair throughput ratios (ours / fwup;
1.0 = as fast). Peak RSS comes from GNU time. Images are
compared after the first pair. Without a reference fwup the archives are made by
nhlink_devtools and only our figures are printed, and the output says so.

Not a test: ``make bench``. ``BENCH_SIZES`` (MiB, default ``128,1024``), ``BENCH_RUNS``
(pairs, default 7), ``BENCH_DIR`` (scratch folder) change what it does.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fwup_reference import (
    ROOT,
    VERSION,
    compile_bytecode,
    find_fwup,
    machine,
    median_ratio,
    run_measured,
)

NHLINK_FWUP = str(Path(sys.executable).parent / "nhlink-fwup")
OFFSET_BLOCKS = 2048  # raw_write(2048): the resource starts at 1 MiB
CONF = f"""meta-product = "bench"
meta-version = "1.0.0"
file-resource rootfs.img {{
  host-path = "${{ROOTFS}}"
}}
task upgrade {{
  on-resource rootfs.img {{ raw_write({OFFSET_BLOCKS}) }}
}}
"""
# 16 symbols: deflate codes them in about 4 bits each.
_FOUR_BITS = bytes(0x40 + (b & 0x0F) for b in range(256))


@dataclass
class Case:
    data: str  # "random" | "compressible"
    mib: int
    target: str  # "file" | "loop device" | PIPED (a file, the archive from `cat FW |`)
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (fwup s, ours s)
    rss: tuple[int, int] = (0, 0)  # peak KiB (fwup, ours)
    same_image: bool | None = None


def make_data(path: Path, mib: int, kind: str) -> None:
    with path.open("wb") as fh:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            fh.write(block if kind == "random" else block.translate(_FOUR_BITS))


def make_archive(fwup: Path | None, folder: Path, data: Path, name: str) -> Path:
    signed = folder / f"{name}.fw"
    if fwup is None:
        from nhlink_devtools.fw_builder import create_fw, load_private_key  # noqa: PLC0415

        key = ROOT / "tests" / "fixtures" / "fwup" / "test-only-fwup-key.priv"
        body = (
            'task "upgrade" {\non-resource "rootfs.img" {\n'
            f"funlist={{2,raw_write,{OFFSET_BLOCKS}}}\n}}\n}}\n"
        )
        create_fw(
            signed,
            {"meta-product": "bench"},
            {"rootfs.img": data},
            body,
            load_private_key(key.read_text()),
        )
        return signed
    conf = folder / "fwup.conf"
    conf.write_text(CONF)
    unsigned = folder / f"{name}.unsigned.fw"
    env = {**os.environ, "ROOTFS": str(data)}
    subprocess.run(
        [fwup, "-c", "-f", conf, "-o", unsigned], env=env, check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [fwup, "-S", "-s", folder / "fwup-key.priv", "-i", unsigned, "-o", signed],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    unsigned.unlink()
    return signed


PIPED = "file, archive piped in"


def apply_argv(tool: str, fw: Path, target: str, key: Path, piped: bool = False) -> list[str]:
    if piped:  # as `curl URL | fwup -a -i - ...` reads it
        shell = 'cat "$1" | "$2" -a -q -d "$3" -t upgrade -i - -p "$4"'
        return ["sh", "-c", shell, "sh", str(fw), tool, target, str(key)]
    return [tool, "-a", "-q", "-d", target, "-t", "upgrade", "-i", str(fw), "-p", str(key)]


def digest(path: str, count: int) -> str:
    """sha256 of the first ``count`` bytes of a file or device."""
    import hashlib  # noqa: PLC0415

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while count > 0 and (chunk := fh.read(min(count, 1 << 20))):
            h.update(chunk)
            count -= len(chunk)
    return h.hexdigest()


class LoopDevice:
    """A loop device over a file, detached on exit (the machine's loop devices are shared)."""

    def __init__(self, backing: Path, size: int) -> None:
        backing.unlink(missing_ok=True)
        with backing.open("wb") as fh:
            fh.truncate(size)
        out = subprocess.run(
            ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True
        )
        self.path = out.stdout.strip()

    def detach(self) -> None:
        subprocess.run(["losetup", "-d", self.path], check=False)


def loop_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("losetup") is None:
        return "no losetup"
    return None


def measure(case: Case, fwup: Path | None, fw: Path, key: Path, folder: Path, runs: int) -> None:
    """``runs`` pairs (fwup, ours) on fresh targets; images compared after the first pair."""
    size = (case.mib << 20) + (OFFSET_BLOCKS * 512)
    loop: LoopDevice | None = None
    if case.target == "loop device":
        loop = LoopDevice(folder / "loop-backing.img", size + (16 << 20))
    tools = [(tool, name) for tool, name in ((fwup, "fwup"), (NHLINK_FWUP, "ours")) if tool]
    peak = {"fwup": 0, "ours": 0}
    try:
        for i in range(runs):
            wall = {"fwup": 0.0, "ours": 0.0}
            images = {}
            for tool, name in tools:
                target = loop.path if loop is not None else str(folder / f"{name}.img")
                if loop is None:
                    Path(target).unlink(missing_ok=True)
                argv = apply_argv(str(tool), fw, target, key, case.target == PIPED)
                # Nothing left to write back from the run before (the other tool's, into
                # the same loop device): each timed run starts from a clean page cache.
                os.sync()
                wall[name], rss = run_measured(argv)
                peak[name] = max(peak[name], rss)
                if i == 0:
                    images[name] = digest(target, size)
                if loop is None:
                    Path(target).unlink()
            case.pairs.append((wall["fwup"], wall["ours"]))
            if i == 0 and len(images) == 2:
                case.same_image = images["fwup"] == images["ours"]
        case.rss = (peak["fwup"], peak["ours"])
    finally:
        if loop is not None:
            loop.detach()
            (folder / "loop-backing.img").unlink(missing_ok=True)


def table(cases: list[Case], reference: bool) -> list[str]:
    rows = [
        "| data | size | target | fwup | nhlink-fwup | ratio (ours/fwup throughput) "
        "| peak RSS fwup / ours | same image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        ours = statistics.median(o for _f, o in c.pairs)
        ours_s = f"{ours:.2f} s = {c.mib / ours:.0f} MiB/s"
        if reference:
            fw = statistics.median(f for f, _o in c.pairs)
            fw_s = f"{fw:.2f} s = {c.mib / fw:.0f} MiB/s"
            ratio = (
                f"**{median_ratio(c.pairs):.2f}** (pairs: "
                + ", ".join(f"{f / o:.2f}" for f, o in c.pairs)
                + ")"
            )
            rss = f"{c.rss[0] / 1024:.1f} / {c.rss[1] / 1024:.1f} MiB"
            same = "yes" if c.same_image else "NO"
        else:
            fw_s, ratio, same = "no reference", "—", "—"
            rss = f"— / {c.rss[1] / 1024:.1f} MiB"
        size = f"{c.mib} MiB" if c.mib < 1024 else f"{c.mib // 1024} GiB"
        rows.append(
            f"| {c.data} | {size} | {c.target} | {fw_s} | {ours_s} | {ratio} | {rss} | {same} |"
        )
    return rows


def main() -> None:
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "128,1024").split(",")]
    runs = int(os.environ.get("BENCH_RUNS", "7"))
    compile_bytecode()
    fwup, origin = find_fwup()
    print("## nhlink-fwup vs the real fwup (bench/bench_fwup_apply.py)\n")
    print(f"machine: {machine()}")
    if fwup is None:
        print(
            f"NO REFERENCE FWUP: {origin}.\nArchives are made by nhlink_devtools; only our "
            "own figures are printed, with nothing to compare them with."
        )
    else:
        print(f"reference: fwup {VERSION} ({origin})")
    why_no_loop = loop_unavailable()
    targets = ["file"] + (["loop device"] if why_no_loop is None else [])
    if why_no_loop:
        print(f"loop device: not measured ({why_no_loop})")
    print(
        f"{runs} pairs per case, tools in turns (fwup, ours, fwup, ours, ...); times are "
        "medians, the ratio the median of per-pair ratios; durability as fwup gives it: a "
        "file is not synced, a block device is written O_DIRECT (both tools)\n"
    )
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="nhlink-bench-", dir=os.environ.get("BENCH_DIR")) as d:
        folder = Path(d)
        if fwup is not None:
            subprocess.run([fwup, "-g"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
            key = folder / "fwup-key.pub"
        else:
            key = ROOT / "tests" / "fixtures" / "fwup" / "fwup-key.pub"
        for mib in sizes:
            for kind in ("random", "compressible"):
                data = folder / "rootfs.img"
                make_data(data, mib, kind)
                fw = make_archive(fwup, folder, data, f"{kind}-{mib}")
                data.unlink()
                os.sync()  # the archive written back now, not during the first pair
                # From a pipe (the Nerves way, `curl | fwup`) at the first size only.
                piped = [PIPED] if mib == sizes[0] else []
                for target in targets + piped:
                    case = Case(kind, mib, target)
                    measure(case, fwup, fw, key, folder, runs)
                    cases.append(case)
                    print("\n".join(table([case], fwup is not None)[2:]), flush=True)
                fw.unlink()
    print()
    print("\n".join(table(cases, fwup is not None)))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""``make fuzz``: every parser of outside input, 10^5 inputs each by default.

    python -m tests.fuzz [--budget N] [TARGET ...]

Targets: the parsers of tests/fuzz/targets.py and ``dbus-methods``
(tests/fuzz/bus.py), each run by hypothesis; the byte parsers then again, as
many inputs, by atheris (coverage-guided libFuzzer, tests/fuzz/libfuzzer.py) when
it is installed (``make setup`` installs it where a wheel exists). Prints, per
target and engine, the inputs run and the time taken; exits 1 if any contract
broke (hypothesis's smallest failing example, or libFuzzer's ``crash-*`` file).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from tests.fuzz.runner import Result, run, run_bus
from tests.fuzz.targets import TARGETS

BUS_TARGET = "dbus-methods"
BUS_ERRORS = "a return, or a documented error"


def _atheris(name: str, budget: int) -> Result:
    """tests/fuzz/libfuzzer.py on ``name`` in its own process; raises if it failed."""
    corpus = tempfile.mkdtemp(prefix=f"nhlink-fuzz-{name}-")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.libfuzzer", name, str(budget), corpus],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(corpus, ignore_errors=True)
    runs = re.search(r"Done (\d+) runs", done.stderr)
    if done.returncode != 0 or runs is None:
        raise RuntimeError(f"libFuzzer on {name} failed:\n{done.stderr[-6000:]}")
    return Result(int(runs.group(1)), time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    names = [*TARGETS, BUS_TARGET]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--budget", type=int, default=100_000, help="inputs per target")
    parser.add_argument("targets", nargs="*", choices=[[], *names], default=[])
    args = parser.parse_args(argv)
    chosen = args.targets or names
    failed: list[str] = []
    started = time.monotonic()
    with_atheris = importlib.util.find_spec("atheris") is not None
    if not with_atheris:
        print("fuzz: atheris is not installed: hypothesis only", flush=True)
    for name in chosen:
        contract = BUS_ERRORS if name == BUS_TARGET else f"a value or {TARGETS[name].error}"
        engines = ["hypothesis"] + (["atheris"] if with_atheris and name != BUS_TARGET else [])
        for engine in engines:
            try:
                if engine == "atheris":
                    result: Result = _atheris(name, args.budget)
                elif name == BUS_TARGET:
                    result = run_bus(args.budget)
                else:
                    result = run(TARGETS[name], args.budget)
            except Exception:
                traceback.print_exc()
                failed.append(f"{name} ({engine})")
                print(f"fuzz: {name:16s} {engine:10s} FAILED (contract: {contract})", flush=True)
                continue
            print(
                f"fuzz: {name:16s} {engine:10s} {result.inputs:7d} inputs "
                f"{result.seconds:7.1f} s  ok ({contract})",
                flush=True,
            )
    print(f"fuzz: {len(chosen)} targets in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"fuzz: contract broken in {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

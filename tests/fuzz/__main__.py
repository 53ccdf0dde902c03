"""``make fuzz``: every parser of outside input, 10^5 inputs each by default.

    python -m tests.fuzz [--budget N] [TARGET ...]

Targets: the parsers of tests/fuzz/targets.py and ``dbus-methods``
(tests/fuzz/bus.py). Prints, per target, the inputs run and the time taken;
exits 1 if any contract broke (with hypothesis's smallest failing example).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from tests.fuzz.runner import Result, run, run_bus
from tests.fuzz.targets import TARGETS

BUS_TARGET = "dbus-methods"
BUS_ERRORS = "a return, or a documented error"


def main(argv: list[str] | None = None) -> int:
    names = [*TARGETS, BUS_TARGET]
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--budget", type=int, default=100_000, help="inputs per target")
    parser.add_argument("targets", nargs="*", choices=[[], *names], default=[])
    args = parser.parse_args(argv)
    chosen = args.targets or names
    failed: list[str] = []
    started = time.monotonic()
    for name in chosen:
        contract = BUS_ERRORS if name == BUS_TARGET else f"a value or {TARGETS[name].error}"
        try:
            result: Result = (
                run_bus(args.budget) if name == BUS_TARGET else run(TARGETS[name], args.budget)
            )
        except Exception:
            traceback.print_exc()
            failed.append(name)
            print(f"fuzz: {name:16s} FAILED (contract: {contract})", flush=True)
            continue
        print(
            f"fuzz: {name:16s} {result.inputs:7d} inputs {result.seconds:7.1f} s  ok ({contract})",
            flush=True,
        )
    print(f"fuzz: {len(chosen)} targets in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"fuzz: contract broken in {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

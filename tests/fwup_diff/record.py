"""Keep a divergence as a fixture: ``python -m tests.fwup_diff.record NAME --why TEXT``.

Reads the case test_differential.py saved (``.tools/fwdiff/failed/latest``, or ``--case
DIR``), runs it again with the real fwup (FWUP_REF or the build under ``.tools/``) and
writes ``tests/fixtures/fwup/diff/NAME.fw`` (the archive as applied) and ``NAME.json``
(every run: command line, starting image, fwup's exit status, stdout and resulting image,
with FAT listings), which tests/fwup/test_diff_fixtures.py replays without the reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.fwup_diff import scenario as scenario_module
from tests.fwup_diff.differ import Differ
from tests.fwup_diff.reference import find_reference
from tests.fwup_diff.test_differential import FAILED

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "fwup" / "diff"


def load_scenario(case: Path) -> scenario_module.Scenario:
    names = {k: getattr(scenario_module, k) for k in dir(scenario_module) if k[0].isupper()}
    value = eval((case / "scenario.repr").read_text(), names)  # our own repr of a dataclass
    assert isinstance(value, scenario_module.Scenario)
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--why", required=True, help="the divergence this case showed, and its fix")
    p.add_argument("--case", type=Path, default=FAILED)
    args = p.parse_args(argv)
    reference = find_reference()
    if reference.fwup is None:
        sys.exit(f"no reference fwup: {reference.reason}")
    scenario = load_scenario(args.case)
    work = Path(tempfile.mkdtemp(prefix="fwdiff-record-"))
    try:
        differ = Differ(reference.fwup, work)
        record, divergences = differ.run(scenario, "case")
        if record is None:
            sys.exit("the real fwup refused to create this case")
        record = differ.record_images(record, work / "case")
        FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
        (FIXTURE_DIR / f"{args.name}.fw").write_bytes(record.archive)
        data = {
            "why": args.why,
            "fwup_conf": scenario.conf,
            "fat_regions": [list(r) for r in record.fat_regions],
            "runs": [run.to_json() for run in record.runs],
        }
        (FIXTURE_DIR / f"{args.name}.json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {FIXTURE_DIR / args.name}.{{fw,json}}: {len(record.runs)} runs")
        for d in divergences:
            print(f"still diverges (run {d.run}): {d.what.splitlines()[0]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

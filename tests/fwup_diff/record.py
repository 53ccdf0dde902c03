"""Keep a divergence as a fixture: ``python -m tests.fwup_diff.record NAME --why TEXT``.

The case comes from ``--case DIR`` (default: ``.tools/fwdiff/failed/latest``, where
test_differential.py saves the smallest failing case), ``--case-name NAME`` (a hand-made
case in cases.py), or the fixture itself when it exists (re-recording). It runs again with
the real fwup (FWUP_REF or the build under ``.tools/``) and writes
``tests/fixtures/fwup/diff/NAME.fw`` (the archive as applied) and ``NAME.json`` (the case,
and for every run its command line, starting image, and fwup's exit status, stdout and
resulting image with FAT listings), which tests/fwup/test_diff_fixtures.py replays without
the reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from tests.fwup_diff import scenario as scenario_module
from tests.fwup_diff.cases import CASES
from tests.fwup_diff.differ import Differ
from tests.fwup_diff.reference import find_reference
from tests.fwup_diff.test_differential import FAILED

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "fwup" / "diff"


def parse_scenario(text: str) -> scenario_module.Scenario:
    """A Scenario from its repr (our own dataclasses only)."""
    names = {k: getattr(scenario_module, k) for k in dir(scenario_module) if k[0].isupper()}
    value = eval(text, {"__builtins__": {}}, names)
    assert isinstance(value, scenario_module.Scenario)
    return value


def load_scenario(case: Path) -> scenario_module.Scenario:
    return parse_scenario((case / "scenario.repr").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("name")
    p.add_argument("--why", help="the divergence this case showed, and its fix")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--case", type=Path, help="a saved case folder (scenario.repr)")
    source.add_argument("--case-name", help="a case of tests/fwup_diff/cases.py")
    args = p.parse_args(argv)
    fixture = FIXTURE_DIR / f"{args.name}.json"
    old = json.loads(fixture.read_text()) if fixture.exists() else None
    if args.case_name:
        scenario = CASES[args.case_name]
    elif args.case:
        scenario = load_scenario(args.case)
    elif old is not None:
        scenario = parse_scenario(old["scenario"])
    else:
        scenario = load_scenario(FAILED)
    why = args.why or (old or {}).get("why")
    if not why:
        sys.exit("say what the case shows: --why TEXT")
    reference = find_reference()
    if reference.fwup is None:
        sys.exit(f"no reference fwup: {reference.reason}")
    work = Path(tempfile.mkdtemp(prefix="fwdiff-record-"))
    try:
        differ = Differ(reference.fwup, work)
        record, divergences = differ.run(scenario, "case")
        differ.close()
        if record is None:
            sys.exit("the real fwup refused to create this case")
        record = differ.record_images(record, work / "case")
        FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
        (FIXTURE_DIR / f"{args.name}.fw").write_bytes(record.archive)
        data = {
            "why": why,
            "fwup_conf": scenario.conf,
            "scenario": repr(scenario),
            "fat_regions": [list(r) for r in record.fat_regions],
            "runs": [run.to_json() for run in record.runs],
        }
        fixture.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {FIXTURE_DIR / args.name}.{{fw,json}}: {len(record.runs)} runs")
        for d in divergences:
            print(f"still diverges (run {d.run}): {d.what.splitlines()[0]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

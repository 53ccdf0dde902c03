"""Every divergence the differential tests found, replayed without the real fwup.

Each ``tests/fixtures/fwup/diff/NAME.json`` holds what the real fwup 1.16.0 did with
``NAME.fw`` (tests/fwup_diff/record.py wrote it): per run the command line, the starting
image, the exit status, stdout and the resulting image (sha256; FAT volumes also by their
mtools listing). ``nhlink-fwup`` must do the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fwup_diff.differ import RunRecord, replay_run
from tests.fwup_diff.record import parse_scenario

DIFF = Path(__file__).resolve().parent.parent / "fixtures" / "fwup" / "diff"
CASES = sorted(DIFF.glob("*.json"))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_recorded_divergence(case: Path, tmp_path: Path) -> None:
    data = json.loads(case.read_text())
    archive = case.with_suffix(".fw").read_bytes()
    regions = tuple((int(a), int(b)) for a, b in data["fat_regions"])
    assert data["runs"] and data["why"]
    assert parse_scenario(data["scenario"]).conf == data["fwup_conf"]  # it can be re-recorded
    for i, run_json in enumerate(data["runs"]):
        run = RunRecord.from_json(run_json)
        _ours, problems = replay_run(run, archive, tmp_path / f"run-{i}", regions)
        assert not problems, f"run {i} (fwup {' '.join(run.argv)}): " + "\n".join(problems)

"""``nhlink-fwup`` against the real fwup on generated configs, resources, images and archives.

Each case (strategies.py) is created by the real fwup (``-c``, ``-S``), maybe cut or damaged,
and applied by both tools from the same starting image, in text mode and with
``--framing``; exit status, stdout (every packet) and the image must be the same (FAT
volumes by their mtools listing). ``FWUP_DIFF_CASES`` sets the number of cases (default
100; .ci/run asks for 2000). A divergence fails the test with hypothesis' smallest case,
saved under ``.tools/fwdiff/failed/latest`` for ``python -m tests.fwup_diff.record``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.fwup_diff.conftest import STATS
from tests.fwup_diff.differ import Differ, Divergence
from tests.fwup_diff.reference import REPO, Reference
from tests.fwup_diff.scenario import Scenario
from tests.fwup_diff.strategies import scenarios

CASES = int(os.environ.get("FWUP_DIFF_CASES", "100"))
FAILED = REPO / ".tools" / "fwdiff" / "failed" / "latest"


def describe(scenario: Scenario, divergences: list[Divergence], record_runs: list[str]) -> str:
    lines = [f"{len(divergences)} divergence(s) from the real fwup:"]
    for d in divergences:
        lines.append(f"- run {d.run}: fwup {' '.join(d.argv)}\n  {d.what}")
    lines.append("fwup.conf:\n" + scenario.conf)
    lines.append("runs: " + "; ".join(record_runs))
    return "\n".join(lines)


def save_failure(scenario: Scenario, case_dir: Path) -> None:
    shutil.rmtree(FAILED, ignore_errors=True)
    FAILED.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(case_dir, FAILED, symlinks=True)
    (FAILED / "scenario.repr").write_text(repr(scenario) + "\n")


@pytest.mark.timeout(3600)  # guards a hang only: 2000 cases take a few minutes
def test_nhlink_fwup_matches_real_fwup(
    reference_fwup: Reference, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert reference_fwup.fwup is not None
    work = tmp_path_factory.mktemp("fwdiff")
    differ = Differ(reference_fwup.fwup, work)
    failed: list[tuple[Scenario, Path]] = []

    @settings(
        max_examples=CASES,
        deadline=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(scenarios())
    def check(scenario: Scenario) -> None:
        name = f"case-{differ.created + differ.refused}"
        record, divergences = differ.run(scenario, name)
        assume(record is not None)
        assert record is not None
        if divergences:
            failed.append((scenario, work / name))
            runs = [f"{i}: {' '.join(r.argv)} -> exit {r.exit}" for i, r in enumerate(record.runs)]
            raise AssertionError(describe(scenario, divergences, runs))
        shutil.rmtree(work / name, ignore_errors=True)

    started = time.monotonic()
    try:
        check()
    except BaseException as exc:
        if failed:
            save_failure(*failed[-1])  # hypothesis replays the smallest failing case last
            exc.add_note(
                f"saved in {FAILED}; record it with: python -m tests.fwup_diff.record NAME"
                " --why TEXT"
            )
        raise
    finally:
        differ.close()
        STATS.cases += differ.created
        STATS.refused += differ.refused
        STATS.varied += differ.varied
        STATS.runs += differ.applies
        STATS.seconds += time.monotonic() - started

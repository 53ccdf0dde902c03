"""Runs the differential tests only with a reference fwup, and says so either way.

Without a reference (reference.py) the tests of this folder are deselected (not skipped)
and the run ends with a line saying they did NOT run and why; with
``FWUP_DIFF_REQUIRED=1`` (set by .ci/run) a missing reference is an error instead.
With one, the summary says how many generated cases ran and how long they took.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.fwup_diff.reference import Reference, find_reference

REFERENCE = pytest.StashKey[Reference]()


@dataclass
class DiffStats:
    cases: int = 0  # generated scenarios applied by both tools
    refused: int = 0  # scenarios the real fwup would not create (discarded)
    varied: int = 0  # scenarios where the real fwup's own result varied (discarded)
    runs: int = 0  # commands compared (each apply with both tools)
    seconds: float = 0.0


STATS = DiffStats()


def _ours(item: pytest.Item) -> bool:
    return item.path.parent.name == "fwup_diff"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if _ours(item)]
    if not mine:
        return
    reference = find_reference()
    config.stash[REFERENCE] = reference
    if reference.fwup is None and os.environ.get("FWUP_DIFF_REQUIRED") != "1":
        items[:] = [item for item in items if not _ours(item)]
        config.hook.pytest_deselected(items=mine)


@pytest.fixture(scope="session")
def reference_fwup(request: pytest.FixtureRequest) -> Reference:
    reference = request.config.stash[REFERENCE]
    if reference.fwup is None:
        pytest.fail(f"FWUP_DIFF_REQUIRED=1 but no reference fwup: {reference.reason}")
    return reference


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reference = terminalreporter.config.stash.get(REFERENCE, None)
    if reference is None:
        return
    write = terminalreporter.write_line
    if reference.fwup is None:
        if os.environ.get("FWUP_DIFF_REQUIRED") == "1":
            write(f"fwup differential tests FAILED to start: {reference.reason}", red=True)
            return
        write(f"fwup differential tests NOT RUN: {reference.reason}", yellow=True, bold=True)
        write(
            "  (tests/fwup/test_diff_fixtures.py replays the divergences recorded so far"
            " without it)"
        )
        return
    write(
        f"fwup differential tests: {STATS.cases} generated cases, {STATS.runs} runs compared "
        f"with {reference.reason} in {STATS.seconds:.0f} s ({STATS.refused} configs the "
        f"real fwup refused to create were dropped, and {STATS.varied} where its own result "
        "varied from one run to the next)"
    )

"""The fuzz targets at a small budget, as part of ``make test`` (``make fuzz`` runs
10^5 inputs per target). Failures ``make fuzz`` found stay fixed: the regression
tests sit beside the code they concern (tests/bus/test_properties_guard.py...)."""

from __future__ import annotations

import pytest

from tests.fuzz.runner import run, run_bus
from tests.fuzz.targets import TARGETS

BUDGET = 1000  # inputs per parser, about a second each
BUS_BUDGET = 500


@pytest.mark.parametrize("name", list(TARGETS))
def test_parser_gives_a_value_or_its_documented_error(name: str) -> None:
    result = run(TARGETS[name], BUDGET)
    assert result.inputs == BUDGET


def test_every_bus_method_answers_within_its_contract() -> None:
    result = run_bus(BUS_BUDGET)
    assert result.inputs == BUS_BUDGET

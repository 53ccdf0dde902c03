"""core.bounds: a field's default and range, read by the dataclass and the config reader."""

from __future__ import annotations

import pytest

from nhlink_dbus.core.bounds import (
    MAX_MS,
    Bounds,
    bounded,
    bounded_fields,
    bounds_of,
    check_bounds,
    default_of,
    same_as,
)
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Example:
    name: str = "x"
    delay_ms: int = bounded(5, 0)
    retries: int = bounded(3, 1, 10)

    def __post_init__(self) -> None:
        check_bounds(self, "example")


@dataclass(frozen=True, slots=True)
class Copy:
    retries: int = same_as(Example, "retries")


def test_defaults_and_bounds_come_from_the_field() -> None:
    assert (Example().delay_ms, Example().retries) == (5, 3)
    assert default_of(Example, "name") == "x"
    assert bounds_of(Example, "delay_ms") == Bounds(0, MAX_MS)
    assert bounds_of(Example, "retries") == Bounds(1, 10)
    assert bounded_fields(Example) == ("delay_ms", "retries")
    assert (Copy().retries, bounds_of(Copy, "retries")) == (3, Bounds(1, 10))
    with pytest.raises(KeyError):
        bounds_of(Example, "name")
    with pytest.raises(KeyError):
        default_of(Example, "nothing")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "example.retries: must be between 1 and 10 (got 0)"),
        (11, "example.retries: must be between 1 and 10 (got 11)"),
        (True, "example.retries: must be an integer (got True)"),  # bool is not 1
        (2.0, "example.retries: must be an integer (got 2.0)"),
        (2**200, "example.retries: must be between 1 and 10 (got a huge number)"),
    ],
)
def test_out_of_range_is_one_config_error_naming_the_field(value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Example(retries=value)  # type: ignore[arg-type]
    assert str(caught.value) == problem


def test_the_ends_of_the_range_are_valid() -> None:
    assert Example(delay_ms=MAX_MS, retries=10).retries == 10
    assert Example(delay_ms=0, retries=1).delay_ms == 0

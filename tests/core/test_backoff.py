"""core.backoff: delay_list/3 and its use by the reconnect loop (protocol.md §8)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core.backoff import (
    ReconnectBackoff,
    delay_list,
    round_half_away,
    validate_delays,
)
from nhlink_dbus.errors import ConfigError


class FixedRandom(random.Random):
    """U is always the same value, so j(v) is predictable."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


def test_no_jitter_is_the_doubling_list() -> None:
    # nerves_hub_link's test "no jitter"
    assert delay_list(1000, 60000, 0) == [1000, 2000, 4000, 8000, 16000, 32000, 60000]


def test_edges() -> None:
    assert delay_list(5, 5, 0) == [5]
    assert delay_list(1, 2, 0) == [1, 2]
    assert delay_list(3, 10, 0) == [3, 6, 10]  # 12 >= 10 ends with j(max)
    for bad in [(0, 10, 0.5), (10, 5, 0.5), (1, 10, -0.1), (1, 10, float("nan"))]:
        with pytest.raises(ConfigError):
            delay_list(*bad)


def test_round_half_away_from_zero_like_elixir() -> None:
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, 2.4999, -0.5, -2.5)] == [1, 2, 3, 2, -1, -3]
    assert round(2.5) == 2  # why Python's round would be wrong here
    assert round_half_away(0.49999999999999994) == 0
    # jitter 0.5 with U = 0.5 on 1001: 1001 * 1.25 = 1251.25; on 1002: 1252.5 -> 1253
    assert delay_list(1002, 1002, 0.5, FixedRandom(0.5)) == [1253]


def test_jitter_bounds_and_fresh_draws() -> None:
    lists = [delay_list() for _ in range(50)]  # default (1000, 60000, 0.5), CSPRNG-seeded
    base = [1000, 2000, 4000, 8000, 16000, 32000, 60000]
    for delays in lists:
        assert all(v <= d <= v * 1.5 for v, d in zip(base, delays, strict=True))
    assert len({tuple(d) for d in lists}) > 1  # re-seeded per call: devices do not share seeds


@given(
    st.integers(1, 10**6),
    st.integers(0, 10**7),
    st.floats(0, 3),
    st.integers(0, 2**32 - 1),
)
def test_delay_list_property(min_ms: int, extra: int, jitter: float, seed: int) -> None:
    max_ms = min_ms + extra
    delays = delay_list(min_ms, max_ms, jitter, random.Random(seed))
    plain = delay_list(min_ms, max_ms, 0)
    assert len(delays) == len(plain) and plain[-1] == max_ms and plain[0] == min_ms
    assert all(p < max_ms for p in plain[:-1])
    for p, d in zip(plain, delays, strict=True):
        assert p <= d <= round_half_away(p * (1 + jitter))


def test_index_advances_last_repeats_reset_on_success() -> None:
    backoff = ReconnectBackoff(rng_factory=lambda: FixedRandom(0.0))
    waits = [backoff.next_delay_ms() for _ in range(9)]
    assert waits == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
    backoff.reset()
    assert backoff.next_delay_ms() == 1000


def test_list_rebuilt_per_disconnect_and_seeded_each_time() -> None:
    draws = iter([0.0, 0.999, 0.5])
    backoff = ReconnectBackoff(rng_factory=lambda: FixedRandom(next(draws)))
    assert backoff.next_delay_ms() == 1000
    assert backoff.next_delay_ms() == round_half_away(2000 * (1 + 0.5 * 0.999))
    assert backoff.next_delay_ms() == 5000


def test_hook_and_set_delays_replace_the_list() -> None:
    hook_value: list[int] | None = [10, 20]
    backoff = ReconnectBackoff(hook=lambda: hook_value, rng_factory=lambda: FixedRandom(0.0))
    assert [backoff.next_delay_ms() for _ in range(3)] == [10, 20, 20]
    hook_value = None  # a hook answering nil means the default list (index keeps advancing)
    assert backoff.next_delay_ms() == 8000
    backoff.set_delays([7])
    assert backoff.custom_delays == (7,)
    assert backoff.next_delay_ms() == 7
    backoff.set_delays([])  # empty = default again
    assert backoff.custom_delays is None
    backoff.reset()
    hook_value = []
    assert backoff.next_delay_ms() == 1000


def test_invalid_custom_delays() -> None:
    for bad in ([-1], [1.5], [True], ["10"]):
        with pytest.raises(ConfigError):
            validate_delays(bad)  # type: ignore[arg-type]
    backoff = ReconnectBackoff(hook=lambda: [-5])
    with pytest.raises(ConfigError):
        backoff.next_delay_ms()

"""Reconnect back-off (protocol.md §8).

``delay_list`` is ``NervesHubLink.Backoff.delay_list/3``: ``[j(min), j(2·min),
j(4·min), …, j(max)]`` with ``j(v) = round(v · (1 + jitter · U))``, U uniform in
[0, 1), the generator re-seeded from 4 bytes of OS randomness on every call.

``ReconnectBackoff`` is the way Slipstream uses the list: the n-th consecutive
reconnect attempt waits ``list[n-1]``, past the end the last value repeats, and
the list is rebuilt on every disconnect (so jitter is re-drawn while the index
keeps advancing). The list comes from a replaceable hook (the
``reconnect_backoff`` callback of ``NervesHubLink.Client``); a hook answering
``None`` or an empty list means the default ``delay_list(1000, 60000, 0.5)``.

Deviation (issue 14): Slipstream resets the counter whenever a WebSocket upgrade
succeeds. Two devices with one identifier then storm: the server closes the
older socket each time the other connects, every connection is short, and each
one reset the back-off (7 reconnects in 20 s). Here the counter resets only
after a connection has **lasted** :meth:`ReconnectBackoff.stable_after_ms`:
twice the longest nominal delay of the list in force (120 s for the default
list, whose last delay is at most 90 s with jitter). A connection that lasted
that long outlived any wait of the list, so it was not cut short by a peer
reconnecting at the back-off's pace; a kicked pair therefore climbs to the
list's last delay and stays there. A connection dropped sooner keeps climbing.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence

from nhlink_dbus.errors import ConfigError

DEFAULT_MIN_MS = 1000
DEFAULT_MAX_MS = 60000
DEFAULT_JITTER = 0.5
# A connection resets the back-off once it has lasted this many times the
# longest nominal delay of the list in force (see the module docstring).
STABLE_FACTOR = 2

BackoffHook = Callable[[], Sequence[int] | None]


def round_half_away(value: float) -> int:
    """Elixir's ``round/1`` on a float: halves go away from zero (Python rounds to even)."""
    magnitude = abs(value)
    whole = math.floor(magnitude)
    # magnitude - whole is exact for binary floats, so the 0.5 test is exact too
    # (``floor(x + 0.5)`` would round 0.49999999999999994 up).
    result = whole + 1 if magnitude - whole >= 0.5 else whole
    return -result if value < 0 else result


def csprng() -> random.Random:
    """A generator seeded from 4 bytes of OS randomness, as ``delay_list`` seeds ``:rand``."""
    return random.Random(int.from_bytes(os.urandom(4), "big"))


def delay_list(
    min_ms: int = DEFAULT_MIN_MS,
    max_ms: int = DEFAULT_MAX_MS,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> list[int]:
    """The jittered doubling list of ``NervesHubLink.Backoff.delay_list/3`` (ms).

    ``rng`` defaults to a fresh CSPRNG-seeded generator per call; tests pass a
    seeded one. Raises :class:`ConfigError` unless ``0 < min <= max`` and
    ``jitter >= 0``.
    """
    if not (0 < min_ms <= max_ms) or not jitter >= 0 or math.isinf(jitter):
        raise ConfigError(
            f"delay_list needs 0 < min <= max and 0 <= jitter (min={min_ms}, max={max_ms}, "
            f"jitter={jitter})"
        )
    gen = rng if rng is not None else csprng()

    def j(value: int) -> int:
        return round_half_away(value * (1 + jitter * gen.random()))

    delays: list[int] = []
    current = min_ms
    while current < max_ms:
        delays.append(j(current))
        current *= 2
    delays.append(j(max_ms))
    return delays


def validate_delays(delays: Sequence[int]) -> tuple[int, ...]:
    """Check a custom delay list (non-negative integer milliseconds)."""
    out: list[int] = []
    for value in delays:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"reconnect delays must be integers >= 0 ms, got {value!r}")
        out.append(value)
    return tuple(out)


class ReconnectBackoff:
    """Consecutive-attempt counter plus the delay-list hook (protocol.md §8)."""

    def __init__(
        self, hook: BackoffHook | None = None, rng_factory: Callable[[], random.Random] = csprng
    ) -> None:
        self._hook = hook
        self._rng_factory = rng_factory
        self._custom: tuple[int, ...] | None = None
        self.attempt = 0

    def set_delays(self, delays: Sequence[int] | None) -> None:
        """Replace the delay list for the following reconnects; ``None``/empty = default."""
        self._custom = validate_delays(delays) if delays else None

    @property
    def custom_delays(self) -> tuple[int, ...] | None:
        return self._custom

    def current_list(self) -> list[int]:
        """The list in force now: set_delays' list, else the hook's, else the default."""
        if self._custom:
            return list(self._custom)
        if self._hook is not None:
            hooked = self._hook()
            if hooked:
                return list(validate_delays(hooked))
        return delay_list(rng=self._rng_factory())

    def stable_after_ms(self) -> int:
        """How long a connection must last before its end starts the list again:
        :data:`STABLE_FACTOR` times the longest nominal delay (for the default
        list ``DEFAULT_MAX_MS``, its value before jitter)."""
        if self._custom:
            longest = max(self._custom)
        else:
            hooked = self._hook() if self._hook is not None else None
            longest = max(validate_delays(hooked)) if hooked else DEFAULT_MAX_MS
        return STABLE_FACTOR * longest

    def next_delay_ms(self) -> int:
        """Called on every disconnect or failed attempt: the wait before the next attempt."""
        delays = self.current_list()
        self.attempt += 1
        return delays[min(self.attempt, len(delays)) - 1]

    def reset(self) -> None:
        """A connection lasted (:meth:`stable_after_ms`): the next wait is the list's head."""
        self.attempt = 0

"""Runs a fuzz target for a number of inputs under hypothesis, and counts them.

Hypothesis draws a base input and a seed; the target's ``derive`` then makes
``batch - 1`` more inputs from that base with a random generator of that seed
(quick byte or value edits), so 10^5 inputs cost 2,000 hypothesis examples
rather than 10^5. A failure names the exact input; hypothesis reports the
(base, seed) that reproduces it and shrinks them.

Every input runs under a CPU-time guard (``ITIMER_VIRTUAL``): a parser that
loops is stopped after :data:`HANG_CPU_S` seconds of CPU and reported as a hang
(the wall clock is left to pytest-timeout). ``check`` may raise the target's
documented error only by contract breach (``ContractBroken``); any exception
escaping it is reported with the input that raised it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import Target

HANG_CPU_S = 10.0
BATCH = 50


class Hang(AssertionError):
    """One input took more than HANG_CPU_S of CPU time."""


class InputFailed(AssertionError):
    """The contract broke on this input (the cause is chained)."""


@dataclass(frozen=True)
class Result:
    inputs: int
    seconds: float


@contextlib.contextmanager
def cpu_guard(seconds: float = HANG_CPU_S) -> Iterator[None]:
    def expired(_signum: int, _frame: object) -> None:
        raise Hang(f"an input took more than {seconds:g} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + f"... ({len(text)} characters)"


def _settings(budget: int, batch: int) -> settings:
    return settings(
        max_examples=math.ceil(budget / batch),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    )


def run(target: Target, budget: int, batch: int = BATCH) -> Result:
    """``target.check`` on ``budget`` inputs (fewer only if hypothesis runs out of
    distinct base inputs); raises on the first broken contract."""
    count = 0
    batch = max(1, min(batch, budget))

    @_settings(budget, batch)
    @given(target.strategy(), st.integers(0, 2**32 - 1))
    def body(base: Any, seed: int) -> None:
        nonlocal count
        rng = random.Random(seed)
        value = base
        for n in range(batch):
            if n:
                value = target.derive(base, rng)
            count += 1
            try:
                with cpu_guard():
                    target.check(value)
            except Exception as exc:
                raise InputFailed(f"{target.name}: input {_shown(value)}") from exc

    started = time.monotonic()
    with _quiet():
        body()
    return Result(count, time.monotonic() - started)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No log records while fuzzing: parsers log what they drop, 10^5 times."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def run_bus(budget: int, batch: int = BATCH) -> Result:
    """The D-Bus target (tests/fuzz/bus.py): each batch of calls is sent at once."""
    from tests.fuzz import bus  # noqa: PLC0415

    count = 0
    batch = max(1, min(batch, budget))
    with bus.environment() as env:

        @_settings(budget, batch)
        @given(bus.calls(), st.integers(0, 2**32 - 1))
        def body(base: bus.Call, seed: int) -> None:
            nonlocal count
            rng = random.Random(seed)
            calls = [base, *(bus.derive_call(base, rng) for _ in range(batch - 1))]
            replies = env.send_all(calls)
            count += len(calls)
            for call, reply in zip(calls, replies, strict=True):
                try:
                    bus.judge(call, reply)
                except Exception as exc:
                    raise InputFailed(f"dbus-methods: call {_shown(call)}") from exc
            env.alive()

        started = time.monotonic()
        body()
    return Result(count, time.monotonic() - started)

"""Blocking calls off the event loop that end before their caller does.

``asyncio.to_thread`` returns at once when its caller is cancelled, while the
thread goes on: a ``pwrite`` could then land after the file was closed (or on a
descriptor number already reused for another file). :func:`run_blocking` waits
for the call to finish before the cancellation goes on, so the caller's
``finally`` (close, unlink) always runs after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the default executor; see the module docstring."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise

"""The one owner of the service's long-running tasks, and its core timer.

:class:`Supervisor` is a structured owner like ``asyncio.TaskGroup`` with one
difference that a service needs: a task that fails does not cancel its
siblings (a failed archive fetch must not stop an update). No failure is lost:
each is logged with its traceback and handed to ``on_failure``. Leaving the
``async with`` block cancels what still runs and waits for it.

:class:`DeadlineTimer` wakes the sans-I/O core at the deadline it names
(``next_deadline()``/``tick(now)``): one ``call_at`` re-armed after every input.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)


class Supervisor:
    """Runs tasks until they end; see the module docstring."""

    def __init__(self, on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self._on_failure = on_failure
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start ``coro`` as a task named ``name``; refused once closing."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"cannot start {name}: the supervisor is closing")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    @property
    def closing(self) -> bool:
        """:meth:`spawn` is refused from now on."""
        return self._closed

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        logger.error("task %s failed", task.get_name(), exc_info=exc)
        if self._on_failure is not None:
            try:
                self._on_failure(task.get_name(), exc)
            except Exception:
                logger.exception("reporting the failure of %s failed", task.get_name())

    async def aclose(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class DeadlineTimer:
    """Calls ``on_due(now)`` at the deadline given to :meth:`arm` (monotonic seconds)."""

    def __init__(
        self,
        on_due: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self._on_due = on_due
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._stopped = False

    def arm(self, deadline: float | None) -> None:
        """Wake at ``deadline`` (None: not at all); replaces the previous one."""
        if self._stopped or (deadline == self._deadline and self._handle is not None):
            return
        self.cancel()
        self._deadline = deadline
        if deadline is None:
            return
        delay = max(0.0, deadline - self._clock())
        self._handle = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        deadline = self._deadline
        self._handle = None
        self._deadline = None
        # The loop may run a timer up to its clock resolution early: this is the deadline.
        self._on_due(max(self._clock(), deadline or 0.0))

    def stop(self) -> None:
        """Cancel, and never arm again (the service is stopping)."""
        self._stopped = True
        self.cancel()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._deadline = None

"""A python-dbusmock service run as its own process on a private system bus: start
it with a template, wait until it answers, read its log, stop it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

from tests.harness.bus import START_TIMEOUT_S, PrivateSystemBus, stop_process


class MockProcess:
    """``python -m dbusmock --system --template …`` (``argv`` after ``dbusmock``),
    started and waited for until ``ready()`` is true."""

    def __init__(
        self,
        bus: PrivateSystemBus,
        python: str,
        argv: Sequence[str],
        log_name: str,
        ready: Callable[[], bool],
    ) -> None:
        self.bus = bus
        self.log_path = bus.directory / log_name
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [python, "-m", "dbusmock", "--system", *argv],
                env=bus.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready(ready, " ".join(argv))
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"dbusmock {what} exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dbusmock {what} did not come up:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        """The mock's own log: one line per method call it handled."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)

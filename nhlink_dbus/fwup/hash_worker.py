"""Hashing on a second thread while the main thread inflates and writes.

zlib's CRC-32 and hashlib's BLAKE2b release the GIL on large buffers, so one
worker thread hashing while the main thread decompresses and writes overlaps
the two halves of the work (about a third of the apply time each). Work is
handed over in batches of about 256 KiB to keep queue overhead low; the queue is
bounded (two batches), so a slow hash thread holds the reader back instead of
buffering: at most about 1 MiB of data wait for it.
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType

from nhlink_dbus.core.digest import Digest, new_digest

BATCH = 256 << 10
QUEUED_BATCHES = 2


class _ThreadedDigest:
    def __init__(self, worker: HashWorker, algorithm: str) -> None:
        self._worker = worker
        self._inner = new_digest(algorithm)
        self._pending: list[bytes] = []
        self._pending_size = 0

    def update(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= BATCH:
            self._submit()

    def _submit(self) -> None:
        if self._pending:
            self._worker.submit(self._inner, self._pending)
            self._pending = []
            self._pending_size = 0

    def result(self) -> bytes:
        self._submit()
        self._worker.wait()
        return self._inner.result()


class HashWorker:
    """One background thread; ``digest(alg)`` gives digests that use it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Digest, list[bytes]] | None] = queue.Queue(
            maxsize=QUEUED_BATCHES
        )
        self._done = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nhlink-hash", daemon=True)
        self._thread.start()

    def digest(self, algorithm: str) -> Digest:
        # CRC-32 runs at several GB/s: handing it over would cost more than it saves.
        if algorithm == "crc32":
            return new_digest(algorithm)
        return _ThreadedDigest(self, algorithm)

    def submit(self, digest: Digest, chunks: list[bytes]) -> None:
        with self._done:
            self._submitted += 1
        self._queue.put((digest, chunks))

    def wait(self) -> None:
        with self._done:
            self._done.wait_for(lambda: self._finished == self._submitted)
        if self._error is not None:
            raise RuntimeError("hash worker failed") from self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # close()
                return
            digest, chunks = item
            try:
                # One update per batch: hashing releases the GIL for its whole
                # length, and re-taking the GIL once per 16 KiB chunk made the two
                # threads take turns instead of running side by side.
                digest.update(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except BaseException as exc:  # surfaced by wait()
                self._error = exc
            with self._done:
                self._finished += 1
                self._done.notify_all()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> HashWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

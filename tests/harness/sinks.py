"""A download sink (``ChunkSink``) into memory, for the downloader's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class MemorySink:
    """A ChunkSink into memory; optionally slow, with a hook per write."""

    def __init__(self, delay: float = 0.0, on_write: Callable[[bytes], None] | None = None):
        self.data = bytearray()
        self.restarts = 0
        self.writes = 0
        self.delay = delay
        self.on_write = on_write

    async def write(self, chunk: bytes) -> None:
        if self.on_write is not None:
            self.on_write(chunk)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.data += chunk
        self.writes += 1

    async def restart(self) -> None:
        self.data.clear()
        self.restarts += 1

"""Counting calls under way, so a drain can wait until the last one has answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlight:
    """How many calls of one kind are under way; ``wait_idle`` returns when none is."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the block as one call under way."""
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0 and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no call is under way; False when ``timeout`` passed first."""
        if self.count == 0:
            return True
        if self._idle is None or self._idle.is_set():
            self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            return self.count == 0
        return True

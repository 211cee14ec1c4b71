"""Counting calls under way, so a drain can wait until the last one has answered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


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


class HasSends(Protocol):
    sends_in_flight: InFlight


S = TypeVar("S", bound=HasSends)


def counted_send(func: Callable[Concatenate[S, P], Awaitable[R]]) -> Callable[Concatenate[S, P], Awaitable[R]]:
    """Count each call of the decorated method in ``self.sends_in_flight`` until it returns or raises."""

    @functools.wraps(func)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.sends_in_flight.track():
            return await func(self, *args, **kwargs)

    return wrapper

"""Stopping background tasks without losing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("common.tasks")


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel the tasks and wait until each has finished.

    A cancellation of the caller (a drain step cut off, a timeout) still reaches
    it: ``with suppress(BaseException): await task`` would swallow that too. A
    task that had already failed is logged here, since nobody else will read it.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    if not live:
        return
    await asyncio.wait(live)
    for task in live:
        if not task.cancelled() and (exc := task.exception()) is not None:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.error("task %s had failed: %r", name, exc, exc_info=exc)


class BackgroundTasks:
    """Tasks started and forgotten by their starter, kept so that ``close`` can stop them all."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (a reference is kept, so the task is not collected mid-run)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel what is still running and wait for it."""
        await cancel_and_wait(*self._tasks)

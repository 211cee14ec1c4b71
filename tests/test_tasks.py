"""cancel_and_wait: background tasks stop, and whoever stops them can still be cancelled."""

from __future__ import annotations

import asyncio

import pytest

from common.tasks import cancel_and_wait


async def test_tasks_are_finished_when_it_returns() -> None:
    tasks = [asyncio.create_task(asyncio.Event().wait()) for _ in range(3)]
    await cancel_and_wait(*tasks, None)
    assert all(t.cancelled() for t in tasks)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    wound_down = asyncio.Event()

    async def stubborn() -> None:
        # Takes a while to wind down after its cancellation, as a close with I/O does.
        try:
            await asyncio.Event().wait()
        finally:
            await wound_down.wait()

    child = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    wound_down.set()
    with pytest.raises(asyncio.CancelledError):
        await child


async def test_a_task_that_had_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(broken(), name="broken-loop")
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "task broken-loop had failed" in caplog.text

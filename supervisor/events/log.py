"""The worker's event log: every event the backend and webhooks hear of, numbered.

Events are rows of the store's ``events`` table, committed in the same
transaction as what they report (a message's status, a received message), so
an event can be delivered late but never lost or invented. Each gets a
per-worker sequence number: consumers (the backend, webhooks, ``GET /events``,
the SSE stream) resume from the last number they have, and receivers dedupe on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from common.tasks import cancel_and_wait
from supervisor.database.store import EventRow, Store
from supervisor.timefmt import iso

log = logging.getLogger("supervisor.events.log")

RETENTION_SWEEP = 600.0


def envelope(row: EventRow) -> dict[str, Any]:
    """An event as every consumer receives it: ``{id, event, sessionId, data, timestamp}``."""
    return {
        "id": row.seq,
        "event": row.event,
        "sessionId": row.session_id,
        "data": row.data,
        "timestamp": iso(row.timestamp),
    }


class EventLog:
    """Writing, waiting for and pruning events."""

    def __init__(self, store: Store, *, retention: float) -> None:
        self.store = store
        self.retention = retention
        self._bell = asyncio.Event()
        store.on_events = self.notify
        self._pruner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pruner = asyncio.create_task(self._prune_loop(), name="event-retention")

    async def close(self) -> None:
        await cancel_and_wait(self._pruner)

    def notify(self) -> None:
        """New events were committed: wake everyone waiting."""
        bell, self._bell = self._bell, asyncio.Event()
        bell.set()

    async def emit(self, session_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Commit one event (its consumers are woken after the commit)."""
        await self.store.add_event(session_id, event, data)

    async def since(self, seq: int, *, limit: int = 100, session_id: str | None = None) -> list[EventRow]:
        return await self.store.events_since(seq, limit, session_id=session_id)

    async def wait(
        self, seq: int, *, timeout: float, limit: int = 100, session_id: str | None = None
    ) -> list[EventRow]:
        """Events after ``seq``; if there are none yet, wait up to ``timeout`` for some."""
        bell = self._bell  # taken before the query: a commit in between still rings it
        rows = await self.since(seq, limit=limit, session_id=session_id)
        if rows:
            return rows
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await bell.wait()
        return await self.since(seq, limit=limit, session_id=session_id)

    async def _prune_loop(self) -> None:
        while True:
            try:
                dropped = await self.store.purge_events(time.time() - self.retention)
                if dropped:
                    log.info("dropped %d events past the retention of %.0fh", dropped, self.retention / 3600)
            except Exception:
                log.exception("event retention sweep failed")
            await asyncio.sleep(RETENTION_SWEEP)

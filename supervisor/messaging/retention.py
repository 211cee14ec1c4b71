"""History retention (MESSAGE_RETENTION_DAYS): messages older than that leave history with their media.

A message still waiting in the outbox is never removed (the store's query excludes it); its media
goes too (``media_removal.py``): the object in storage and, for a received message whose upload
failed, the copy in the session's media folder. The purge queues that removal in its own transaction.

The sweep runs without MESSAGE_RETENTION_DAYS too: each one (the first at start) also retries the
media removals still queued (a revoke's or purge's that failed or never ran).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from supervisor.database.store import Store
from supervisor.messaging.media_removal import MediaRemovals

log = logging.getLogger("supervisor.messaging.retention")

SWEEP_INTERVAL = 3600.0  # retention is counted in days: an hourly look is plenty
DAY = 86400.0


class HistoryRetention:
    """Removes history older than ``days`` (None: none), in batches, and the queued media removals,
    every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        removals: MediaRemovals,
        *,
        days: float | None,
        on_removed: Callable[[str, int], None],
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.store = store
        self.removals = removals
        self.max_age = days * DAY if days is not None else None
        self.on_removed = on_removed  # (session id, messages removed): keeps per-session counts right
        self.interval = interval

    async def run(self) -> None:
        """Sweep now and then every interval, until cancelled; a failed sweep is logged and tried again."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("history retention sweep failed; trying again in %.0fs", self.interval)
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """Remove what is past retention, then the queued media; how many messages were removed."""
        total = 0
        if self.max_age is not None:
            before = time.time() - self.max_age
            while batch := await self.store.purge_messages(before):  # their media queued with them
                for session_id, count in Counter(m.session_id for m in batch).items():
                    self.on_removed(session_id, count)
                total += len(batch)
            if total:
                log.info("history retention removed %d messages older than %.1f days", total, self.max_age / DAY)
        await self.removals.retry()
        return total

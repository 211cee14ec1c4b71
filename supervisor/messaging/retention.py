"""History retention (MESSAGE_RETENTION_DAYS): messages older than that leave history with their media.

A message still waiting in the outbox is never removed (the store's query excludes it); its media
goes too (``media_removal.py``): the object in storage and, for a received message whose upload
failed, the copy in the session's media folder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from supervisor.database.store import Store
from supervisor.messaging.media_removal import remove_message_media
from supervisor.storage.service import SessionStorage

log = logging.getLogger("supervisor.messaging.retention")

SWEEP_INTERVAL = 3600.0  # retention is counted in days: an hourly look is plenty
DAY = 86400.0


class HistoryRetention:
    """Removes history older than ``days``, in batches, every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        storage: SessionStorage | None,
        sessions_dir: Path,
        *,
        days: float,
        on_removed: Callable[[str, int], None],
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.store = store
        self.storage = storage
        self.sessions_dir = sessions_dir  # STORAGE_DIR/sessions: received media not yet in storage
        self.max_age = days * DAY
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
        """Remove what is past retention; how many messages were removed."""
        before = time.time() - self.max_age
        total = 0
        while batch := await self.store.purge_messages(before):
            for session_id, count in Counter(m.session_id for m in batch).items():
                self.on_removed(session_id, count)
            for message in batch:
                await remove_message_media(self.storage, self.sessions_dir, message, why="purged")
            total += len(batch)
        if total:
            log.info("history retention removed %d messages older than %.1f days", total, self.max_age / DAY)
        return total

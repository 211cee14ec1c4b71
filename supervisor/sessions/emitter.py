"""Session events, queued durably in the order they happen (one FIFO lock per session).

A ``qr_ready`` event carries the QR code as a PNG data URL too, drawn in a thread
so the event loop never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from common.tasks import BackgroundTasks
from supervisor.database.store import Store
from supervisor.qr_image import png_data_url

log = logging.getLogger("supervisor.sessions")


class SessionEvents:
    """Writes session events to the store in order, in the background."""

    def __init__(self, store: Store, *, worker_id: str) -> None:
        self.store = store
        self._order: dict[str, asyncio.Lock] = {}
        self._tasks = BackgroundTasks()
        self._log_extra = {"workerId": worker_id}

    def emit(self, session_id: str, event: str, data: Mapping[str, Any], *, qr: str | None = None) -> None:
        """Queue ``event`` for the session after those emitted before it; with ``qr``, add ``qrCode``."""
        lock = self._order.setdefault(session_id, asyncio.Lock())

        async def write() -> None:
            async with lock:
                try:
                    body = dict(data)
                    if qr is not None:
                        body["qrCode"] = await asyncio.to_thread(png_data_url, qr)
                    await self.store.add_event(session_id, event, body)
                except Exception:
                    extra = {"sessionId": session_id, **self._log_extra}
                    log.exception("cannot queue the %s event", event, extra=extra)

        self._tasks.spawn(write())

    @contextlib.asynccontextmanager
    async def last(self, session_id: str) -> AsyncIterator[None]:
        """Run the block once the session's queued events are written; nothing is queued for it after."""
        async with self._order.pop(session_id, asyncio.Lock()):
            yield

    async def close(self) -> None:
        """Stop the writes still under way."""
        await self._tasks.close()

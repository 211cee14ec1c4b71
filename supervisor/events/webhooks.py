"""Per-session webhooks: the same events as the backend gets, signed, each URL its own queue.

A webhook starts with the events after it was set; it is removed once the
session's ``session.deleted`` event reached it.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import aiohttp

from supervisor.database.store import EventRow
from supervisor.events.delivery import Deliverer, Target
from supervisor.events.log import EventLog

log = logging.getLogger("supervisor.events.webhooks")


def consumer_name(session_id: str) -> str:
    return f"webhook:{session_id}"


class Webhooks:
    """The webhook deliverers of all sessions."""

    def __init__(self, events: EventLog, http: aiohttp.ClientSession, *, worker_id: str) -> None:
        self.events = events
        self.http = http
        self.worker_id = worker_id
        self.deliverers: dict[str, Deliverer] = {}

    async def start(self) -> None:
        for session_id, (url, secret) in (await self.events.store.webhooks()).items():
            self._run(session_id, url, secret)

    async def close(self) -> None:
        for deliverer in list(self.deliverers.values()):
            await deliverer.close()
        self.deliverers.clear()

    async def set(self, session_id: str, url: str, secret: str | None = None) -> str:
        """Send the session's events to ``url`` from now on; returns the signing secret."""
        secret = secret or secrets.token_urlsafe(32)
        store = self.events.store
        old = self.deliverers.pop(session_id, None)
        if old is not None:
            await old.close()
        await store.set_webhook(session_id, url, secret)
        # A new URL starts fresh: it is a new receiver, not the old one's backlog.
        await store.drop_consumer(consumer_name(session_id))
        self._run(session_id, url, secret)
        return secret

    async def remove(self, session_id: str) -> bool:
        deliverer = self.deliverers.pop(session_id, None)
        if deliverer is not None:
            await deliverer.close()
        store = self.events.store
        await store.drop_consumer(consumer_name(session_id))
        return await store.delete_webhook(session_id)

    def describe(self, session_id: str) -> dict[str, Any] | None:
        d = self.deliverers.get(session_id)
        if d is None:
            return None
        return {"url": d.target.url, "delivered": d.delivered, "failures": d.failures, "lastError": d.last_error}

    def _run(self, session_id: str, url: str, secret: str) -> None:
        deliverer = Deliverer(
            self.events,
            self.http,
            Target(
                name=consumer_name(session_id),
                url=url,
                headers={},
                session_id=session_id,
                secret=secret,
                start_at_end=True,
            ),
            worker_id=self.worker_id,
            on_delivered=self._delivered,
        )
        self.deliverers[session_id] = deliverer
        deliverer.start()

    async def _delivered(self, row: EventRow) -> bool:
        """After each delivery; True ends the deliverer (the session is gone)."""
        if row.event != "session.deleted" or row.session_id is None:
            return False
        # The last word about this session reached its webhook: nothing more will come.
        self.deliverers.pop(row.session_id, None)
        store = self.events.store
        await store.delete_webhook(row.session_id)
        await store.drop_consumer(consumer_name(row.session_id))
        return True

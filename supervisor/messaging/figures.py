"""Message counts from the durable history, as /metrics and the backend heartbeat report them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from supervisor.database.store import Store
from supervisor.messaging.status import MessageStatus

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class MessageFigures:
    """History totals from the store: by direction and status, all time and in the last hour."""

    sent: int = 0
    received: int = 0
    failed: int = 0
    pending: int = 0
    last_hour: int = 0
    by_status: tuple[tuple[str, str, int], ...] = ()


async def message_figures(store: Store) -> MessageFigures:
    """Totals from the message history (durable, so they survive restarts)."""
    rows = await store.message_totals(time.time() - HOUR)
    sent = received = failed = pending = last_hour = 0
    for direction, status, count, recent in rows:
        last_hour += recent
        if direction == "in":
            received += count
        elif status == MessageStatus.FAILED:
            failed += count
        elif status in (MessageStatus.PENDING, MessageStatus.UNKNOWN):
            pending += count
        else:  # sent, delivered, read: the network took it
            sent += count
    return MessageFigures(sent, received, failed, pending, last_hour, tuple((d, s, c) for d, s, c, _ in rows))

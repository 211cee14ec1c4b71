"""One session's outbox as the operator reads it (GET /session/{id}/outbox, the dashboard)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """Messages waiting to be sent, the oldest's acceptance time, and those that ended unsent."""

    pending: int
    oldest_pending_at: float | None
    unknown: int
    failed: int

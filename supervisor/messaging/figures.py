"""Message counts as /metrics and the backend heartbeat report them: running totals, never a scan of history.

The store loads the totals once when it opens (one grouped count, and the last hour through the
timestamp index) and moves them with each committed write that adds, settles, moves or removes a
message, so a scrape or a heartbeat costs no query however long the history is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from supervisor.messaging.status import MessageStatus

HOUR = 3600.0
MINUTE = 60


@dataclass(frozen=True, slots=True)
class MessageFigures:
    """History totals: by direction and status, all time and in the last hour; removed by retention."""

    sent: int = 0
    received: int = 0
    failed: int = 0
    pending: int = 0
    last_hour: int = 0
    by_status: tuple[tuple[str, str, int], ...] = ()
    purged: int = 0  # removed by MESSAGE_RETENTION_DAYS since the worker started


class MessageTally:
    """Running counts of history by (direction, status), plus messages per minute over the last hour."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._minutes: Counter[int] = Counter()  # minute (epoch seconds // 60) -> messages timestamped then
        self.purged = 0

    def load(self, counts: list[tuple[str, str, int]], minutes: list[tuple[int, int]]) -> None:
        """Start from the stored history."""
        self._counts = Counter({(d, s): n for d, s, n in counts})
        self._minutes = Counter(dict(minutes))

    def added(self, direction: str, status: str, timestamp: float) -> None:
        """A message entered history."""
        self._counts[(direction, status)] += 1
        self._minutes[int(timestamp // MINUTE)] += 1

    def moved(self, direction: str, old: str, new: str) -> None:
        """A message changed status."""
        if old != new:
            self._counts[(direction, old)] -= 1
            self._counts[(direction, new)] += 1

    def removed(self, counts: list[tuple[str, str, int]], minutes: list[tuple[int, int]], *, purged: bool) -> None:
        """Messages left history (a deleted session, or retention when ``purged``)."""
        for direction, status, n in counts:
            self._counts[(direction, status)] -= n
            if purged:
                self.purged += n
        for minute, n in minutes:
            self._minutes[minute] -= n

    def figures(self, now: float) -> MessageFigures:
        """The totals now."""
        first = int((now - HOUR) // MINUTE) + 1
        for minute in [m for m in self._minutes if m < first]:
            del self._minutes[minute]  # older than an hour: never counted again
        sent = received = failed = pending = 0
        rows = tuple((d, s, n) for (d, s), n in sorted(self._counts.items()) if n > 0)
        for direction, status, count in rows:
            if direction == "in":
                received += count
            elif status == MessageStatus.FAILED:
                failed += count
            elif status in (MessageStatus.QUEUED, MessageStatus.PENDING, MessageStatus.UNKNOWN):
                pending += count
            else:  # sent, delivered, read: the network took it
                sent += count
        last_hour = sum(n for m, n in self._minutes.items() if m >= first and n > 0)
        return MessageFigures(sent, received, failed, pending, last_hour, rows, self.purged)

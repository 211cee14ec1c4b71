"""The last hour of each session process's CPU and memory, kept in memory for the dashboard's charts.

One fixed-size ring per session of packed 4-byte fields (time, CPU %, RSS and USS in KiB):
16 bytes a point, so an hour at SAMPLE_INTERVAL=5 (720 points) is ~11.5 KB a session and
~6 MB for 500 sessions, allocated once and never grown. Nothing is written to disk: a
restarted worker starts with empty charts.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from supervisor.supervision.sampler import ProcStats

WINDOW = 3600.0  # seconds of history kept
MAX_POINTS = 720  # a ring never holds more, whatever SAMPLE_INTERVAL is


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of a chart: when (epoch seconds), CPU % of one core, RSS and USS in bytes."""

    at: float
    cpu_percent: float
    rss: int
    uss: int


class SampleRing:
    """A ring of the last ``capacity`` samples of one process."""

    __slots__ = ("_at", "_count", "_cpu", "_next", "_rss", "_uss")

    def __init__(self, capacity: int) -> None:
        self._at = array("I", bytes(4 * capacity))  # whole epoch seconds: fits uint32 until 2106
        self._cpu = array("f", bytes(4 * capacity))
        self._rss = array("I", bytes(4 * capacity))  # KiB: 4 TiB fits
        self._uss = array("I", bytes(4 * capacity))
        self._next = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return len(self._at)

    def add(self, at: float, stats: ProcStats) -> None:
        """Keep one sample, dropping the oldest when full."""
        i = self._next
        self._at[i] = int(at)
        self._cpu[i] = stats.cpu_percent
        self._rss[i] = min(stats.rss >> 10, 0xFFFFFFFF)
        self._uss[i] = min(stats.uss >> 10, 0xFFFFFFFF)
        self._next = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def points(self, since: float = 0.0) -> list[Sample]:
        """The samples at or after ``since``, oldest first."""
        start = (self._next - self._count) % self.capacity
        out = []
        for k in range(self._count):
            i = (start + k) % self.capacity
            if self._at[i] >= since:
                out.append(Sample(self._at[i], round(self._cpu[i], 2), self._rss[i] << 10, self._uss[i] << 10))
        return out

    def nbytes(self) -> int:
        """Bytes the ring's arrays hold."""
        return sum(a.itemsize * len(a) for a in (self._at, self._cpu, self._rss, self._uss))


class SampleHistory:
    """One ring per session, sized for ``WINDOW`` at the sampling ``interval``."""

    def __init__(self, interval: float) -> None:
        self.capacity = max(2, min(MAX_POINTS, math.ceil(WINDOW / max(interval, 0.001))))
        self._rings: dict[str, SampleRing] = {}

    def add(self, session_id: str, at: float, stats: ProcStats) -> None:
        """Record a sample of ``session_id``'s process."""
        ring = self._rings.get(session_id)
        if ring is None:
            ring = self._rings[session_id] = SampleRing(self.capacity)
        ring.add(at, stats)

    def keep_only(self, session_ids: set[str]) -> None:
        """Forget the rings of sessions that are gone (deleted)."""
        for gone in set(self._rings) - session_ids:
            del self._rings[gone]

    def points(self, session_id: str, since: float = 0.0) -> list[Sample]:
        """``session_id``'s samples at or after ``since``, oldest first (none when never sampled)."""
        ring = self._rings.get(session_id)
        return [] if ring is None else ring.points(since)

    def nbytes(self) -> int:
        """Bytes every ring's arrays hold."""
        return sum(r.nbytes() for r in self._rings.values())

"""The registry's timers: heartbeat checks of the session processes, and sampling their resource use."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from supervisor.sessions.session import Session
from supervisor.sessions.snapshot import DiskSpace
from supervisor.supervision.capacity import Capacity, read_capacity
from supervisor.supervision.sample_history import SampleHistory
from supervisor.supervision.sampler import ProcessSampler, ProcStats

log = logging.getLogger("supervisor.sessions")

# Processes sampled in one go (one thread hand-off) by the resource sampler.
SAMPLE_SLICE = 25


async def check_heartbeats(sessions: Callable[[], Iterable[Session]], interval: float) -> None:
    """Every half ``interval``, let each child notice silence past its heartbeat liveness (runs until cancelled)."""
    while True:
        await asyncio.sleep(interval / 2)
        for session in sessions():
            session.child.check_heartbeat()


class ResourceSampler:
    """psutil figures of the supervisor and every session process, refreshed every ``interval`` seconds."""

    def __init__(
        self,
        interval: float,
        *,
        worker_id: str,
        memory_limit: int = 0,
        storage_dir: Path | None = None,
        disk_warn_bytes: int = 0,
    ) -> None:
        self.interval = interval
        self.storage_dir = storage_dir  # whose disk is sampled (None: not sampled)
        self.disk_warn_bytes = disk_warn_bytes
        self.disk: DiskSpace | None = None
        self.memory_limit = memory_limit  # bytes of resident memory a session process may hold; 0: any
        self.sampler = ProcessSampler()
        self.history = SampleHistory(interval)  # the last hour of each session process, for the dashboard
        self.supervisor: ProcStats | None = None  # the supervisor's own figures, at the last sample
        self.capacity: Capacity | None = None  # what the worker may use, at the last sample (limits can change)
        self._log_extra = {"workerId": worker_id}

    def _disk(self) -> DiskSpace | None:
        if self.storage_dir is None:
            return None
        usage = psutil.disk_usage(str(self.storage_dir))
        return DiskSpace(free=usage.free, total=usage.total, low=usage.free < self.disk_warn_bytes)

    async def run(self, sessions: Callable[[], Iterable[Session]]) -> None:
        """Sample until cancelled; each session's ``stats`` holds its process's figures (None without one)."""
        while True:
            current = list(sessions())
            pids = [os.getpid(), *(s.child.pid for s in current if s.child.pid is not None)]
            own = pids[0]
            stats: dict[int, ProcStats] = {}
            try:
                self.sampler.keep_only(set(pids))
                # A slice of processes at a time, spread over a tenth of the interval: psutil's work holds
                # the GIL, and 500 processes read in one go stalled the event loop (and its requests).
                for start in range(0, len(pids), SAMPLE_SLICE):
                    if start:
                        await asyncio.sleep(self.interval / 10 * SAMPLE_SLICE / len(pids))
                    chunk = pids[start : start + SAMPLE_SLICE]
                    stats.update(await asyncio.to_thread(self.sampler.sample, chunk, only=False))
                self.capacity = await asyncio.to_thread(read_capacity)
                self.disk = await asyncio.to_thread(self._disk)
            except Exception:
                log.exception("process sampling failed", extra=self._log_extra)
            self.supervisor = stats.get(own)
            now = time.time()
            present = set()
            for session in sessions():
                pid = session.child.pid
                session.stats = stats.get(pid) if pid is not None else None
                present.add(session.id)
                if session.stats is not None:
                    self.history.add(session.id, now, session.stats)
                if session.stats is not None and 0 < self.memory_limit < session.stats.rss:
                    session.child.over_memory(session.child.incarnation, session.stats.rss, self.memory_limit)
            self.history.keep_only(present)
            await asyncio.sleep(self.interval)

"""One snapshot of the worker: its sessions by status and the resource use of its processes.

``GET /health``, ``GET /metrics`` (JSON and Prometheus) and the backend heartbeat
all report from it, so the three cannot disagree on how they count.

The seed's ``cpuUsage`` and ``memoryUsage`` are the worker's whole share of what it
may use: the supervisor and every session process together, in percent of the
CPUs and memory of its container (cgroup limits) or else of the machine
(supervisor/supervision/capacity.py). A backend placing sessions reads how full
this worker is, not how busy its neighbours are. Memory sums each process's
resident memory (RSS), so pages shared between processes count once per process:
the figure errs high, the safe side for placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from supervisor.sessions.session import Session
from supervisor.sessions.status import SessionStatus
from supervisor.supervision.capacity import Capacity
from supervisor.supervision.sampler import ProcStats


@dataclass(frozen=True, slots=True)
class ProcessTotals:
    """Summed figures of the session processes sampled last."""

    processes: int
    cpu_percent: float  # rounded to 2 places
    rss: int
    uss: int


@dataclass(frozen=True, slots=True)
class SessionFigures:
    """One session's figures (the per-session Prometheus series)."""

    session_id: str
    status: SessionStatus
    up: bool  # its process runs
    restarts: int
    stats: ProcStats | None
    outbox: int = 0  # messages waiting in its outbox (paced, or not sent yet)
    outbox_oldest: float | None = None  # when the oldest of them was accepted (epoch seconds)


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """The disk STORAGE_DIR is on, at the last sample."""

    free: int  # bytes
    total: int  # bytes
    low: bool  # less free than DISK_FREE_WARN_MB: writes will soon be refused


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """The worker at one moment."""

    total: int
    max_sessions: int
    by_status: Mapping[SessionStatus, int]  # every status, zeros included, in declaration order
    supervisor: ProcStats | None  # the supervisor process (None before the first sample)
    session_processes: ProcessTotals
    sessions: tuple[SessionFigures, ...]
    started_at: float  # epoch seconds the worker started
    at: float  # epoch seconds of this snapshot
    capacity: Capacity | None  # what the worker may use (None before the first sample)
    cpu_usage: float | None  # percent of capacity.cpus used by the supervisor and its sessions, 2 places
    memory_usage: float | None  # percent of capacity.memory they hold resident, 2 places
    disk: DiskSpace | None = None  # STORAGE_DIR's disk (None before the first sample)

    @property
    def uptime(self) -> float:
        """Seconds since the worker started."""
        return round(self.at - self.started_at, 3)

    @property
    def memory_total_mb(self) -> int | None:
        """The memory the worker may use, in MB (the seed's ``memoryTotal``)."""
        return None if self.capacity is None else self.capacity.memory // 2**20

    @property
    def active(self) -> int:
        """Sessions that are connected."""
        return self.by_status[SessionStatus.CONNECTED]

    def counts(self) -> dict[str, int]:
        """Sessions by status name, every status included: ``{"connected": 3, "failed": 0, ...}``."""
        return {status.value: count for status, count in self.by_status.items()}


def session_figures(session: Session, outbox: tuple[int, float | None] = (0, None)) -> SessionFigures:
    """One session's figures now; ``outbox``: how many messages wait for it and since when."""
    return SessionFigures(
        session_id=session.id,
        status=session.status,
        up=session.child.pid is not None,
        restarts=session.child.record.restarts,
        stats=session.stats,
        outbox=outbox[0],
        outbox_oldest=outbox[1],
    )


def _percent(used: float, of: float) -> float:
    return round(min(100.0, max(0.0, used / of * 100)), 2) if of > 0 else 0.0


def take_snapshot(
    sessions: Iterable[SessionFigures],
    supervisor: ProcStats | None,
    *,
    max_sessions: int,
    capacity: Capacity | None,
    started_at: float,
    at: float,
    disk: DiskSpace | None = None,
) -> WorkerSnapshot:
    """The snapshot of the sessions' figures and the supervisor's own, at ``at``."""
    figures = tuple(sessions)
    counts = Counter(f.status for f in figures)
    children = [f.stats for f in figures if f.stats is not None]
    measured = [*children, *([supervisor] if supervisor is not None else [])]
    cpu_usage = memory_usage = None
    if capacity is not None:
        # psutil's process CPU percent is of one CPU: the worker's share is the sum over the CPUs it may use.
        cpu_usage = _percent(sum(p.cpu_percent for p in measured) / 100, capacity.cpus)
        memory_usage = _percent(sum(p.rss for p in measured), capacity.memory)
    return WorkerSnapshot(
        total=len(figures),
        max_sessions=max_sessions,
        by_status={status: counts.get(status, 0) for status in SessionStatus},
        supervisor=supervisor,
        session_processes=ProcessTotals(
            processes=len(children),
            cpu_percent=round(sum(c.cpu_percent for c in children), 2),
            rss=sum(c.rss for c in children),
            uss=sum(c.uss for c in children),
        ),
        sessions=figures,
        started_at=started_at,
        at=at,
        capacity=capacity,
        cpu_usage=cpu_usage,
        memory_usage=memory_usage,
        disk=disk,
    )

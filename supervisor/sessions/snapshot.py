"""One snapshot of the worker: its sessions by status and the resource use of its processes.

``GET /health``, ``GET /metrics`` (JSON and Prometheus) and the backend heartbeat
all report from it, so the three cannot disagree on how they count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from supervisor.sessions.session import Session
from supervisor.sessions.status import SessionStatus
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


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """The worker at one moment."""

    total: int
    max_sessions: int
    by_status: Mapping[SessionStatus, int]  # every status, zeros included, in declaration order
    supervisor: ProcStats | None  # the supervisor process (None before the first sample)
    session_processes: ProcessTotals
    sessions: tuple[SessionFigures, ...]

    @property
    def active(self) -> int:
        """Sessions that are connected."""
        return self.by_status[SessionStatus.CONNECTED]

    def counts(self) -> dict[str, int]:
        """Sessions by status name, every status included: ``{"connected": 3, "failed": 0, ...}``."""
        return {status.value: count for status, count in self.by_status.items()}


def session_figures(session: Session) -> SessionFigures:
    """One session's figures now."""
    return SessionFigures(
        session_id=session.id,
        status=session.status,
        up=session.child.pid is not None,
        restarts=session.child.record.restarts,
        stats=session.stats,
    )


def take_snapshot(
    sessions: Iterable[SessionFigures], supervisor: ProcStats | None, *, max_sessions: int
) -> WorkerSnapshot:
    """The snapshot of the sessions' figures and the supervisor's own."""
    figures = tuple(sessions)
    counts = Counter(f.status for f in figures)
    children = [f.stats for f in figures if f.stats is not None]
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
    )

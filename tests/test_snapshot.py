"""The worker snapshot behind /health, /metrics and the heartbeat: counts and totals from figures, no processes."""

from __future__ import annotations

from supervisor.sessions.snapshot import ProcessTotals, SessionFigures, take_snapshot
from supervisor.sessions.status import SessionStatus
from supervisor.supervision.sampler import ProcStats


def stats(pid: int, cpu: float, rss: int, uss: int) -> ProcStats:
    return ProcStats(pid=pid, cpu_percent=cpu, rss=rss, uss=uss, threads=4, open_files=9)


def figures(session_id: str, status: SessionStatus, st: ProcStats | None, restarts: int = 0) -> SessionFigures:
    return SessionFigures(session_id=session_id, status=status, up=st is not None, restarts=restarts, stats=st)


def test_sessions_are_counted_by_status_with_every_status_present() -> None:
    snap = take_snapshot(
        [
            figures("a", SessionStatus.CONNECTED, stats(11, 1.5, 100, 60)),
            figures("b", SessionStatus.CONNECTED, stats(12, 0.25, 120, 70)),
            figures("c", SessionStatus.QR_READY, stats(13, 0.004, 90, 50)),
            figures("d", SessionStatus.FAILED, None, restarts=6),
        ],
        stats(10, 3.0, 500, 300),
        max_sessions=50,
    )
    assert (snap.total, snap.max_sessions, snap.active) == (4, 50, 2)
    assert snap.counts() == {
        "initializing": 0,
        "qr_ready": 1,
        "connected": 2,
        "disconnected": 0,
        "logged_out": 0,
        "failed": 1,
    }
    # Only processes that were sampled count; CPU is rounded to two places, as the API shows it.
    assert snap.session_processes == ProcessTotals(processes=3, cpu_percent=1.75, rss=310, uss=180)
    assert snap.supervisor is not None and snap.supervisor.pid == 10
    assert [(s.session_id, s.up, s.restarts) for s in snap.sessions] == [
        ("a", True, 0),
        ("b", True, 0),
        ("c", True, 0),
        ("d", False, 6),
    ]


def test_a_worker_without_sessions_or_samples_reports_zeros() -> None:
    snap = take_snapshot([], None, max_sessions=5)
    assert (snap.total, snap.active, snap.supervisor, snap.sessions) == (0, 0, None, ())
    assert set(snap.counts().values()) == {0} and len(snap.counts()) == len(SessionStatus)
    assert snap.session_processes == ProcessTotals(processes=0, cpu_percent=0, rss=0, uss=0)

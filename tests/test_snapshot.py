"""The worker snapshot behind /health, /metrics and the heartbeat: counts and totals from figures, no processes."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from supervisor.sessions.snapshot import ProcessTotals, SessionFigures, take_snapshot
from supervisor.sessions.status import SessionStatus
from supervisor.supervision.capacity import Capacity, read_capacity
from supervisor.supervision.sampler import ProcStats

MB = 2**20


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
        capacity=Capacity(cpus=2.0, memory=8000),
        started_at=1000.0,
        at=1042.5,
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
    snap = take_snapshot([], None, max_sessions=5, capacity=None, started_at=1.0, at=1.0)
    assert (snap.total, snap.active, snap.supervisor, snap.sessions) == (0, 0, None, ())
    assert set(snap.counts().values()) == {0} and len(snap.counts()) == len(SessionStatus)
    assert snap.session_processes == ProcessTotals(processes=0, cpu_percent=0, rss=0, uss=0)
    # Before the first sample nothing is known of the machine: the seed's percents are null, not 0.
    assert (snap.cpu_usage, snap.memory_usage, snap.memory_total_mb, snap.uptime) == (None, None, None, 0.0)


def test_the_seeds_usage_is_the_whole_workers_share_of_its_capacity() -> None:
    """cpuUsage and memoryUsage: the supervisor and every session process together, in percent of what the
    worker may use (a process's CPU percent is of one CPU; two CPUs are 200 of them)."""
    snap = take_snapshot(
        [
            figures("a", SessionStatus.CONNECTED, stats(11, 30.0, 100 * MB, 60)),
            figures("b", SessionStatus.QR_READY, stats(12, 9.5, 200 * MB, 70)),
            figures("c", SessionStatus.FAILED, None),
        ],
        stats(10, 10.0, 100 * MB, 300),
        max_sessions=50,
        capacity=Capacity(cpus=2.0, memory=1600 * MB),
        started_at=100.0,
        at=160.25,
    )
    assert snap.cpu_usage == 24.75  # (30 + 9.5 + 10) / 2 CPUs
    assert snap.memory_usage == 25.0  # 400 MB of 1600
    assert snap.memory_total_mb == 1600 and snap.uptime == 60.25
    # Never beyond 100: a sample can overshoot a CPU quota briefly.
    busy = take_snapshot(
        [figures("a", SessionStatus.CONNECTED, stats(11, 150.0, MB, 1))],
        None,
        max_sessions=1,
        capacity=Capacity(cpus=0.5, memory=MB),
        started_at=0.0,
        at=1.0,
    )
    assert (busy.cpu_usage, busy.memory_usage) == (100.0, 100.0)


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "cpus", "memory"),
    [
        ({"cpu.max": "150000 100000", "memory.max": str(512 * MB)}, 1.5, 512 * MB),  # cgroup v2 limits
        ({"cpu.max": "max 100000", "memory.max": "max"}, None, None),  # v2 without limits
        (
            {
                "cpu/cpu.cfs_quota_us": "50000",
                "cpu/cpu.cfs_period_us": "100000",
                "memory/memory.limit_in_bytes": "1024",
            },
            0.5,
            1024,
        ),  # v1 limits
        ({"cpu/cpu.cfs_quota_us": "-1", "memory/memory.limit_in_bytes": str(2**63 - 4096)}, None, None),  # v1: none
        ({}, None, None),  # no cgroup files at all
    ],
)
def test_capacity_is_the_containers_limits_or_else_the_machines(
    tmp_path: Path, files: dict[str, str], cpus: float | None, memory: int | None
) -> None:
    machine_cpus = float(len(os.sched_getaffinity(0)))
    machine_memory = psutil.virtual_memory().total
    capacity = read_capacity(_cgroup(tmp_path, files))
    assert capacity.cpus == (min(cpus, machine_cpus) if cpus is not None else machine_cpus)
    assert capacity.memory == (min(memory, machine_memory) if memory is not None else machine_memory)

"""The dashboard's rings of process samples: an hour at SAMPLE_INTERVAL, fixed size, oldest dropped."""

from __future__ import annotations

from supervisor.supervision.sample_history import MAX_POINTS, SampleHistory, SampleRing
from supervisor.supervision.sampler import ProcStats


def _stats(cpu: float, rss_mib: int) -> ProcStats:
    return ProcStats(pid=1, cpu_percent=cpu, rss=rss_mib << 20, uss=(rss_mib // 2) << 20, threads=1, open_files=3)


def test_a_ring_keeps_the_newest_points_oldest_first_in_a_size_fixed_at_creation() -> None:
    ring = SampleRing(3)
    size = ring.nbytes()
    assert size == 3 * 16 and ring.points() == []
    for t in range(5):
        ring.add(1_000.0 + t, _stats(cpu=float(t), rss_mib=10 + t))
    points = ring.points()
    assert [p.at for p in points] == [1_002, 1_003, 1_004]  # the two oldest were dropped
    assert [p.cpu_percent for p in points] == [2.0, 3.0, 4.0]
    assert points[-1].rss == 14 << 20 and points[-1].uss == 7 << 20
    assert [p.at for p in ring.points(since=1_003.5)] == [1_004]
    assert ring.nbytes() == size  # never grows


def test_history_is_sized_for_an_hour_and_forgets_deleted_sessions() -> None:
    assert SampleHistory(5).capacity == 720
    assert SampleHistory(30).capacity == 120
    assert SampleHistory(0.5).capacity == MAX_POINTS  # a short interval covers less than an hour, never more memory
    history = SampleHistory(5)
    history.add("a", 1.0, _stats(1.0, 20))
    history.add("b", 1.0, _stats(2.0, 30))
    assert history.nbytes() == 2 * 720 * 16
    history.keep_only({"b"})
    assert history.points("a") == [] and len(history.points("b")) == 1
    assert history.nbytes() == 720 * 16

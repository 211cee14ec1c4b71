"""Per-process resource figures (CPU %, RSS, USS, threads, open files) with psutil.

The psutil.Process objects are kept between samples: cpu_percent() measures
since the previous call on the same object, so a fresh object would always say 0.
Sampling reads /proc and smaps, so callers run it in a thread on a timer, never
per message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

log = logging.getLogger("supervisor.sampler")


@dataclass(frozen=True, slots=True)
class ProcStats:
    """One sample of one process."""

    pid: int
    cpu_percent: float
    rss: int
    uss: int
    threads: int
    open_files: int


class ProcessSampler:
    """Samples a changing set of pids, keeping one psutil.Process per live pid."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pids: Iterable[int]) -> dict[int, ProcStats]:
        """Figures for each pid that is still alive (blocking: call from a thread)."""
        wanted = set(pids)
        for gone in set(self._procs) - wanted:
            del self._procs[gone]
        out: dict[int, ProcStats] = {}
        for pid in wanted:
            proc = self._procs.get(pid)
            try:
                fresh = proc is None or not proc.is_running()  # is_running also catches pid reuse
                if fresh:
                    proc = psutil.Process(pid)
                    proc.cpu_percent(None)  # prime: the first call has no interval to measure
                    self._procs[pid] = proc
                assert proc is not None
                with proc.oneshot():
                    try:
                        mem = proc.memory_full_info()
                        uss = int(getattr(mem, "uss", 0))
                    except psutil.AccessDenied:
                        mem = proc.memory_info()
                        uss = 0
                    out[pid] = ProcStats(
                        pid=pid,
                        # A fresh object measured over microseconds says nonsense: 0 until the next sample.
                        cpu_percent=0.0 if fresh else proc.cpu_percent(None),
                        rss=int(mem.rss),
                        uss=uss,
                        threads=proc.num_threads(),
                        open_files=proc.num_fds(),
                    )
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._procs.pop(pid, None)
            except psutil.Error as exc:
                log.warning("cannot sample pid %d: %s", pid, exc)
        return out


"""Per-process resource figures (CPU %, RSS, USS, threads, open files) with psutil.

The psutil.Process objects are kept between samples: cpu_percent() measures
since the previous call on the same object, so a fresh object would always say 0.
Sampling reads /proc and smaps, so callers run it in a thread on a timer, never
per message. USS (smaps_rollup: the kernel walks every page table of the process)
costs several times what CPU and RSS cost, so it is re-read less often, and with it the
thread and open-file counts (listing /proc/<pid>/fd and task/ for 500 processes every
sample was a visible share of an idle worker's CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

log = logging.getLogger("supervisor.supervision.sampler")

# Seconds a process's USS figure is reused before it is read again (CPU and RSS are read every sample).
USS_INTERVAL = 30.0


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

    def __init__(self, *, uss_interval: float = USS_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._slow: dict[int, tuple[int, int, int, float]] = {}  # pid -> (uss, threads, fds, when read)
        self.uss_interval = uss_interval
        self._clock = clock

    def sample(self, pids: Iterable[int], *, only: bool = True) -> dict[int, ProcStats]:
        """Figures for each pid that is still alive (blocking: call from a thread). ``only``: these are
        all the pids of interest, the others are forgotten (else see :meth:`keep_only`)."""
        wanted = set(pids)
        if only:
            self.keep_only(wanted)
        now = self._clock()
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
                    mem = proc.memory_info()
                    last = None if fresh else self._slow.get(pid)
                    if last is not None and now - last[3] < self.uss_interval:
                        uss, threads, fds = last[:3]
                    else:
                        try:
                            uss = int(getattr(proc.memory_full_info(), "uss", 0))
                        except psutil.AccessDenied:
                            uss = 0
                        threads, fds = proc.num_threads(), proc.num_fds()
                        self._slow[pid] = (uss, threads, fds, now)
                    out[pid] = ProcStats(
                        pid=pid,
                        # A fresh object measured over microseconds says nonsense: 0 until the next sample.
                        cpu_percent=0.0 if fresh else proc.cpu_percent(None),
                        rss=int(mem.rss),
                        uss=uss,
                        threads=threads,
                        open_files=fds,
                    )
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._procs.pop(pid, None)
                self._slow.pop(pid, None)
            except psutil.Error as exc:
                log.warning("cannot sample pid %d: %s", pid, exc)
        return out

    def keep_only(self, pids: set[int]) -> None:
        """Forget every process but these."""
        for gone in set(self._procs) - pids:
            del self._procs[gone]
            self._slow.pop(gone, None)

"""What the worker may use: its CPUs and memory, from its container's cgroup limits or else the machine's.

The seed's ``cpuUsage`` and ``memoryUsage`` (heartbeat, ``/health``) are percents of
this capacity, so a backend placing sessions sees how full the worker is, whether it
runs alone on a machine or in a container with limits (cgroup v2 ``cpu.max`` and
``memory.max``, or v1 ``cpu.cfs_quota_us`` and ``memory.limit_in_bytes``). Reading
touches sysfs and /proc: call from a thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class Capacity:
    """CPUs (fractional under a quota) and bytes of memory the worker may use."""

    cpus: float
    memory: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup's CPU quota (None: no quota)."""
    v2 = _read(root / "cpu.max")  # "max 100000" or "<quota> <period>"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    quota_v1, period_v1 = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota_v1 is None or period_v1 is None or int(quota_v1) <= 0:
        return None
    return int(quota_v1) / int(period_v1)


def _memory_limit(root: Path) -> int | None:
    """Bytes allowed by the cgroup's memory limit (None: no limit)."""
    text = _read(root / "memory.max") or _read(root / "memory" / "memory.limit_in_bytes")
    # v1 says "no limit" with a huge number near 2**63: the machine's total below catches it.
    return None if text is None or text == "max" else int(text)


def read_capacity(root: Path = CGROUP_ROOT) -> Capacity:
    """The worker's capacity now: the cgroup's limits where set, else the CPUs it may run on and the machine's RAM."""
    cpus = float(len(os.sched_getaffinity(0)))
    memory = int(psutil.virtual_memory().total)
    try:
        quota, limit = _cpu_quota(root), _memory_limit(root)
    except ValueError:  # a cgroup file we cannot read as a number: the machine's figures hold
        quota, limit = None, None
    if quota is not None:
        cpus = min(cpus, quota)
    if limit is not None:
        memory = min(memory, limit)
    return Capacity(cpus=cpus, memory=memory)

"""The process sampler: CPU and RSS every sample, USS re-read only after its interval."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisor.supervision.sampler import ProcessSampler

# Allocates and touches 64 MiB when told to (one line on stdin), then waits for EOF.
GROWER = """
import sys
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
blob = bytearray(64 * 2**20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
sys.stdout.write("grown\\n"); sys.stdout.flush()
sys.stdin.read()
"""


@pytest.fixture
def grower() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.kill()
    proc.wait()


def _grow(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "grown\n"


def test_uss_is_reused_within_its_interval_and_rss_is_not(grower: subprocess.Popen[str]) -> None:
    now = [1000.0]
    sampler = ProcessSampler(uss_interval=30.0, clock=lambda: now[0])
    first = sampler.sample([grower.pid])[grower.pid]
    assert first.uss > 0 and first.rss >= first.uss

    _grow(grower)
    now[0] += 10.0
    within = sampler.sample([grower.pid])[grower.pid]
    assert within.rss > first.rss + 60 * 2**20  # RSS is read every time
    assert within.uss == first.uss  # USS is the earlier reading

    now[0] += 25.0  # 35 s after the first reading
    after = sampler.sample([grower.pid])[grower.pid]
    assert after.uss > first.uss + 60 * 2**20


def test_a_gone_process_is_dropped(grower: subprocess.Popen[str]) -> None:
    sampler = ProcessSampler()
    assert grower.pid in sampler.sample([grower.pid])
    grower.kill()
    grower.wait()
    assert sampler.sample([grower.pid]) == {}

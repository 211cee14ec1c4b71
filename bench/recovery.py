"""Recovery after SIGKILL of a session process, against a bare interpreter spawn as baseline.

Starts the worker as a user would (sim engine), links sessions, then kills one
session process at a time and times how long until the API shows it connected
again with a new pid. Prints medians and writes bench/results/recovery.json.

    .venv/bin/python bench/recovery.py [--sessions 5] [--kills 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import running_worker


def bare_spawn_seconds(runs: int) -> float:
    """Median wall time of ``python -c pass``: the floor under any process restart."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def measure(sessions: int, kills: int) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        # Default heartbeat settings: this measures exit-driven recovery, not hang detection.
        async with running_worker(Path(tmp) / "w", SESSION_HEARTBEAT_INTERVAL="2", SAMPLE_INTERVAL="5") as w:
            for i in range(sessions):
                await w.create_linked(f"bench-{i}", f"62810000{i:04d}")
            times = []
            for k in range(kills):
                sid = f"bench-{k % sessions}"
                # Wait until the child is RUNNING again: a stable run resets its backoff.
                before = await w.wait_session(sid, lambda s: s["processState"] == "RUNNING", timeout=60)
                t0 = time.perf_counter()
                os.kill(before["pid"], signal.SIGKILL)
                await w.wait_session(
                    sid,
                    lambda s, old=before["pid"]: s["status"] == "connected" and s["pid"] not in (None, old),
                    timeout=60,
                )
                times.append(time.perf_counter() - t0)
    return {
        "sessions": sessions,
        "kills": kills,
        "recovery_median_s": statistics.median(times),
        "recovery_p90_s": sorted(times)[int(0.9 * (len(times) - 1))],
        "recovery_max_s": max(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--kills", type=int, default=15)
    args = parser.parse_args()
    baseline = bare_spawn_seconds(15)
    result = asyncio.run(measure(args.sessions, args.kills))
    result["bare_python_spawn_median_s"] = baseline
    result["recovery_vs_bare_spawn"] = result["recovery_median_s"] / baseline
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "recovery.json").write_text(json.dumps(result, indent=2))
    print(f"{'figure':<34}{'value':>10}")
    for key, value in result.items():
        print(f"{key:<34}{value:>10.3f}" if isinstance(value, float) else f"{key:<34}{value:>10}")


if __name__ == "__main__":
    main()

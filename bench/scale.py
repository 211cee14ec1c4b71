"""Scale: one worker with 500 simulated sessions (``make bench`` runs it; also alone).

Measures, on the sim engine with the zygote spawner:

- create and link N sessions, driven concurrently as a backend would (16 API calls in flight);
- once settled: supervisor RSS, session USS, idle CPU of the supervisor, all session processes
  and the hub over a window;
- ``GET /sessions`` and ``GET /health`` p50/p99 (sequential calls, the only client);
- send latency at the seed's per-session load (N x 10 msg/min: 83 msg/s at 500);
- the pacing's own cost at that load: the same load with the default pace (cold chats paced;
  the bench's chats are warm after the first round, so nothing waits) vs pacing off;
- the restart storm: every session process SIGKILLed at once, seconds until all are connected
  again, sessions that ended ``failed``, and ``GET /health`` latency and failures meanwhile.

    .venv/bin/python bench/scale.py [--sessions 500] [--idle-seconds 20]

Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Worker, running_worker
from run import (
    RESULTS,
    CpuWindow,
    create_and_link,
    load_client,
    pct,
    poll,
    process_memory,
    seed_load,
    sessions_by_id,
    worker_env,
)


async def api_latency(w: Worker, path: str, calls: int) -> dict[str, float]:
    """p50/p99 milliseconds of ``calls`` sequential GETs of ``path``."""
    client = load_client(w)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        status = await client.get(path)
        times.append(time.perf_counter() - t0)
        assert status == 200, (path, status)
    return {"p50_ms": 1000 * pct(times, 50), "p99_ms": 1000 * pct(times, 99)}


async def restart_storm(w: Worker, n: int) -> dict[str, Any]:
    """SIGKILL every session process at once; until all are connected again, probe /health."""
    before = await sessions_by_id(w)
    pids = [s["pid"] for s in before.values() if s.get("pid")]
    probes: list[float] = []
    failures = 0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal failures
        client = load_client(w)
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(5):
                    status = await client.get("/health")
                if status != 200:
                    failures += 1
            except TimeoutError:
                failures += 1
            probes.append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)

    prober = asyncio.create_task(probe())
    t0 = time.perf_counter()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def all_back() -> bool:
        sessions = await sessions_by_id(w)
        back = [s for s in sessions.values() if s["status"] == "connected" and s.get("pid") not in (None, *pids)]
        return len(back) >= n

    await poll(all_back, 300, 0.25, f"{n} sessions connected again")
    elapsed = time.perf_counter() - t0
    done.set()
    await prober
    failed = [s["sessionId"] for s in (await sessions_by_id(w)).values() if s["status"] == "failed"]
    return {
        "killed": len(pids),
        "all_connected_s": elapsed,
        "failed_sessions": len(failed),
        "health_p50_ms": 1000 * pct(probes, 50),
        "health_p99_ms": 1000 * pct(probes, 99),
        "health_max_ms": 1000 * max(probes, default=0.0),
        "health_failures": failures,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    n = args.sessions
    out: dict[str, Any] = {"sessions": n}
    env = {**worker_env("zygote"), "MAX_SESSIONS": str(n + 10)}
    with tempfile.TemporaryDirectory(prefix="wa-scale-") as tmp:
        async with running_worker(Path(tmp) / "w", **env) as w:
            out["create_and_link_s"] = await create_and_link(w, n)
            await asyncio.sleep(args.settle_seconds)  # past start-up work: figures of a settled worker
            out["memory"] = process_memory(w)
            with CpuWindow(w) as cpu:
                await asyncio.sleep(args.idle_seconds)
            p = cpu.percent
            out["idle_cpu"] = {
                "supervisor_pct": p["supervisor"],
                "sessions_total_pct": p["sessions"],
                "worker_total_pct": p["supervisor"] + p["sessions"] + p.get("zygote", 0.0),
                "hub_pct": p["hub"],
            }
            out["api"] = {
                "sessions": await api_latency(w, "/sessions", args.api_calls),
                "health": await api_latency(w, "/health", args.api_calls),
            }
            out["seed_load"] = await seed_load(w, n, 10, args.load_seconds)
            await w.stop()
        # The same load on a worker with the default pace (warm chats: the first round above made them so
        # on that worker; here the first message to each chat goes out at once since nothing waits).
        async with running_worker(Path(tmp) / "w", **{**env, "PACING_COLD_GAP": "3"}) as w:
            await poll(lambda: _connected(w, n), 300, 0.25, "sessions back after the restart")
            paced = await seed_load(w, n, 10, args.load_seconds)
            out["seed_load_paced"] = {"p50_ms": paced["p50_ms"], "p99_ms": paced["p99_ms"], "errors": paced["errors"]}
            out["restart_storm"] = await restart_storm(w, n)
            await load_client(w).close()
    out["supervisor_rss_mib"] = out["memory"]["supervisor_rss_mib"]
    return out


async def _connected(w: Worker, n: int) -> bool:
    return sum(1 for s in (await sessions_by_id(w)).values() if s["status"] == "connected") >= n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--settle-seconds", type=float, default=5)
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--api-calls", type=int, default=200)
    p.add_argument("--load-seconds", type=float, default=20)
    args = p.parse_args()
    results = asyncio.run(measure(args))
    results["cpus"] = os.cpu_count()
    results["host_memory_mib"] = psutil.virtual_memory().total / 2**20
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Failover between workers: SIGKILL of worker A to ``connected`` on worker B, next to a plain create baseline.

Worker A links a session (the sealed backup lands in S3: moto on loopback) and
is SIGKILLed; worker B (already running, own data dir, same S3 and simulated
network) is asked at once to ``POST /session/create`` with ``takeover: true``:
B waits until A's liveness record lapses (``WORKER_ALIVE_TTL``), takes A's
still unexpired lease over, restores the backup and reconnects without a scan.
Baseline in the same run: B stops cleanly (backup, lease released), and worker C
creates the session with nothing to wait for (restore, spawn, connect).

Per run: killToConnected (SIGKILL A -> connected on B, the issue's failover
figure), killToAnswered (SIGKILL A -> B's create answered: the wait for A's
record plus restore and spawn; a restored session connects about as fast),
createToConnected (the baseline on C), and how long A's lease still had to run
when B connected (leaseLeft: > 0 proves the liveness path). Medians over
``--runs``. Writes bench/results/failover.json.

    .venv/bin/python bench/failover.py [--runs 5] [--lease-ttl 15] [--alive-ttl 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Worker, free_port, wait_for
from s3server import S3Server

KEY = "bench-failover-key-0123456789abcdefghij"


def env_for(s3: S3Server, hub: dict[str, str], worker_id: str, ttl: float, alive_ttl: float) -> dict[str, str]:
    return {
        **hub,
        **s3.worker_env(prefix="bench"),
        "WORKER_ID": worker_id,
        "ENCRYPTION_KEY": KEY,
        "LEASE_TTL": str(ttl),
        "WORKER_ALIVE_TTL": str(alive_ttl),
        "BACKUP_DEBOUNCE": "0.2",
        "RATE_LIMIT_SESSION_OPS": "0",
        # Production heartbeat settings (A's session processes die with it: PR_SET_PDEATHSIG).
        "SESSION_HEARTBEAT_INTERVAL": "2",
        "SESSION_HEARTBEAT_LIVENESS": "3",
    }


def lease_of(s3: S3Server, session_id: str) -> dict[str, Any]:
    lease = s3.stored_json("bench-sessions", f"sessions/{session_id}/lease.json")
    assert lease is not None, f"{session_id} has no lease"
    return lease


async def one_run(
    tmp: Path, s3: S3Server, hub: dict[str, str], ttl: float, alive_ttl: float, run: int
) -> dict[str, float]:
    session_id, phone = f"bench-fo-{run}", f"628700000{run:03d}"
    a, b, c = (Worker(tmp / f"{name}{run}", env_for(s3, hub, f"bench-{name}{run}", ttl, alive_ttl)) for name in "abc")
    await asyncio.gather(a.start(), b.start(), c.start())
    try:
        await a.create_linked(session_id, phone)

        async def backed_up() -> bool:
            _, body = await a.api("GET", "/health")
            return body["storage"]["backupsDone"] >= 1 and body["storage"]["pendingBackups"] == 0

        await wait_for(backed_up, what="backup on A")
        lease = lease_of(s3, session_id)
        assert a.proc is not None
        killed = time.perf_counter()
        a.proc.kill()
        a.proc.wait()
        status, body = await b.api("POST", "/session/create", json={"sessionId": session_id, "takeover": True})
        assert status == 200, body
        answered = time.perf_counter()
        await b.wait_session(session_id, lambda s: s["status"] == "connected", timeout=60)
        done = time.perf_counter()
        lease_left = lease["expiresAt"] - time.time()
        item = await b.session(session_id)
        assert item["qrCount"] == 0, "B needed a scan"
        # Baseline: the same session created on C once B let it go cleanly: nothing to wait for.
        assert await b.stop() == 0
        started = time.perf_counter()
        status, body = await c.api("POST", "/session/create", json={"sessionId": session_id})
        assert status == 200, body
        await c.wait_session(session_id, lambda s: s["status"] == "connected", timeout=60)
        baseline = time.perf_counter() - started
        assert (await c.session(session_id))["qrCount"] == 0, "C needed a scan"
        return {
            "killToConnected": done - killed,
            "killToAnswered": answered - killed,
            "createToConnected": baseline,
            "leaseLeft": lease_left,
        }
    finally:
        for w in (c, b, a):
            await w.stop()


def start_hub(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A standalone simulated network both workers use; returns it and the workers' SIM_* variables."""
    zmq_port, http_port = free_port(), free_port()
    hub_env = {
        **os.environ,
        "SIM_HUB": f"tcp://127.0.0.1:{zmq_port}",
        "SIM_PORT": str(http_port),
        "STORAGE_DIR": str(tmp / "hub"),
    }
    hub = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "sim"], env=hub_env, stdout=subprocess.PIPE)
    assert hub.stdout is not None
    json.loads(hub.stdout.readline())  # {"ready": true, ...}
    return hub, {"SIM_HUB": hub_env["SIM_HUB"], "SIM_PORT": str(http_port)}


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "max": max(values), "all": values}


async def main(runs: int, ttl: float, alive_ttl: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-fo-") as tmp_name:
        tmp = Path(tmp_name)
        s3 = S3Server(tmp / "moto.log")
        s3.start()
        hub, shared = start_hub(tmp)
        try:
            results = [await one_run(tmp, s3, shared, ttl, alive_ttl, run) for run in range(runs)]
        finally:
            hub.terminate()
            hub.wait(timeout=10)
            s3.stop()
    figures = {name: summary([r[name] for r in results]) for name in results[0]}
    return {
        "runs": runs,
        "leaseTtl": ttl,
        "workerAliveTtl": alive_ttl,
        **figures,
        "killToConnectedOverBaseline": figures["killToConnected"]["median"] / figures["createToConnected"]["median"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--alive-ttl", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(main(args.runs, args.lease_ttl, args.alive_ttl))
    out = Path(__file__).parent / "results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

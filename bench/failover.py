"""Failover between workers: seconds from ``POST /session/create`` on worker B to ``connected``.

Worker A links a session (backup lands in S3: moto on loopback), A is SIGKILLed,
worker B (already running, own data dir, same S3 and simulated network) is asked
to create the session until A's lease lapses; it restores the sealed backup and
reconnects without a scan. Reports per run: create->connected on B (the figure
the issue asks for) and SIGKILL->connected (which includes waiting out the
lease TTL). Writes bench/results/failover.json.

    .venv/bin/python bench/failover.py [--runs 5] [--lease-ttl 15]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Worker, free_port, wait_for
from s3server import S3Server

KEY = "bench-failover-key-0123456789abcdefghij"


def env_for(s3: S3Server, hub: dict[str, str], worker_id: str, ttl: float) -> dict[str, str]:
    return {
        **hub,
        **s3.worker_env(prefix="bench"),
        "WORKER_ID": worker_id,
        "ENCRYPTION_KEY": KEY,
        "LEASE_TTL": str(ttl),
        "BACKUP_DEBOUNCE": "0.2",
        "RATE_LIMIT_SESSION_OPS": "0",  # the bench retries create until the lease lapses
        # Production heartbeat settings: orphans of A exit within ~6 s (they would be replaced anyway).
        "SESSION_HEARTBEAT_INTERVAL": "2",
        "SESSION_HEARTBEAT_LIVENESS": "3",
    }


async def one_run(tmp: Path, s3: S3Server, hub: dict[str, str], ttl: float, run: int) -> dict[str, float]:
    session_id, phone = f"bench-fo-{run}", f"628700000{run:03d}"
    a = Worker(tmp / f"a{run}", env_for(s3, hub, f"bench-a{run}", ttl))
    b = Worker(tmp / f"b{run}", env_for(s3, hub, f"bench-b{run}", ttl))
    await a.start()
    await b.start()
    try:
        await a.create_linked(session_id, phone)

        async def backed_up() -> bool:
            _, body = await a.api("GET", "/health")
            return body["storage"]["backupsDone"] >= 1 and body["storage"]["pendingBackups"] == 0

        await wait_for(backed_up, what="backup on A")
        assert a.proc is not None
        killed = time.perf_counter()
        a.proc.kill()
        a.proc.wait()
        while True:
            started = time.perf_counter()
            status, body = await b.api("POST", "/session/create", json={"sessionId": session_id})
            if status == 200:
                break
            assert status == 409 and body["code"] == "SESSION_LEASED", body
            await asyncio.sleep(0.2)
        await b.wait_session(session_id, lambda s: s["status"] == "connected", timeout=60)
        done = time.perf_counter()
        item = await b.session(session_id)
        assert item["qrCount"] == 0, "B needed a scan"
        return {"createToConnected": done - started, "killToConnected": done - killed}
    finally:
        await b.stop()
        await a.stop()


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


async def main(runs: int, ttl: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-fo-") as tmp_name:
        tmp = Path(tmp_name)
        s3 = S3Server(tmp / "moto.log")
        s3.start()
        hub, shared = start_hub(tmp)
        try:
            results = [await one_run(tmp, s3, shared, ttl, run) for run in range(runs)]
        finally:
            hub.terminate()
            hub.wait(timeout=10)
            s3.stop()
    create = [r["createToConnected"] for r in results]
    kill = [r["killToConnected"] for r in results]
    return {
        "runs": runs,
        "leaseTtl": ttl,
        "createToConnected": {"median": statistics.median(create), "max": max(create), "all": create},
        "killToConnected": {"median": statistics.median(kill), "max": max(kill), "all": kill},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    args = parser.parse_args()
    summary = asyncio.run(main(args.runs, args.lease_ttl))
    out = Path(__file__).parent / "results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))

"""Memory of one idle session process per engine (USS, the memory that is the process's own).

Starts ``python -m session_proc`` with the neonize engine (its dial fails without
WhatsApp, so it idles between retries: the Go runtime and whatsmeow loaded, one
client, no connection) and, for comparison, with the sim engine (no hub), against
a ROUTER bound here. Samples USS with psutil after the process settled and prints
the median; writes bench/results/neonize_memory.json.

    .venv/bin/python bench/neonize_memory.py [--samples 7] [--settle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transport.channel import RouterChannel  # noqa: E402


async def idle_uss(engine: str, samples: int, settle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        events: asyncio.Queue[str] = asyncio.Queue()

        async def on_event(_identity: bytes, op: str, _body: dict[str, Any]) -> None:
            await events.put(op)

        router = RouterChannel(f"ipc://{tmp}/sup.sock", on_event=on_event, heartbeat_interval=1.0)
        endpoint = router.bind()
        router.track(b"bench:1")
        options = {"retry_initial": 30.0} if engine == "neonize" else {"hub": f"ipc://{tmp}/no-hub.sock"}
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "session_proc", "--session-id", "bench", "--incarnation", "1",
            "--endpoint", endpoint, "--engine", engine, "--storage-dir", tmp,
            env={**os.environ, "WA_SESSION_OPTIONS": json.dumps(options)},
            cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while await asyncio.wait_for(events.get(), 30) != "ready":
                pass
            await asyncio.sleep(settle)  # past start-up: the first dial failed, the engine waits
            proc = psutil.Process(child.pid)
            values = []
            for _ in range(samples):
                values.append(proc.memory_full_info().uss)
                await asyncio.sleep(0.5)
            return {
                "engine": engine,
                "uss_median_mib": round(statistics.median(values) / 2**20, 1),
                "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                "threads": proc.num_threads(),
            }
        finally:
            child.kill()
            await child.wait()
            await router.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    results = [await idle_uss(engine, args.samples, args.settle) for engine in ("neonize", "sim")]
    for r in results:
        print(f"{r['engine']:8s} idle session process: USS {r['uss_median_mib']} MiB (median of {args.samples}), "
              f"RSS {r['rss_mib']} MiB, {r['threads']} threads")  # fmt: skip
    out = ROOT / "bench" / "results" / "neonize_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

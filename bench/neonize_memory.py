"""Memory of one idle session process per engine and spawner (USS: the memory that is the process's own).

Each sample starts a session process against a ROUTER bound here (the neonize
engine's dial fails without WhatsApp, so it idles between retries: the Go runtime
and whatsmeow loaded, one client, no connection), waits for ``ready`` and a settle
time, and reads its USS; then starts a second one beside it and reads both again.
The second figure is the one that counts for a worker with many sessions: the Go
library's read-only pages (~12 MiB) are the page cache's, and USS counts them as
private only while a single process maps them. Each figure is the median over
``--samples`` such runs, with a bare ``python -c`` process's USS as the baseline
from the same run, and one process's ``/proc/<pid>/smaps`` broken down by mapping
(private clean + dirty, MiB). Writes bench/results/neonize_memory.json.

Variants: ``exec`` (a fresh interpreter per session), ``zygote`` (forked from the
pre-warmed spawner, neonize's protobuf modules preloaded: the default),
``zygote-noproto`` (forked, without neonize's protocols: ``WA_ZYGOTE_PRELOAD_NEONIZE=0``).

    .venv/bin/python bench/neonize_memory.py [--samples 5] [--settle 3] [--variants exec zygote zygote-noproto]
        [--sim] [--env GOMAXPROCS=1 GOGC=50 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from session_proc.engines import START_ENV  # noqa: E402
from supervisor.supervision.spawner import ProcessHandle, ZygoteSpawner, exec_spawn  # noqa: E402
from transport import wire  # noqa: E402
from transport.channel import RouterChannel  # noqa: E402
from transport.identity import routing_identity  # noqa: E402

MiB = 2**20
GO_LIBRARY_SUFFIX = ".so"  # neonize-<os>-<arch>.so, in the neonize package directory
VARIANTS = ("exec", "zygote", "zygote-noproto")


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smaps_breakdown(pid: int) -> dict[str, float]:
    """Private (clean + dirty) KiB per kind of mapping, in MiB: where a process's USS lives."""
    kib: Counter[str] = Counter()
    kind = "other"
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
                path = fields[5] if len(fields) > 5 else ""
                if "/neonize/neonize-" in path and path.endswith(GO_LIBRARY_SUFFIX):
                    kind = "go_library"
                elif path in ("", "[heap]", "[stack]"):
                    kind = {"": "anonymous", "[heap]": "malloc_heap", "[stack]": "anonymous"}[path]
                else:
                    kind = "other_files"
            elif fields[0] == "Private_Clean:":
                kib[f"{kind}_clean"] += int(fields[1])
            elif fields[0] == "Private_Dirty:":
                kib[f"{kind}_dirty"] += int(fields[1])
    return {k: round(v / 1024, 1) for k, v in sorted(kib.items()) if v >= 50}


async def bare_python_uss(samples: int) -> float:
    """USS of a bare interpreter (``python -c`` waiting on stdin), median MiB."""
    values = []
    for _ in range(samples):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(0.5)
        values.append(psutil.Process(proc.pid).memory_full_info().uss)
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()
    return round(statistics.median(values) / MiB, 1)


async def idle_uss(
    engine: str, variant: str, samples: int, settle: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """USS of a lone idle session process and of two side by side, median over ``samples`` runs.

    ``extra_env`` goes into the environment the zygote (or, with exec, each session process) starts
    with: the only one the Go runtime reads (it reads its environment once, from the process's
    initial environment block; changes made later through ``os.environ`` never reach it).
    """
    extra_env = extra_env or {}
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        ready: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_event(identity: bytes, op: str, _body: dict[str, Any]) -> None:
            if op == wire.ChildEvent.READY:
                await ready.put(identity)

        router = RouterChannel(f"ipc://{tmp}/sup.sock", on_event=on_event, heartbeat_interval=1.0)
        endpoint = router.bind()
        # neonize dials a proxy on a closed loopback port: nothing leaves this machine, not even a DNS query.
        options = (
            {"retry_initial": 30.0, "proxy": f"socks5://127.0.0.1:{_closed_port()}"}
            if engine == "neonize"
            else {"hub": f"ipc://{tmp}/no-hub.sock"}
        )
        env = {**os.environ, **START_ENV, **extra_env, "WA_SESSION_OPTIONS": json.dumps(options)}
        zygote = None
        if variant.startswith("zygote"):
            preload = "0" if variant == "zygote-noproto" else "1"
            zygote_env = {**os.environ, **START_ENV, **extra_env, "WA_ZYGOTE_PRELOAD_NEONIZE": preload}
            zygote = ZygoteSpawner(cwd=ROOT, env=zygote_env)
            await zygote.start()
        incarnation = 0

        async def start() -> ProcessHandle:
            nonlocal incarnation
            incarnation += 1
            identity = routing_identity("bench", incarnation)
            router.track(identity)
            argv = [
                sys.executable, "-m", "session_proc", "--session-id", "bench", "--incarnation", str(incarnation),
                "--endpoint", endpoint, "--engine", engine, "--storage-dir", f"{tmp}/{incarnation}",
            ]  # fmt: skip
            handle = await zygote.spawn(argv, env) if zygote is not None else await exec_spawn(argv, env, stdout=False)
            async with asyncio.timeout(30):
                while await ready.get() != identity:
                    pass
            return handle

        def uss(handle: ProcessHandle) -> float:
            return psutil.Process(handle.pid).memory_full_info().uss / MiB

        alone: list[float] = []
        pair: list[float] = []
        breakdown: dict[str, Any] = {}
        try:
            for run in range(samples):
                first = await start()
                await asyncio.sleep(settle)  # past start-up: the first dial failed, the engine waits
                alone.append(uss(first))
                if run == 0:
                    breakdown["alone"] = smaps_breakdown(first.pid)
                second = await start()
                await asyncio.sleep(settle)
                pair += [uss(first), uss(second)]
                if run == 0:
                    breakdown["pair"] = smaps_breakdown(second.pid)
                threads = psutil.Process(second.pid).num_threads()
                for handle in (first, second):
                    handle.send_signal(9)
                    await handle.wait()
        finally:
            if zygote is not None:
                await zygote.close()
            await router.close()
    return {
        "engine": engine,
        "spawner": variant,
        "env": extra_env,
        "uss_alone_mib": round(statistics.median(alone), 1),
        "uss_beside_another_mib": round(statistics.median(pair), 1),
        "samples": samples,
        "threads": threads,
        "breakdown_mib": breakdown,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sim", action="store_true", help="also the sim engine (zygote), for comparison")
    parser.add_argument(
        "--env", nargs="*", default=[], metavar="NAME=VALUE",
        help="also measure each variant with this in its start environment (e.g. GOMAXPROCS=1), one at a time",
    )  # fmt: skip
    args = parser.parse_args()
    baseline = await bare_python_uss(args.samples)
    results = [await idle_uss("neonize", v, args.samples, args.settle) for v in args.variants]
    for setting in args.env:
        name, _, value = setting.partition("=")
        results += [await idle_uss("neonize", v, args.samples, args.settle, {name: value}) for v in args.variants]
    if args.sim:
        results.append(await idle_uss("sim", "zygote", args.samples, 1.5))
    print(f"bare python: USS {baseline} MiB (median of {args.samples})")
    for r in results:
        label = r["spawner"] + "".join(f" {k}={v}" for k, v in r["env"].items())
        print(f"{r['engine']:8s} {label:15s} idle session process: USS {r['uss_alone_mib']} MiB alone, "
              f"{r['uss_beside_another_mib']} MiB beside another (medians of {r['samples']} runs; "
              f"x{r['uss_beside_another_mib'] / baseline:.1f} bare python), {r['threads']} threads")  # fmt: skip
        for when, parts in r["breakdown_mib"].items():
            print(f"    {when:5s} " + ", ".join(f"{k} {v}" for k, v in parts.items()))
    out = ROOT / "bench" / "results" / "neonize_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bare_python_uss_mib": baseline, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

"""The benchmark harness behind ``make bench``: one table of figures and bench/results/bench.json.

Starts the worker as a user would (``wa-worker serve``, sim engine, loopback
only) and measures, each as a median over ``--repeat`` runs where the figure is
cheap enough to repeat, and each timing next to a baseline measured in the same
run:

- baselines: ``python -c pass`` wall time, USS of an idle bare interpreter, and
  the round trip of a bare pyzmq DEALER/ROUTER ping-pong with a frame of the
  same size as ours;
- the API contract: reading a typical send body through its declaration (json.loads
  + pydantic) vs json.loads alone, and encoding a typical answer through its model vs
  json.dumps alone;
- pacing's cost per send: the outbox's pacing calls (Pacer.place, typing, keeps_pace)
  with pacing off and with the default pace on, vs a bare await of a no-op coroutine;
- the IPC round trip of transport/ (RouterChannel.request -> DealerChannel) vs
  that bare ping-pong;
- spawn of a session process (exec -> ``ready``; also through the zygote when
  session_proc/zygote.py exists) vs ``python -c pass``; idle USS of one session
  process vs a bare interpreter;
- create+link N sessions (all at once, through the API and the hub's scan);
- with 50 linked sessions: USS per session process, supervisor RSS, idle CPU;
  send latency p50/p99 and CPU at the seed's load (50 x 100 msg/min); throughput,
  latency and CPU at saturation; phone -> history throughput; recovery after
  SIGKILL of a session process;
- spawn and idle USS of a neonize session process (exec, zygote) when neonize is
  installed;
- failover between two workers through S3 (bench/failover.py);
- 500 sessions on one worker: concurrent create+link, idle CPU, API p99, supervisor RSS,
  seed-load latency (and pacing's cost), the restart storm (bench/scale.py).

Every request loop is bounded in count and time. ``--quick`` shrinks it all for
iterating.

    .venv/bin/python bench/run.py [--quick] [--repeat 3] [--sessions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
import zmq.asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import durability  # noqa: E402
from harness import TOKEN, Worker, running_worker, unreachable_proxy  # noqa: E402
from load_client import LoadClient  # noqa: E402

from session_proc.engines import START_ENV  # noqa: E402
from supervisor.supervision.spawner import ProcessHandle  # noqa: E402
from transport import wire  # noqa: E402
from transport.channel import DealerChannel, RouterChannel  # noqa: E402
from transport.protocol import REQ, Frame, encode  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MiB = 2**20


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- baselines -------------------------------------------------------------------------


def bare_spawn_s(runs: int) -> float:
    """Median wall time of ``python -c pass``: the floor under any process start."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return median(times)


async def settled_uss(pid: int, settle: float = 1.0, samples: int = 3) -> float:
    """Median USS of a process after it settled."""
    await asyncio.sleep(settle)
    proc = psutil.Process(pid)
    values = []
    for _ in range(samples):
        values.append(float(proc.memory_full_info().uss))
        await asyncio.sleep(0.2)
    return median(values)


async def bare_python_uss() -> float:
    """USS of an idle bare interpreter (the same executable, no imports)."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        return await settled_uss(child.pid)
    finally:
        child.kill()
        await child.wait()


def _send_like_frame() -> bytes:
    """A frame of the size a text send request has on our wire."""
    body = {"to": "628100000001@s.whatsapp.net", "type": "text", "text": "x" * 40, "id": "3EB0" + "A" * 16}
    return encode(Frame(kind=REQ, id=123456, op=wire.ToChild.SEND, body=body))


async def bare_zmq_rtt(rounds: int) -> float:
    """Median round trip of a bare pyzmq DEALER -> ROUTER -> DEALER ping-pong over ipc (seconds)."""
    payload = _send_like_frame()
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        ctx = zmq.asyncio.Context()
        router = ctx.socket(zmq.ROUTER)
        dealer = ctx.socket(zmq.DEALER)
        router.bind(f"ipc://{tmp}/bare.sock")
        dealer.connect(f"ipc://{tmp}/bare.sock")

        async def echo() -> None:
            while True:
                ident, frame = await router.recv_multipart()
                await router.send_multipart([ident, frame])

        task = asyncio.create_task(echo())
        times = []
        try:
            for _ in range(rounds):
                t0 = time.perf_counter()
                await dealer.send(payload)
                await dealer.recv()
                times.append(time.perf_counter() - t0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            router.close(0)
            dealer.close(0)
            ctx.term()
    return median(times[rounds // 10 :])


async def channel_rtt(rounds: int) -> float:
    """Median round trip of our transport: a typed send request (transport/wire.py) from a RouterChannel,
    decoded and answered with a typed result by a DealerChannel, the reply decoded again (seconds)."""
    message = wire.OutgoingMessage(to="628100000001@s.whatsapp.net", text="x" * 40, id="3EB0" + "A" * 16)

    async def answer(_identity: bytes, op: str, b: dict[str, Any]) -> wire.SendResult:
        request = wire.decode_child_request(op, b)
        assert isinstance(request, wire.OutgoingMessage)
        return wire.SendResult(id=request.id, timestamp=1.0)

    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        router = RouterChannel(f"ipc://{tmp}/ch.sock", heartbeat_interval=5.0)
        endpoint = router.bind()
        dealer = DealerChannel(endpoint, b"bench:1", on_request=answer, heartbeat_interval=5.0)
        dealer.connect()
        router.track(b"bench:1")
        try:
            deadline = time.monotonic() + 10
            while True:  # the dealer's connect is asynchronous: the first sends may find no route yet
                try:
                    await wire.ask_child(router, b"bench:1", message, timeout=1.0)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await wire.ask_child(router, b"bench:1", message, timeout=5.0)
                times.append(time.perf_counter() - t0)
        finally:
            await dealer.close()
            await router.close()
    return median(times[rounds // 10 :])


# -- one session process outside the worker ----------------------------------------------


async def session_spawn(spawner: str, runs: int, engine: str = "sim") -> dict[str, float]:
    """Exec/fork -> ``ready`` of a session process, and its idle USS.

    sim: no hub, it idles dialling; neonize: its dial fails without WhatsApp, it idles between retries
    with the Go runtime and whatsmeow loaded (as bench/neonize_memory.py).
    """
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        ready: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_event(identity: bytes, op: str, _body: dict[str, Any]) -> None:
            if op == wire.ChildEvent.READY:
                await ready.put(identity)

        router = RouterChannel(f"ipc://{tmp}/sup.sock", on_event=on_event, heartbeat_interval=1.0)
        endpoint = router.bind()
        # neonize dials a proxy on a closed loopback port: nothing leaves this machine, not even a DNS query.
        options = (
            {"retry_initial": 30.0, "proxy": unreachable_proxy()}
            if engine == "neonize"
            else {"hub": f"ipc://{tmp}/no-hub.sock"}
        )
        env = {**os.environ, **START_ENV, "WA_SESSION_OPTIONS": json.dumps(options)}
        zygote = None
        if spawner.startswith("zygote"):
            from supervisor.supervision.spawner import ZygoteSpawner

            freeze = "0" if spawner == "zygote-nofreeze" else "1"
            zygote = ZygoteSpawner(cwd=ROOT, env={**os.environ, **START_ENV, "WA_ZYGOTE_GC_FREEZE": freeze})
            await zygote.start()
        times: list[float] = []
        uss: list[float] = []
        try:
            for i in range(runs):
                identity = f"bench:{i + 1}".encode()
                router.track(identity)
                argv = [
                    sys.executable, "-m", "session_proc", "--session-id", "bench", "--incarnation", str(i + 1),
                    "--endpoint", endpoint, "--engine", engine, "--storage-dir", f"{tmp}/{i}", "--hb-interval", "1",
                ]  # fmt: skip
                t0 = time.perf_counter()
                handle: ProcessHandle
                if zygote is not None:
                    handle = await zygote.spawn(argv, env)
                else:
                    from supervisor.supervision.spawner import exec_spawn

                    handle = await exec_spawn(argv, env, stdout=False)
                async with asyncio.timeout(30):
                    got = await ready.get()
                times.append(time.perf_counter() - t0)
                assert got == identity, got
                if i < 3:
                    uss.append(await settled_uss(handle.pid, settle=3.0 if engine == "neonize" else 1.5))
                handle.send_signal(signal.SIGKILL)
                await handle.wait()
                router.forget(identity)
        finally:
            if zygote is not None:
                await zygote.close()
            await router.close()
    return {"spawn_s": median(times), "idle_uss_mib": median(uss) / MiB}


# -- the worker --------------------------------------------------------------------------


def worker_env(spawner: str) -> dict[str, str]:
    """A user's settings, with the API's rate limits off (the bench is the one client) and room for sessions."""
    return {
        "SESSION_HEARTBEAT_INTERVAL": "2",
        "SESSION_HEARTBEAT_LIVENESS": "3",
        "SAMPLE_INTERVAL": "5",
        "START_STAGGER": "0.2",
        "RATE_LIMIT_SEND_PER_SESSION": "0",
        "RATE_LIMIT_SESSION_OPS": "0",
        # Throughput figures: every message goes out as soon as it can (pacing's own cost: pacing_costs()).
        "PACING_COLD_GAP": "0",
        "MAX_SESSIONS": "200",
        "LOG_LEVEL": "warning",
        "SPAWNER": spawner,
    }


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        await asyncio.sleep(interval)


def phone_of(i: int) -> str:
    return f"62810000{i:04d}"


async def sessions_by_id(w: Worker) -> dict[str, dict[str, Any]]:
    status, body = await w.api("GET", "/sessions")
    assert status == 200, body
    return {s["sessionId"]: s for s in body["data"]["sessions"]}


async def create_and_link(w: Worker, n: int, prefix: str = "s", concurrency: int = 16) -> float:
    """Create ``n`` sessions at once, scan each QR as its phone, until all are connected; seconds."""
    sem = asyncio.Semaphore(concurrency)  # at most this many API calls in flight, like a backend would

    async def one(i: int) -> None:
        sid = f"{prefix}{i}"
        async with sem:
            status, body = await w.api("POST", "/session/create", json={"sessionId": sid})
        assert status == 200, body

        async def qr() -> str | None:
            async with sem:
                _, b = await w.api("GET", f"/session/{sid}/qr")
            return b["data"]["qr"] if b.get("success") else None

        for _ in range(5):
            code = await poll(qr, 60, 0.05, f"QR of {sid}")
            async with sem:
                status, body = await w.hub("POST", f"/phones/{phone_of(i)}/scan", json={"qr": code})
            if body.get("code") != "QR_EXPIRED":  # rotated meanwhile (a busy machine): scan the new one
                break
        assert status == 200, body

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))

    async def all_connected() -> bool:
        sessions = await sessions_by_id(w)
        return (
            sum(1 for s in sessions.values() if s["sessionId"].startswith(prefix) and s["status"] == "connected") >= n
        )

    await poll(all_connected, 120, 0.1, f"{n} sessions connected")
    return time.perf_counter() - t0


class CpuWindow:
    """CPU seconds of the supervisor, its session processes and the hub over a window, as % of one core."""

    def __init__(self, w: Worker) -> None:
        assert w.proc is not None
        self.sup = psutil.Process(w.proc.pid)
        self.me = psutil.Process()
        self.children = [p for p in self.sup.children(recursive=True)]

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except psutil.NoSuchProcess:
            return 0.0

    def _snapshot(self) -> dict[str, float]:
        out = {"supervisor": self._cpu(self.sup), "sessions": 0.0, "hub": 0.0, "zygote": 0.0}
        out["bench_client"] = self._cpu(self.me)  # this process: the load generator shares the 2 cores
        for p in self.children:
            try:
                name = " ".join(p.cmdline())
            except psutil.NoSuchProcess:
                continue
            key = "hub" if ("sim_hub" in name or "wa-sim-hub" in name or "session_proc.sim" in name) else "sessions"
            key = "zygote" if "zygote" in name else key
            out[key] += self._cpu(p)
        return out

    def __enter__(self) -> CpuWindow:
        self.t0 = time.perf_counter()
        self.before = self._snapshot()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.elapsed = time.perf_counter() - self.t0
        after = self._snapshot()
        self.percent = {k: 100 * (after[k] - self.before[k]) / self.elapsed for k in after}
        self.session_count = sum(
            1 for p in self.children if "session_proc" in " ".join(_safe_cmdline(p)) or _safe_name(p) == "wa-session"
        )


def _safe_cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.NoSuchProcess:
        return []


def _safe_name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return ""


_load_clients: dict[str, LoadClient] = {}


def load_client(w: Worker) -> LoadClient:
    """The worker's load-generating client (a lean one: it shares the worker's cores)."""
    client = _load_clients.get(w.url)
    if client is None:
        client = _load_clients[w.url] = LoadClient("127.0.0.1", w.port, {"X-Worker-Token": TOKEN})
    return client


async def send_one(w: Worker, i: int, latencies: list[float], errors: list[int]) -> None:
    body = {"to": phone_of(9000 + i), "text": "bench message"}
    t0 = time.perf_counter()
    status, _ = await load_client(w).post_json(f"/session/s{i}/send", body)
    latencies.append(time.perf_counter() - t0)
    if status != 200:
        errors.append(status)


async def seed_load(w: Worker, n: int, rate_per_min: float, seconds: float) -> dict[str, Any]:
    """Open loop: ``n`` sessions x ``rate_per_min`` sends, spread evenly, for ``seconds``."""
    total_rate = n * rate_per_min / 60.0
    count = int(total_rate * seconds)
    latencies: list[float] = []
    errors: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    with CpuWindow(w) as cpu:
        start = time.perf_counter()
        for k in range(count):
            delay = start + k / total_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send_one(w, k % n, latencies, errors)))
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    return {
        "rate_msgs_per_s": total_rate,
        "sent": count,
        "errors": len(errors),
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "cpu_supervisor_pct": cpu.percent["supervisor"],
        "cpu_sessions_pct": cpu.percent["sessions"],
        "cpu_sessions_per_session_pct": cpu.percent["sessions"] / max(1, n),
        "cpu_hub_pct": cpu.percent["hub"],
        "cpu_bench_client_pct": cpu.percent["bench_client"],
    }


async def saturation(w: Worker, n: int, concurrency: int, count: int, seconds: float) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients send as fast as answered, at most ``count`` or ``seconds``."""
    latencies: list[float] = []
    errors: list[int] = []
    issued = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            k = issued
            issued += 1
            await send_one(w, k % n, latencies, errors)

    with CpuWindow(w) as cpu:
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    rate = (len(latencies) - len(errors)) / elapsed
    p = cpu.percent
    return {
        "concurrency": concurrency,
        "sent": len(latencies),
        "errors": len(errors),
        "throughput_msgs_per_s": rate,
        # CPU milliseconds per message: the worker's own processes, and what the simulated network and
        # this load generator (which share the machine here, not in production) spend beside them.
        "cpu_ms_per_msg_worker": (p["supervisor"] + p["sessions"] + p.get("zygote", 0.0)) * 10 / rate,
        "cpu_ms_per_msg_sim_and_client": (p["hub"] + p["bench_client"]) * 10 / rate,
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "cpu_supervisor_pct": cpu.percent["supervisor"],
        "cpu_sessions_pct": cpu.percent["sessions"],
        "cpu_hub_pct": cpu.percent["hub"],
        "cpu_bench_client_pct": cpu.percent["bench_client"],
    }


async def delivered_to_phones(w: Worker, n: int) -> int:
    """How many distinct messages the recipients' phones hold (sent through the API above)."""
    total = 0
    for i in range(n):
        status, body = await w.hub("GET", f"/phones/{phone_of(9000 + i)}/messages")
        if status == 200:
            total += len(body["messages"])
    return total


async def incoming_total(w: Worker, n: int) -> int:
    total = 0
    for i in range(n):
        _, body = await w.api("GET", f"/session/s{i}/messages", params={"limit": "1", "direction": "in"})
        total += int(body["data"]["pagination"]["total"])
    return total


async def phone_to_history(w: Worker, n: int, count: int, concurrency: int) -> dict[str, Any]:
    """Phones send ``count`` messages to the linked numbers; seconds until all are in history."""
    before = await incoming_total(w, n)
    issued = 0
    errors = 0

    async def phone() -> None:
        nonlocal issued, errors
        while issued < count:
            k = issued
            issued += 1
            i = k % n
            status, _ = await w.hub(
                "POST", f"/phones/{phone_of(8000 + i)}/messages", json={"to": phone_of(i), "text": "hi"}
            )
            errors += status != 200

    with CpuWindow(w) as cpu:
        t0 = time.perf_counter()
        await asyncio.gather(*(phone() for _ in range(concurrency)))
        target = before + count - errors

        async def arrived() -> bool:
            return await incoming_total(w, n) >= target

        await poll(arrived, 60, 0.1, "incoming messages in history")
        elapsed = time.perf_counter() - t0
    return {
        "sent": count,
        "errors": errors,
        "throughput_msgs_per_s": (count - errors) / elapsed,
        "cpu_supervisor_pct": cpu.percent["supervisor"],
        "cpu_sessions_pct": cpu.percent["sessions"],
        "cpu_hub_pct": cpu.percent["hub"],
        "cpu_bench_client_pct": cpu.percent["bench_client"],
    }


async def recovery(w: Worker, kills: int, n: int) -> list[float]:
    """SIGKILL a session process, seconds until the API shows it connected again under a new pid."""
    times = []
    for k in range(kills):
        sid = f"s{k % n}"

        async def running(sid: str = sid) -> dict[str, Any] | None:
            s = (await sessions_by_id(w)).get(sid)
            return s if s and s["processState"] == "RUNNING" and s["status"] == "connected" else None

        before = await poll(running, 60, 0.1, f"{sid} running")
        t0 = time.perf_counter()
        os.kill(before["pid"], signal.SIGKILL)

        async def back(sid: str = sid, old: int = before["pid"]) -> bool:
            s = (await sessions_by_id(w)).get(sid)
            return bool(s and s["status"] == "connected" and s["pid"] not in (None, old))

        await poll(back, 60, 0.02, f"{sid} back")
        times.append(time.perf_counter() - t0)
    return times


def process_memory(w: Worker) -> dict[str, Any]:
    """USS (own pages) and PSS (own + a share of what siblings share) of the worker's processes."""
    assert w.proc is not None
    sup = psutil.Process(w.proc.pid)
    uss: list[float] = []
    pss: list[float] = []
    zygote_uss = 0.0
    for p in sup.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            name = " ".join(p.cmdline())
            if "zygote" in name:
                zygote_uss += float(p.memory_full_info().uss)
            elif "--session-id" in name or name.startswith("wa-session"):
                info = p.memory_full_info()
                uss.append(float(info.uss))
                pss.append(float(getattr(info, "pss", float("nan"))))
    return {
        "supervisor_rss_mib": sup.memory_info().rss / MiB,
        "supervisor_uss_mib": sup.memory_full_info().uss / MiB,
        "session_uss_median_mib": median(uss) / MiB,
        "session_pss_median_mib": median(pss) / MiB,
        "session_uss_max_mib": max(uss, default=float("nan")) / MiB,
        "session_processes": len(uss),
        "sessions_uss_total_mib": sum(uss) / MiB,
        "zygote_uss_mib": zygote_uss / MiB,
    }


async def worker_figures(args: argparse.Namespace, spawner: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    link: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        for n in args.link_sizes:
            if n == args.sessions:
                continue  # measured below on the worker that keeps them
            for r in range(args.repeat):
                async with running_worker(Path(tmp) / f"link{n}-{r}", **worker_env(spawner)) as w:
                    link.setdefault(str(n), []).append(await create_and_link(w, n))
        async with running_worker(Path(tmp) / "main", **worker_env(spawner)) as w:
            link.setdefault(str(args.sessions), []).append(await create_and_link(w, args.sessions))
            out["link_s"] = {n: median(v) for n, v in link.items()}
            out["link_runs_s"] = link
            await asyncio.sleep(3)  # past start-up work: figures of a settled worker
            out["memory"] = process_memory(w)
            with CpuWindow(w) as cpu:
                await asyncio.sleep(args.idle_seconds)
            out["idle_cpu"] = {
                "supervisor_pct": cpu.percent["supervisor"],
                "sessions_total_pct": cpu.percent["sessions"],
                "hub_pct": cpu.percent["hub"],
            }
            seed = [await seed_load(w, args.sessions, 100, args.load_seconds) for _ in range(args.repeat)]
            out["seed_load"] = {k: median([s[k] for s in seed]) for k in seed[0]}
            sat = [
                await saturation(w, args.sessions, args.concurrency, args.sat_count, args.sat_seconds)
                for _ in range(args.repeat)
            ]
            out["saturation"] = {k: median([s[k] for s in sat]) for k in sat[0]}
            # One busy session (a bulk send): its messages go out one after another, in order.
            one = [await saturation(w, 1, 16, args.sat_count // 2, args.sat_seconds / 2) for _ in range(args.repeat)]
            out["one_session"] = {k: median([s[k] for s in one]) for k in one[0]}
            sent_total = sum(s["sent"] - s["errors"] for s in seed + sat + one)
            out["delivered_to_phones"] = {
                "accepted_200": sent_total,
                "on_phones": await delivered_to_phones(w, args.sessions),
            }
            inc = [await phone_to_history(w, args.sessions, args.in_count, 16) for _ in range(args.repeat)]
            out["phone_to_history"] = {k: median([s[k] for s in inc]) for k in inc[0]}
            times = await recovery(w, args.kills, args.sessions)
            out["recovery"] = {"median_s": median(times), "max_s": max(times), "kills": len(times)}
            out["memory_after_load"] = process_memory(w)
            await load_client(w).close()
    return out


def run_script(name: str, *extra: str, timeout: float = 600) -> dict[str, Any] | list[Any] | str:
    """Run another bench script of this directory; its JSON result, or why there is none."""
    script = ROOT / "bench" / f"{name}.py"
    if not script.exists():
        return f"not measured: bench/{name}.py does not exist"
    try:
        subprocess.run([sys.executable, str(script), *extra], cwd=ROOT, check=True, timeout=timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"not measured: bench/{name}.py failed: {exc}"
    return json.loads((RESULTS / f"{name}.json").read_text())  # type: ignore[no-any-return]


SEND_BODY = json.dumps(
    {
        "to": "+62 812-3456-789",
        "text": "bench message",
        "quotedMessageId": "3EB0C767D0D1A6B4A5F1",
        "mentions": ["628111000"],
    }
).encode()
SEND_ANSWER = {
    "success": True,
    "data": {"messageId": "3EB0C767D0D1A6B4A5F1", "status": "sent", "timestamp": "2025-12-01T04:00:00.123Z"},
}


def contract_costs(calls: int = 20_000) -> dict[str, float]:
    """Microseconds per call: reading a send body through its declaration, and encoding an answer, each
    next to plain json.loads / json.dumps of the same bytes in this run (median of 5 rounds)."""
    from pydantic import TypeAdapter

    from supervisor.api.answers import SendResult
    from supervisor.api.send_request import parse_json_message

    answer_model = TypeAdapter(SendResult)

    def us(fn: Callable[[], object]) -> float:
        return 1e6 * median([timeit.timeit(fn, number=calls) / calls for _ in range(5)])

    return {
        "json_loads_us": us(lambda: json.loads(SEND_BODY)),
        "send_body_validate_us": us(lambda: parse_json_message(json.loads(SEND_BODY))),
        "json_dumps_us": us(lambda: json.dumps(SEND_ANSWER["data"])),
        "answer_model_dump_us": us(lambda: answer_model.dump_json(answer_model.validate_python(SEND_ANSWER["data"]))),
    }


# The seed's load: 50 sessions x 100 messages a minute.
SEED_SENDS_PER_S = 50 * 100 / 60


async def pacing_costs(calls: int = 5_000) -> dict[str, float]:
    """Microseconds per send of the pacing path as the outbox runs it (``Pacer.place`` when a message is
    accepted, ``Pacer.typing``, ``Pacer.keeps_pace`` when it is due), on a real store: pacing off (the
    bench's throughput figures), and the default pace on (a warm chat: one indexed query of its history,
    the policy, no wait); next to a bare await of a no-op coroutine in this run (median of 5 rounds)."""
    from supervisor.database.store import MessageRow, OutboxRow, Store
    from supervisor.messaging.pacer import Pacer
    from supervisor.messaging.pacing import OFF, PacingPolicy

    chat = "6281000000@s.whatsapp.net"
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "worker.db")
        try:
            sent = MessageRow("s", "m0", "out", chat, None, chat, "text", now, "pending", text="hi")
            await store.accept_outgoing(sent, OutboxRow("s", "m0", {"to": chat, "text": "hi"}, 0, now, now + 60, now))
            await store.finish_outgoing("s", "m0", "sent", timestamp=now)

            async def per_send(step: Callable[[], Awaitable[object]]) -> float:
                rounds = []
                for _ in range(5):
                    started = time.perf_counter()
                    for _ in range(calls):
                        await step()
                    rounds.append((time.perf_counter() - started) / calls)
                return 1e6 * median(rounds)

            # The message once due, as the outbox holds it: paced (on its lane) or not.
            due = {
                None: OutboxRow("s", "m1", {"to": chat}, 0, now, now + 60, now),
                "outreach": OutboxRow("s", "m1", {"to": chat}, 0, now, now + 60, now, now, "outreach", None, False),
            }

            def pacing(policy: PacingPolicy) -> Callable[[], Awaitable[object]]:
                pacer = Pacer(store, lambda _sid: policy, lambda _sid: None)

                async def step() -> None:
                    slot = await pacer.place("s", chat, "text", ())
                    pacer.typing("s", "text", "hello")
                    assert pacer.keeps_pace(due[slot.lane if slot is not None else None], time.time())

                return step

            async def noop() -> None:
                return None

            return {
                "bare_await_us": await per_send(noop),
                "pacing_off_us": await per_send(pacing(OFF)),
                "pacing_on_us": await per_send(pacing(PacingPolicy())),
            }
        finally:
            await store.close()


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, vs baseline) rows."""
    b = results["baselines"]
    rows: list[tuple[str, str, str]] = []

    def add(name: str, value: str, ratio: str = "") -> None:
        rows.append((name, value, ratio))

    add("bare python -c pass", f"{b['python_spawn_s'] * 1000:.1f} ms")
    add("bare python idle USS", f"{b['python_uss_mib']:.1f} MiB")
    add("bare pyzmq DEALER/ROUTER rtt", f"{b['zmq_rtt_s'] * 1e6:.0f} us", f"frame {b['frame_bytes']} B")
    add(
        "transport request rtt",
        f"{results['channel_rtt_s'] * 1e6:.0f} us",
        f"{results['channel_rtt_s'] / b['zmq_rtt_s']:.2f}x bare zmq",
    )
    d = results.get("durability")
    if isinstance(d, dict):
        normal, full = d["commits"]["normal"], d["commits"]["full"]
        add(
            "SQLite lone commit, synchronous=FULL",
            f"{full['lone_commit_ms']:.2f} ms",
            f"{full['lone_commit_ms'] / normal['lone_commit_ms']:.1f}x NORMAL ({normal['lone_commit_ms']:.2f} ms)",
        )
        add(
            "SQLite grouped writes, synchronous=FULL",
            f"{full['burst_writes_per_s']:.0f}/s",
            f"{full['burst_writes_per_s'] / normal['burst_writes_per_s']:.2f}x NORMAL",
        )
        r = d["backup_round"]
        add(
            f"backup round, {r['sessions']:.0f} changed sessions of {r['db_kib']:.0f} KiB",
            f"{r['round_cpu_s'] * 1000:.0f} ms CPU ({r['cpu_ms_per_session']:.1f} ms each), {r['round_wall_s']:.2f} s",
            f"{r['core_share_pct']:.1f}% of a core at BACKUP_INTERVAL={r['interval_s']:.0f}s",
        )
    c = results.get("contract")
    if isinstance(c, dict):
        add("send body: json.loads", f"{c['json_loads_us']:.1f} us")
        add(
            "send body: json.loads + validate (declaration)",
            f"{c['send_body_validate_us']:.1f} us",
            f"{c['send_body_validate_us'] / c['json_loads_us']:.1f}x json.loads",
        )
        add("send answer: json.dumps (as routes encode)", f"{c['json_dumps_us']:.1f} us")
        add(
            "send answer: checked + encoded by its model",
            f"{c['answer_model_dump_us']:.1f} us",
            f"{c['answer_model_dump_us'] / c['json_dumps_us']:.1f}x json.dumps (not done per request)",
        )
    pc = results.get("pacing")
    if isinstance(pc, dict):
        bare = pc["bare_await_us"]

        def share(us: float) -> str:
            return f"{us * SEED_SENDS_PER_S / 1e4:.4f}% of a core at the seed's {SEED_SENDS_PER_S:.0f} sends/s"

        add("pacing per send: bare await (baseline)", f"{bare:.2f} us")
        add(
            "pacing per send: off (place, typing, keeps_pace)",
            f"{pc['pacing_off_us']:.2f} us",
            f"{pc['pacing_off_us'] / bare:.1f}x bare await; {share(pc['pacing_off_us'])}",
        )
        add(
            "pacing per send: default pace on, warm chat (one query)",
            f"{pc['pacing_on_us']:.1f} us",
            f"{pc['pacing_on_us'] / bare:.0f}x bare await; {share(pc['pacing_on_us'])}",
        )
    for spawner, s in results["spawn"].items():
        add(
            f"session spawn->ready ({spawner})",
            f"{s['spawn_s'] * 1000:.0f} ms",
            f"{s['spawn_s'] / b['python_spawn_s']:.2f}x python -c pass",
        )
        add(
            f"idle sim session USS ({spawner})",
            f"{s['idle_uss_mib']:.1f} MiB",
            f"{s['idle_uss_mib'] / b['python_uss_mib']:.2f}x bare python",
        )
    neo_spawn = results.get("spawn_neonize")
    if isinstance(neo_spawn, dict):
        for spawner, s in neo_spawn.items():
            add(
                f"session spawn->ready neonize ({spawner})",
                f"{s['spawn_s'] * 1000:.0f} ms",
                f"{s['spawn_s'] / b['python_spawn_s']:.2f}x python -c pass",
            )
            add(
                f"idle neonize session USS ({spawner})",
                f"{s['idle_uss_mib']:.1f} MiB",
                f"{s['idle_uss_mib'] / b['python_uss_mib']:.2f}x bare python",
            )
    else:
        add("neonize session (spawn, USS)", str(neo_spawn))
    neo_mem = results.get("neonize_memory")
    if isinstance(neo_mem, dict):
        for r in neo_mem["results"]:
            add(
                f"idle neonize session USS beside another / alone ({r['spawner']})",
                f"{r['uss_beside_another_mib']:.1f} / {r['uss_alone_mib']:.1f} MiB",
                f"{r['uss_beside_another_mib'] / neo_mem['bare_python_uss_mib']:.2f}x bare python",
            )
    for spawner, wf in results["worker"].items():
        tag = f"[{spawner}] "
        for n, v in sorted(wf["link_s"].items(), key=lambda item: int(item[0])):
            add(f"{tag}create+link {n} sessions", f"{v:.2f} s")
        m = wf["memory"]
        add(
            f"{tag}session process USS (median of {m['session_processes']})",
            f"{m['session_uss_median_mib']:.1f} MiB",
            f"{m['session_uss_median_mib'] / b['python_uss_mib']:.2f}x bare python",
        )
        add(f"{tag}session process PSS (median)", f"{m['session_pss_median_mib']:.1f} MiB")
        add(
            f"{tag}sessions USS total (+ zygote)", f"{m['sessions_uss_total_mib']:.0f} (+{m['zygote_uss_mib']:.0f}) MiB"
        )
        add(f"{tag}supervisor RSS / USS", f"{m['supervisor_rss_mib']:.1f} / {m['supervisor_uss_mib']:.1f} MiB")
        add(f"{tag}supervisor RSS after load", f"{wf['memory_after_load']['supervisor_rss_mib']:.1f} MiB")
        add(
            f"{tag}idle CPU supervisor / sessions",
            f"{wf['idle_cpu']['supervisor_pct']:.2f} / {wf['idle_cpu']['sessions_total_pct']:.2f} %",
        )
        s = wf["seed_load"]
        add(
            f"{tag}seed load {s['rate_msgs_per_s']:.0f} msg/s: send p50/p99",
            f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms",
            f"p50 {s['p50_ms'] / 1000 / b['zmq_rtt_s']:.0f}x bare zmq rtt",
        )
        add(
            f"{tag}seed load CPU sup / per session / hub",
            f"{s['cpu_supervisor_pct']:.1f} / {s['cpu_sessions_per_session_pct']:.2f} / {s['cpu_hub_pct']:.1f} %",
            f"errors {s['errors']:.0f}",
        )
        s = wf["saturation"]
        add(
            f"{tag}saturation throughput (c={s['concurrency']:.0f})",
            f"{s['throughput_msgs_per_s']:.0f} msg/s",
            f"errors {s['errors']:.0f}",
        )
        add(f"{tag}saturation send p50/p99", f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms")
        if "cpu_ms_per_msg_worker" in s:
            worker_ms = s["cpu_ms_per_msg_worker"]
            add(
                f"{tag}saturation CPU per message: worker / sim hub + client",
                f"{worker_ms:.2f} / {s['cpu_ms_per_msg_sim_and_client']:.2f} ms",
                f"worker alone on {results['cpus']} cores: ~{results['cpus'] * 1000 / worker_ms:.0f} msg/s",
            )
        add(
            f"{tag}saturation CPU sup / sessions / hub",
            f"{s['cpu_supervisor_pct']:.0f} / {s['cpu_sessions_pct']:.0f} / {s['cpu_hub_pct']:.0f} %",
            f"bench client {s['cpu_bench_client_pct']:.0f} %",
        )
        if "one_session" in wf:
            s = wf["one_session"]
            add(
                f"{tag}one session, c={s['concurrency']:.0f}: throughput, p50/p99",
                f"{s['throughput_msgs_per_s']:.0f} msg/s, {s['p50_ms']:.0f} / {s['p99_ms']:.0f} ms",
                f"errors {s['errors']:.0f}",
            )
        d = wf["delivered_to_phones"]
        add(f"{tag}accepted (200) / on phones", f"{d['accepted_200']} / {d['on_phones']}")
        s = wf["phone_to_history"]
        add(f"{tag}phone -> history throughput", f"{s['throughput_msgs_per_s']:.0f} msg/s", f"errors {s['errors']:.0f}")
        r = wf["recovery"]
        add(
            f"{tag}recovery after SIGKILL (median/max)",
            f"{r['median_s']:.2f} / {r['max_s']:.2f} s",
            f"{r['median_s'] / b['python_spawn_s']:.1f}x python -c pass",
        )
    fo = results.get("failover")
    if isinstance(fo, dict) and "createToConnected" in fo:
        c, k = fo["createToConnected"], fo["killToConnected"]
        add(
            f"failover baseline create->connected, lease free (median/max of {fo['runs']})",
            f"{c['median']:.2f} / {c['max']:.2f} s",
        )
        add(
            "failover SIGKILL A -> connected on B (median)",
            f"{k['median']:.2f} s",
            f"LEASE_TTL {fo['leaseTtl']:.0f} s, WORKER_ALIVE_TTL {fo.get('workerAliveTtl', '-')} s",
        )
    else:
        add("failover", str(fo))
    sc = results.get("scale")
    if isinstance(sc, dict) and "create_and_link_s" in sc:
        n = sc["sessions"]
        add(f"{n} sessions: create + link, concurrently", f"{sc['create_and_link_s']:.1f} s")
        ic = sc["idle_cpu"]
        add(
            f"{n} sessions: idle CPU supervisor + sessions",
            f"{ic['supervisor_pct']:.1f} + {ic['sessions_total_pct']:.1f} = {ic['worker_total_pct']:.1f} %",
            f"hub {ic['hub_pct']:.1f} %",
        )
        api = sc["api"]
        add(
            f"{n} sessions: GET /sessions, /health p99",
            f"{api['sessions']['p99_ms']:.1f}, {api['health']['p99_ms']:.1f} ms",
            f"p50 {api['sessions']['p50_ms']:.1f}, {api['health']['p50_ms']:.1f} ms",
        )
        add(f"{n} sessions: supervisor RSS", f"{sc['supervisor_rss_mib']:.0f} MiB")
        sl, sp = sc["seed_load"], sc["seed_load_paced"]
        add(
            f"{n} sessions: seed load {sl['rate_msgs_per_s']:.0f} msg/s send p50/p99",
            f"{sl['p50_ms']:.1f} / {sl['p99_ms']:.1f} ms",
            f"default pace on: {sp['p50_ms']:.1f} / {sp['p99_ms']:.1f} ms",
        )
        st = sc["restart_storm"]
        add(
            f"{n} sessions: restart storm, all SIGKILLed -> all connected",
            f"{st['all_connected_s']:.1f} s",
            f"failed {st['failed_sessions']}, /health p99 {st['health_p99_ms']:.0f} ms, errors {st['health_failures']}",
        )
    elif sc is not None:
        add("scale", str(sc))
    return rows


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "args": vars(args),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results["baselines"] = {
        "python_spawn_s": bare_spawn_s(args.baseline_runs),
        "python_uss_mib": await bare_python_uss() / MiB,
        "zmq_rtt_s": await bare_zmq_rtt(args.rtt_rounds),
        "frame_bytes": len(_send_like_frame()),
    }
    results["channel_rtt_s"] = median([await channel_rtt(args.rtt_rounds) for _ in range(args.repeat)])
    results["contract"] = contract_costs()
    results["pacing"] = await pacing_costs()
    results["durability"] = {
        "commits": await durability.commit_costs(),
        "backup_round": await durability.backup_round(args.sessions),
    }
    spawners = ["exec", "zygote"]
    variants = [*spawners, "zygote-nofreeze"]
    results["spawn"] = {s: await session_spawn(s, args.spawn_runs) for s in variants}
    if importlib.util.find_spec("neonize") is not None:
        results["spawn_neonize"] = {s: await session_spawn(s, 3, "neonize") for s in variants}
    else:
        results["spawn_neonize"] = "not measured: neonize is not installed in .venv"
    results["worker"] = {}
    for spawner in args.worker_spawners:
        if spawner in spawners:
            results["worker"][spawner] = await worker_figures(args, spawner)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small and short: for checking the harness itself")
    p.add_argument("--repeat", type=int, default=3, help="runs per repeated figure (median reported)")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--link-sizes", type=int, nargs="*", default=[10, 50, 100])
    p.add_argument("--load-seconds", type=float, default=20)
    p.add_argument("--idle-seconds", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--sat-count", type=int, default=5000)
    p.add_argument("--sat-seconds", type=float, default=15)
    p.add_argument("--in-count", type=int, default=1000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--rtt-rounds", type=int, default=2000)
    p.add_argument("--spawn-runs", type=int, default=7)
    p.add_argument("--baseline-runs", type=int, default=15)
    p.add_argument("--worker-spawners", nargs="*", default=["exec", "zygote"])
    p.add_argument("--failover-runs", type=int, default=3)
    p.add_argument("--no-failover", action="store_true")
    p.add_argument("--scale-sessions", type=int, default=500, help="bench/scale.py's sessions (0: not run)")
    p.add_argument("--table", type=Path, help="only print the table of an earlier bench.json")
    args = p.parse_args()
    if args.table is not None:
        print_table(json.loads(args.table.read_text()))
        return
    if args.quick:
        args.repeat, args.sessions, args.link_sizes = 1, 10, [5, 10]
        args.load_seconds, args.idle_seconds, args.sat_count, args.sat_seconds = 5, 3, 500, 5
        args.in_count, args.kills, args.rtt_rounds, args.spawn_runs, args.baseline_runs = 100, 2, 300, 3, 5
        args.concurrency = 16
        args.scale_sessions = min(args.scale_sessions, 20)
    results = asyncio.run(amain(args))
    # Alone, a neonize process is charged its Go library's read-only pages; beside another (any real
    # worker) those are shared. bench/neonize_memory.py measures both, with a per-mapping breakdown.
    results["neonize_memory"] = (
        run_script("neonize_memory", "--samples", "5", "--variants", "exec", "zygote")
        if importlib.util.find_spec("neonize") is not None
        else "not measured: neonize is not installed in .venv"
    )
    results["failover"] = (
        "not measured: --no-failover" if args.no_failover else run_script("failover", "--runs", str(args.failover_runs))
    )
    results["scale"] = (
        "not measured: --scale-sessions 0"
        if not args.scale_sessions
        else run_script("scale", "--sessions", str(args.scale_sessions), timeout=1500)
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\n(written to {RESULTS / 'bench.json'}; {os.cpu_count()} CPUs)")


def print_table(results: dict[str, Any]) -> None:
    rows = table(results)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\n{'figure':<{w0}}  {'value':>{w1}}  vs baseline")
    for name, value, ratio in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {ratio}")


if __name__ == "__main__":
    main()

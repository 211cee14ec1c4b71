"""The dashboard with many sessions: how fast the page shows them and stays responsive, and what the
supervisor's sample rings cost.

Starts the worker as a user would (sim engine), creates ``--sessions`` sessions (``--linked`` of them
linked by simulated phones, the rest showing QR codes that rotate), opens /dashboard in Debian's
headless Chromium and times, in the page: sign-in to a full table; one search keystroke; one sort;
a burst of live updates (sessions linking while the table is shown). Also the page's JS heap, the
supervisor's USS, and the rings' own size (tracemalloc over the real structures).
Prints one JSON object and writes bench/results/dashboard.json.

    .venv/bin/python bench/dashboard.py [--sessions 500] [--linked 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cdp_browser import Page, chromium_page
from harness import TOKEN, Worker, running_worker, wait_for

from supervisor.supervision.sample_history import SampleHistory
from supervisor.supervision.sampler import ProcStats

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"


def ring_memory(sessions: int, interval: float) -> dict[str, float]:
    """Bytes the rings of ``sessions`` full sessions hold, measured with tracemalloc."""
    stats = ProcStats(pid=1, cpu_percent=1.5, rss=30 << 20, uss=7 << 20, threads=3, open_files=12)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = SampleHistory(interval)
    for t in range(history.capacity):
        for i in range(sessions):
            history.add(f"session-{i:04d}", 1_800_000_000.0 + t * interval, stats)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"points": history.capacity, "bytes": after - before, "arrays": history.nbytes()}


async def _create(w: Worker, count: int, linked: int) -> None:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            status, body = await w.api(
                "POST", "/session/create", json={"sessionId": f"s{i:04d}", "sessionName": f"shop {i}"}
            )
            assert status == 200, body

    await asyncio.gather(*(one(i) for i in range(count)))


async def _link(w: Worker, first: int, count: int) -> None:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with gate:
            sid = f"s{i:04d}"

            async def qr() -> str | None:
                _, b = await w.api("GET", f"/session/{sid}/qr")
                return b["data"]["qr"] if b.get("success") else None

            code = await wait_for(qr, timeout=60, what=f"QR of {sid}")
            status, body = await w.hub("POST", f"/phones/62811{i:06d}/scan", json={"qr": code})
            assert status == 200, body

    await asyncio.gather(*(one(i) for i in range(first, first + count)))


async def _timed(page: Page, action: str, done: str) -> float:
    """Milliseconds from ``action`` (run in the page) until ``done`` holds after a painted frame."""
    script = f"""new Promise((resolve) => {{
      const t0 = performance.now();
      {action};
      const painted = () => requestAnimationFrame(() => resolve(performance.now() - t0));
      const check = () => ({done}) ? painted() : setTimeout(check, 5);
      check();
    }})"""
    return float(await page.eval(script))


async def measure(sessions: int, linked: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        env = {
            "MAX_SESSIONS": str(sessions + 10),
            "SAMPLE_INTERVAL": "5",
            "SESSION_HEARTBEAT_INTERVAL": "2",
            "SIM_QR_TTL": "60",
            "START_STAGGER": "0",
        }
        async with running_worker(Path(tmp) / "w", **env) as w:
            t0 = time.perf_counter()
            await _create(w, sessions, linked)
            await _link(w, 0, linked)
            setup = time.perf_counter() - t0
            await w.wait_session(f"s{linked - 1:04d}", lambda s: s["status"] == "connected", timeout=120)
            await asyncio.sleep(6)  # one sample round with every process
            async with chromium_page(Path(tmp) / "profile", width=1280, height=900) as page:
                await page.send("Performance.enable")
                await page.goto(f"{w.url}/dashboard")
                await page.eval(f"document.getElementById('token').value = {TOKEN!r}")
                sign_in = await _timed(
                    page,
                    "document.querySelector('#signin-form button[type=submit]').click()",
                    f"document.querySelectorAll('#sessions-body tr').length === {sessions}",
                )
                searches = [
                    await _timed(
                        page,
                        f"const s = document.getElementById('search'); s.value = 's0{k}'; "
                        "s.dispatchEvent(new Event('input'))",
                        f"document.querySelectorAll('#sessions-body tr').length === {min(100, sessions - k * 100)}",
                    )
                    for k in range(min(5, sessions // 100))
                ]
                await _timed(
                    page,
                    "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'))",
                    f"document.querySelectorAll('#sessions-body tr').length === {sessions}",
                )
                # Sorting by session id, descending then ascending: the first row changes each time.
                sorts = [
                    await _timed(
                        page,
                        "document.querySelector('button[data-sort=sessionId]').click()",
                        f"document.querySelector('#sessions-body tr').dataset.session === {first!r}",
                    )
                    for first in [f"s{sessions - 1:04d}", "s0000"] * 3
                ]
                # Live: more sessions link while the table is shown; how long until the last row says so.
                burst = min(50, sessions - linked)
                t_burst = time.perf_counter()
                await _link(w, linked, burst)
                last = f"s{linked + burst - 1:04d}"
                await page.wait(
                    f"document.querySelector('tr[data-session=\"{last}\"]').dataset.status === 'connected'",
                    timeout=60,
                )
                burst_s = time.perf_counter() - t_burst
                metrics = {m["name"]: m["value"] for m in (await page.send("Performance.getMetrics"))["metrics"]}
                long_frame = await page.eval(
                    "new Promise((resolve) => { let worst = 0, last = performance.now(), n = 0;"
                    " const step = (t) => { worst = Math.max(worst, t - last); last = t;"
                    " if (++n < 120) requestAnimationFrame(step); else resolve(worst); };"
                    " requestAnimationFrame(step); })"
                )
                await page.screenshot(Path(tmp) / "table.png")
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                (RESULTS.parent / "dashboard-500.png").write_bytes((Path(tmp) / "table.png").read_bytes())
            assert w.proc is not None
            supervisor_uss = psutil.Process(w.proc.pid).memory_full_info().uss
    return {
        "sessions": sessions,
        "linked": linked,
        "setup_s": round(setup, 1),
        "sign_in_to_full_table_ms": round(sign_in, 1),
        "search_keystroke_ms_median": round(statistics.median(searches), 1) if searches else None,
        "sort_ms_median": round(statistics.median(sorts), 1),
        "live_burst_sessions": burst,
        "live_burst_to_last_row_s": round(burst_s, 2),
        "longest_frame_while_idle_ms": round(float(long_frame), 1),
        "page_js_heap_used_mib": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
        "page_dom_nodes": int(metrics.get("Nodes", 0)),
        "supervisor_uss_mib": round(supervisor_uss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--linked", type=int, default=100)
    args = parser.parse_args()
    result = asyncio.run(measure(args.sessions, args.linked))
    result["rings"] = {f"{n}_sessions_at_5s": ring_memory(n, 5.0) for n in (50, 500)}
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

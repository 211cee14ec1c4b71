"""What durability costs: SQLite commits with synchronous=FULL against NORMAL, and a round of
change-driven auth-state backups for many sessions.

- Commits: the worker's own store (group commit writer), ``commits`` writes awaited one after
  another (each its own commit, the latency a lone send sees) and ``burst`` writes at once (grouped
  into few commits, the throughput under load), first with the writer connection on NORMAL (the
  baseline, same run, same disk), then on FULL as the worker runs.
- Backups: ``sessions`` session directories, each with a SQLite database of ``db_kib`` KiB like
  whatsmeow's, every one changed since its last backup (the worst case of a BACKUP_INTERVAL round):
  the wall time and the worker's CPU time for ``BackupScheduler.backup_changed`` to snapshot, seal
  (AES-GCM) and store them all, and the share of one core that costs at the default interval.

    .venv/bin/python bench/durability.py [--sessions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.config import load  # noqa: E402
from supervisor.database.sqlite_writer import GroupCommitWriter  # noqa: E402
from supervisor.database.store import Store  # noqa: E402
from supervisor.database.store import _setup as store_setup  # noqa: E402
from supervisor.storage.backups import BackupScheduler, BackupSettings  # noqa: E402
from supervisor.storage.cipher import BackupCipher  # noqa: E402
from supervisor.storage.local import LocalObjectStore  # noqa: E402

KEY = "bench-backup-key-0123456789abcdef-0123"


async def _commit_figures(path: Path, synchronous: str, commits: int, burst: int) -> dict[str, float]:
    def setup(c: sqlite3.Connection) -> None:
        store_setup(c)  # the worker's own pragmas and migrations, then the mode measured
        c.execute(f"PRAGMA synchronous={synchronous}")

    writer = GroupCommitWriter(path)
    await writer.open(setup)
    store = Store(await aiosqlite.connect(path), writer)

    def insert(n: int) -> Callable[[sqlite3.Connection], object]:
        return lambda c: c.execute(
            "INSERT INTO events (session_id, event, data, timestamp) VALUES (?, ?, ?, ?)", ("bench", "e", "{}", n)
        )

    try:
        lone = []
        for n in range(commits):
            started = time.perf_counter()
            await store._write(insert(n))
            lone.append(time.perf_counter() - started)
        before = store.commits[0]
        started = time.perf_counter()
        await asyncio.gather(*(store._write(insert(n)) for n in range(burst)))
        burst_s = time.perf_counter() - started
        return {
            "lone_commit_ms": 1000 * statistics.median(lone),
            "burst_writes_per_s": burst / burst_s,
            "burst_commits": float(store.commits[0] - before),
        }
    finally:
        await store.close()


async def commit_costs(commits: int = 200, burst: int = 2000) -> dict[str, dict[str, float]]:
    """Commit latency and grouped throughput, NORMAL (baseline) then FULL, each on a fresh database."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="wa-bench-sync-") as tmp:
        for mode in ("NORMAL", "FULL"):
            out[mode.lower()] = await _commit_figures(Path(tmp) / f"{mode}.db", mode, commits, burst)
    return out


def _session_db(path: Path, kib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "neonize.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS keys (id INTEGER PRIMARY KEY, blob BLOB)")
    rows = max(1, kib // 4)
    db.executemany("INSERT INTO keys (blob) VALUES (?)", [(os.urandom(4096),) for _ in range(rows)])
    db.commit()
    db.close()


def _touch(path: Path) -> None:
    db = sqlite3.connect(path / "neonize.db")
    db.execute("UPDATE keys SET blob = ? WHERE id = 1", (os.urandom(4096),))
    db.commit()
    db.close()


async def backup_round(sessions: int = 50, db_kib: int = 1024, interval: float | None = None) -> dict[str, float]:
    """One BACKUP_INTERVAL round in which every session's auth state changed."""
    interval = interval or load({}).backup_interval
    with tempfile.TemporaryDirectory(prefix="wa-bench-backup-") as tmp:
        root = Path(tmp)
        objects = LocalObjectStore({"sessions": root / "backups"}, url_base="http://w", url_secret=b"s")
        backups = BackupScheduler(
            objects,
            BackupCipher(KEY),
            bucket="sessions",
            sessions_dir=root / "sessions",
            worker_id="bench",
            settings=BackupSettings(debounce=0.0),
        )
        ids = [f"s{n}" for n in range(sessions)]
        for sid in ids:
            _session_db(root / "sessions" / sid, db_kib)
        rounds = []
        for _ in range(3):
            for sid in ids:
                _touch(root / "sessions" / sid)
            done_before = backups.backups_done
            cpu, wall = time.process_time(), time.perf_counter()
            assert await backups.backup_changed(ids) == sessions
            await asyncio.gather(*backups._tasks.values())  # the backups it scheduled
            assert backups.backups_done == done_before + sessions
            rounds.append((time.process_time() - cpu, time.perf_counter() - wall))
        await objects.close()
    cpu_s = statistics.median(r[0] for r in rounds)
    wall_s = statistics.median(r[1] for r in rounds)
    return {
        "sessions": float(sessions),
        "db_kib": float(db_kib),
        "round_wall_s": wall_s,
        "round_cpu_s": cpu_s,
        "cpu_ms_per_session": 1000 * cpu_s / sessions,
        "interval_s": interval,
        "core_share_pct": 100 * cpu_s / interval,
    }


async def amain(sessions: int) -> dict[str, Any]:
    return {"commits": await commit_costs(), "backup_round": await backup_round(sessions)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=50)
    print(json.dumps(asyncio.run(amain(p.parse_args().sessions)), indent=2))


if __name__ == "__main__":
    main()

"""Group commit for SQLite: many small write transactions, one commit.

Every write of the worker is a short transaction (accept a message, settle it,
apply a receipt, queue an event). Committed one by one, each costs a commit and
several hops to a database thread, and they queue behind each other: that bounded
the whole worker at a few hundred messages a second. Here each write is a plain
function of a ``sqlite3.Connection``; the writer runs every write that is waiting
when the thread is free inside one transaction, each in its own savepoint (a
failing write is rolled back alone and its caller gets the exception), commits
once, and only then answers the callers. So a caller still learns of its write
only when it is committed, and a write is still applied whole or not at all.

The writer owns its own connection on its own thread; reads go through another
connection (WAL: readers see every committed write and never wait for the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("supervisor.database.store")

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]

# A bound on one commit's size keeps a burst from holding every caller until it all is written.
MAX_BATCH = 1000


class WriterClosed(Exception):
    """The database writer was closed; nothing more is written."""


class GroupCommitWriter:
    """Runs write functions on one connection, one thread, many per commit, in submission order."""

    def __init__(self, path: Path, *, after_commit: Callable[[], None] | None = None) -> None:
        self.path = path
        self.after_commit = after_commit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0

    async def open(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Connect and run ``setup`` (pragmas, migrations) on the writer's thread."""
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect, setup)
        self._task = asyncio.create_task(self._run(), name="sqlite-writer")

    def _connect(self, setup: Callable[[sqlite3.Connection], None]) -> sqlite3.Connection:
        # isolation_level=None: we say BEGIN and COMMIT ourselves; the module must not open transactions.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        setup(conn)
        return conn

    async def run(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Apply ``write`` in a transaction; returns its result once that transaction is committed."""
        if self._closed or self._task is None:
            raise WriterClosed("the database is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((write, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            outcomes = await loop.run_in_executor(self._executor, self._apply, [w for w, _ in batch])
            self.commits += 1
            self.writes += len(batch)
            for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue  # its caller was cancelled; the write stands (it was committed)
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            if self.after_commit is not None and any(ok for ok, _ in outcomes):
                try:
                    self.after_commit()
                except Exception:
                    log.exception("after-commit hook failed")

    def _apply(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write in writes:
                conn.execute("SAVEPOINT w")
                try:
                    value = write(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE w")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed (disk full, I/O error): nothing of the batch stands
            log.error("database commit failed: %s", exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [(False, exc)] * len(writes)
        return outcomes

    async def close(self) -> None:
        """Write what is queued, then close the connection."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task  # it returns once everything queued before close() is committed
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)

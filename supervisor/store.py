"""SQLite persistence (aiosqlite, WAL): the worker's memory across restarts.

One connection, so every write goes through one path in order; aiosqlite runs
it on its own thread, so the event loop never waits on the disk. Schema changes
are numbered migrations applied at open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

MIGRATIONS: tuple[str, ...] = (
    # 1: sessions, so a restarted worker starts every session it had.
    """
    CREATE TABLE sessions (
        id           TEXT PRIMARY KEY,
        user_id      TEXT,
        session_name TEXT,
        created_at   REAL NOT NULL,
        status       TEXT NOT NULL,
        phone        TEXT,
        last_error   TEXT,
        updated_at   REAL NOT NULL
    );
    """,
)


@dataclass(slots=True)
class SessionRow:
    """A session as stored."""

    id: str
    user_id: str | None
    session_name: str | None
    created_at: float
    status: str
    phone: str | None
    last_error: str | None


class Store:
    """The worker's SQLite database."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only a power loss can lose the last commits.
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the same script so a
            # migration is applied whole or not at all.
            await self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- sessions ------------------------------------------------------------------
    async def add_session(self, row: SessionRow) -> None:
        """Insert a new session (the caller checked it does not exist)."""
        now = time.time()
        await self._db.execute(
            "INSERT INTO sessions (id, user_id, session_name, created_at, status, phone, last_error, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.id, row.user_id, row.session_name, row.created_at, row.status, row.phone, row.last_error, now),
        )
        await self._db.commit()

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Change some of a session's columns (status, phone, last_error)."""
        allowed = {"status", "phone", "last_error", "user_id", "session_name"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not session columns: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._db.execute(
            f"UPDATE sessions SET {assignments}, updated_at = ? WHERE id = ?",
            (*fields.values(), time.time(), session_id),
        )
        await self._db.commit()

    async def delete_session(self, session_id: str) -> None:
        await self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        await self._db.commit()

    async def sessions(self) -> list[SessionRow]:
        """Every stored session, oldest first."""
        async with self._db.execute(
            "SELECT id, user_id, session_name, created_at, status, phone, last_error"
            " FROM sessions ORDER BY created_at, id"
        ) as cur:
            rows = await cur.fetchall()
        return [SessionRow(*tuple(r)) for r in rows]

"""SQLite persistence (aiosqlite, WAL): the worker's memory across restarts.

One connection, so every write goes through one path in order; aiosqlite runs
it on its own thread, so the event loop never waits on the disk. Schema changes
are numbered migrations applied at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
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
    # 2: message history, the outbox, idempotency keys, and the event queue.
    """
    CREATE TABLE messages (
        session_id TEXT NOT NULL,
        id         TEXT NOT NULL,
        direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        chat       TEXT NOT NULL,
        sender     TEXT,
        recipient  TEXT,
        type       TEXT NOT NULL,
        text       TEXT,
        caption    TEXT,
        media_ref  TEXT,
        mimetype   TEXT,
        media_size INTEGER,
        filename   TEXT,
        extra      TEXT,
        timestamp  REAL NOT NULL,
        status     TEXT NOT NULL,
        error      TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (session_id, id)
    );
    CREATE INDEX messages_by_time ON messages (session_id, timestamp DESC);
    CREATE INDEX messages_by_chat ON messages (session_id, chat, timestamp DESC);
    CREATE TABLE outbox (
        session_id      TEXT NOT NULL,
        message_id      TEXT NOT NULL,
        payload         TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        expires_at      REAL NOT NULL,
        created_at      REAL NOT NULL,
        PRIMARY KEY (session_id, message_id)
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at);
    CREATE TABLE idempotency (
        session_id  TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        http_status INTEGER,
        response    TEXT,
        created_at  REAL NOT NULL,
        PRIMARY KEY (session_id, key)
    );
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT,
        event      TEXT NOT NULL,
        data       TEXT NOT NULL,
        timestamp  REAL NOT NULL
    );
    """,
    # 3: where each consumer of the event queue stands, and per-session webhooks.
    """
    CREATE INDEX events_by_session ON events (session_id, seq);
    CREATE INDEX events_by_time ON events (timestamp);
    CREATE TABLE consumers (
        name       TEXT PRIMARY KEY,
        last_seq   INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE webhooks (
        session_id TEXT PRIMARY KEY,
        url        TEXT NOT NULL,
        secret     TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
)

# Outgoing statuses only move forward: a late "delivered" never overwrites "read".
STATUS_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


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


@dataclass(slots=True)
class MessageRow:
    """A message in the history, in or out."""

    session_id: str
    id: str
    direction: str  # "in" | "out"
    chat: str
    sender: str | None
    recipient: str | None
    type: str
    timestamp: float
    status: str  # out: pending/sent/delivered/read/failed/unknown; in: received
    text: str | None = None
    caption: str | None = None
    media_ref: str | None = None
    mimetype: str | None = None
    media_size: int | None = None
    filename: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class OutboxRow:
    """A message accepted for sending and not yet confirmed."""

    session_id: str
    message_id: str
    payload: dict[str, Any]  # the engine's OutgoingMessage, as sent over the wire
    attempts: int
    next_attempt_at: float
    expires_at: float
    created_at: float


@dataclass(slots=True)
class IdempotencyRow:
    """The first answer given to an Idempotency-Key."""

    session_id: str
    key: str
    fingerprint: str
    message_id: str
    http_status: int | None
    response: dict[str, Any] | None
    created_at: float


@dataclass(slots=True)
class EventRow:
    """One entry of the durable event queue."""

    seq: int
    session_id: str | None
    event: str
    data: dict[str, Any]
    timestamp: float


_MESSAGE_COLUMNS = (
    "session_id, id, direction, chat, sender, recipient, type, timestamp, status, text, caption,"
    " media_ref, mimetype, media_size, filename, extra, error"
)


def _message(row: Any) -> MessageRow:
    values = list(row)
    values[15] = json.loads(values[15]) if values[15] else {}
    return MessageRow(*values)


class Store:
    """The worker's SQLite database."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection serves every coroutine: a transaction must not interleave with
        # another's statements, or one's commit would publish the other's half.
        self._lock = asyncio.Lock()
        self._wrote_events = False
        # Called after a commit that queued events (wakes their consumers); set by the owner.
        self.on_events: Callable[[], None] | None = None

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: committed whole, or rolled back whole."""
        async with self._lock:
            try:
                yield self._db
            except BaseException:
                self._wrote_events = False
                await self._db.rollback()
                raise
            await self._db.commit()
            if self._wrote_events:
                self._wrote_events = False
                if self.on_events is not None:
                    self.on_events()

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
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO sessions (id, user_id, session_name, created_at, status, phone, last_error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.user_id, row.session_name, row.created_at, row.status, row.phone, row.last_error, now),
            )

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Change some of a session's columns (status, phone, last_error)."""
        allowed = {"status", "phone", "last_error", "user_id", "session_name"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not session columns: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        async with self._tx() as db:
            await db.execute(
                f"UPDATE sessions SET {assignments}, updated_at = ? WHERE id = ?",
                (*fields.values(), time.time(), session_id),
            )

    async def delete_session(self, session_id: str) -> None:
        """Forget a session with its history, outbox and idempotency keys, and queue ``session.deleted``.

        Its webhook stays until that last event reached it (the webhook's deliverer removes it).
        """
        async with self._tx() as db:
            await db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            await db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            await db.execute("DELETE FROM outbox WHERE session_id = ?", (session_id,))
            await db.execute("DELETE FROM idempotency WHERE session_id = ?", (session_id,))
            await self._add_event(db, session_id, "session.deleted", {})

    async def sessions(self) -> list[SessionRow]:
        """Every stored session, oldest first."""
        async with self._db.execute(
            "SELECT id, user_id, session_name, created_at, status, phone, last_error"
            " FROM sessions ORDER BY created_at, id"
        ) as cur:
            rows = await cur.fetchall()
        return [SessionRow(*tuple(r)) for r in rows]

    # -- events --------------------------------------------------------------------
    async def _add_event(
        self, db: aiosqlite.Connection, session_id: str | None, event: str, data: dict[str, Any]
    ) -> None:
        self._wrote_events = True
        await db.execute(
            "INSERT INTO events (session_id, event, data, timestamp) VALUES (?, ?, ?, ?)",
            (session_id, event, json.dumps(data, default=str), time.time()),
        )

    async def add_event(self, session_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Queue an event for the backend (delivered in order of ``seq``)."""
        async with self._tx() as db:
            await self._add_event(db, session_id, event, data)

    async def events_since(self, seq: int, limit: int = 100, *, session_id: str | None = None) -> list[EventRow]:
        """Queued events after ``seq`` (of one session, or all), oldest first."""
        sql = "SELECT seq, session_id, event, data, timestamp FROM events WHERE seq > ?"
        args: list[Any] = [seq]
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        async with self._db.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)) as cur:
            rows = await cur.fetchall()
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_event_seq(self) -> int:
        async with self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def purge_events(self, before: float) -> int:
        """Drop events older than ``before`` (epoch seconds): the retention of the event log."""
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM events WHERE timestamp < ?", (before,))
        return cur.rowcount

    async def consumer_cursor(self, name: str, *, start: int) -> int:
        """Where consumer ``name`` stands; a new consumer starts at ``start``."""
        async with self._tx() as db:
            await db.execute(
                "INSERT OR IGNORE INTO consumers (name, last_seq, updated_at) VALUES (?, ?, ?)",
                (name, start, time.time()),
            )
            async with db.execute("SELECT last_seq FROM consumers WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else start

    async def advance_consumer(self, name: str, seq: int) -> None:
        """Consumer ``name`` has everything up to ``seq``."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE consumers SET last_seq = MAX(last_seq, ?), updated_at = ? WHERE name = ?",
                (seq, time.time(), name),
            )

    async def drop_consumer(self, name: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM consumers WHERE name = ?", (name,))

    # -- webhooks -----------------------------------------------------------------
    async def set_webhook(self, session_id: str, url: str, secret: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO webhooks (session_id, url, secret, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET url = excluded.url, secret = excluded.secret",
                (session_id, url, secret, time.time()),
            )

    async def delete_webhook(self, session_id: str) -> bool:
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM webhooks WHERE session_id = ?", (session_id,))
        return cur.rowcount > 0

    async def webhooks(self) -> dict[str, tuple[str, str]]:
        """``{sessionId: (url, secret)}``."""
        async with self._db.execute("SELECT session_id, url, secret FROM webhooks") as cur:
            rows = await cur.fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- outgoing messages ---------------------------------------------------------
    async def accept_outgoing(
        self, message: MessageRow, outbox: OutboxRow, idempotency: IdempotencyRow | None = None
    ) -> None:
        """Record a message to send, its outbox entry and its idempotency key, all or nothing."""
        async with self._tx() as db:
            if idempotency is not None:
                await db.execute(
                    "INSERT INTO idempotency (session_id, key, fingerprint, message_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        idempotency.session_id,
                        idempotency.key,
                        idempotency.fingerprint,
                        idempotency.message_id,
                        idempotency.created_at,
                    ),
                )
            await self._insert_message(db, message)
            await db.execute(
                "INSERT INTO outbox (session_id, message_id, payload, attempts, next_attempt_at, expires_at,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    outbox.session_id,
                    outbox.message_id,
                    json.dumps(outbox.payload),
                    outbox.attempts,
                    outbox.next_attempt_at,
                    outbox.expires_at,
                    outbox.created_at,
                ),
            )

    @staticmethod
    async def _insert_message(db: aiosqlite.Connection, m: MessageRow, *, ignore_duplicate: bool = False) -> bool:
        verb = "INSERT OR IGNORE" if ignore_duplicate else "INSERT"
        cur = await db.execute(
            f"{verb} INTO messages ({_MESSAGE_COLUMNS}, updated_at) VALUES ({', '.join('?' * 18)})",
            (
                m.session_id,
                m.id,
                m.direction,
                m.chat,
                m.sender,
                m.recipient,
                m.type,
                m.timestamp,
                m.status,
                m.text,
                m.caption,
                m.media_ref,
                m.mimetype,
                m.media_size,
                m.filename,
                json.dumps(m.extra) if m.extra else None,
                m.error,
                time.time(),
            ),
        )
        return cur.rowcount > 0

    async def outbox(self, session_id: str | None = None) -> list[OutboxRow]:
        """Messages waiting to be sent (of one session, or all), oldest first."""
        sql = (
            "SELECT session_id, message_id, payload, attempts, next_attempt_at, expires_at, created_at FROM outbox"
        )
        args: tuple[Any, ...] = ()
        if session_id is not None:
            sql += " WHERE session_id = ?"
            args = (session_id,)
        async with self._db.execute(sql + " ORDER BY created_at, message_id", args) as cur:
            rows = await cur.fetchall()
        return [OutboxRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def outbox_retry_at(self, session_id: str, message_id: str, attempts: int, at: float) -> None:
        """Count a failed attempt and set when to try again."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ? WHERE session_id = ? AND message_id = ?",
                (attempts, at, session_id, message_id),
            )

    async def finish_outgoing(
        self, session_id: str, message_id: str, status: str, *, timestamp: float | None = None, error: str | None = None
    ) -> bool:
        """Settle an outgoing message (sent, failed, unknown): out of the outbox, into history, one event.

        Returns False when it was already settled (nothing changed).
        """
        async with self._tx() as db:
            cur = await db.execute(
                "DELETE FROM outbox WHERE session_id = ? AND message_id = ?", (session_id, message_id)
            )
            if cur.rowcount == 0:
                return False
            # A receipt may have overtaken the send's own confirmation: "sent" never demotes "delivered"/"read".
            sets = "status = CASE WHEN status IN ('delivered', 'read') AND ? = 'sent' THEN status ELSE ? END,"
            sets += " error = ?, updated_at = ?"
            args: list[Any] = [status, status, error, time.time()]
            if timestamp is not None:
                sets += ", timestamp = ?"
                args.append(timestamp)
            await db.execute(
                f"UPDATE messages SET {sets} WHERE session_id = ? AND id = ?", (*args, session_id, message_id)
            )
            data: dict[str, Any] = {"messageId": message_id, "status": status}
            if error:
                data["error"] = error
            await self._add_event(db, session_id, "message.status", data)
        return True

    async def apply_receipt(self, session_id: str, message_id: str, status: str) -> bool:
        """Move an outgoing message forward to delivered/read; False if that would not be forward."""
        rank = STATUS_RANK.get(status)
        if rank is None:
            return False
        async with self._tx() as db:
            async with db.execute(
                "SELECT status FROM messages WHERE session_id = ? AND id = ? AND direction = 'out'",
                (session_id, message_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None or STATUS_RANK.get(row[0], 99) >= rank:
                return False
            await db.execute(
                "UPDATE messages SET status = ?, updated_at = ? WHERE session_id = ? AND id = ?",
                (status, time.time(), session_id, message_id),
            )
            await self._add_event(db, session_id, "message.status", {"messageId": message_id, "status": status})
        return True

    # -- idempotency ---------------------------------------------------------------
    async def idempotency(self, session_id: str, key: str, *, max_age: float) -> IdempotencyRow | None:
        """The record of an Idempotency-Key used within ``max_age`` seconds."""
        async with self._db.execute(
            "SELECT session_id, key, fingerprint, message_id, http_status, response, created_at FROM idempotency"
            " WHERE session_id = ? AND key = ? AND created_at > ?",
            (session_id, key, time.time() - max_age),
        ) as cur:
            r = await cur.fetchone()
        if r is None:
            return None
        return IdempotencyRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6])

    async def save_idempotent_answer(self, session_id: str, key: str, http_status: int, response: Any) -> None:
        """Remember the first answer to a key (later answers never replace it)."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE idempotency SET http_status = ?, response = ?"
                " WHERE session_id = ? AND key = ? AND response IS NULL",
                (http_status, json.dumps(response), session_id, key),
            )

    async def purge_idempotency(self, older_than: float) -> int:
        """Forget keys created before ``older_than`` (epoch seconds)."""
        async with self._tx() as db:
            cur = await db.execute("DELETE FROM idempotency WHERE created_at < ?", (older_than,))
        return cur.rowcount

    # -- incoming messages and history ---------------------------------------------------
    async def add_incoming(self, message: MessageRow, event: dict[str, Any]) -> bool:
        """Commit a received message and its event; False (and nothing written) for a duplicate id."""
        async with self._tx() as db:
            if not await self._insert_message(db, message, ignore_duplicate=True):
                return False
            await self._add_event(db, message.session_id, "message.received", event)
        return True

    async def message(self, session_id: str, message_id: str) -> MessageRow | None:
        async with self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id = ?", (session_id, message_id)
        ) as cur:
            row = await cur.fetchone()
        return _message(row) if row else None

    async def messages(
        self,
        session_id: str,
        *,
        limit: int,
        offset: int,
        chat: str | None = None,
        direction: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[list[MessageRow], int]:
        """A page of history, newest first, and the total that matches the filters."""
        where: list[str] = ["session_id = ?"]
        args: list[Any] = [session_id]
        if chat is not None:
            where.append("chat = ?")
            args.append(chat)
        if direction is not None:
            where.append("direction = ?")
            args.append(direction)
        if since is not None:
            where.append("timestamp >= ?")
            args.append(since)
        if until is not None:
            where.append("timestamp < ?")
            args.append(until)
        clause = " AND ".join(where)
        async with self._db.execute(f"SELECT COUNT(*) FROM messages WHERE {clause}", args) as cur:
            total_row = await cur.fetchone()
        async with self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {clause} ORDER BY timestamp DESC, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ) as cur:
            rows = await cur.fetchall()
        return [_message(r) for r in rows], int(total_row[0]) if total_row else 0

    async def message_counts(self) -> dict[str, int]:
        """Messages in history per session."""
        async with self._db.execute("SELECT session_id, COUNT(*) FROM messages GROUP BY session_id") as cur:
            rows = await cur.fetchall()
        return {r[0]: int(r[1]) for r in rows}

    async def message_totals(self, since: float) -> list[tuple[str, str, int, int]]:
        """``(direction, status, count, count since `since`)`` over all history (for /metrics)."""
        async with self._db.execute(
            "SELECT direction, status, COUNT(*), COALESCE(SUM(timestamp >= ?), 0) FROM messages"
            " GROUP BY direction, status",
            (since,),
        ) as cur:
            rows = await cur.fetchall()
        return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def ping(self) -> None:
        """Read the schema from the file (not a cache): raises when the database is unusable."""
        async with self._db.execute("SELECT COUNT(*) FROM sqlite_master") as cur:
            await cur.fetchone()

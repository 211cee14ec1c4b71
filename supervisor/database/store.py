"""SQLite persistence (WAL): the worker's memory across restarts.

Writes go through one connection on the group-commit writer's thread
(supervisor/database/sqlite_writer.py), in the order they were made: each write is its
own all-or-nothing unit, and many are committed together. Reads go through
aiosqlite on a second connection. Neither blocks the event loop. Schema changes
are numbered migrations applied at open.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from common.closing import Closing
from supervisor.database import message_changes
from supervisor.database.sqlite_writer import GroupCommitWriter
from supervisor.messaging import polls
from supervisor.messaging.figures import HOUR, MINUTE, MessageTally
from supervisor.messaging.status import BEYOND_SENT, PROGRESS, MessageStatus, moves_forward

log = logging.getLogger("supervisor.database.store")

_T = TypeVar("_T")

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
    # 4: a consumer's scope (a webhook hears one session's events), so the retention sweep keeps
    # every event a consumer has yet to receive.
    """
    ALTER TABLE consumers ADD COLUMN session_id TEXT;
    UPDATE consumers SET session_id = substr(name, 9) WHERE name LIKE 'webhook:%';
    """,
    # 5: the session's proxy (sealed with ENCRYPTION_KEY when set: supervisor/sessions/proxy.py), so a
    # restarted worker dials through it again instead of from its own address.
    """
    ALTER TABLE sessions ADD COLUMN proxy BLOB;
    """,
    # 6: history by time across sessions: the last hour's count at start and the retention sweep
    # read a range of it instead of the whole table.
    """
    CREATE INDEX messages_by_timestamp ON messages (timestamp);
    """,
    # 7: paced sends (supervisor/messaging/pacing.py): a waiting message's slot, its lane, why it waits
    # for it and whether it opens a cold chat, so a restarted worker keeps the pace and the order.
    """
    ALTER TABLE outbox ADD COLUMN scheduled_at REAL;
    ALTER TABLE outbox ADD COLUMN lane TEXT;
    ALTER TABLE outbox ADD COLUMN wait TEXT;
    ALTER TABLE outbox ADD COLUMN cold INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: per-session settings (PUT /session/{id}/settings), calls, and the chat list (GET
    # /session/{id}/chats) kept by triggers, so a page of chats never scans the history
    # (supervisor/database/account_store.py).
    """
    CREATE TABLE session_settings (
        session_id TEXT PRIMARY KEY,
        data       TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE calls (
        session_id  TEXT NOT NULL,
        id          TEXT NOT NULL,
        sender      TEXT NOT NULL,
        video       INTEGER NOT NULL,
        received_at REAL NOT NULL,
        rejected_at REAL,
        PRIMARY KEY (session_id, id)
    );
    CREATE TABLE chats (
        session_id    TEXT NOT NULL,
        chat          TEXT NOT NULL,
        last_activity REAL NOT NULL,
        last_out      REAL NOT NULL DEFAULT 0,
        read_up_to    REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, chat)
    );
    CREATE INDEX chats_by_activity ON chats (session_id, last_activity DESC);
    INSERT INTO chats (session_id, chat, last_activity, last_out)
        SELECT session_id, chat, MAX(timestamp), COALESCE(MAX(CASE WHEN direction = 'out' THEN timestamp END), 0)
        FROM messages GROUP BY session_id, chat;
    CREATE TRIGGER chats_on_insert AFTER INSERT ON messages BEGIN
        INSERT INTO chats (session_id, chat, last_activity, last_out)
        VALUES (new.session_id, new.chat, new.timestamp, CASE WHEN new.direction = 'out' THEN new.timestamp ELSE 0 END)
        ON CONFLICT (session_id, chat) DO UPDATE SET
            last_activity = MAX(last_activity, excluded.last_activity), last_out = MAX(last_out, excluded.last_out);
    END;
    CREATE TRIGGER chats_on_time AFTER UPDATE OF timestamp ON messages BEGIN
        UPDATE chats SET last_activity = MAX(last_activity, new.timestamp),
            last_out = CASE WHEN new.direction = 'out' THEN MAX(last_out, new.timestamp) ELSE last_out END
        WHERE session_id = new.session_id AND chat = new.chat;
    END;
    CREATE TRIGGER chats_on_delete AFTER DELETE ON messages
    WHEN NOT EXISTS (SELECT 1 FROM messages WHERE session_id = old.session_id AND chat = old.chat) BEGIN
        DELETE FROM chats WHERE session_id = old.session_id AND chat = old.chat;
    END;
    CREATE TRIGGER account_on_session_delete AFTER DELETE ON sessions BEGIN
        DELETE FROM session_settings WHERE session_id = old.id;
        DELETE FROM calls WHERE session_id = old.id;
    END;
    """,
    # 9: each voter's latest vote on a poll (the poll itself is a message, its options in extra).
    """
    CREATE TABLE poll_votes (
        session_id TEXT NOT NULL,
        poll_id    TEXT NOT NULL,
        voter      TEXT NOT NULL,
        vote_id    TEXT NOT NULL,
        options    TEXT NOT NULL,
        at         REAL NOT NULL,
        PRIMARY KEY (session_id, poll_id, voter)
    );
    """,
    # 10: the phone number last linked to a session and when (pacing's warm-up counts from then); a
    # session linked before this version counts from its creation, as it did.
    """
    ALTER TABLE sessions ADD COLUMN linked_phone TEXT;
    ALTER TABLE sessions ADD COLUMN linked_at REAL;
    UPDATE sessions SET linked_phone = phone, linked_at = created_at WHERE phone IS NOT NULL;
    """,
    # 11: media still to remove (a revoked or purged message's object and local copy), queued in the
    # revoke's or purge's own transaction and deleted once the media is gone: a failed or cut-off
    # removal is retried (supervisor/messaging/media_removal.py) instead of leaving the file forever.
    """
    CREATE TABLE media_removals (
        session_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        media_ref  TEXT,
        local      INTEGER NOT NULL,
        queued_at  REAL NOT NULL,
        PRIMARY KEY (session_id, message_id)
    );
    """,
)

# A receipt may overtake the send's own confirmation: "sent" never demotes what is beyond it.
_BEYOND_SENT_IN = f"({', '.join('?' for _ in BEYOND_SENT)})"
_KEEP_BEYOND_SENT = f"status = CASE WHEN status IN {_BEYOND_SENT_IN} AND ? = ? THEN status ELSE ? END,"


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
    proxy: bytes | None = None  # as stored: sealed, or the plain form without ENCRYPTION_KEY (sessions.proxy)
    linked_phone: str | None = None  # the number last linked to it (kept after a logout)
    linked_at: float | None = None  # when that number was linked (pacing's warm-up)


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
    status: str  # a MessageStatus: out pending/sent/delivered/read/failed/unknown; in received
    text: str | None = None
    caption: str | None = None
    media_ref: str | None = None
    mimetype: str | None = None
    media_size: int | None = None
    filename: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MediaRemoval:
    """A message's media still to remove (a row of media_removals)."""

    session_id: str
    message_id: str
    media_ref: str | None  # its object in storage, if it has one
    local: bool  # a received message: a copy may be in the session's media folder (its upload failed)
    queued_at: float
    seq: int = 0  # the row's rowid: where a pass over the queue stands


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
    # Its pacing slot (None: not paced), lane, why it waits for it, and whether it opens a cold chat.
    scheduled_at: float | None = None
    lane: str | None = None
    wait: str | None = None
    cold: bool = False


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


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """Where one consumer of the event log stands."""

    name: str
    session_id: str | None  # a webhook's session; None: it hears every event
    last_seq: int
    oldest_pending_at: float | None  # the oldest event it has yet to receive; None: it is up to date


_MESSAGE_COLUMNS = (
    "session_id, id, direction, chat, sender, recipient, type, timestamp, status, text, caption,"
    " media_ref, mimetype, media_size, filename, extra, error"
)


_INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}, updated_at) VALUES ({', '.join('?' * 18)})"
_INSERT_MESSAGE_ONCE = _INSERT_MESSAGE.replace("INSERT", "INSERT OR IGNORE", 1)  # a duplicate id changes nothing


def _message_values(m: MessageRow) -> tuple[Any, ...]:
    return (
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
    )


def _setup(c: sqlite3.Connection) -> None:
    """The writer connection's settings, then the migrations not yet applied."""
    c.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns, so a 200 (or an acknowledged incoming message)
    # survives a power loss too; NORMAL in WAL mode would survive only a process crash.
    c.execute("PRAGMA synchronous=FULL")
    c.execute("PRAGMA foreign_keys=ON")
    version = int(c.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # The version bump rides in the same script, so a migration is applied whole or not at all.
        c.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")


@dataclass(frozen=True, slots=True)
class _Removed:
    """Messages about to be deleted, as the tally counts them."""

    counts: list[tuple[str, str, int]]
    minutes: list[tuple[int, int]]


def _counted(c: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> _Removed:
    """Count the messages matching ``where`` by (direction, status) and by minute over the last hour."""
    counts = c.execute(f"SELECT direction, status, COUNT(*) FROM messages WHERE {where} GROUP BY 1, 2", args)
    minutes = c.execute(
        f"SELECT CAST(timestamp / {MINUTE} AS INTEGER), COUNT(*) FROM messages WHERE ({where}) AND timestamp >= ?"
        " GROUP BY 1",
        (*args, time.time() - HOUR),
    )
    return _Removed(
        [(str(r[0]), str(r[1]), int(r[2])) for r in counts.fetchall()], [(int(r[0]), int(r[1])) for r in minutes]
    )


# Statuses of a message that really went to a chat or came from it (pacing's cold chats).
_EXCHANGED = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.RECEIVED)


def _first(rows: list[Any]) -> Any:
    return rows[0] if rows else None


def _message(row: Any) -> MessageRow:
    values = list(row)
    values[15] = json.loads(values[15]) if values[15] else {}
    return MessageRow(*values)


def _with_media(c: sqlite3.Connection, session_id: str, message_id: str) -> MessageRow | None:
    """The message as history holds it when it has media (read before a revoke clears that); else None."""
    row = c.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id = ?"
        " AND (media_ref IS NOT NULL OR mimetype IS NOT NULL)",
        (session_id, message_id),
    ).fetchone()
    return _message(row) if row else None


def _queue_removal(c: sqlite3.Connection, message: MessageRow) -> None:
    """Queue ``message``'s media for removal, in the transaction that drops it from history (a revoke,
    a purge): committed together, so no media is ever left that nothing remembers."""
    c.execute(
        "INSERT INTO media_removals (session_id, message_id, media_ref, local, queued_at) VALUES (?, ?, ?, ?, ?)"
        # Queued again (a purge of a message redelivered after a revoke): keep what either names.
        " ON CONFLICT (session_id, message_id) DO UPDATE SET media_ref = COALESCE(excluded.media_ref, media_ref),"
        " local = MAX(local, excluded.local), queued_at = excluded.queued_at",
        (message.session_id, message.id, message.media_ref, int(message.direction == "in"), time.time()),
    )


class Store:
    """The worker's SQLite database: writes group-committed on one connection, reads on another."""

    def __init__(self, db: aiosqlite.Connection, writer: GroupCommitWriter) -> None:
        self._db = db  # reads
        self._writer = writer
        self._wrote_events = False  # set on the writer's thread, read after its commit
        # Called after a commit that queued events (wakes their consumers); set by the owner.
        self.on_events: Callable[[], None] | None = None
        # Message counts for /metrics and heartbeats: loaded at open, moved after each commit that
        # changes history (on the event loop, once the write returned).
        self.tally = MessageTally()
        # Called with each message a committed revoke emptied that had media (as it was before), on the
        # event loop: history no longer names its file and object, so only its owner can delete them.
        # The revoke queued that removal in its own transaction (media_removals): this only starts it now.
        self.on_media_revoked: Callable[[MessageRow], None] | None = None

    def _media_revoked(self, rows: list[MessageRow]) -> None:
        """Hand committed revokes' media to ``on_media_revoked``."""
        if self.on_media_revoked is not None:
            for row in rows:
                self.on_media_revoked(row)

    def _after_commit(self) -> None:
        if self._wrote_events:
            self._wrote_events = False
            if self.on_events is not None:
                self.on_events()

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run one query to its end in one go: no statement stays open to pin an old snapshot of the database."""
        return list(await self._db.execute_fetchall(sql, args))

    async def _write(self, write: Callable[[sqlite3.Connection], _T]) -> _T:
        """Apply one write transaction: committed whole (possibly with others), or not at all."""
        return await self._writer.run(write)

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = GroupCommitWriter(path)
        await writer.open(_setup)
        db = await aiosqlite.connect(path)
        db.row_factory = aiosqlite.Row
        store = cls(db, writer)
        writer.after_commit = store._after_commit
        await store._load_tally()
        return store

    @property
    def commits(self) -> tuple[int, int]:
        """``(commits, writes)`` so far: how well writes are grouped."""
        return self._writer.commits, self._writer.writes

    async def close(self) -> None:
        """Commit what is queued and close both connections (the reader too when the writer fails)."""
        closing = Closing(log)
        with closing.step("sqlite writer"):
            await self._writer.close()
        with closing.step("sqlite reader"):
            await self._db.close()
        closing.raise_if_failed()

    async def schema_version(self) -> int:
        row = _first(await self._read("PRAGMA user_version"))
        return int(row[0]) if row else 0

    # -- sessions ------------------------------------------------------------------
    async def add_session(self, row: SessionRow) -> None:
        """Insert a new session (the caller checked it does not exist)."""
        now = time.time()
        await self._write(
            lambda c: c.execute(
                "INSERT INTO sessions"
                " (id, user_id, session_name, created_at, status, phone, last_error, proxy, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.user_id,
                    row.session_name,
                    row.created_at,
                    row.status,
                    row.phone,
                    row.last_error,
                    row.proxy,
                    now,
                ),
            )
        )

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Change some of a session's columns (status, phone, last_error, proxy as stored, linked_phone, linked_at)."""
        allowed = {"status", "phone", "last_error", "user_id", "session_name", "proxy", "linked_phone", "linked_at"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not session columns: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        args = (*fields.values(), time.time(), session_id)
        await self._write(lambda c: c.execute(f"UPDATE sessions SET {assignments}, updated_at = ? WHERE id = ?", args))

    async def delete_session(self, session_id: str) -> None:
        """Forget a session with its history, outbox and idempotency keys, and queue ``session.deleted``.

        Its webhook stays until that last event reached it (the webhook's deliverer removes it).
        """

        def write(c: sqlite3.Connection) -> _Removed:
            removed = _counted(c, "session_id = ?", (session_id,))
            for table, column in (
                ("sessions", "id"),
                ("messages", "session_id"),
                ("outbox", "session_id"),
                ("idempotency", "session_id"),
                ("poll_votes", "session_id"),
                # Its media went with the session's media prefix and folder (SessionStorage.forget).
                ("media_removals", "session_id"),
            ):
                c.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))
            self._add_event(c, session_id, "session.deleted", {})
            return removed

        removed = await self._write(write)
        self.tally.removed(removed.counts, removed.minutes, purged=False)

    async def sessions(self) -> list[SessionRow]:
        """Every stored session, oldest first."""
        rows = await self._read(
            "SELECT id, user_id, session_name, created_at, status, phone, last_error, proxy, linked_phone, linked_at"
            " FROM sessions ORDER BY created_at, id"
        )
        return [SessionRow(*tuple(r)) for r in rows]

    # -- events --------------------------------------------------------------------
    def _add_event(self, c: sqlite3.Connection, session_id: str | None, event: str, data: dict[str, Any]) -> None:
        self._wrote_events = True
        c.execute(
            "INSERT INTO events (session_id, event, data, timestamp) VALUES (?, ?, ?, ?)",
            (session_id, event, json.dumps(data, default=str), time.time()),
        )

    async def add_event(self, session_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Queue an event for the backend (delivered in order of ``seq``)."""
        await self._write(lambda c: self._add_event(c, session_id, event, data))

    async def events_since(self, seq: int, limit: int = 100, *, session_id: str | None = None) -> list[EventRow]:
        """Queued events after ``seq`` (of one session, or all), oldest first."""
        sql = "SELECT seq, session_id, event, data, timestamp FROM events WHERE seq > ?"
        args: list[Any] = [seq]
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        rows = await self._read(sql + " ORDER BY seq LIMIT ?", (*args, limit))
        return [EventRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def last_event_seq(self) -> int:
        row = _first(await self._read("SELECT COALESCE(MAX(seq), 0) FROM events"))
        return int(row[0]) if row else 0

    async def purge_events(self, before: float) -> int:
        """Drop events older than ``before`` (epoch seconds) that every consumer hearing them has had:
        the retention of the event log never takes an event from a consumer still owed it."""
        return await self._write(
            lambda c: (
                c.execute(
                    "DELETE FROM events WHERE timestamp < ? AND NOT EXISTS (SELECT 1 FROM consumers c"
                    " WHERE c.last_seq < events.seq AND (c.session_id IS NULL OR c.session_id = events.session_id))",
                    (before,),
                ).rowcount
            )
        )

    async def consumer_lag(self) -> list[ConsumerLag]:
        """Each consumer's cursor and the time of the oldest event it has yet to receive."""
        rows = await self._read(
            "SELECT c.name, c.session_id, c.last_seq, (SELECT MIN(e.timestamp) FROM events e WHERE e.seq > c.last_seq"
            " AND (c.session_id IS NULL OR e.session_id = c.session_id)) FROM consumers c ORDER BY c.name"
        )
        return [ConsumerLag(name=r[0], session_id=r[1], last_seq=int(r[2]), oldest_pending_at=r[3]) for r in rows]

    async def consumer_cursor(self, name: str, *, start: int, session_id: str | None = None) -> int:
        """Where consumer ``name`` stands; a new consumer starts at ``start``. ``session_id``: it hears
        only that session's events."""

        def write(c: sqlite3.Connection) -> int:
            c.execute(
                "INSERT OR IGNORE INTO consumers (name, last_seq, updated_at, session_id) VALUES (?, ?, ?, ?)",
                (name, start, time.time(), session_id),
            )
            row = c.execute("SELECT last_seq FROM consumers WHERE name = ?", (name,)).fetchone()
            return int(row[0]) if row else start

        return await self._write(write)

    async def advance_consumer(self, name: str, seq: int) -> None:
        """Consumer ``name`` has everything up to ``seq``."""
        await self._write(
            lambda c: c.execute(
                "UPDATE consumers SET last_seq = MAX(last_seq, ?), updated_at = ? WHERE name = ?",
                (seq, time.time(), name),
            )
        )

    async def drop_consumer(self, name: str) -> None:
        await self._write(lambda c: c.execute("DELETE FROM consumers WHERE name = ?", (name,)))

    # -- webhooks -----------------------------------------------------------------
    async def set_webhook(self, session_id: str, url: str, secret: str) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT INTO webhooks (session_id, url, secret, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET url = excluded.url, secret = excluded.secret",
                (session_id, url, secret, time.time()),
            )
        )

    async def delete_webhook(self, session_id: str) -> bool:
        deleted: int = await self._write(
            lambda c: c.execute("DELETE FROM webhooks WHERE session_id = ?", (session_id,)).rowcount
        )
        return deleted > 0

    async def webhooks(self) -> dict[str, tuple[str, str]]:
        """``{sessionId: (url, secret)}``."""
        rows = await self._read("SELECT session_id, url, secret FROM webhooks")
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- outgoing messages ---------------------------------------------------------
    async def accept_outgoing(
        self, message: MessageRow | None, outbox: OutboxRow, idempotency: IdempotencyRow | None = None
    ) -> None:
        """Record a message to send, its outbox entry and its idempotency key, all or nothing.

        ``message`` None: the entry changes a message in history (an edit, a revoke) and has no row of its own.
        """
        # Encoded here, on the event loop, so the writer's thread only writes.
        payload = json.dumps(outbox.payload)
        values = _message_values(message) if message is not None else None

        def write(c: sqlite3.Connection) -> None:
            if idempotency is not None:
                i = idempotency
                c.execute(
                    "INSERT INTO idempotency (session_id, key, fingerprint, message_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (i.session_id, i.key, i.fingerprint, i.message_id, i.created_at),
                )
            if values is not None:
                c.execute(_INSERT_MESSAGE, values)
            c.execute(
                "INSERT INTO outbox (session_id, message_id, payload, attempts, next_attempt_at, expires_at,"
                " created_at, scheduled_at, lane, wait, cold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    outbox.session_id,
                    outbox.message_id,
                    payload,
                    outbox.attempts,
                    outbox.next_attempt_at,
                    outbox.expires_at,
                    outbox.created_at,
                    outbox.scheduled_at,
                    outbox.lane,
                    outbox.wait,
                    int(outbox.cold),
                ),
            )

        await self._write(write)
        if message is not None:
            self.tally.added(message.direction, message.status, message.timestamp)

    async def outbox(self, session_id: str | None = None) -> list[OutboxRow]:
        """Messages waiting to be sent (of one session, or all), oldest first."""
        sql = (
            "SELECT session_id, message_id, payload, attempts, next_attempt_at, expires_at, created_at,"
            " scheduled_at, lane, wait, cold FROM outbox"
        )
        args: tuple[Any, ...] = ()
        if session_id is not None:
            sql += " WHERE session_id = ?"
            args = (session_id,)
        rows = await self._read(sql + " ORDER BY created_at, message_id", args)
        return [
            OutboxRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], bool(r[10])) for r in rows
        ]

    async def chat_seen(self, session_id: str, chat: str) -> tuple[bool, float | None]:
        """Whether a message really went to or came from the chat (sent, delivered, read or received: one
        that failed, was cancelled, is still waiting or whose send is unknown does not make a chat warm),
        and when it last wrote to us (pacing's cold chats and replies)."""
        rows = await self._read(
            "SELECT COUNT(*), MAX(CASE WHEN direction = 'in' THEN timestamp END) FROM"
            " (SELECT direction, timestamp FROM messages WHERE session_id = ? AND chat = ?"
            f" AND status IN ({', '.join('?' * len(_EXCHANGED))}) LIMIT 1000)",
            (session_id, chat, *_EXCHANGED),
        )
        count, last_inbound = rows[0]
        return bool(count), last_inbound

    async def sent_since(self, since: float) -> dict[str, int]:
        """Outgoing messages sent (or beyond) since ``since``, per session (pacing's daily cap at start)."""
        rows = await self._read(
            "SELECT session_id, COUNT(*) FROM messages WHERE timestamp >= ? AND direction = 'out'"
            " AND status NOT IN ('pending', 'queued', 'failed') GROUP BY session_id",
            (since,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def outbox_retry_at(self, session_id: str, message_id: str, attempts: int, at: float) -> None:
        """Count a failed attempt and set when to try again."""
        await self._write(
            lambda c: c.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ? WHERE session_id = ? AND message_id = ?",
                (attempts, at, session_id, message_id),
            )
        )

    async def outbox_reslot(
        self, session_id: str, moves: Sequence[tuple[str, float, float | None, str | None]]
    ) -> None:
        """Move waiting messages to new times, all or nothing: ``(message id, next attempt, paced slot, why
        it waits)`` each (paced messages re-spaced after a restart or a reconnect)."""
        rows = [(at, slot, wait, session_id, message_id) for message_id, at, slot, wait in moves]
        await self._write(
            lambda c: c.executemany(
                "UPDATE outbox SET next_attempt_at = ?, scheduled_at = ?, wait = ?"
                " WHERE session_id = ? AND message_id = ?",
                rows,
            )
        )

    async def finish_outgoing(
        self,
        session_id: str,
        message_id: str,
        status: str,
        *,
        timestamp: float | None = None,
        error: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """Settle an outgoing message (sent, failed, unknown): out of the outbox, into history, one event.

        An edit, revoke or reaction that was sent changes its target message in the same transaction
        (``message_changes.apply_sent``); an edit or revoke has no history row nor ``message.status`` of its own.
        A revoked message's media goes to ``on_media_revoked`` once committed.
        Returns False when it was already settled (nothing changed). ``payload``: the outbox row's, when the
        caller holds it (the outbox does): not read back and decoded once more per message.
        """
        sets = _KEEP_BEYOND_SENT + " error = ?, updated_at = ?"
        args: list[Any] = [*BEYOND_SENT, status, MessageStatus.SENT, status, error, time.time()]
        if timestamp is not None:
            sets += ", timestamp = ?"
            args.append(timestamp)
        data: dict[str, Any] = {"messageId": message_id, "status": status}
        if error:
            data["error"] = error
        revoked: list[MessageRow] = []  # filled by the write: read only once it committed

        def write(c: sqlite3.Connection) -> tuple[str, str] | None:
            key = (session_id, message_id)
            sent = payload
            if sent is None:
                waiting = c.execute(
                    "SELECT payload FROM outbox WHERE session_id = ? AND message_id = ?", key
                ).fetchone()
                if waiting is None:
                    return None
                sent = json.loads(waiting[0])
            if c.execute("DELETE FROM outbox WHERE session_id = ? AND message_id = ?", key).rowcount == 0:
                return None
            if sent.get("type") in message_changes.CHANGING_TYPES:
                media = _with_media(c, session_id, str(sent.get("revoke_of"))) if sent.get("type") == "revoke" else None
                change = (
                    message_changes.apply_sent(c, session_id, sent, timestamp or time.time())
                    if status == MessageStatus.SENT
                    else None
                )
                if change is not None:
                    self._add_event(c, session_id, *change)
                    if media is not None:
                        _queue_removal(c, media)
                        revoked.append(media)
                if message_changes.is_change(sent):
                    return ("", "")
            before = c.execute("SELECT status FROM messages WHERE session_id = ? AND id = ?", key).fetchone()
            c.execute(f"UPDATE messages SET {sets} WHERE session_id = ? AND id = ?", (*args, *key))
            after = c.execute("SELECT status FROM messages WHERE session_id = ? AND id = ?", key).fetchone()
            self._add_event(c, session_id, "message.status", data)
            return (str(before[0]), str(after[0])) if before and after else ("", "")

        moved = await self._write(write)
        self._media_revoked(revoked)
        if moved is None:
            return False
        if moved[0]:
            self.tally.moved("out", *moved)
        return True

    async def apply_receipt(self, session_id: str, message_id: str, status: str, *, by: str | None = None) -> bool:
        """Move an outgoing message forward to delivered/read; False if that would not be forward.

        ``by``: a group member's receipt. Each member's is an event (with ``by``), even when the message
        as a whole already stood there; the row's status still only moves forward.
        """
        if status not in PROGRESS:
            return False

        def write(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT status FROM messages WHERE session_id = ? AND id = ? AND direction = 'out'",
                (session_id, message_id),
            ).fetchone()
            forward = row is not None and moves_forward(row[0], status)
            if row is not None and (forward or by is not None):
                data = {"messageId": message_id, "status": status}
                self._add_event(c, session_id, "message.status", data if by is None else {**data, "by": by})
            if not forward:
                return None
            c.execute(
                "UPDATE messages SET status = ?, updated_at = ? WHERE session_id = ? AND id = ?",
                (status, time.time(), session_id, message_id),
            )
            return str(row[0])

        old = await self._write(write)
        if old is None:
            return False
        self.tally.moved("out", old, status)
        return True

    # -- idempotency ---------------------------------------------------------------
    async def idempotency(self, session_id: str, key: str, *, max_age: float) -> IdempotencyRow | None:
        """The record of an Idempotency-Key used within ``max_age`` seconds."""
        r = _first(
            await self._read(
                "SELECT session_id, key, fingerprint, message_id, http_status, response, created_at FROM idempotency"
                " WHERE session_id = ? AND key = ? AND created_at > ?",
                (session_id, key, time.time() - max_age),
            )
        )
        if r is None:
            return None
        return IdempotencyRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None, r[6])

    async def save_idempotent_answer(self, session_id: str, key: str, http_status: int, response: Any) -> None:
        """Remember the first answer to a key (later answers never replace it)."""
        body = json.dumps(response)
        await self._write(
            lambda c: c.execute(
                "UPDATE idempotency SET http_status = ?, response = ?"
                " WHERE session_id = ? AND key = ? AND response IS NULL",
                (http_status, body, session_id, key),
            )
        )

    async def purge_idempotency(self, older_than: float) -> int:
        """Forget keys created before ``older_than`` (epoch seconds)."""
        return await self._write(
            lambda c: c.execute("DELETE FROM idempotency WHERE created_at < ?", (older_than,)).rowcount
        )

    # -- incoming messages and history ---------------------------------------------------
    async def add_incoming(self, message: MessageRow, event: dict[str, Any]) -> bool:
        """Commit a received message and its event; False (and nothing written) for a duplicate id.

        A reaction is also recorded on the message it reacts to, with its ``message.reaction`` event.
        """
        values = _message_values(message)
        reacted = message.extra.get("reaction_to") if message.type == "reaction" else None

        def write(c: sqlite3.Connection) -> bool:
            if c.execute(_INSERT_MESSAGE_ONCE, values).rowcount == 0:
                return False
            self._add_event(c, message.session_id, "message.received", event)
            if reacted:
                data = message_changes.apply_reaction(
                    c,
                    message.session_id,
                    str(reacted),
                    chat=message.chat,
                    by=message.sender,
                    emoji=message.text or "",
                    at=message.timestamp,
                )
                self._add_event(c, message.session_id, "message.reaction", data)
            return True

        if not await self._write(write):
            return False
        self.tally.added(message.direction, message.status, message.timestamp)
        return True

    # -- poll votes ------------------------------------------------------------------
    async def apply_poll_vote(
        self, session_id: str, poll_id: str, vote_id: str, voter: str, hashes: list[str], at: float
    ) -> str:
        """Commit a vote as the voter's latest (mapped to option names) with its poll.vote event.

        Returns "counted", "duplicate" (this vote was counted already), "older" (a later vote of the same
        voter stands), or why it could not be counted (one of polls.NOT_COUNTED): then a
        poll.vote_failed event is committed instead, so nobody's vote disappears unseen.
        """

        def write(c: sqlite3.Connection) -> str:
            row = c.execute(
                "SELECT extra FROM messages WHERE session_id = ? AND id = ? AND type = 'poll'", (session_id, poll_id)
            ).fetchone()
            extra = json.loads(row[0]) if row and row[0] else {}
            poll = extra.get("poll")
            names = polls.option_names(poll, hashes) if isinstance(poll, dict) else None
            if names is None:
                reason = polls.not_counted(extra)
                self._add_event(c, session_id, "poll.vote_failed", polls.failed_event(poll_id, voter, reason, at))
                return reason
            before = c.execute(
                "SELECT vote_id, at FROM poll_votes WHERE session_id = ? AND poll_id = ? AND voter = ?",
                (session_id, poll_id, voter),
            ).fetchone()
            if before is not None and before[0] == vote_id:
                return "duplicate"  # redelivered after a crash: committed once
            if before is not None and before[1] > at:
                return "older"
            c.execute(
                "INSERT OR REPLACE INTO poll_votes (session_id, poll_id, voter, vote_id, options, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, poll_id, voter, vote_id, json.dumps(names), at),
            )
            vote = polls.Vote(vote_id, voter, names, at)
            self._add_event(c, session_id, "poll.vote", polls.vote_event(poll_id, vote))
            return "counted"

        return await self._write(write)

    async def poll_votes(self, session_id: str, poll_id: str) -> list[polls.Vote]:
        """Each voter's latest vote on a poll."""
        rows = await self._read(
            "SELECT vote_id, voter, options, at FROM poll_votes WHERE session_id = ? AND poll_id = ?",
            (session_id, poll_id),
        )
        return [polls.Vote(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def apply_message_change(
        self, session_id: str, target: str, *, kind: str, chat: str, by: str, text: str | None, at: float
    ) -> bool:
        """Commit someone's edit or revoke of ``target`` with its event; False when refused (not ``by``'s
        own message, or already revoked), and nothing is written. A revoked message's media goes to
        ``on_media_revoked`` once committed."""
        revoked: list[MessageRow] = []  # filled by the write: read only once it committed

        def write(c: sqlite3.Connection) -> bool:
            media = None
            if kind == "edit":
                data = message_changes.apply_edit(c, session_id, target, chat=chat, by=by, text=text or "", at=at)
                name = "message.edited"
            else:
                media = _with_media(c, session_id, target)
                data = message_changes.apply_revoke(c, session_id, target, chat=chat, by=by, at=at)
                name = "message.revoked"
            if data is None:
                return False
            self._add_event(c, session_id, name, data)
            if media is not None:
                _queue_removal(c, media)
                revoked.append(media)
            return True

        applied = await self._write(write)
        self._media_revoked(revoked)
        return applied

    async def message(self, session_id: str, message_id: str) -> MessageRow | None:
        row = _first(
            await self._read(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id = ?", (session_id, message_id)
            )
        )
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
        total_row = _first(await self._read(f"SELECT COUNT(*) FROM messages WHERE {clause}", args))
        rows = await self._read(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {clause} ORDER BY timestamp DESC, id LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_message(r) for r in rows], int(total_row[0]) if total_row else 0

    async def message_counts(self) -> dict[str, int]:
        """Messages in history per session."""
        rows = await self._read("SELECT session_id, COUNT(*) FROM messages GROUP BY session_id")
        return {r[0]: int(r[1]) for r in rows}

    async def status_counts(self, session_id: str, statuses: Sequence[str]) -> dict[str, int]:
        """How many of ``session_id``'s messages are in each of ``statuses`` (the dashboard's outbox figures)."""
        marks = ",".join("?" * len(statuses))
        rows = await self._read(
            f"SELECT status, COUNT(*) FROM messages WHERE session_id = ? AND status IN ({marks}) GROUP BY status",
            (session_id, *statuses),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def _load_tally(self) -> None:
        """The message counts, once at open: every later change moves them (see MessageTally)."""
        counts = await self._read("SELECT direction, status, COUNT(*) FROM messages GROUP BY direction, status")
        minutes = await self._read(
            f"SELECT CAST(timestamp / {MINUTE} AS INTEGER), COUNT(*) FROM messages WHERE timestamp >= ? GROUP BY 1",
            (time.time() - HOUR,),
        )
        self.tally.load([(str(r[0]), str(r[1]), int(r[2])) for r in counts], [(int(r[0]), int(r[1])) for r in minutes])

    async def purge_messages(self, before: float, *, batch: int = 1000) -> list[MessageRow]:
        """Delete up to ``batch`` messages older than ``before`` (epoch seconds) that are not waiting in
        the outbox, and return them; their media is queued for removal in the same transaction
        (:meth:`media_removals`)."""

        def write(c: sqlite3.Connection) -> list[MessageRow]:
            rows = c.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.timestamp < ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.session_id = m.session_id AND o.message_id = m.id)"
                " ORDER BY m.timestamp LIMIT ?",
                (before, batch),
            ).fetchall()
            c.executemany("DELETE FROM messages WHERE session_id = ? AND id = ?", [(r[0], r[1]) for r in rows])
            # A purged poll's votes go with it (a later vote on it is reported as unknown_poll).
            c.executemany("DELETE FROM poll_votes WHERE session_id = ? AND poll_id = ?", [(r[0], r[1]) for r in rows])
            purged = [_message(r) for r in rows]
            for message in purged:
                if message.media_ref is not None or message.direction == "in":  # an object, or maybe a local copy
                    _queue_removal(c, message)
            return purged

        purged = await self._write(write)
        counts = Counter((m.direction, m.status) for m in purged)
        recent = Counter(int(m.timestamp // MINUTE) for m in purged if m.timestamp >= time.time() - HOUR)
        self.tally.removed([(d, s, n) for (d, s), n in counts.items()], list(recent.items()), purged=True)
        return purged

    # -- media to remove -------------------------------------------------------------
    async def media_removals(self, *, after: int = 0, limit: int = 500) -> list[MediaRemoval]:
        """Queued media removals after queue position ``after``, in the order they were queued."""
        rows = await self._read(
            "SELECT session_id, message_id, media_ref, local, queued_at, rowid FROM media_removals"
            " WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, limit),
        )
        return [MediaRemoval(r[0], r[1], r[2], bool(r[3]), r[4], int(r[5])) for r in rows]

    async def media_removals_of(self, session_id: str, message_id: str) -> MediaRemoval | None:
        """The message's queued media removal, if one is queued."""
        r = _first(
            await self._read(
                "SELECT session_id, message_id, media_ref, local, queued_at, rowid FROM media_removals"
                " WHERE session_id = ? AND message_id = ?",
                (session_id, message_id),
            )
        )
        return MediaRemoval(r[0], r[1], r[2], bool(r[3]), r[4], int(r[5])) if r else None

    async def media_removed(self, removal: MediaRemoval) -> None:
        """The removal's media is gone: drop its queue row (unless queued again meanwhile)."""
        await self._write(
            lambda c: c.execute(
                "DELETE FROM media_removals WHERE session_id = ? AND message_id = ? AND queued_at = ?",
                (removal.session_id, removal.message_id, removal.queued_at),
            )
        )

    async def ping(self) -> None:
        """Read the schema from the file (not a cache): raises when the database is unusable."""
        await self._read("SELECT COUNT(*) FROM sqlite_master")

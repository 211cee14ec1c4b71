"""The hub's durable state in SQLite: linked devices, what each phone received,
and what waits to be pushed to a device (messages until acked, receipts until sent).

A hub restart reads it back, so nobody is unlinked and nothing waiting is lost.
All calls are short and run on the hub's event loop.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id  TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    phone      TEXT NOT NULL,
    session_id TEXT NOT NULL,
    push_name  TEXT,
    linked_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_phone ON devices(phone);

-- What a phone received from linked devices: one row per message id.
CREATE TABLE IF NOT EXISTS inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    phone       TEXT NOT NULL,
    id          TEXT NOT NULL,
    from_phone  TEXT NOT NULL,
    from_device TEXT,
    type        TEXT NOT NULL,
    text        TEXT,
    caption     TEXT,
    media_size  INTEGER,
    mimetype    TEXT,
    timestamp   REAL NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 1,
    extra       TEXT,  -- JSON: location, contact, reaction, reply and mention fields, mediaSha256
    UNIQUE (phone, id)
);

-- Waiting for a device: kind 'message' stays until acked, kind 'receipt' until pushed.
CREATE TABLE IF NOT EXISTS pending (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_device ON pending(device_id, seq);
-- A resent message waits once; receipts (delivered, then read) may share an id.
CREATE UNIQUE INDEX IF NOT EXISTS pending_message ON pending(device_id, msg_id) WHERE kind = 'message';

-- What each phone sent (hub_changes.py): only its sender may edit or revoke a message.
CREATE TABLE IF NOT EXISTS sent_by_phone (
    phone     TEXT NOT NULL,
    id        TEXT NOT NULL,
    to_phone  TEXT NOT NULL,
    timestamp REAL NOT NULL,
    revoked   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (phone, id)
);
"""


@dataclass(slots=True, frozen=True)
class Device:
    """A linked device: what its credentials unlock."""

    device_id: str
    secret: str
    phone: str
    session_id: str
    push_name: str | None
    linked_at: float


@dataclass(slots=True, frozen=True)
class InboxEntry:
    """One message a phone received, counted once however often it was delivered."""

    id: str
    phone: str
    from_phone: str
    from_device: str | None
    type: str
    text: str | None
    caption: str | None
    media_size: int | None
    mimetype: str | None
    timestamp: float
    deliveries: int
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET /phones/{phone}/messages`` shows it."""
        return {
            "edited": False,
            "revoked": False,
            "reactions": [],
            **self.extra,
            "id": self.id,
            "from": self.from_phone,
            "to": self.extra.get("group", self.phone),  # a group message shows the group it went to
            "type": self.type,
            "text": self.text,
            "caption": self.caption,
            "mediaSize": self.media_size,
            "mimetype": self.mimetype,
            "timestamp": self.timestamp,
            "deliveries": self.deliveries,
        }


@dataclass(slots=True, frozen=True)
class Pending:
    """Something waiting to be pushed to a device."""

    seq: int
    device_id: str
    kind: str
    msg_id: str
    body: dict[str, Any]


class HubStore:
    """The hub's SQLite database (``hub.db`` in the data directory)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: each statement commits by itself unless wrapped in a transaction.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(inbox)")}
        if "extra" not in columns:  # a hub.db from before message extras
            self._db.execute("ALTER TABLE inbox ADD COLUMN extra TEXT")
        # Every send looks devices up (sender and recipients): the table is small and only this
        # process writes it, so it is read once and mirrored, written through. Kept in link order
        # (read in it, new links appended), as devices() answers.
        self._devices = {
            row[0]: Device(*row)
            for row in self._db.execute(
                "SELECT device_id, secret, phone, session_id, push_name, linked_at FROM devices ORDER BY linked_at"
            )
        }

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for feature tables kept beside these (e.g. :mod:`session_proc.sim.hub_phones`)."""
        return self._db

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- devices ---------------------------------------------------------------
    def add_device(self, device: Device) -> None:
        """Record a newly linked device."""
        self._db.execute(
            "INSERT INTO devices (device_id, secret, phone, session_id, push_name, linked_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                device.device_id,
                device.secret,
                device.phone,
                device.session_id,
                device.push_name,
                device.linked_at,
            ),
        )
        self._devices[device.device_id] = device

    def device(self, device_id: str) -> Device | None:
        """The device with this id, if it is still linked."""
        return self._devices.get(device_id)

    def devices(self, phone: str | None = None) -> list[Device]:
        """All linked devices, or those of one phone number, oldest first."""
        if phone is None:
            return list(self._devices.values())
        return [d for d in self._devices.values() if d.phone == phone]

    def set_session(self, device_id: str, session_id: str) -> None:
        """Remember which session last connected with this device's credentials."""
        self._db.execute("UPDATE devices SET session_id = ? WHERE device_id = ?", (session_id, device_id))
        device = self._devices.get(device_id)
        if device is not None:
            self._devices[device_id] = replace(device, session_id=session_id)

    def remove_device(self, device_id: str) -> None:
        """Unlink a device and drop everything waiting for it."""
        with self._transaction():
            self._db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
            self._db.execute("DELETE FROM pending WHERE device_id = ?", (device_id,))
        self._devices.pop(device_id, None)

    # -- inbox -----------------------------------------------------------------
    def record_delivery(self, entry: InboxEntry) -> int:
        """Add a message to a phone's inbox, or count one more delivery of the same id.

        Returns the number of deliveries of that id so far.
        """
        # One statement, so one implicit transaction: a resend only counts (the first copy stands).
        rows = self._db.execute(
            "INSERT INTO inbox (phone, id, from_phone, from_device, type, text, caption,"
            " media_size, mimetype, timestamp, deliveries, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (phone, id) DO UPDATE SET deliveries = deliveries + 1 RETURNING deliveries",
            (
                entry.phone,
                entry.id,
                entry.from_phone,
                entry.from_device,
                entry.type,
                entry.text,
                entry.caption,
                entry.media_size,
                entry.mimetype,
                entry.timestamp,
                json.dumps(entry.extra) if entry.extra else None,
            ),
        ).fetchall()  # stepped to its end: the statement, and so its transaction, is finished here
        return int(rows[0][0])

    def inbox(self, phone: str, ids: list[str] | None = None) -> list[InboxEntry]:
        """What a phone received, oldest first; only the given ids when ``ids`` is set."""
        sql = (
            "SELECT id, phone, from_phone, from_device, type, text, caption, media_size, mimetype,"
            " timestamp, deliveries, extra FROM inbox WHERE phone = ?"
        )
        args: list[Any] = [phone]
        if ids is not None:
            if not ids:
                return []
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        return [_inbox_entry(row) for row in self._db.execute(sql + " ORDER BY seq", args)]

    def update_inbox(
        self, phone: str, msg_id: str, *, text: str | None, caption: str | None, extra: dict[str, Any]
    ) -> None:
        """Change a message in a phone's inbox (an edit, a revoke, a reaction: hub_changes.py)."""
        self._db.execute(
            "UPDATE inbox SET text = ?, caption = ?, extra = ? WHERE phone = ? AND id = ?",
            (text, caption, json.dumps(extra) if extra else None, phone, msg_id),
        )

    # -- what phones sent (hub_changes.py) ---------------------------------------
    def remember_sent(self, phone: str, msg_id: str, to: str, timestamp: float) -> None:
        """Record a message a phone sent, so that it alone may edit or revoke it."""
        self._db.execute(
            "INSERT OR IGNORE INTO sent_by_phone (phone, id, to_phone, timestamp) VALUES (?, ?, ?, ?)",
            (phone, msg_id, to, timestamp),
        )

    def sent_by(self, phone: str, msg_id: str) -> tuple[str, float, bool] | None:
        """``(recipient, sent at, revoked)`` of a message ``phone`` sent, or None."""
        row = self._db.execute(
            "SELECT to_phone, timestamp, revoked FROM sent_by_phone WHERE phone = ? AND id = ?", (phone, msg_id)
        ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]), bool(row[2]))

    def mark_sent_revoked(self, phone: str, msg_id: str) -> None:
        """A phone deleted a message it sent for everyone."""
        self._db.execute("UPDATE sent_by_phone SET revoked = 1 WHERE phone = ? AND id = ?", (phone, msg_id))

    # -- pending pushes --------------------------------------------------------
    def add_pending(self, device_id: str, kind: str, msg_id: str, body: dict[str, Any]) -> Pending | None:
        """Queue something for a device; None if the same message already waits (not queued twice)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO pending (device_id, kind, msg_id, body) VALUES (?, ?, ?, ?)",
            (device_id, kind, msg_id, json.dumps(body)),
        )
        if cur.rowcount == 0 or cur.lastrowid is None:
            return None
        return Pending(cur.lastrowid, device_id, kind, msg_id, body)

    def pending(self, device_id: str) -> list[Pending]:
        """Everything waiting for a device, in the order it was queued."""
        rows = self._db.execute(
            "SELECT seq, device_id, kind, msg_id, body FROM pending WHERE device_id = ? ORDER BY seq",
            (device_id,),
        )
        return [Pending(seq, dev, kind, msg_id, json.loads(body)) for seq, dev, kind, msg_id, body in rows]

    def pending_count(self, device_id: str) -> int:
        """How many items wait for a device."""
        row = self._db.execute("SELECT COUNT(*) FROM pending WHERE device_id = ?", (device_id,)).fetchone()
        return int(row[0])

    def remove_pending(self, seq: int) -> None:
        """Drop one waiting item (a receipt that was pushed)."""
        self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def ack(self, device_id: str, msg_id: str) -> bool:
        """The device took over a message: stop redelivering it. False if nothing waited."""
        cur = self._db.execute(
            # Everything but receipts waits for its ack: messages, group events (issue 17).
            "DELETE FROM pending WHERE device_id = ? AND kind != 'receipt' AND msg_id = ?",
            (device_id, msg_id),
        )
        return cur.rowcount > 0

    # -- helpers ---------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN ... COMMIT (ROLLBACK on error) for a connection in autocommit mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _inbox_entry(row: tuple[Any, ...]) -> InboxEntry:
    (msg_id, phone, from_phone, from_device, kind, text, caption, size, mimetype, ts, deliveries, extra) = row
    return InboxEntry(
        msg_id,
        phone,
        from_phone,
        from_device,
        kind,
        text,
        caption,
        size,
        mimetype,
        ts,
        deliveries,
        json.loads(extra) if extra else {},
    )

"""The send journal: what the neonize engine did with each worker-chosen message id.

neonize 0.5.2 cannot send under a chosen id (its ``SendMessage`` takes no
``SendRequestExtra``; whatsmeow picks the id), so a retry after a crash would
reach the recipient as a second message. Each send is therefore written down
before the call (``sending``) and after it (``sent`` with WhatsApp's id, or
``failed``) in the session's directory. A retry of an id finds:

- ``sent``: the earlier answer was lost on the way; it is answered again, nothing is sent;
- ``sending`` or ``unknown``: a crash (or an ambiguous error) left it undecided; it is never
  resent blindly, the engine answers ``OUTCOME_UNKNOWN``;
- ``failed``: WhatsApp refused it before it went out; it may be sent again.

It also maps WhatsApp's ids back to the worker's, so receipts, replies and
reactions name messages by the id the API gave out. Blocking (sqlite3 with
fsync): call it from a worker thread, never from the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

JOURNAL_FILE = "send-journal.db"
# Entries older than this are dropped when the journal opens: the outbox gives up long before.
KEEP_SECONDS = 7 * 24 * 3600.0
SENDING, SENT, FAILED, UNKNOWN = "sending", "sent", "failed", "unknown"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sends (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    wa_id TEXT,
    timestamp REAL,
    error TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_wa_id ON sends (wa_id);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One worker message id and what became of it."""

    id: str
    state: str
    wa_id: str | None = None
    timestamp: float | None = None
    error: str | None = None


class SendJournal:
    """A small SQLite file in the session directory; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # FULL: a "sending" line must be on disk before the message can leave.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute("DELETE FROM sends WHERE updated < ?", (time.time() - KEEP_SECONDS,))

    @classmethod
    def open(cls, session_dir: Path) -> SendJournal:
        """The journal of the session whose files live in ``session_dir``."""
        return cls(session_dir / JOURNAL_FILE)

    def get(self, message_id: str) -> JournalEntry | None:
        """What is known about ``message_id``, or None if it was never sent from here."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, state, wa_id, timestamp, error FROM sends WHERE id = ?", (message_id,)
            ).fetchone()
        return JournalEntry(*row) if row else None

    def begin(self, message_id: str) -> None:
        """About to hand the message to WhatsApp."""
        self._put(message_id, SENDING)

    def sent(self, message_id: str, wa_id: str, timestamp: float) -> None:
        """WhatsApp took it under ``wa_id`` at ``timestamp`` (epoch seconds)."""
        self._put(message_id, SENT, wa_id=wa_id, timestamp=timestamp)

    def failed(self, message_id: str, error: str) -> None:
        """WhatsApp refused it before it went out: a retry may send it."""
        self._put(message_id, FAILED, error=error)

    def unknown(self, message_id: str, error: str) -> None:
        """It may or may not have gone out: never send it again."""
        self._put(message_id, UNKNOWN, error=error)

    def recent_ids(self, limit: int = 5000) -> list[tuple[str, str]]:
        """(worker id, WhatsApp id) of the latest sent messages, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, wa_id FROM sends WHERE state = ? AND wa_id IS NOT NULL ORDER BY updated DESC LIMIT ?",
                (SENT, limit),
            ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def worker_id(self, wa_id: str) -> str | None:
        """The worker's id of the message WhatsApp knows as ``wa_id`` (a poll a vote names), if sent from here."""
        with self._lock:
            row = self._db.execute("SELECT id FROM sends WHERE wa_id = ? LIMIT 1", (wa_id,)).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _put(
        self,
        message_id: str,
        state: str,
        *,
        wa_id: str | None = None,
        timestamp: float | None = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO sends (id, state, wa_id, timestamp, error, updated) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, wa_id = excluded.wa_id, "
                "timestamp = excluded.timestamp, error = excluded.error, updated = excluded.updated",
                (message_id, state, wa_id, timestamp, error, time.time()),
            )

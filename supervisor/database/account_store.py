"""The store's part for account operations: per-session settings, calls, read marks and the chat list.

Written through the store's group-commit writer like every write, each with its event in the same
transaction. The ``chats`` table (migration 7) is kept by triggers on ``messages``: the last
activity of each chat and our last message in it, so ``GET /session/{id}/chats`` reads a page of
chats by an index and counts each one's unread messages over the index of that chat's history.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from supervisor.database.store import _MESSAGE_COLUMNS, MessageRow, Store, _message


@dataclass(frozen=True, slots=True)
class ChatRow:
    """One chat of a session's history."""

    chat: str
    last_activity: float
    unread: int
    last_message: MessageRow | None


@dataclass(frozen=True, slots=True)
class ReadTarget:
    """A received message of a chat, as a read receipt needs it."""

    id: str
    sender: str
    timestamp: float


class AccountStore:
    """Settings, calls, read marks and chats of sessions, in the worker's database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- settings ------------------------------------------------------------------------------
    async def settings(self, session_id: str) -> dict[str, Any]:
        """The session's stored settings (``{}`` when none was ever set)."""
        rows = await self.store._read("SELECT data FROM session_settings WHERE session_id = ?", (session_id,))
        data = json.loads(rows[0][0]) if rows else {}
        return data if isinstance(data, dict) else {}

    async def all_settings(self) -> dict[str, dict[str, Any]]:
        """Every session's stored settings (at start: the outbox paces from the first send)."""
        rows = await self.store._read("SELECT session_id, data FROM session_settings")
        out: dict[str, dict[str, Any]] = {}
        for session_id, raw in rows:
            data = json.loads(raw)
            out[str(session_id)] = data if isinstance(data, dict) else {}
        return out

    async def save_settings(self, session_id: str, data: dict[str, Any]) -> None:
        """Replace the session's stored settings."""
        encoded = json.dumps(data)
        await self.store._write(
            lambda c: c.execute(
                "INSERT INTO session_settings (session_id, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (session_id, encoded, time.time()),
            )
        )

    # -- calls ---------------------------------------------------------------------------------
    async def add_call(self, session_id: str, call_id: str, sender: str, video: bool, event: dict[str, Any]) -> bool:
        """Record a call offer and its ``call.received`` event; False (nothing written) if known already."""

        def write(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO calls (session_id, id, sender, video, received_at) VALUES (?, ?, ?, ?, ?)",
                (session_id, call_id, sender, int(video), time.time()),
            )
            if cur.rowcount == 0:
                return False
            self.store._add_event(c, session_id, "call.received", event)
            return True

        return await self.store._write(write)

    async def call_rejected(self, session_id: str, call_id: str, event: dict[str, Any]) -> bool:
        """Mark a call rejected with its ``call.rejected`` event; False if it was already."""

        def write(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE calls SET rejected_at = ? WHERE session_id = ? AND id = ? AND rejected_at IS NULL",
                (time.time(), session_id, call_id),
            )
            if cur.rowcount == 0:
                return False
            self.store._add_event(c, session_id, "call.rejected", event)
            return True

        return await self.store._write(write)

    # -- read marks and chats --------------------------------------------------------------------
    async def received(self, session_id: str, chat: str, ids: list[str]) -> list[ReadTarget]:
        """The messages among ``ids`` that ``chat`` sent this session (others are not ours to read)."""
        marks = ",".join("?" * len(ids))
        rows = await self.store._read(
            f"SELECT id, sender, timestamp FROM messages WHERE session_id = ? AND chat = ? AND direction = 'in'"
            f" AND id IN ({marks})",
            (session_id, chat, *ids),
        )
        return [ReadTarget(r[0], r[1] or chat, float(r[2])) for r in rows]

    async def mark_read(self, session_id: str, chat: str, up_to: float) -> None:
        """Messages of ``chat`` up to ``up_to`` (epoch seconds) were read: they stop counting as unread."""
        await self.store._write(
            lambda c: c.execute(
                "UPDATE chats SET read_up_to = MAX(read_up_to, ?) WHERE session_id = ? AND chat = ?",
                (up_to, session_id, chat),
            )
        )

    async def chats(self, session_id: str, *, limit: int, offset: int) -> tuple[list[ChatRow], int]:
        """A page of the session's chats, latest activity first, and how many there are."""
        total = await self.store._read("SELECT COUNT(*) FROM chats WHERE session_id = ?", (session_id,))
        rows = await self.store._read(
            "SELECT c.chat, c.last_activity,"
            " (SELECT COUNT(*) FROM messages m WHERE m.session_id = c.session_id AND m.chat = c.chat"
            "  AND m.direction = 'in' AND m.timestamp > MAX(c.last_out, c.read_up_to)),"
            " (SELECT m.id FROM messages m WHERE m.session_id = c.session_id AND m.chat = c.chat"
            "  ORDER BY m.timestamp DESC LIMIT 1)"
            " FROM chats c WHERE c.session_id = ? ORDER BY c.last_activity DESC, c.chat LIMIT ? OFFSET ?",
            (session_id, limit, offset),
        )
        last_ids = [r[3] for r in rows if r[3] is not None]
        last: dict[str, MessageRow] = {}
        if last_ids:
            marks = ",".join("?" * len(last_ids))
            found = await self.store._read(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id IN ({marks})",
                (session_id, *last_ids),
            )
            last = {m.id: m for m in map(_message, found)}
        chats = [ChatRow(r[0], float(r[1]), int(r[2]), last.get(r[3]) if r[3] else None) for r in rows]
        return chats, int(total[0][0]) if total else 0

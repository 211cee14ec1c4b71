"""Edits, revokes and reactions applied to a message already in history, inside the store's write.

Each function runs on the writer's connection within the transaction of the write that calls it
(``Store.finish_outgoing``, ``Store.add_incoming``, ``Store.apply_message_change``), so the history
change and the event that reports it commit together. What changed lives in the message's ``extra``
JSON column (``edited_at``, ``revoked``, ``revoked_at``, ``reactions``): no migration.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from supervisor.timefmt import iso

# The message types whose text (or caption) WhatsApp lets its sender edit.
TEXT_TYPES = frozenset({"text"})
CAPTION_TYPES = frozenset({"image", "video", "document"})
# Keys of extra that hold content: a revoked message keeps none of them (a poll's question and options too).
_CONTENT_KEYS = ("latitude", "longitude", "name", "address", "vcard", "mentions", "reactions", "edited_at", "poll")


@dataclass(frozen=True, slots=True)
class Target:
    """The part of a history row a change needs."""

    direction: str
    chat: str
    sender: str | None
    type: str
    extra: dict[str, Any]


def target(c: sqlite3.Connection, session_id: str, message_id: str) -> Target | None:
    """The message a change names, or None when history does not hold it."""
    row = c.execute(
        "SELECT direction, chat, sender, type, extra FROM messages WHERE session_id = ? AND id = ?",
        (session_id, message_id),
    ).fetchone()
    if row is None:
        return None
    return Target(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else {})


def _save_extra(c: sqlite3.Connection, session_id: str, message_id: str, extra: dict[str, Any], at: float) -> None:
    c.execute(
        "UPDATE messages SET extra = ?, updated_at = ? WHERE session_id = ? AND id = ?",
        (json.dumps(extra), at, session_id, message_id),
    )


def apply_edit(
    c: sqlite3.Connection, session_id: str, message_id: str, *, chat: str, by: str | None, text: str, at: float
) -> dict[str, Any] | None:
    """Give the message its new text (its caption for media); the ``message.edited`` event's data.

    History changes only for a message of ``by`` that is not revoked; the event is reported even for a
    message history does not hold (sent before the session was linked, or purged). None: refused.
    """
    found = target(c, session_id, message_id)
    data = {
        "messageId": message_id,
        "chat": found.chat if found else chat,
        "from": by,
        "text": text,
        "editedAt": iso(at),
    }
    if found is None:
        return data
    if found.sender != by or found.extra.get("revoked"):
        return None
    column = "caption" if found.type in CAPTION_TYPES else "text"
    c.execute(
        f"UPDATE messages SET {column} = ? WHERE session_id = ? AND id = ?",
        (text, session_id, message_id),
    )
    _save_extra(c, session_id, message_id, {**found.extra, "edited_at": at}, at)
    return data


def apply_revoke(
    c: sqlite3.Connection, session_id: str, message_id: str, *, chat: str, by: str | None, at: float
) -> dict[str, Any] | None:
    """Delete the message's content for everyone (text, caption, media, a poll and its votes); the
    ``message.revoked`` event's data.

    Like :func:`apply_edit`: only ``by``'s own message changes; unknown messages are still reported.
    """
    found = target(c, session_id, message_id)
    data = {"messageId": message_id, "chat": found.chat if found else chat, "by": by}
    if found is None:
        return data
    if found.sender != by:
        return None
    if found.extra.get("revoked"):
        return None  # delivered again: reported once
    c.execute(
        "UPDATE messages SET text = NULL, caption = NULL, media_ref = NULL, mimetype = NULL, media_size = NULL,"
        " filename = NULL WHERE session_id = ? AND id = ?",
        (session_id, message_id),
    )
    if found.type == "poll":
        # Who voted for what is the poll's content too; a later vote on it is reported, not counted.
        c.execute("DELETE FROM poll_votes WHERE session_id = ? AND poll_id = ?", (session_id, message_id))
    kept = {k: v for k, v in found.extra.items() if k not in _CONTENT_KEYS}
    _save_extra(c, session_id, message_id, {**kept, "revoked": True, "revoked_at": at}, at)
    return data


def apply_reaction(
    c: sqlite3.Connection, session_id: str, message_id: str, *, chat: str, by: str | None, emoji: str, at: float
) -> dict[str, Any]:
    """Record ``by``'s reaction on the message (its latest one counts, "" removes it); the
    ``message.reaction`` event's data."""
    found = target(c, session_id, message_id)
    if found is not None and not found.extra.get("revoked"):
        reactions = [r for r in found.extra.get("reactions", []) if r.get("from") != by]
        if emoji:
            reactions.append({"from": by, "emoji": emoji})
        _save_extra(c, session_id, message_id, {**found.extra, "reactions": reactions}, at)
    return {"messageId": message_id, "chat": found.chat if found else chat, "from": by, "emoji": emoji}


def apply_sent(
    c: sqlite3.Connection, session_id: str, payload: dict[str, Any], at: float
) -> tuple[str, dict[str, Any]] | None:
    """What an outgoing edit, revoke or reaction the network accepted changes in history: the event to
    report it (name, data), or None for any other message."""
    kind = payload.get("type")
    chat = str(payload.get("to"))
    if kind == "edit" and payload.get("edit_of"):
        edited = str(payload["edit_of"])
        found = target(c, session_id, edited)
        text = payload.get("caption") if payload.get("caption") is not None else payload.get("text")
        data = apply_edit(c, session_id, edited, chat=chat, by=found.sender if found else None, text=str(text), at=at)
        return None if data is None else ("message.edited", data)
    if kind == "revoke" and payload.get("revoke_of"):
        revoked = str(payload["revoke_of"])
        found = target(c, session_id, revoked)
        data = apply_revoke(c, session_id, revoked, chat=chat, by=found.sender if found else None, at=at)
        return None if data is None else ("message.revoked", data)
    if kind == "reaction" and payload.get("reaction_to"):
        own = target(c, session_id, str(payload.get("id")))
        emoji = str(payload.get("text") or "")
        by = own.sender if own else None
        return "message.reaction", apply_reaction(
            c, session_id, str(payload["reaction_to"]), chat=chat, by=by, emoji=emoji, at=at
        )
    return None


# Outgoing types that change another message in history once sent (a reaction is also a message of its own).
CHANGING_TYPES = frozenset({"edit", "revoke", "reaction"})


def is_change(payload: dict[str, Any]) -> bool:
    """Whether an outbox payload changes another message (edit, revoke) instead of being one in history."""
    return payload.get("type") in ("edit", "revoke")

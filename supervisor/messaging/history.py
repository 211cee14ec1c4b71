"""Messages in history: the rows the store keeps and the view that answers and events show."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from supervisor.database.store import MessageRow
from supervisor.messaging.status import MessageStatus
from supervisor.timefmt import iso
from transport import wire

# Fields of an outgoing/incoming wire message kept in history's `extra` column.
_EXTRA_KEYS = (
    "latitude",
    "longitude",
    "name",
    "address",
    "vcard",
    "reaction_to",
    "reply_to",
    "mentions",
    "media_error",
    # polls, stickers, view-once, voice notes: poll {name, options, multiple}; the flags only when set
    "poll",
    "view_once",
    "voice",
    "participant",  # issue 17: who in a group sent it
)


def _message_extra(fields: dict[str, Any]) -> dict[str, Any]:
    kept = {k: fields[k] for k in _EXTRA_KEYS if fields.get(k) not in (None, [], "") and fields.get(k) is not False}
    if isinstance(kept.get("poll"), msgspec.Struct):
        kept["poll"] = msgspec.to_builtins(kept["poll"])
    return kept


def outgoing_row(session_id: str, payload: dict[str, Any], *, sender: str | None) -> MessageRow:
    """A pending history row for a message accepted for sending (``payload``: the OutgoingMessage, id included)."""
    return MessageRow(
        session_id=session_id,
        id=str(payload["id"]),
        direction="out",
        chat=str(payload["to"]),
        sender=sender,
        recipient=str(payload["to"]),
        type=str(payload.get("type", "text")),
        timestamp=time.time(),
        status=MessageStatus.PENDING,
        text=payload.get("text"),
        caption=payload.get("caption"),
        media_ref=payload.get("media_ref"),
        mimetype=payload.get("mimetype"),
        media_size=payload.get("media_size"),
        filename=payload.get("filename"),
        extra=_message_extra(payload),
    )


def incoming_row(session_id: str, message: wire.IncomingMessage) -> MessageRow:
    """A history row from a session process's ``message`` request."""
    return MessageRow(
        session_id=session_id,
        id=message.id,
        direction="in",
        chat=message.chat or message.sender,
        sender=message.sender,
        recipient=message.to,
        type=message.type or "text",
        timestamp=message.timestamp if message.timestamp > 0 else time.time(),
        status=MessageStatus.RECEIVED,
        text=message.text,
        caption=message.caption,
        media_ref=message.media_path,
        mimetype=message.mimetype,
        media_size=message.media_size,
        extra=_message_extra(msgspec.structs.asdict(message)),
    )


def message_view(row: MessageRow) -> dict[str, Any]:
    """A message as history and events show it (mediaUrl is filled in where media is stored)."""
    view = {
        "id": row.id,
        "direction": row.direction,
        "chat": row.chat,
        "from": row.sender,
        "to": row.recipient,
        "type": row.type,
        "text": row.text,
        "caption": row.caption,
        "mimetype": row.mimetype,
        "mediaSize": row.media_size,
        "mediaUrl": None,
        "timestamp": iso(row.timestamp),
        "status": row.status,
        "error": row.error,
        "editedAt": None,
        "revoked": False,
        **{_camel(k): v for k, v in row.extra.items()},
        "reactions": row.extra.get("reactions", []),
    }
    for changed_at in ("editedAt", "revokedAt"):  # kept as epoch seconds in extra (database/message_changes.py)
        if isinstance(view.get(changed_at), int | float):
            view[changed_at] = iso(view[changed_at])
    return view


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)

"""Edits and revokes of the session's own messages: what may be changed, and the outbox payload that does it.

A change travels like a message (``Outbox.submit`` without a history row): its own WhatsApp id, chosen once and reused
on every retry, an ``Idempotency-Key``, nothing lost across crashes. It has no history row of its own;
once the network took it, its target's row changes with its event (``database/message_changes.py``).
"""

from __future__ import annotations

from typing import Any

from supervisor.database.message_changes import CAPTION_TYPES, TEXT_TYPES
from supervisor.database.store import MessageRow
from supervisor.messaging.status import MessageStatus
from supervisor.sessions.session import SessionError

# A message that never left (or may not have) has nothing on the network to change.
_NOT_SENT = frozenset({MessageStatus.FAILED, MessageStatus.UNKNOWN})


def _own(target: MessageRow | None, message_id: str) -> MessageRow:
    if target is None:
        raise SessionError("UNKNOWN_MESSAGE", f"no message {message_id!r} in this session's history")
    if target.direction != "out":
        raise SessionError("NOT_OWN_MESSAGE", f"message {message_id!r} was received: only our own can be changed")
    if target.extra.get("revoked"):
        raise SessionError("MESSAGE_REVOKED", f"message {message_id!r} was deleted for everyone")
    if target.status in _NOT_SENT:
        raise SessionError("MESSAGE_NOT_EDITABLE", f"message {message_id!r} was not sent ({target.status})")
    return target


def edit_payload(target: MessageRow | None, message_id: str, text: str, *, now: float, window: float) -> dict[str, Any]:
    """The OutgoingMessage fields (without the id) that edit ``target``'s text or caption; SessionError when
    it cannot be edited: unknown, received, revoked, not sent, not text or captioned media, or too old."""
    row = _own(target, message_id)
    if row.type not in TEXT_TYPES | CAPTION_TYPES:
        raise SessionError("MESSAGE_NOT_EDITABLE", f"a {row.type} message has no text to edit")
    if now - row.timestamp > window:
        raise SessionError(
            "EDIT_WINDOW_EXPIRED", f"message {message_id!r} is older than the {window:g}s WhatsApp allows for edits"
        )
    payload: dict[str, Any] = {"to": row.chat, "type": "edit", "edit_of": row.id}
    if row.type in CAPTION_TYPES:
        payload.update(caption=text, mimetype=row.mimetype)
    else:
        payload["text"] = text
    return payload


def revoke_payload(target: MessageRow | None, message_id: str) -> dict[str, Any]:
    """The OutgoingMessage fields (without the id) that delete ``target`` for everyone; SessionError when
    it cannot be: unknown, received, already revoked, or not sent."""
    row = _own(target, message_id)
    return {"to": row.chat, "type": "revoke", "revoke_of": row.id}


def change_answer(target_id: str, sent: dict[str, Any], at_key: str) -> dict[str, Any]:
    """What PATCH/DELETE answer, from the outbox's answer for the change: the changed message's id, the
    change's status, and when it took effect (``at_key``: editedAt / revokedAt; null while pending)."""
    data: dict[str, Any] = {
        "messageId": target_id,
        "status": sent["status"],
        at_key: sent.get("timestamp") if sent["status"] == MessageStatus.SENT else None,
    }
    if sent.get("error"):
        data["error"] = sent["error"]
    return data

"""Edits, revokes and reactions on the simulated network, with WhatsApp's rules.

Only a message's sender may edit or revoke it, an edit only within the edit window (WhatsApp's 15
minutes), and a revoked message stays revoked. A change of a message sent to a phone shows in that
phone's inbox (``text`` becomes the new text, ``edited``/``revoked``), and in every other member's for a
group message; a phone's change reaches the devices linked to the recipient (to every other member's, in
a group) as a ``message`` push of type ``edit`` or ``revoke`` (``editOf``/``revokeOf``), acknowledged like
any message. A phone's reaction to a message in
its inbox is listed on that message (``reactions``, the latest per reactor, "" removes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common.message_id import new_message_id
from session_proc.sim import hub as _hub
from session_proc.sim import ops
from session_proc.sim.hub_store import HubStore, InboxEntry

CHANGE_TYPES = frozenset({"edit", "revoke"})
TARGET_KEYS = {"edit": "editOf", "revoke": "revokeOf"}


@dataclass(frozen=True, slots=True)
class Change:
    """An edit (``text`` or ``caption`` set) or a revoke of message ``target``."""

    kind: str
    target: str
    text: str | None = None
    caption: str | None = None


def _refuse(status: int, code: str, message: str) -> Exception:
    return _hub.HubError(status, code, message)


def _check(kind: str, sent_at: float, target: str, *, revoked: bool, window: float, now: float) -> None:
    if revoked and kind == "edit":
        raise _refuse(409, "MESSAGE_REVOKED", f"message {target} was deleted for everyone")
    if kind == "edit" and now - sent_at > window:
        raise _refuse(409, "EDIT_WINDOW_EXPIRED", f"message {target} is older than the {window:g}s edit window")


def device_change(
    store: HubStore, sender_phone: str, recipients: list[str], body: dict[str, Any], *, window: float
) -> Change:
    """A linked device edits or revokes a message it sent to ``recipients`` (the phone, or a group's other
    members): checked, then applied to their inboxes. HubError for an unknown message (404), someone else's
    (409 NOT_OWN_MESSAGE) or an edit past the window (409 EDIT_WINDOW_EXPIRED)."""
    kind = str(body.get("type"))
    target = _hub.req_str(body, TARGET_KEYS[kind], max_len=_hub.MAX_ID_LENGTH)
    found = [entry for phone in recipients for entry in store.inbox(phone, [target])]
    if not found:
        raise _refuse(404, "UNKNOWN_MESSAGE", f"{body.get('to')} has no message {target}")
    entry = found[0]
    if entry.from_phone != sender_phone:
        raise _refuse(409, "NOT_OWN_MESSAGE", f"message {target} was not sent by {sender_phone}")
    change = Change(kind, target, _hub.opt_str(body, "text"), _hub.opt_str(body, "caption"))
    if kind == "revoke" and entry.extra.get("revoked"):
        return change  # a resend of the same revoke: done already
    _check(kind, entry.timestamp, target, revoked=bool(entry.extra.get("revoked")), window=window, now=time.time())
    for each in found:
        _apply(store, each, change)
    return change


def apply_to_inboxes(store: HubStore, recipients: list[str], change: Change) -> None:
    """A phone's change of a message it sent, shown in its recipients' inboxes (a group's other members)."""
    for phone in recipients:
        for entry in store.inbox(phone, [change.target]):
            _apply(store, entry, change)


def _apply(store: HubStore, entry: InboxEntry, change: Change) -> None:
    if change.kind == "revoke":
        extra = {k: v for k, v in entry.extra.items() if k in ("quotedId",)}
        store.update_inbox(entry.phone, entry.id, text=None, caption=None, extra={**extra, "revoked": True})
        return
    new = change.caption if change.caption is not None else change.text
    text, caption = entry.text, entry.caption
    if entry.type in ops.MEDIA_TYPES:
        caption = new
    else:
        text = new
    store.update_inbox(
        entry.phone,
        entry.id,
        text=text,
        caption=caption,
        extra={**entry.extra, "edited": True, "editedAt": time.time()},
    )


def phone_change(
    store: HubStore, phone: str, target: str, kind: str, text: str | None, *, window: float
) -> tuple[str, dict[str, Any]]:
    """A phone edits or revokes a message it sent: the recipient and the ``message`` push that tells its
    linked devices. HubError as :func:`device_change`."""
    sent = store.sent_by(phone, target)
    if sent is None:
        if store.inbox(phone, [target]):
            raise _refuse(409, "NOT_OWN_MESSAGE", f"message {target} was sent to {phone}, not by it")
        raise _refuse(404, "UNKNOWN_MESSAGE", f"{phone} sent no message {target}")
    to, sent_at, revoked = sent
    if revoked and kind == "revoke":
        raise _refuse(409, "MESSAGE_REVOKED", f"message {target} was deleted for everyone already")
    _check(kind, sent_at, target, revoked=revoked, window=window, now=time.time())
    if kind == "revoke":
        store.mark_sent_revoked(phone, target)
    push: dict[str, Any] = {
        "id": new_message_id(),
        "from": phone,
        "to": to,
        "type": kind,
        TARGET_KEYS[kind]: target,
        "timestamp": time.time(),
    }
    if text is not None:
        push["text"] = text
    return to, push


def react_in_inbox(store: HubStore, phone: str, target: str, emoji: str) -> None:
    """The phone reacts to a message in its inbox: listed on it (its latest reaction; "" removes it)."""
    found = store.inbox(phone, [target])
    if not found:
        return  # a reaction to a message the phone sent: the linked devices hear of it, nothing to list
    entry = found[0]
    reactions = [r for r in entry.extra.get("reactions", []) if r.get("from") != phone]
    if emoji:
        reactions.append({"from": phone, "emoji": emoji})
    store.update_inbox(
        phone, target, text=entry.text, caption=entry.caption, extra={**entry.extra, "reactions": reactions}
    )


def reaction_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A phone's ``{type: "reaction", messageId, emoji}`` as the message fields linked devices receive
    (``reactionTo``, the emoji in ``text``)."""
    target = _hub.req_str(body, "messageId", max_len=_hub.MAX_ID_LENGTH)
    emoji = body.get("emoji", "")
    if not isinstance(emoji, str) or len(emoji) > 64:
        raise _refuse(400, "BAD_REQUEST", "emoji must be a string (empty removes the reaction)")
    return {**body, "reactionTo": target, "text": emoji}

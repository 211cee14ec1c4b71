"""Where a message is: one declaration for the store, the outbox and the figures.

An outgoing message is ``queued`` while it waits for its paced slot, then ``pending``
until its send is settled as ``sent``, ``failed`` or ``unknown`` (the engine cannot
tell whether an interrupted send went out);
receipts then move a sent message forward to ``delivered`` and ``read``, never back.
An incoming message is ``received``.
"""

from __future__ import annotations

import enum


class MessageStatus(enum.StrEnum):
    """A message's status in history, events and send answers."""

    QUEUED = "queued"  # accepted, waiting for its paced slot (supervisor/messaging/pacing.py)
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RECEIVED = "received"


# Where receipts take a sent message: the recipient's phone says how far it got.
BEYOND_SENT = (MessageStatus.DELIVERED, MessageStatus.READ)
# Statuses that only move forward, in this order: a late "delivered" never overwrites "read".
PROGRESS = (MessageStatus.QUEUED, MessageStatus.PENDING, MessageStatus.SENT, *BEYOND_SENT)
_RANK: dict[str, int] = {status: rank for rank, status in enumerate(PROGRESS)}


def moves_forward(current: str, new: str) -> bool:
    """Whether ``new`` is further along ``PROGRESS`` than ``current``; nothing outside it ever moves."""
    rank = _RANK.get(new)
    return rank is not None and _RANK.get(current, len(PROGRESS)) < rank

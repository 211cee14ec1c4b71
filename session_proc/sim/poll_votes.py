"""Polls as the sim engine hears them from the hub: votes (option hashes) and received polls."""

from __future__ import annotations

from typing import Any

import msgspec

from session_proc.engine import PollVote
from transport.wire import PollSpec


def poll_vote(body: dict[str, Any], *, voter: str, chat: str) -> PollVote:
    """A vote message from the hub as the supervisor takes it: the hashes untouched (it maps them)."""
    hashes = body.get("selectedHashes")
    timestamp = body.get("timestamp")
    return PollVote(
        id=str(body["id"]),
        poll_id=str(body.get("pollId") or ""),
        chat=chat,
        voter=voter,
        timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
        option_hashes=[h for h in hashes if isinstance(h, str)] if isinstance(hashes, list) else [],
    )


def poll_spec(value: Any) -> PollSpec | None:
    """A received message's poll {name, options, multiple}, or None when it carries none (or a broken one)."""
    if not isinstance(value, dict):
        return None
    try:
        return msgspec.convert({"multiple": False, **value}, PollSpec)
    except msgspec.ValidationError:
        return None


def outgoing_poll(spec: PollSpec | None) -> dict[str, Any] | None:
    """The poll as the hub's send op carries it."""
    return msgspec.to_builtins(spec) if spec is not None else None

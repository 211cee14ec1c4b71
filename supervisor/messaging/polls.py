"""Poll votes: option hashes back to names, and the tally of each voter's latest vote (pure).

WhatsApp carries a vote as the SHA-256 digests of the chosen options' texts, never the texts. The
names are mapped back here, in the supervisor, from the poll kept in history: that copy is written
(with the outbox entry, in one transaction) before any session process sees the poll, it survives
restarts, failovers and auth-state restores, and it is the same for both engines. A session process
would need a second, durable copy of every poll it sent, one that an older backup could lack.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from supervisor.timefmt import iso

# Why a vote could not be counted (the reason of a poll.vote_failed event).
UNKNOWN_POLL = "unknown_poll"  # no poll with that id in this session's history (never ours, or purged)
UNKNOWN_OPTION = "unknown_option"  # a digest that matches none of the poll's options
REVOKED_POLL = "revoked_poll"  # the poll was deleted for everyone: its votes went with it
NOT_COUNTED = frozenset({UNKNOWN_POLL, UNKNOWN_OPTION, REVOKED_POLL})


@dataclass(slots=True, frozen=True)
class Vote:
    """One voter's vote as committed: the chosen option names (empty: retracted) and when."""

    vote_id: str
    voter: str
    options: list[str]
    at: float


def option_hash(name: str) -> str:
    """The hex SHA-256 of an option's text: how a vote names it."""
    return hashlib.sha256(name.encode()).hexdigest()


def option_names(poll: dict[str, Any], hashes: list[str]) -> list[str] | None:
    """The names of the options ``hashes`` choose, in the poll's order; None if one matches no option."""
    by_hash = {option_hash(name): name for name in poll.get("options", [])}
    chosen = {h.lower() for h in hashes}
    if not chosen <= by_hash.keys():
        return None
    return [name for digest, name in by_hash.items() if digest in chosen]


def not_counted(extra: dict[str, Any]) -> str:
    """Why a vote could not be mapped on the history row whose extra is ``extra`` (the row of its poll id)."""
    if extra.get("revoked"):
        return REVOKED_POLL
    return UNKNOWN_OPTION if isinstance(extra.get("poll"), dict) else UNKNOWN_POLL


def vote_event(poll_id: str, vote: Vote) -> dict[str, Any]:
    """The data of a poll.vote event."""
    return {"pollId": poll_id, "voter": vote.voter, "selectedOptions": vote.options, "at": iso(vote.at)}


def failed_event(poll_id: str, voter: str, reason: str, at: float) -> dict[str, Any]:
    """The data of a poll.vote_failed event: a vote that arrived but could not be counted."""
    return {"pollId": poll_id, "voter": voter, "reason": reason, "at": iso(at)}


def tally(poll_id: str, poll: dict[str, Any], votes: list[Vote]) -> dict[str, Any]:
    """GET /session/{id}/polls/{messageId}: each option with its voters (their latest votes only)."""
    names: list[str] = list(poll.get("options", []))
    voters_of: dict[str, list[str]] = {name: [] for name in names}
    voted: list[str] = []
    for vote in sorted(votes, key=lambda v: (v.at, v.voter)):
        chose = [name for name in vote.options if name in voters_of]
        for name in chose:
            voters_of[name].append(vote.voter)
        if chose:
            voted.append(vote.voter)
    return {
        "messageId": poll_id,
        "name": poll.get("name", ""),
        "multiple": bool(poll.get("multiple", False)),
        "options": [{"name": n, "votes": len(voters_of[n]), "voters": voters_of[n]} for n in names],
        "voters": voted,
    }

"""Votes on polls: committed (mapped to option names, with their event) before the session process
acknowledges them to the network, and tallied for GET /session/{id}/polls/{messageId}."""

from __future__ import annotations

import logging
from typing import Any

from supervisor.database.store import Store
from supervisor.messaging import polls
from supervisor.sessions.session import Session, SessionError
from transport import wire

log = logging.getLogger("supervisor.sessions")


class PollVotes:
    """Receives the votes session processes report; answers poll results from history."""

    def __init__(self, store: Store, *, worker_id: str) -> None:
        self.store = store
        self._log_extra = {"workerId": worker_id}

    async def receive(self, session: Session, vote: wire.PollVote) -> None:
        """Commit one vote (or, when it cannot be read or mapped, its poll.vote_failed event)."""
        extra = {"sessionId": session.id, "pollId": vote.poll_id, **self._log_extra}
        if vote.error is not None:
            # The engine could not decrypt it: there is nothing to map, but the vote is not silently lost.
            await self.store.add_event(
                session.id, "poll.vote_failed", polls.failed_event(vote.poll_id, vote.voter, vote.error, vote.timestamp)
            )
            log.warning("vote %s on poll %s not readable: %s", vote.id, vote.poll_id, vote.error, extra=extra)
            return
        outcome = await self.store.apply_poll_vote(
            session.id, vote.poll_id, vote.id, vote.voter, vote.option_hashes, vote.timestamp
        )
        if outcome in polls.NOT_COUNTED:
            log.warning("vote %s on poll %s not counted: %s", vote.id, vote.poll_id, outcome, extra=extra)
        else:
            log.info("vote %s on poll %s: %s", vote.id, vote.poll_id, outcome, extra=extra)

    async def results(self, session_id: str, poll_id: str) -> dict[str, Any] | None:
        """The poll's tally; None when the session's history holds no poll with that id, SessionError
        MESSAGE_REVOKED when it was deleted for everyone (its votes went with it)."""
        row = await self.store.message(session_id, poll_id)
        if row is not None and row.type == "poll" and row.extra.get("revoked"):
            raise SessionError("MESSAGE_REVOKED", f"poll {poll_id!r} was deleted for everyone: it has no votes")
        poll = row.extra.get("poll") if row is not None and row.type == "poll" else None
        if not isinstance(poll, dict):
            return None
        return polls.tally(poll_id, poll, await self.store.poll_votes(session_id, poll_id))

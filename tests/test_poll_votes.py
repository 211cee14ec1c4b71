"""Votes on a poll in the store: mapped from option digests to names, each voter's latest vote counted,
redeliveries once, and every vote that cannot be counted reported as poll.vote_failed."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from supervisor.database.store import MessageRow, OutboxRow, Store
from supervisor.messaging import polls
from supervisor.messaging.history import message_view, outgoing_row
from supervisor.sessions.poll_votes import PollVotes
from supervisor.sessions.session import Session, SessionError
from transport import wire

POLL = {"name": "Colour?", "options": ["Red", "Green", "Blue"], "multiple": True}
ANA, BUDI, CITRA = (f"62800{n}@s.whatsapp.net" for n in (1, 2, 3))


def _h(*names: str) -> list[str]:
    return [polls.option_hash(n) for n in names]


async def _poll_store(path: Path) -> Store:
    store = await Store.open(path)
    payload: dict[str, Any] = {"id": "poll-1", "to": ANA, "type": "poll", "poll": POLL}
    row = outgoing_row("s1", payload, sender=None)
    now = time.time()
    await store.accept_outgoing(row, OutboxRow("s1", "poll-1", payload, 0, now, now + 60, now))
    return store


async def _events(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, e.data) for e in await store.events_since(0, 1000) if e.event.startswith("poll.")]


async def test_each_voters_latest_vote_counts_and_a_retraction_leaves(tmp_path: Path) -> None:
    store = await _poll_store(tmp_path / "w.db")
    try:
        row = await store.message("s1", "poll-1")
        assert row is not None and message_view(row)["poll"] == POLL  # history shows the poll
        vote = store.apply_poll_vote
        assert await vote("s1", "poll-1", "v1", ANA, _h("Red", "Blue"), 100.0) == "counted"
        assert await vote("s1", "poll-1", "v2", BUDI, _h("Blue"), 101.0) == "counted"
        assert await vote("s1", "poll-1", "v3", CITRA, _h("Green"), 102.0) == "counted"
        assert await vote("s1", "poll-1", "v4", ANA, _h("Green"), 103.0) == "counted"  # Ana changes her mind
        assert await vote("s1", "poll-1", "v5", CITRA, [], 104.0) == "counted"  # Citra retracts
        assert await vote("s1", "poll-1", "v4", ANA, _h("Green"), 103.0) == "duplicate"  # redelivered
        assert await vote("s1", "poll-1", "v0", ANA, _h("Red"), 99.0) == "older"  # overtaken by v4
        # Digests in capitals (hex is hex) name the same options.
        assert await vote("s1", "poll-1", "v6", BUDI, [h.upper() for h in _h("Red", "Blue")], 105.0) == "counted"

        results = polls.tally("poll-1", POLL, await store.poll_votes("s1", "poll-1"))
        assert results == {
            "messageId": "poll-1",
            "name": "Colour?",
            "multiple": True,
            "options": [
                {"name": "Red", "votes": 1, "voters": [BUDI]},
                {"name": "Green", "votes": 1, "voters": [ANA]},
                {"name": "Blue", "votes": 1, "voters": [BUDI]},
            ],
            "voters": [ANA, BUDI],
        }
        events = await _events(store)
        assert [(d["voter"], d["selectedOptions"]) for _, d in events] == [
            (ANA, ["Red", "Blue"]),
            (BUDI, ["Blue"]),
            (CITRA, ["Green"]),
            (ANA, ["Green"]),
            (CITRA, []),
            (BUDI, ["Red", "Blue"]),
        ]
        assert {e for e, _ in events} == {"poll.vote"}
        assert events[0][1] == {
            "pollId": "poll-1",
            "voter": ANA,
            "selectedOptions": ["Red", "Blue"],
            "at": events[0][1]["at"],
        }
        assert events[0][1]["at"] == "1970-01-01T00:01:40.000Z"
    finally:
        await store.close()


async def test_votes_that_cannot_be_counted_are_reported(tmp_path: Path) -> None:
    store = await _poll_store(tmp_path / "w.db")
    try:
        await store.add_incoming(
            MessageRow("s1", "text-1", "in", ANA, ANA, "me", "text", 1.0, "received", text="hi"), {"message": {}}
        )
        assert await store.apply_poll_vote("s1", "nope", "v1", ANA, _h("Red"), 10.0) == polls.UNKNOWN_POLL
        assert await store.apply_poll_vote("s1", "text-1", "v2", ANA, _h("Red"), 11.0) == polls.UNKNOWN_POLL
        assert await store.apply_poll_vote("s2", "poll-1", "v3", ANA, _h("Red"), 12.0) == polls.UNKNOWN_POLL
        assert await store.apply_poll_vote("s1", "poll-1", "v4", ANA, _h("Red", "Purple"), 13.0) == polls.UNKNOWN_OPTION
        assert await store.poll_votes("s1", "poll-1") == []
        failed = [(d["pollId"], d["reason"]) for e, d in await _events(store) if e == "poll.vote_failed"]
        assert failed == [
            ("nope", "unknown_poll"),
            ("text-1", "unknown_poll"),
            ("poll-1", "unknown_poll"),
            ("poll-1", "unknown_option"),
        ]
    finally:
        await store.close()


async def test_a_deleted_session_or_purged_poll_takes_its_votes_along(tmp_path: Path) -> None:
    store = await _poll_store(tmp_path / "w.db")
    try:
        assert await store.apply_poll_vote("s1", "poll-1", "v1", ANA, _h("Red"), 10.0) == "counted"
        await store.finish_outgoing("s1", "poll-1", "sent", timestamp=1.0)  # out of the outbox: purgeable
        purged = await store.purge_messages(time.time() + 10)
        assert [m.id for m in purged] == ["poll-1"]
        assert await store.poll_votes("s1", "poll-1") == []
    finally:
        await store.close()
    store = await _poll_store(tmp_path / "w2.db")
    try:
        assert await store.apply_poll_vote("s1", "poll-1", "v1", ANA, _h("Red"), 10.0) == "counted"
        await store.delete_session("s1")
        assert await store.poll_votes("s1", "poll-1") == []
    finally:
        await store.close()


async def test_an_undecryptable_vote_becomes_an_event_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _poll_store(tmp_path / "w.db")
    try:
        receiver = PollVotes(store, worker_id="w1")
        session = cast(Session, SimpleNamespace(id="s1"))
        vote = wire.PollVote(id="v1", poll_id="poll-1", chat=ANA, voter=ANA, timestamp=5.0, error="undecryptable")
        with caplog.at_level(logging.WARNING, logger="supervisor.sessions"):
            await receiver.receive(session, vote)
            await receiver.receive(session, wire.PollVote(id="v2", poll_id="gone", chat=ANA, voter=ANA, timestamp=6.0))
        assert [(d["pollId"], d["reason"]) for _, d in await _events(store)] == [
            ("poll-1", "undecryptable"),
            ("gone", "unknown_poll"),
        ]
        lines = [r for r in caplog.records if "poll" in r.getMessage()]
        assert len(lines) == 2 and all(getattr(r, "sessionId", None) == "s1" for r in lines)
        assert await receiver.results("s1", "gone") is None
        assert (await receiver.results("s1", "poll-1") or {})["voters"] == []
    finally:
        await store.close()


async def test_a_revoked_poll_drops_its_votes_and_counts_no_later_one(tmp_path: Path) -> None:
    store = await _poll_store(tmp_path / "w.db")
    try:
        assert await store.apply_poll_vote("s1", "poll-1", "v1", ANA, _h("Red"), 10.0) == "counted"
        await store.finish_outgoing("s1", "poll-1", "sent", timestamp=1.0)
        revoke = {"id": "r1", "to": ANA, "type": "revoke", "revoke_of": "poll-1"}
        await store.accept_outgoing(None, OutboxRow("s1", "r1", revoke, 0, 0.0, 1e12, 0.0))
        assert await store.finish_outgoing("s1", "r1", "sent", timestamp=2.0)

        row = await store.message("s1", "poll-1")
        assert row is not None and row.extra == {"revoked": True, "revoked_at": 2.0}
        assert "poll" not in message_view(row)
        assert await store.poll_votes("s1", "poll-1") == []
        # A vote that was on its way when the poll went: reported with its reason, never counted.
        assert await store.apply_poll_vote("s1", "poll-1", "v2", BUDI, _h("Blue"), 11.0) == polls.REVOKED_POLL
        assert await store.poll_votes("s1", "poll-1") == []
        failed = [(d["voter"], d["reason"]) for e, d in await _events(store) if e == "poll.vote_failed"]
        assert failed == [(BUDI, "revoked_poll")]
        with pytest.raises(SessionError) as refused:
            await PollVotes(store, worker_id="w").results("s1", "poll-1")
        assert refused.value.code == "MESSAGE_REVOKED"
    finally:
        await store.close()

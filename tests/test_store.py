"""The store's group commit: many writes per commit, each still all-or-nothing, each seen once awaited."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from supervisor.database.sqlite_writer import WriterClosed
from supervisor.database.store import MessageRow, OutboxRow, Store


def _outgoing(i: int, session: str = "s1") -> tuple[MessageRow, OutboxRow]:
    now = time.time()
    message = MessageRow(session, f"m{i}", "out", "c@s.whatsapp.net", None, "c", "text", now, "pending", text="x")
    return message, OutboxRow(session, f"m{i}", {"to": "c", "text": "x"}, 0, now, now + 60, now)


async def test_concurrent_writes_share_commits_and_each_is_read_back_at_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:

        async def send(i: int) -> str:
            await store.accept_outgoing(*_outgoing(i))
            assert await store.finish_outgoing("s1", f"m{i}", "sent", timestamp=time.time())
            row = await store.message("s1", f"m{i}")  # through the other connection
            assert row is not None
            return row.status

        statuses = await asyncio.gather(*(send(i) for i in range(300)))
        assert statuses == ["sent"] * 300  # no read sees a snapshot older than the write it awaited
        commits, writes = store.commits
        assert writes >= 600 and commits < writes  # grouped
        assert await store.outbox("s1") == []
        events = await store.events_since(0, 1000)
        assert len(events) == 300 and {e.event for e in events} == {"message.status"}
    finally:
        await store.close()


async def test_a_failing_write_is_rolled_back_alone(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        await store.accept_outgoing(*_outgoing(0))
        results = await asyncio.gather(
            store.accept_outgoing(*_outgoing(1)),
            store.accept_outgoing(*_outgoing(0)),  # the same id again: its message insert fails
            store.accept_outgoing(*_outgoing(2)),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], sqlite3.IntegrityError)
        # The failed write left nothing half-done (its outbox row was never added), the others stand.
        assert [r.message_id for r in await store.outbox("s1")] == ["m0", "m1", "m2"]
        _, total = await store.messages("s1", limit=10, offset=0)
        assert total == 3
    finally:
        await store.close()


async def test_close_commits_what_was_queued(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    pending = [asyncio.ensure_future(store.accept_outgoing(*_outgoing(i))) for i in range(50)]
    await asyncio.sleep(0)  # queued, not all committed yet
    await store.close()
    await asyncio.gather(*pending)
    with pytest.raises(WriterClosed):
        await store.add_event("s1", "late", {})

    reopened = await Store.open(tmp_path / "w.db")
    try:
        assert len(await reopened.outbox("s1")) == 50
        assert await reopened.schema_version() >= 3
    finally:
        await reopened.close()


async def test_a_commit_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    # synchronous=FULL: an answered write survives a power loss, not only a process crash.
    store = await Store.open(tmp_path / "w.db")
    try:
        assert await store._write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
        assert await store._write(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    finally:
        await store.close()


async def test_retention_keeps_every_event_a_consumer_has_yet_to_receive(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        await store.consumer_cursor("backend", start=0)
        await store.consumer_cursor("webhook:s1", start=0, session_id="s1")
        for session_id in ("s1", "s2", "s1", None):
            await store.add_event(session_id, "message.status", {"status": "sent"})
        seqs = [e.seq for e in await store.events_since(0, 10)]
        past_retention = time.time() + 60  # every event is older than this

        assert await store.purge_events(past_retention) == 0  # the backend has none of them yet
        lag = {c.name: c for c in await store.consumer_lag()}
        assert lag["backend"].oldest_pending_at is not None and lag["webhook:s1"].session_id == "s1"

        await store.advance_consumer("backend", seqs[-1])
        assert await store.purge_events(past_retention) == 2  # s2's and the worker's: no webhook hears them
        assert [e.session_id for e in await store.events_since(0, 10)] == ["s1", "s1"]
        lag = {c.name: c for c in await store.consumer_lag()}
        assert lag["backend"].oldest_pending_at is None and lag["webhook:s1"].oldest_pending_at is not None

        await store.advance_consumer("webhook:s1", seqs[0])
        assert await store.purge_events(past_retention) == 1
        await store.drop_consumer("webhook:s1")  # its webhook was removed: it is owed nothing
        assert await store.purge_events(past_retention) == 1
        assert await store.events_since(0, 10) == []
    finally:
        await store.close()


async def _scanned(store: Store, now: float) -> tuple[tuple[tuple[str, str, int], ...], int]:
    """What a scan of the whole history says: counts by (direction, status), and the last hour's messages."""
    rows = await store._read("SELECT direction, status, COUNT(*) FROM messages GROUP BY 1, 2 ORDER BY 1, 2")
    recent = await store._read("SELECT COUNT(*) FROM messages WHERE timestamp >= ?", (now - 3540,))
    return tuple((str(r[0]), str(r[1]), int(r[2])) for r in rows), int(recent[0][0])


async def test_message_figures_are_kept_running_without_scanning_history(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        now = time.time()
        for i in range(5):
            await store.accept_outgoing(*_outgoing(i))
        await store.accept_outgoing(*_outgoing(9, session="s2"))
        await store.finish_outgoing("s1", "m0", "sent", timestamp=now)
        await store.finish_outgoing("s1", "m1", "failed", error="refused")
        await store.apply_receipt("s1", "m0", "read")
        assert await store.apply_receipt("s1", "m2", "delivered")  # the receipt overtook the confirmation
        await store.finish_outgoing("s1", "m2", "sent", timestamp=now)  # stays delivered
        old = MessageRow("s1", "in-old", "in", "c", "c", "me", "text", now - 40 * 86400, "received", text="x")
        for incoming in (MessageRow("s1", "in1", "in", "c", "c", "me", "text", now, "received", text="x"), old, old):
            await store.add_incoming(incoming, {"message": {}})  # the duplicate changes nothing
        await store.delete_session("s2")
        purged = await store.purge_messages(now - 30 * 86400)
        assert [m.id for m in purged] == ["in-old"]

        # The figures come from the running tally: reading them runs no query at all.
        async def no_reads(sql: str, args: object = ()) -> list[object]:
            raise AssertionError(f"/metrics scanned the history: {sql}")

        truth = await _scanned(store, now)
        reads, store._read = store._read, no_reads  # type: ignore[method-assign]
        figures = store.tally.figures(now)
        store._read = reads  # type: ignore[method-assign]
        assert (figures.by_status, figures.last_hour) == truth
        assert (figures.sent, figures.failed, figures.pending, figures.received) == (2, 1, 2, 1)
        assert figures.purged == 1
    finally:
        await store.close()
    # Reopened, the tally starts from the history as it is.
    store = await Store.open(tmp_path / "w.db")
    try:
        assert (store.tally.figures(now).by_status, store.tally.figures(now).last_hour) == truth
    finally:
        await store.close()


async def test_retention_never_purges_a_message_still_in_the_outbox(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        message, outbox = _outgoing(1)
        message.timestamp = time.time() - 90 * 86400
        await store.accept_outgoing(message, outbox)
        assert await store.purge_messages(time.time() - 86400) == []
        await store.finish_outgoing("s1", "m1", "failed", error="expired")
        assert [m.id for m in await store.purge_messages(time.time() - 86400)] == ["m1"]
        assert await store.message("s1", "m1") is None
    finally:
        await store.close()


async def test_a_chat_is_seen_only_once_a_message_really_went_there_or_came_from_it(tmp_path: Path) -> None:
    """Pacing's cold chats: a chat whose only messages failed, were cancelled, wait, or whose send is
    unknown is still cold."""
    store = await Store.open(tmp_path / "w.db")
    try:
        chat = "c@s.whatsapp.net"
        for i, (status, error) in enumerate(
            [("failed", "INVALID_RECIPIENT"), ("failed", "cancelled"), ("unknown", "")]
        ):
            await store.accept_outgoing(*_outgoing(i))
            await store.finish_outgoing("s1", f"m{i}", status, error=error or None)
        await store.accept_outgoing(*_outgoing(3))  # still waiting
        assert await store.chat_seen("s1", chat) == (False, None)
        await store.finish_outgoing("s1", "m3", "sent", timestamp=time.time())
        assert await store.chat_seen("s1", chat) == (True, None)
        other = "d@s.whatsapp.net"
        now = time.time()
        incoming = MessageRow("s1", "in1", "in", other, other, None, "text", now, "received", text="hi")
        assert await store.add_incoming(incoming, {})
        assert await store.chat_seen("s1", other) == (True, now)
    finally:
        await store.close()


async def test_a_purge_queues_its_media_for_removal_and_a_deleted_session_drops_its_queue(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        old = time.time() - 40 * 86400
        ref = "media/s1/in-in1.png"
        stored = MessageRow("s1", "in1", "in", "c", "c", "me", "image", old, "received", media_ref=ref)
        ours = MessageRow("s1", "out1", "out", "c", "me", "c", "image", old, "sent", media_ref="media/s1/out1.png")
        text = MessageRow("s1", "out2", "out", "c", "me", "c", "text", old, "sent", text="no media")
        other = MessageRow("s2", "in2", "in", "c", "c", "me", "image", old, "received")  # maybe a local copy
        for row in (stored, ours, text, other):
            await store.add_incoming(row, {"message": {}})
        assert len(await store.purge_messages(time.time() - 86400)) == 4
        # Queued in the purge's own commit: a crash before the removal still leaves it to do.
        queued = {(r.session_id, r.message_id, r.media_ref, r.local) for r in await store.media_removals()}
        assert queued == {
            ("s1", "in1", "media/s1/in-in1.png", True),
            ("s1", "out1", "media/s1/out1.png", False),
            ("s2", "in2", None, True),
        }
        await store.delete_session("s1")  # its media prefix and folder go with it: nothing left to queue
        assert [r.message_id for r in await store.media_removals()] == ["in2"]
        [left] = await store.media_removals()
        await store.media_removed(left)
        assert await store.media_removals() == []
    finally:
        await store.close()

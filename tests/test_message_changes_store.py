"""The store's side of edits, revokes and reactions: who may change what, and one event per change,
committed with it (supervisor/database/message_changes.py)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from supervisor.database.store import MessageRow, OutboxRow, Store
from transport import wire

OURS = "628100@s.whatsapp.net"
PEER = "628200@s.whatsapp.net"


def _row(
    msg_id: str, *, direction: str, sender: str, kind: str = "text", text: str | None = None, caption: str | None = None
) -> MessageRow:
    status = "sent" if direction == "out" else "received"
    return MessageRow("s1", msg_id, direction, PEER, sender, PEER, kind, time.time(), status, text, caption)


async def _events(store: Store) -> list[tuple[str, dict[str, object]]]:
    return [(e.event, e.data) for e in await store.events_since(0, 1000)]


async def test_only_the_sender_changes_a_message_and_a_revoke_clears_it_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        theirs = _row("IN1", direction="in", sender=PEER, text="helo")
        assert await store.add_incoming(theirs, {"message": {}})
        # Someone else's edit of it is refused, with no event; its sender's goes through.
        assert not await store.apply_message_change("s1", "IN1", kind="edit", chat=PEER, by=OURS, text="x", at=5.0)
        assert await store.apply_message_change("s1", "IN1", kind="edit", chat=PEER, by=PEER, text="hello", at=5.0)
        row = await store.message("s1", "IN1")
        assert row is not None and (row.text, row.extra["edited_at"]) == ("hello", 5.0)
        assert await store.apply_message_change("s1", "IN1", kind="revoke", chat=PEER, by=PEER, text=None, at=6.0)
        row = await store.message("s1", "IN1")
        assert row is not None and row.text is None and row.extra == {"revoked": True, "revoked_at": 6.0}
        # Delivered again: nothing more; an edit of a revoked message changes nothing.
        assert not await store.apply_message_change("s1", "IN1", kind="revoke", chat=PEER, by=PEER, text=None, at=7.0)
        assert not await store.apply_message_change("s1", "IN1", kind="edit", chat=PEER, by=PEER, text="z", at=8.0)
        # A message history does not hold is still reported (sent before the session was linked).
        assert await store.apply_message_change("s1", "OLD", kind="edit", chat=PEER, by=PEER, text="t", at=9.0)
        assert [name for name, _ in await _events(store)] == [
            "message.received",
            "message.edited",
            "message.revoked",
            "message.edited",
        ]
    finally:
        await store.close()


async def test_a_sent_edit_changes_its_target_and_a_failed_one_nothing(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    try:
        ours = _row("OUT1", direction="out", sender=OURS, kind="image", caption="old")
        await store.accept_outgoing(ours, OutboxRow("s1", "OUT1", {"id": "OUT1", "to": PEER}, 0, 0.0, 1e12, 0.0))
        assert await store.finish_outgoing("s1", "OUT1", "sent", timestamp=1.0)
        for change_id, status, caption in (("E1", "failed", "never"), ("E2", "sent", "new")):
            edit = wire.OutgoingMessage(id=change_id, to=PEER, type="edit", edit_of="OUT1", caption=caption)
            payload = msgspec.to_builtins(edit)
            await store.accept_outgoing(None, OutboxRow("s1", change_id, payload, 0, 0.0, 1e12, 0.0))
            assert await store.finish_outgoing("s1", change_id, status, timestamp=2.0)
        row = await store.message("s1", "OUT1")
        assert row is not None and (row.caption, row.extra["edited_at"]) == ("new", 2.0)
        assert await store.message("s1", "E2") is None  # a change has no history row of its own
        events = await _events(store)
        assert [name for name, _ in events] == ["message.status", "message.edited"]
        assert events[1][1] == {
            "messageId": "OUT1",
            "chat": PEER,
            "from": OURS,
            "text": "new",
            "editedAt": "1970-01-01T00:00:02.000Z",
        }
    finally:
        await store.close()


async def test_a_committed_revoke_hands_over_the_media_it_emptied(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    gone: list[MessageRow] = []
    store.on_media_revoked = gone.append
    try:
        photo = _row("IN1", direction="in", sender=PEER, kind="image")
        photo.media_ref, photo.mimetype = "media/s1/in-IN1.png", "image/png"
        unstored = _row("IN2", direction="in", sender=PEER, kind="image")  # its upload failed: a local copy
        unstored.mimetype = "image/png"
        for row in (photo, unstored, _row("IN3", direction="in", sender=PEER, text="no media")):
            assert await store.add_incoming(row, {"message": {}})
        assert not await store.apply_message_change("s1", "IN1", kind="revoke", chat=PEER, by=OURS, text=None, at=1.0)
        assert gone == []  # refused: someone else's message keeps its media
        for msg_id in ("IN1", "IN2", "IN3", "IN1"):  # the last: delivered again, already revoked
            await store.apply_message_change("s1", msg_id, kind="revoke", chat=PEER, by=PEER, text=None, at=2.0)
        assert [(m.id, m.direction, m.media_ref) for m in gone] == [
            ("IN1", "in", "media/s1/in-IN1.png"),
            ("IN2", "in", None),
        ]

        ours = _row("OUT1", direction="out", sender=OURS, kind="image", caption="pic")
        ours.media_ref, ours.mimetype = "media/s1/out.png", "image/png"
        await store.accept_outgoing(ours, OutboxRow("s1", "OUT1", {"id": "OUT1", "to": PEER}, 0, 0.0, 1e12, 0.0))
        assert await store.finish_outgoing("s1", "OUT1", "sent", timestamp=1.0)
        for change_id, status in (("R1", "failed"), ("R2", "sent")):  # a revoke that failed changes nothing
            revoke = {"id": change_id, "to": PEER, "type": "revoke", "revoke_of": "OUT1"}
            await store.accept_outgoing(None, OutboxRow("s1", change_id, revoke, 0, 0.0, 1e12, 0.0))
            assert await store.finish_outgoing("s1", change_id, status, timestamp=3.0)
        assert [(m.id, m.media_ref) for m in gone[2:]] == [("OUT1", "media/s1/out.png")]
        revoked = await store.message("s1", "OUT1")
        assert revoked is not None and revoked.media_ref is None  # history no longer names it
        # Each removal was queued by the revoke's own commit: it outlives a removal that fails or never runs.
        assert [(r.message_id, r.media_ref, r.local) for r in await store.media_removals()] == [
            ("IN1", "media/s1/in-IN1.png", True),
            ("IN2", None, True),
            ("OUT1", "media/s1/out.png", False),
        ]
    finally:
        await store.close()

"""The chat list kept by triggers on history, read marks, settings records and calls, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from supervisor.database.account_store import AccountStore
from supervisor.database.store import MIGRATIONS, MessageRow, SessionRow, Store
from supervisor.sessions.settings import SessionSettings

A, B = "628111@s.whatsapp.net", "628222@s.whatsapp.net"


def _msg(mid: str, chat: str, direction: str, ts: float) -> MessageRow:
    status = "received" if direction == "in" else "sent"
    return MessageRow("s", mid, direction, chat, chat, "me", "text", ts, status, text=mid)


async def test_chats_follow_history_and_read_marks(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    account = AccountStore(store)
    try:
        await store.add_session(SessionRow("s", None, None, 1.0, "connected", None, None))
        for row in (_msg("a1", A, "in", 10), _msg("a2", A, "in", 11), _msg("b1", B, "in", 12), _msg("a3", A, "in", 13)):
            await store.add_incoming(row, {})
        chats, total = await account.chats("s", limit=10, offset=0)
        assert total == 2 and [(c.chat, c.unread, c.last_activity) for c in chats] == [(A, 3, 13.0), (B, 1, 12.0)]
        assert chats[0].last_message is not None and chats[0].last_message.id == "a3"

        targets = await account.received("s", A, ["a2", "b1", "nope"])
        assert [t.id for t in targets] == ["a2"]  # b1 is Bob's, nope is nobody's
        await account.mark_read("s", A, targets[0].timestamp)
        chats, _ = await account.chats("s", limit=1, offset=0)
        assert (chats[0].chat, chats[0].unread) == (A, 1)

        # Our own message counts as having read the chat; purging its last message drops an emptied chat.
        await store.add_incoming(_msg("b2", B, "out", 14), {})
        chats, _ = await account.chats("s", limit=10, offset=0)
        assert [(c.chat, c.unread) for c in chats] == [(B, 0), (A, 1)]
        await store.purge_messages(12.5)
        chats, total = await account.chats("s", limit=10, offset=0)
        assert total == 2 and [(c.chat, c.unread) for c in chats] == [(B, 0), (A, 1)]
        await store.purge_messages(100)
        assert await account.chats("s", limit=10, offset=0) == ([], 0)

        await account.save_settings("s", SessionSettings(reject_calls=True).stored())
        assert await account.add_call("s", "C1", A, False, {"callId": "C1"})
        assert not await account.add_call("s", "C1", A, False, {"callId": "C1"})  # once per id
        assert await account.call_rejected("s", "C1", {})
        assert not await account.call_rejected("s", "C1", {})
        await store.delete_session("s")
        assert await account.settings("s") == {}
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "w.db")
    assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (0,)


async def test_the_migration_fills_chats_from_existing_history(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "w.db")
    for number, script in enumerate(MIGRATIONS[:6], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    db.execute(
        "INSERT INTO messages (session_id, id, direction, chat, type, timestamp, status, updated_at)"
        " VALUES ('s', 'x', 'out', ?, 'text', 5, 'sent', 5), ('s', 'y', 'in', ?, 'text', 7, 'received', 7)",
        (A, A),
    )
    db.commit()
    db.close()
    store = await Store.open(tmp_path / "w.db")
    try:
        chats, total = await AccountStore(store).chats("s", limit=10, offset=0)
        assert total == 1 and (chats[0].chat, chats[0].unread, chats[0].last_activity) == (A, 1, 7.0)
    finally:
        await store.close()


def test_settings_records_keep_what_a_newer_version_wrote() -> None:
    stored = {"rejectCalls": "yes", "futureSetting": {"x": 3}, "pacing": {"gap": 3, "coldGap": "fast", "later": 1}}
    settings = SessionSettings.from_stored(stored)
    assert settings.reject_calls is False  # a mistyped value reads as its default
    assert settings.pacing == {"gap": 3}  # pacing settings this version knows, with a number or a flag
    assert settings.changed({"rejectCalls": True}).stored() == {
        "futureSetting": {"x": 3},
        "pacing": {"gap": 3},
        "rejectCalls": True,
    }
    assert settings.changed({"pacing": {"gap": None, "typing": True}}).pacing == {"typing": True}

"""A session process names only its own files: the supervisor uploads media from the session's own
media folder, never a file elsewhere that the worker could read (its database, another session's keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from common.media_names import MEDIA_DIR
from supervisor.database.store import Store
from supervisor.sessions.incoming import IncomingMessages
from supervisor.sessions.session import Session
from transport import wire


class RecordingStorage:
    """Stands in for SessionStorage: records what it was asked to upload."""

    def __init__(self) -> None:
        self.uploaded: list[Path] = []

    async def put_media(self, session_id: str, path: Path, *, content_type: str | None, name: str) -> str:
        self.uploaded.append(path)
        return f"media/{session_id}/{name}"

    async def media_url(self, key: str) -> str:
        return f"https://media.example/{key}"


@pytest.mark.parametrize(
    "name",
    ["elsewhere", "link_out", "dot_dot", "relative", "other_session", "folder"],
)
async def test_media_named_outside_the_sessions_folder_is_not_taken(tmp_path: Path, name: str) -> None:
    sessions = tmp_path / "sessions"
    media = sessions / "s1" / MEDIA_DIR
    media.mkdir(parents=True)
    (sessions / "s2" / MEDIA_DIR).mkdir(parents=True)
    secret = tmp_path / "worker.db"
    secret.write_bytes(b"webhook secrets")
    (media / "real.jpg").write_bytes(b"jpeg")
    (sessions / "s2" / MEDIA_DIR / "theirs.jpg").write_bytes(b"jpeg")
    os.symlink(secret, media / "link.jpg")
    (media / "sub").mkdir()
    named = {
        "elsewhere": str(secret),
        "link_out": str(media / "link.jpg"),
        "dot_dot": f"{media}/../../../worker.db",
        "relative": "worker.db",
        "other_session": str(sessions / "s2" / MEDIA_DIR / "theirs.jpg"),
        "folder": str(media / "sub"),
    }[name]
    store = await Store.open(tmp_path / "w.db")
    storage = RecordingStorage()
    incoming = IncomingMessages(store, storage, worker_id="w", sessions_dir=sessions)  # type: ignore[arg-type]
    session: Any = Session.__new__(Session)
    session.id, session.messages_in, session.message_count = "s1", 0, 0
    try:
        for message_id, path in (("bad", named), ("good", str(media / "real.jpg"))):
            message = wire.IncomingMessage(
                id=message_id, chat="628@s.whatsapp.net", sender="628@s.whatsapp.net", to="629@s.whatsapp.net",
                type="image", timestamp=1.0, media_path=path, mimetype="image/jpeg",
            )  # fmt: skip
            await incoming.receive(session, message)
        assert storage.uploaded == [media / "real.jpg"]  # the session's own file only
        bad = await store.message("s1", "bad")
        assert bad is not None and bad.media_ref is None  # committed all the same, without media
        good = await store.message("s1", "good")
        assert good is not None and good.media_ref == "media/s1/in-good.jpg"
    finally:
        await store.close()

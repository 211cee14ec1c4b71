"""History retention (MESSAGE_RETENTION_DAYS): old messages leave with their media, waiting ones stay."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import cast

import pytest

from supervisor.config import load
from supervisor.database.store import MessageRow, OutboxRow, Store
from supervisor.messaging.media_removal import remove_message_media
from supervisor.messaging.retention import HistoryRetention
from supervisor.storage.service import SessionStorage, StorageError, build_storage

TOKEN = "t" * 32
DAY = 86400.0


def _incoming(message_id: str, age_days: float, media_ref: str | None = None) -> MessageRow:
    at = time.time() - age_days * DAY
    return MessageRow("s1", message_id, "in", "c", "c", "me", "image", at, "received", media_ref=media_ref)


async def test_old_history_is_removed_with_its_media_but_never_a_waiting_message(tmp_path: Path) -> None:
    settings = load({"STORAGE_DIR": str(tmp_path), "WORKER_AUTH_TOKEN": TOKEN, "MESSAGE_RETENTION_DAYS": "30"})
    assert settings.message_retention_days == 30
    storage = build_storage(settings, TOKEN)
    await storage.start()
    store = await Store.open(tmp_path / "worker.db")
    try:
        media = tmp_path / "photo.png"
        media.write_bytes(b"\x89PNG old")
        key = await storage.put_media("s1", media, content_type="image/png", name="in-OLD1.png")
        local = tmp_path / "sessions" / "s1" / "media" / "OLD2.png"  # its upload had failed
        local.parent.mkdir(parents=True)
        local.write_bytes(b"\x89PNG kept locally")
        for row in (_incoming("OLD1", 40, key), _incoming("OLD2", 40), _incoming("NEW", 1)):
            await store.add_incoming(row, {"message": {}})
        waiting = MessageRow("s1", "OUT", "out", "c", None, "c", "text", time.time() - 40 * DAY, "pending", text="x")
        await store.accept_outgoing(waiting, OutboxRow("s1", "OUT", {"to": "c", "text": "x"}, 0, 0.0, 1e12, 0.0))

        removed: list[tuple[str, int]] = []
        retention = HistoryRetention(
            store,
            storage,
            tmp_path / "sessions",
            days=30,
            on_removed=lambda sid, n: removed.append((sid, n)),
        )
        assert await retention.sweep() == 2
        assert removed == [("s1", 2)]
        assert await store.message("s1", "OLD1") is None and await store.message("s1", "OLD2") is None
        assert await store.message("s1", "NEW") is not None and await store.message("s1", "OUT") is not None
        assert await storage.objects.get(settings.media_bucket, key) is None and not local.exists()
        assert store.tally.figures(time.time()).purged == 2
        assert await retention.sweep() == 0
    finally:
        await store.close()
        await storage.close()


def test_retention_is_off_by_default() -> None:
    assert load({"WORKER_AUTH_TOKEN": TOKEN}).message_retention_days is None
    assert load({"WORKER_AUTH_TOKEN": TOKEN, "MESSAGE_RETENTION_DAYS": "0"}).message_retention_days is None


class _RefusingStorage:
    async def remove_media(self, key: str) -> None:
        raise StorageError("object storage unreachable")


async def test_media_that_cannot_be_removed_is_logged_once_with_its_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = tmp_path / "sessions" / "s1" / "media" / "IN1.png"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"\x89PNG")
    storage = cast(SessionStorage, _RefusingStorage())
    with caplog.at_level(logging.WARNING, logger="supervisor.messaging.media"):
        await remove_message_media(
            storage, tmp_path / "sessions", _incoming("IN1", 0, "media/s1/in-IN1.png"), why="revoked"
        )
    [record] = caplog.records  # no exception: the caller (a revoke, a sweep) goes on
    assert getattr(record, "sessionId", None) == "s1" and "revoked message IN1" in record.getMessage()
    assert not local.exists()  # the local copy still goes

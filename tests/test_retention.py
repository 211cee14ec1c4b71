"""History retention (MESSAGE_RETENTION_DAYS): old messages leave with their media, waiting ones stay."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import cast

import pytest
from harness import wait_for

from common.tasks import cancel_and_wait
from supervisor.config import load
from supervisor.database.store import MessageRow, OutboxRow, Store
from supervisor.messaging.media_removal import MediaRemovals
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
            MediaRemovals(store, storage, tmp_path / "sessions"),
            days=30,
            on_removed=lambda sid, n: removed.append((sid, n)),
        )
        assert await retention.sweep() == 2
        assert removed == [("s1", 2)]
        assert await store.message("s1", "OLD1") is None and await store.message("s1", "OLD2") is None
        assert await store.message("s1", "NEW") is not None and await store.message("s1", "OUT") is not None
        assert await storage.objects.get(settings.media_bucket, key) is None and not local.exists()
        assert await store.media_removals() == []  # each queued removal landed and left the queue
        assert store.tally.figures(time.time()).purged == 2
        assert await retention.sweep() == 0
    finally:
        await store.close()
        await storage.close()


def test_retention_is_off_by_default() -> None:
    assert load({"WORKER_AUTH_TOKEN": TOKEN}).message_retention_days is None
    assert load({"WORKER_AUTH_TOKEN": TOKEN, "MESSAGE_RETENTION_DAYS": "0"}).message_retention_days is None


class _FlakyStorage:
    """Object storage that refuses every removal while ``down``, and records those it took."""

    def __init__(self) -> None:
        self.down = True
        self.removed: list[str] = []

    async def remove_media(self, key: str) -> None:
        if self.down:
            raise StorageError("object storage unreachable")
        self.removed.append(key)


def _revoked_photo(message_id: str, media_ref: str | None) -> MessageRow:
    """A received photo, its media in storage (``media_ref``) or only in the session's folder."""
    row = _incoming(message_id, 0, media_ref)
    row.mimetype = "image/png"
    return row


async def test_media_that_cannot_be_removed_is_logged_once_with_its_session_and_kept_queued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = tmp_path / "sessions" / "s1" / "media" / "IN1.png"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"\x89PNG")
    storage = _FlakyStorage()
    store = await Store.open(tmp_path / "w.db")
    removals = MediaRemovals(store, cast(SessionStorage, storage), tmp_path / "sessions")
    revoked: list[MessageRow] = []
    store.on_media_revoked = revoked.append
    try:
        for message_id in ("IN1", "IN2"):
            await store.add_incoming(_revoked_photo(message_id, f"media/s1/in-{message_id}.png"), {"message": {}})
            await store.apply_message_change("s1", message_id, kind="revoke", chat="c", by="c", text=None, at=1.0)
        with caplog.at_level(logging.WARNING, logger="supervisor.messaging.media"):
            for message in revoked:  # what the registry starts after each revoke's commit
                await removals.remove_revoked(message)
        # No exception (the caller, a revoke or a sweep, goes on): one warning per failed removal.
        assert [getattr(r, "sessionId", None) for r in caplog.records] == ["s1", "s1"]
        assert "revoked message IN1" in caplog.records[0].getMessage()
        assert not local.exists()  # the local copy still goes
        assert [(r.message_id, r.media_ref) for r in await store.media_removals()] == [
            ("IN1", "media/s1/in-IN1.png"),
            ("IN2", "media/s1/in-IN2.png"),
        ]
        # A pass while storage is still down stops at its first failure: one warning, not one per row.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="supervisor.messaging.media"):
            await removals.retry()
        assert len(caplog.records) == 1 and len(await store.media_removals()) == 2

        storage.down = False
        retention = HistoryRetention(store, removals, days=None, on_removed=lambda sid, n: None)
        assert await retention.sweep() == 0  # no retention configured: only the queue is worked through
        assert storage.removed == ["media/s1/in-IN1.png", "media/s1/in-IN2.png"]
        assert await store.media_removals() == []
    finally:
        await store.close()


async def test_a_revoke_whose_removal_never_ran_is_removed_at_the_next_start(tmp_path: Path) -> None:
    settings = load({"STORAGE_DIR": str(tmp_path), "WORKER_AUTH_TOKEN": TOKEN})
    storage = build_storage(settings, TOKEN)
    await storage.start()
    media = tmp_path / "photo.png"
    media.write_bytes(b"\x89PNG revoked")
    key = await storage.put_media("s1", media, content_type="image/png", name="in-IN1.png")
    local = tmp_path / "sessions" / "s1" / "media" / "IN2.png"  # its upload had failed
    local.parent.mkdir(parents=True)
    local.write_bytes(b"\x89PNG kept locally")
    store = await Store.open(tmp_path / "worker.db")
    try:
        # The revokes commit, and the worker stops before their removal runs (nothing handles
        # on_media_revoked: as if the registry's task were cancelled, or the worker killed).
        for message_id, ref in (("IN1", key), ("IN2", None)):
            await store.add_incoming(_revoked_photo(message_id, ref), {"message": {}})
            revoked = await store.apply_message_change(
                "s1", message_id, kind="revoke", chat="c", by="c", text=None, at=1.0
            )
            assert revoked
    finally:
        await store.close()
    assert await storage.objects.get(settings.media_bucket, key) is not None and local.exists()

    store = await Store.open(tmp_path / "worker.db")  # the next start
    try:
        retention = HistoryRetention(
            store, MediaRemovals(store, storage, tmp_path / "sessions"), days=None, on_removed=lambda sid, n: None
        )
        task = asyncio.create_task(retention.run())  # as the registry starts it: the first sweep right away

        async def removed() -> bool:
            return await store.media_removals() == []

        try:
            await wait_for(removed, what="the queued removals done at start")
        finally:
            await cancel_and_wait(task)
        assert await storage.objects.get(settings.media_bucket, key) is None and not local.exists()
    finally:
        await store.close()
        await storage.close()

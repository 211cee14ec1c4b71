"""A message's media leaving with the message: past MESSAGE_RETENTION_DAYS, or deleted for everyone.

Its media is the object in storage (``media_ref``) and, for a received message whose upload failed, the
copy the session process left in the session's media folder (STORAGE_DIR/sessions/<id>/media).

The store queues each removal (the ``media_removals`` table) in the same transaction as the revoke or
purge that drops the media from history, and a queue row goes only once its media is gone. So a removal
that failed (object storage down) or never ran (the worker stopped or was killed right after the commit)
is done by a later pass: at start and with every history retention sweep (``retention.py``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from common.media_names import MEDIA_DIR, media_stem
from supervisor.database.store import MediaRemoval, MessageRow, Store
from supervisor.storage.service import SessionStorage, StorageError

log = logging.getLogger("supervisor.messaging.media")


class MediaRemovals:
    """Removes queued media (the object, the local copy), then its queue row."""

    def __init__(self, store: Store, storage: SessionStorage | None, sessions_dir: Path) -> None:
        self.store = store
        self.storage = storage
        self.sessions_dir = sessions_dir  # STORAGE_DIR/sessions: received media not yet in storage

    async def remove_revoked(self, message: MessageRow) -> None:
        """A committed revoke's media (``message`` as it was before), right away: its queue row is the
        one the revoke wrote."""
        row = await self.store.media_removals_of(message.session_id, message.id)
        if row is not None:
            await self.remove(row, why="revoked")

    async def remove(self, removal: MediaRemoval, *, why: str) -> bool:
        """Delete the removal's object and local copy, then its queue row. A failure keeps the row (a
        later pass tries again) and is logged once, with the session (``why``: purged, revoked).

        False when object storage failed: a pass over the queue stops there, since the rest would fail
        the same way and log once each.
        """
        extra = {"sessionId": removal.session_id}
        kept = False
        if removal.local:
            try:
                await asyncio.to_thread(_remove_local_media, self.sessions_dir / removal.session_id, removal.message_id)
            except OSError as exc:
                log.warning(
                    "local media of %s message %s not removed: %s", why, removal.message_id, exc.strerror, extra=extra
                )
                kept = True
        if removal.media_ref and self.storage is not None:
            try:
                await self.storage.remove_media(removal.media_ref)  # an object already gone is no error
            except StorageError as exc:
                log.warning("media of %s message %s not removed: %s", why, removal.message_id, exc, extra=extra)
                return False
        if not kept:
            await self.store.media_removed(removal)
        return True

    async def retry(self) -> int:
        """Remove what is queued, oldest first, until object storage fails; how many were gone through."""
        done, after = 0, 0
        while pending := await self.store.media_removals(after=after):
            for removal in pending:
                if not await self.remove(removal, why="queued"):
                    return done
                done += 1
            after = pending[-1].seq
        return done


def _remove_local_media(session_dir: Path, message_id: str) -> None:
    """A received message's copy in the session's media folder (kept when its upload failed)."""
    for path in (session_dir / MEDIA_DIR).glob(f"{media_stem(message_id)}.*"):
        path.unlink(missing_ok=True)

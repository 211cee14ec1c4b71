"""A message's media leaving with the message: past MESSAGE_RETENTION_DAYS, or deleted for everyone.

Its media is the object in storage (``media_ref``) and, for a received message whose upload failed, the
copy the session process left in the session's media folder (STORAGE_DIR/sessions/<id>/media).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from common.media_names import MEDIA_DIR, media_stem
from supervisor.database.store import MessageRow
from supervisor.storage.service import SessionStorage, StorageError

log = logging.getLogger("supervisor.messaging.media")


async def remove_message_media(
    storage: SessionStorage | None, sessions_dir: Path, message: MessageRow, *, why: str
) -> None:
    """Delete ``message``'s media object and local copy; a failure is logged once (``why``: purged, revoked)
    and left there: history no longer names it, so nothing would serve it."""
    extra = {"sessionId": message.session_id}
    if message.media_ref and storage is not None:
        try:
            await storage.remove_media(message.media_ref)
        except StorageError as exc:
            log.warning("media of %s message %s not removed: %s", why, message.id, exc, extra=extra)
    if message.direction == "in":
        try:
            await asyncio.to_thread(_remove_local_media, sessions_dir / message.session_id, message.id)
        except OSError as exc:
            log.warning("local media of %s message %s not removed: %s", why, message.id, exc.strerror, extra=extra)


def _remove_local_media(session_dir: Path, message_id: str) -> None:
    """A received message's copy in the session's media folder (kept when its upload failed)."""
    for path in (session_dir / MEDIA_DIR).glob(f"{media_stem(message_id)}.*"):
        path.unlink(missing_ok=True)

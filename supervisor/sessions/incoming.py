"""Messages a session process received: their media moved into object storage, then committed to history."""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from pathlib import Path

from common.media_names import MEDIA_DIR
from supervisor.database.store import MessageRow, Store
from supervisor.messaging.history import incoming_row, message_view
from supervisor.sessions.session import Session
from supervisor.storage.service import SessionStorage, StorageError
from transport import wire

log = logging.getLogger("supervisor.sessions")


class IncomingMessages:
    """Commits received messages (and their media) before the session process may acknowledge them."""

    def __init__(self, store: Store, storage: SessionStorage | None, *, worker_id: str, sessions_dir: Path) -> None:
        self.store = store
        self.storage = storage  # None: media stays where the session process wrote it (unit tests)
        self.sessions_dir = sessions_dir
        self._log_extra = {"workerId": worker_id}

    async def receive(self, session: Session, message: wire.IncomingMessage) -> None:
        """Commit one received message; a duplicate changes nothing."""
        extra = {"sessionId": session.id, **self._log_extra}
        row = incoming_row(session.id, message)
        view = message_view(row)
        if row.media_ref is not None and not await asyncio.to_thread(self._own_file, session.id, row.media_ref):
            # A session process is less trusted than the supervisor: it may name its own media only, or it
            # could have the supervisor upload (and hand out a URL to) any file the worker can read.
            log.error("message %s names media outside its session's folder: not taken", row.id, extra=extra)
            row.media_ref = None
        if row.media_ref is not None:
            row.media_ref, view["mediaUrl"] = await self._store_media(session.id, row)
        # Committed before we answer: only then does the process acknowledge it to the network.
        if await self.store.add_incoming(row, {"message": view}):
            session.messages_in += 1
            session.message_count += 1
            # Never the text: logs are read by people who must not read customers' messages.
            log.info("message received: id %s type %s", row.id, row.type, extra=extra)
        else:
            log.info("duplicate message %s ignored", row.id, extra=extra)

    async def change(self, session: Session, change: wire.MessageChange) -> None:
        """Commit someone's edit or revoke of a message with its event, before the process acknowledges it."""
        extra = {"sessionId": session.id, **self._log_extra}
        if change.kind not in ("edit", "revoke"):
            log.error("change %s of message %s has an unknown kind: ignored", change.id, change.target, extra=extra)
            return
        at = change.timestamp if change.timestamp > 0 else time.time()
        applied = await self.store.apply_message_change(
            session.id, change.target, kind=change.kind, chat=change.chat, by=change.sender, text=change.text, at=at
        )
        if applied:
            log.info("message %s: %s by its sender", change.target, change.kind, extra=extra)
        else:
            log.warning(
                "message %s: %s refused (not the sender's, or revoked)", change.target, change.kind, extra=extra
            )

    def _own_file(self, session_id: str, named: str) -> bool:
        """Whether ``named`` is a regular file in the session's media folder, reached without a link."""
        folder = (self.sessions_dir / session_id / MEDIA_DIR).resolve()
        path = Path(named)
        if not path.is_absolute() or path.resolve() != path or path.parent != folder:
            return False  # relative, through a link or "..", or elsewhere
        try:
            return stat.S_ISREG(path.lstat().st_mode)
        except OSError:
            return False

    async def _store_media(self, session_id: str, row: MessageRow) -> tuple[str | None, str | None]:
        """Move a received message's media (a file the session process wrote) into object storage.

        Returns the object key and a URL for it; (None, None) when storage refused it: the message
        is still committed (a message is never lost for its attachment), without a mediaUrl. Once
        stored, the session's local copy is deleted (a disk would fill with every attachment twice);
        when the upload failed the copy stays in the session's media folder, the only one there is.
        """
        local = Path(row.media_ref or "")
        if self.storage is None:
            return None, None
        extra = {"sessionId": session_id, **self._log_extra}
        try:
            key = await self.storage.put_media(
                session_id, local, content_type=row.mimetype, name=f"in-{row.id}{local.suffix}"
            )
        except (StorageError, OSError) as exc:
            log.warning("media of message %s not stored; kept at %s: %s", row.id, local.name, exc, extra=extra)
            return None, None
        try:
            await asyncio.to_thread(local.unlink, True)
        except OSError as exc:
            log.warning("stored media of message %s not removed locally: %s", row.id, exc.strerror, extra=extra)
        try:
            return key, await self.storage.media_url(key)
        except StorageError as exc:
            log.warning("no URL for the media of message %s: %s", row.id, exc, extra=extra)
            return key, None

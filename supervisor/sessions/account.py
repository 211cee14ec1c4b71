"""Account operations of a session, between the routes and the session's process: read receipts,
presence, settings, the chat list, and what the process reports of presence and calls.

Reached through the registry (``SessionRegistry.account``). A call is committed (``call.received``)
before the process may acknowledge it, and the answer tells the process whether to reject it
(``rejectCalls``, read from the database, so it holds across worker and process restarts);
presence is ephemeral on the wire (an unanswered event) and becomes an event of the log as it comes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from supervisor.database.account_store import AccountStore, ChatRow
from supervisor.messaging.history import message_view
from supervisor.sessions.session import SessionError
from supervisor.sessions.settings import SessionSettings
from supervisor.timefmt import iso
from transport import wire

if TYPE_CHECKING:
    from supervisor.sessions.registry import SessionRegistry

log = logging.getLogger("supervisor.sessions")

# WhatsApp's own engine codes an account operation passes through to the client (else ENGINE_ERROR).
ENGINE_CODES = frozenset({"INVALID_RECIPIENT"})


class AccountOperations:
    """Read receipts, presence, settings, chats and calls of the registry's sessions."""

    def __init__(self, registry: SessionRegistry, store: AccountStore) -> None:
        self.registry = registry
        self.store = store
        self._settings_lock = asyncio.Lock()  # read-modify-write of a settings record

    # -- commands from routes ------------------------------------------------------------------
    async def mark_read(self, session_id: str, chat: str, ids: list[str]) -> tuple[list[str], list[str]]:
        """Send read receipts for the received messages of ``chat`` among ``ids``; returns the ids
        read and the ids unknown (not a received message of that chat: nothing is sent for them)."""
        self.registry.get(session_id)
        asked = list(dict.fromkeys(ids))  # in the request's order, once each
        found = {t.id: t for t in await self.store.received(session_id, chat, asked)}
        known = [found[i] for i in asked if i in found]
        unknown = [i for i in asked if i not in found]
        if known:
            request = wire.MarkRead(chat=chat, messages=[wire.ReadMessage(id=t.id, sender=t.sender) for t in known])
            await self.registry.ask(session_id, request, passthrough=ENGINE_CODES)
            await self.store.mark_read(session_id, chat, max(t.timestamp for t in known))
        else:
            self._require_connected(session_id)
        return [t.id for t in known], unknown

    async def send_presence(self, session_id: str, state: str, chat: str | None) -> None:
        """Show the account available/unavailable, or a chat state in ``chat``."""
        await self.registry.ask(session_id, wire.SendPresence(state=state, chat=chat), passthrough=ENGINE_CODES)

    async def settings(self, session_id: str) -> SessionSettings:
        """The session's settings (defaults where none was set)."""
        self.registry.get(session_id)
        return SessionSettings.from_stored(await self.store.settings(session_id))

    async def update_settings(self, session_id: str, changes: dict[str, Any]) -> SessionSettings:
        """Change some settings; the others keep their values. Kept across restarts."""
        self.registry.get(session_id)
        async with self._settings_lock:
            updated = SessionSettings.from_stored(await self.store.settings(session_id)).changed(changes)
            await self.store.save_settings(session_id, updated.stored())
            self.registry.settings_changed(session_id, updated)
        log.info("settings changed: %s", ", ".join(sorted(changes)), extra=self.registry.extra(session_id))
        return updated

    async def chats(self, session_id: str, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of chats as answers show them, latest activity first, and how many there are."""
        self.registry.get(session_id)
        rows, total = await self.store.chats(session_id, limit=limit, offset=offset)
        return [_chat_view(row) for row in rows], total

    def _require_connected(self, session_id: str) -> None:
        session = self.registry.get(session_id)
        if session.status != "connected":
            raise SessionError("SESSION_NOT_CONNECTED", f"session {session_id!r} is {session.status}, not connected")

    # -- what session processes report -----------------------------------------------------------
    async def on_call(self, session_id: str, call: wire.IncomingCall) -> wire.CallDecision:
        """Commit ``call.received`` (once per call id) and say whether to reject the call."""
        event = {"callId": call.id, "from": call.sender, "video": call.video, "at": iso(call.timestamp or None)}
        if await self.store.add_call(session_id, call.id, call.sender, call.video, event):
            log.info(
                "call %s received (%s)", call.id, "video" if call.video else "voice", extra=self._extra(session_id)
            )
        settings = SessionSettings.from_stored(await self.store.settings(session_id))
        return wire.CallDecision(reject=settings.reject_calls)

    async def on_call_rejected(self, session_id: str, request: wire.CallRejected) -> None:
        """Commit ``call.rejected`` (once per call id)."""
        if await self.store.call_rejected(session_id, request.id, {"callId": request.id, "from": request.sender}):
            log.info("call %s rejected (rejectCalls)", request.id, extra=self._extra(session_id))

    async def on_presence(self, session_id: str, event: wire.ChatPresence | wire.PresenceUpdate) -> None:
        """A presence the session saw, as an event of the log."""
        match event:
            case wire.ChatPresence(chat=chat, sender=sender, state=state):
                await self.registry.store.add_event(
                    session_id, "chat.presence", {"chat": chat, "from": sender, "state": state}
                )
            case wire.PresenceUpdate(jid=jid, online=online, last_seen=last_seen):
                await self.registry.store.add_event(
                    session_id, "presence.update", {"jid": jid, "online": online, "lastSeen": iso(last_seen)}
                )

    def _extra(self, session_id: str) -> dict[str, str]:
        return self.registry.extra(session_id)


def _chat_view(row: ChatRow) -> dict[str, Any]:
    return {
        "jid": row.chat,
        "lastMessage": message_view(row.last_message) if row.last_message is not None else None,
        "unread": row.unread,
        "lastActivity": iso(row.last_activity),
    }

"""The sim engine's account operations: read receipts, presence, and calls (rejected when asked to).

A mixin of :class:`session_proc.sim.engine.SimEngine`: requests go to the hub over the engine's
current link; presence events from the hub are reported and forgotten; a call is handed to the
supervisor (committed there), rejected at the hub when the supervisor says so, and only then
acknowledged to the hub, which redelivers an unacknowledged call on the next connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from session_proc.engine import EngineError, IncomingCall, ReadMessage
from session_proc.sim import ops
from session_proc.sim.jids import is_group, jid, phone_of
from transport.channel import DealerChannel, PeerGone

if TYPE_CHECKING:
    from session_proc.engine import EngineContext

log = logging.getLogger("sim.engine")


class SimAccount:
    """Read receipts, presence and calls on the simulated network."""

    ctx: EngineContext
    _request_timeout: float

    async def hub_request(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError  # the engine's: one request to the hub while online

    async def mark_read(self, chat: str, messages: list[ReadMessage]) -> None:
        """Read receipts for ``messages`` of ``chat``: one request per sender, as WhatsApp sends them
        (in a group each goes to the participant who sent the message)."""
        target = _chat(chat)
        by_sender: dict[str, list[str]] = {}
        for message in messages:
            sender = phone_of(message.sender) if is_group(target) else target
            if sender is None:
                raise EngineError("INVALID_RECIPIENT", f"{message.sender!r} is not a user JID: no sender to tell")
            by_sender.setdefault(sender, []).append(message.id)
        for sender, ids in by_sender.items():
            await self.hub_request(ops.READ, {"chat": target, "sender": sender, "ids": ids})

    async def send_presence(self, state: str, chat: str | None) -> None:
        """The account's presence, or a chat state shown in ``chat`` (a person or a group)."""
        body: dict[str, Any] = {"state": state}
        if chat is not None:
            body["to"] = _chat(chat)
        await self.hub_request(ops.PRESENCE, body)

    async def _on_account_event(self, channel: DealerChannel, op: str, body: dict[str, Any]) -> None:
        """A presence or call event from the hub."""
        sender = body.get("from")
        if not isinstance(sender, str) or phone_of(sender) is None:
            log.warning("session %s: %s event without a sender dropped", self.ctx.session_id, op)
            return
        sender_jid = jid(sender)
        if op == ops.CHAT_PRESENCE:
            state = body.get("state")
            if isinstance(state, str):
                self.ctx.sink.on_chat_presence(sender_jid, sender_jid, state)
        elif op == ops.PRESENCE_UPDATE:
            last_seen = body.get("lastSeen")
            self.ctx.sink.on_presence(
                sender_jid, bool(body.get("online")), float(last_seen) if isinstance(last_seen, int | float) else None
            )
        elif op == ops.CALL:
            await self._on_call(channel, sender_jid, body)

    async def _on_call(self, channel: DealerChannel, sender: str, body: dict[str, Any]) -> None:
        call_id, timestamp = body.get("id"), body.get("timestamp")
        if not isinstance(call_id, str) or not call_id:
            return
        call = IncomingCall(
            id=call_id,
            sender=sender,
            video=body.get("video") is True,
            timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
        )
        try:
            reject = await self.ctx.sink.on_call(call)
            if reject:
                await channel.request(ops.REJECT_CALL, {"id": call_id}, timeout=self._request_timeout)
                await self.ctx.sink.on_call_rejected(call_id, sender)
        except Exception as exc:
            # Not acknowledged: the hub offers the call again on the next connection, and both
            # the commit and the rejection are idempotent.
            log.warning("session %s: call %s not taken over: %s", self.ctx.session_id, call_id, exc)
            return
        try:
            channel.emit(ops.CALL_ACK, {"id": call_id})
        except PeerGone:
            log.info("session %s: ack of call %s not sent; it will be offered again", self.ctx.session_id, call_id)


def _chat(address: str) -> str:
    """A chat as the hub names it: a person's number, or a group's JID; INVALID_RECIPIENT otherwise."""
    if is_group(address):
        return address
    phone = phone_of(address)
    if phone is None:
        raise EngineError("INVALID_RECIPIENT", f"{address!r} is not a user JID (628123@s.whatsapp.net) or a group JID")
    return phone

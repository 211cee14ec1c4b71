"""What session processes say: the one place where their events and requests are dispatched.

Frames come from the supervisor's ROUTER, addressed by routing identity; a frame
from an identity that is not a current incarnation of a hosted session is dropped
(events) or refused (requests). Status events are decoded here and applied by the
registry through the status machine (``supervisor.sessions.status``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from supervisor.sessions import status as st
from supervisor.sessions.group_events import commit_group_event
from supervisor.sessions.session import Session
from transport import wire
from transport.channel import Body, RemoteError
from transport.identity import parse_routing_identity

if TYPE_CHECKING:
    from supervisor.sessions.registry import SessionRegistry

log = logging.getLogger("supervisor.sessions")


def status_event(event: wire.Event, now: float) -> st.ChildEvent | None:
    """The status machine's event for a session process's event; None: not a status event."""
    match event:
        case wire.Ready():
            return st.Ready(now)
        case wire.Qr(qr=qr, expires_at=expires_at):
            return st.QrShown(now, qr=qr or None, expires_at=expires_at)
        case wire.Connected(phone=phone, push_name=push_name):
            return st.Connected(now, phone=phone or None, push_name=push_name)
        case wire.Disconnected(reason=reason, will_retry=will_retry):
            return st.Disconnected(now, reason=reason or "disconnected", will_retry=will_retry)
        case wire.LoggedOut(reason=reason):
            return st.LoggedOut(now, reason=reason or "logged out")
    return None


class ChildListener:
    """Receives the events and requests of every session process for the registry."""

    def __init__(self, registry: SessionRegistry) -> None:
        self.registry = registry

    def _session_of(self, identity: bytes) -> Session | None:
        registry = self.registry
        parsed = parse_routing_identity(identity)
        if parsed is None:
            log.warning("frame from unknown identity %r dropped", identity[:80], extra=registry.log_extra)
            return None
        session_id, incarnation = parsed
        session = registry.sessions.get(session_id)
        if session is None or session.child.incarnation != incarnation:
            log.info("frame from stale incarnation %d dropped", incarnation, extra=registry.extra(session_id))
            return None
        return session

    async def on_event(self, identity: bytes, op: str, body: Body) -> None:
        """An event from a session process."""
        session = self._session_of(identity)
        if session is None:
            return
        now = time.time()
        session.last_seen = now
        registry = self.registry
        try:
            event = wire.decode_event(op, body)
        except wire.WireError as exc:
            wire.refuse(log, exc, registry.extra(session.id))  # an event has nobody to answer: dropped
            return
        match event:
            case wire.Receipt(id=message_id, status=status, by=by):
                await registry.store.apply_receipt(session.id, message_id, status, by=by)
            case wire.ChatPresence() | wire.PresenceUpdate():
                await registry.account.on_presence(session.id, event)
            case wire.Creds():
                log.info("credentials changed", extra=registry.extra(session.id))
                if registry.storage is not None:
                    registry.storage.on_creds(session.id)
            case _:
                changed = status_event(event, now)
                if changed is not None:
                    registry.apply_status(session, changed)

    async def on_request(self, identity: bytes, op: str, body: Body) -> wire.Reply:
        """A request from a session process (it waits for our answer)."""
        session = self._session_of(identity)
        if session is None:
            raise RemoteError("STALE", "this incarnation is no longer current")
        now = time.time()
        session.last_seen = now
        try:
            request = wire.decode_supervisor_request(op, body)
        except wire.WireError as exc:
            raise wire.refuse(log, exc, self.registry.extra(session.id)) from None
        match request:
            case wire.IncomingMessage():
                await self.registry.incoming.receive(session, request)
            case wire.PollVote():
                await self.registry.poll_votes.receive(session, request)
            case wire.MessageChange():
                await self.registry.incoming.change(session, request)
            case wire.GroupEvent():
                await commit_group_event(self.registry.store, session.id, request)
            case wire.Fatal(code=code, error=error):
                self.registry.apply_status(session, st.ChildFailed(now, code=code, error=error))
            case wire.IncomingCall():
                return await self.registry.account.on_call(session.id, request)
            case wire.CallRejected():
                await self.registry.account.on_call_rejected(session.id, request)
        return wire.Done()

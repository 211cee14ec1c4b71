"""What session processes say: the one place where their events and requests are dispatched.

Frames come from the supervisor's ROUTER, addressed by routing identity; a frame
from an identity that is not a current incarnation of a hosted session is dropped
(events) or refused (requests). Status events are decoded here and applied by the
registry through the status machine (``supervisor.sessions.status``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from supervisor.sessions import status as st
from supervisor.sessions.session import Session
from transport.channel import RemoteError
from transport.identity import parse_routing_identity

if TYPE_CHECKING:
    from supervisor.sessions.registry import SessionRegistry

log = logging.getLogger("supervisor.sessions")


def _text(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` as text; None when it is missing or empty."""
    return str(body.get(key) or "") or None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def status_event(op: str, body: dict[str, Any], now: float) -> st.ChildEvent | None:
    """The status machine's event for a session process's event ``op``; None: not a status event."""
    if op == "ready":
        return st.Ready(now)
    if op == "qr":
        return st.QrShown(now, qr=_text(body, "qr"), expires_at=_float_or_none(body.get("expiresAt")))
    if op == "connected":
        push_name = body.get("pushName")
        return st.Connected(
            now, phone=_text(body, "phone"), push_name=push_name if isinstance(push_name, str) else None
        )
    if op == "disconnected":
        return st.Disconnected(
            now, reason=_text(body, "reason") or "disconnected", will_retry=bool(body.get("willRetry"))
        )
    if op == "logged_out":
        return st.LoggedOut(now, reason=_text(body, "reason") or "logged out")
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

    async def on_event(self, identity: bytes, op: str, body: dict[str, Any]) -> None:
        """An event from a session process."""
        session = self._session_of(identity)
        if session is None:
            return
        now = time.time()
        session.last_seen = now
        registry = self.registry
        if op == "receipt":
            message_id, status = body.get("id"), body.get("status")
            if isinstance(message_id, str) and isinstance(status, str):
                await registry.store.apply_receipt(session.id, message_id, status)
        elif op == "creds":
            log.info("credentials changed", extra=registry.extra(session.id))
            if registry.storage is not None:
                registry.storage.on_creds(session.id)
        elif (event := status_event(op, body, now)) is not None:
            registry.apply_status(session, event)
        else:
            log.warning("unknown event %r from session process", op, extra=registry.extra(session.id))

    async def on_request(self, identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A request from a session process (it waits for our answer)."""
        session = self._session_of(identity)
        if session is None:
            raise RemoteError("STALE", "this incarnation is no longer current")
        now = time.time()
        session.last_seen = now
        if op == "message":
            await self.registry.incoming.receive(session, body)
            return {}
        if op == "fatal":
            failed = st.ChildFailed(now, code=_text_or_none(body, "code"), error=_text_or_none(body, "error"))
            self.registry.apply_status(session, failed)
            return {}
        raise RemoteError("UNKNOWN_OP", f"unknown request {op!r}")


def _text_or_none(body: dict[str, Any], key: str) -> str | None:
    """``body[key]`` as text, None only when it is missing."""
    value = body.get(key)
    return None if value is None else str(value)

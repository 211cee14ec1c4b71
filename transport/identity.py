"""The routing identity of a session process on the supervisor's ROUTER: ``<sessionId>:<incarnation>``.

The incarnation counts the session's process starts, so frames from an older
process of the same session are recognised and dropped.
"""

from __future__ import annotations


def routing_identity(session_id: str, incarnation: int) -> bytes:
    """The identity incarnation ``incarnation`` of session ``session_id`` connects with."""
    return f"{session_id}:{incarnation}".encode()


def parse_routing_identity(identity: bytes) -> tuple[str, int] | None:
    """``(sessionId, incarnation)`` from a routing identity, or None if it is not one."""
    try:
        text = identity.decode("ascii")
        session_id, _, incarnation = text.rpartition(":")
        return (session_id, int(incarnation)) if session_id else None
    except (UnicodeDecodeError, ValueError):
        return None

"""How sessions look in API answers: the seed's field names, which backends read (docs/architecture.md, HTTP API)."""

from __future__ import annotations

import time
from typing import Any

from supervisor.sessions import Session
from supervisor.sessions.proxy import masked
from supervisor.supervision.policy import ExitInfo
from supervisor.timefmt import iso


def exit_view(info: ExitInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "at": iso(info.at),
        "reason": info.reason,
        "code": info.code,
        "signal": info.signal,
        "crashed": info.crashed,
    }


def status_view(session: Session) -> dict[str, Any]:
    """GET /session/{id}/status."""
    return {
        "sessionId": session.id,
        "status": session.status,
        "phoneNumber": session.phone,
        "lastSeen": iso(session.last_seen),
        "messageCount": session.message_count,
        "error": session.last_error,
        "proxy": masked(session.proxy),
    }


def process_view(session: Session) -> dict[str, Any]:
    """The operator's view of a session and its process (GET /sessions items)."""
    process = session.process()
    stats = session.stats
    now = time.time()
    running = process.pid is not None and process.spawned_at is not None
    return {
        "sessionId": session.id,
        "userId": session.user_id,
        "sessionName": session.session_name,
        "status": session.status,
        "statusSince": iso(session.status_since),
        "secondsInStatus": round(now - session.status_since, 3),
        "phoneNumber": session.phone,
        "processState": process.state.value.upper(),
        "pid": process.pid,
        "restarts": process.restarts,
        "uptime": round(now - process.spawned_at, 3) if running and process.spawned_at else 0,
        "cpuPercent": stats.cpu_percent if stats else None,
        "memory": {"rss": stats.rss if stats else None, "uss": stats.uss if stats else None},
        "threads": stats.threads if stats else None,
        "openFiles": stats.open_files if stats else None,
        "lastExit": exit_view(process.last_exit),
        "lastError": session.last_error,
        "qrCount": session.qr_count,
        "messageCount": session.message_count,
        "proxy": masked(session.proxy),
    }

"""Routes about messages: sending (through the outbox) and history."""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import secrets
from typing import Any

from aiohttp import web

from supervisor.api import send_request, upload
from supervisor.api import validation as v
from supervisor.api.answers import ok
from supervisor.api.errors import ApiError
from supervisor.api.keys import REGISTRY, SETTINGS, STORAGE
from supervisor.messaging.outbox import IdempotencyConflict
from supervisor.storage.service import StorageError

log = logging.getLogger("supervisor.api.messages")
routes = web.RouteTableDef()

MAX_PAGE = 500
DIRECTIONS = ("in", "out")


@routes.post("/session/{id}/send")
async def send_message(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    key = send_request.idempotency_key(request.headers)
    registry = request.app[REGISTRY]
    session = registry.get(session_id)  # 404 before anything else
    if request.content_type.startswith("multipart/"):
        if session.status != "connected":
            # Refused before the upload is read: the client should not stream megabytes for nothing.
            raise ApiError(409, "SESSION_NOT_CONNECTED", f"session {session_id!r} is {session.status}, not connected")
        message = await _receive_media(request, session_id)
    else:
        message = send_request.parse_json_message(await v.json_body(request))
    try:
        # The fingerprint only matters to a reused key: no digest per send without one.
        digest = send_request.fingerprint(message) if key is not None else ""
        answer = await registry.send(session_id, message, idempotency_key=key, fingerprint=digest)
    except IdempotencyConflict as exc:
        raise ApiError(409, "IDEMPOTENCY_KEY_REUSED", str(exc)) from None
    data = dict(answer.data)
    if message.get("media_path"):
        data["mediaUrl"] = await registry.sent_media_url(session_id, data["messageId"])
    return ok(data, status=answer.http_status)


async def _receive_media(request: web.Request, session_id: str) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    # Staging for the session process, which sends from this file; the outbox removes it once settled.
    media_dir = settings.storage_dir / "outgoing" / session_id
    target = media_dir / f"{secrets.token_hex(12)}.upload"
    received = await upload.receive(request, target, max_bytes=int(settings.max_upload_mb * 1024 * 1024))
    try:
        message = send_request.parse_media_fields(received.fields)
        upload.check_type(received, message["type"])
    except ApiError:
        await asyncio.to_thread(target.unlink, True)
        raise
    key = None
    storage = request.app[STORAGE]
    try:
        extension = mimetypes.guess_extension(received.mimetype) or ""
        key = await storage.put_media(
            session_id, received.path, content_type=received.mimetype, name=f"{received.path.stem}{extension}"
        )
    except StorageError as exc:
        # The send goes ahead from the local copy; only the mediaUrl is missing.
        log.warning("uploaded media not stored: %s", exc, extra={"sessionId": session_id})
    message.update(
        media_path=str(received.path.absolute()),
        mimetype=received.mimetype,
        filename=message.get("filename") or received.filename,
        media_size=received.size,
        media_sha256=received.sha256,
        media_ref=key,
    )
    return message


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "INVALID_QUERY", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "INVALID_QUERY", f"{name} must be between {low} and {high}")
    return value


def _time_query(request: web.Request, name: str) -> float | None:
    """Epoch seconds or ISO 8601."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ApiError(400, "INVALID_QUERY", f"{name} must be a finite time")
        return value
    from datetime import datetime

    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, "INVALID_QUERY", f"{name} must be epoch seconds or an ISO 8601 time") from None


@routes.get("/session/{id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    registry = request.app[REGISTRY]
    registry.get(session_id)
    limit = _int_query(request, "limit", 50, 1, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 0, 10**9)
    contact = request.query.get("contact")
    chat = v.phone_target(contact, field="contact") if contact is not None else None
    direction = request.query.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise ApiError(400, "INVALID_QUERY", "direction must be 'in' or 'out'")
    views, total = await registry.history(
        session_id,
        limit=limit,
        offset=offset,
        chat=chat,
        direction=direction,
        since=_time_query(request, "since"),
        until=_time_query(request, "until"),
    )
    data: dict[str, Any] = {
        "messages": views,
        "pagination": {"total": total, "limit": limit, "offset": offset},
    }
    return ok(data)

"""Routes about messages: sending (through the outbox) and history."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import secrets
from datetime import datetime
from typing import Any

from aiohttp import web

from supervisor.api import answers, bodies, send_request, upload
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY, SETTINGS, STORAGE
from supervisor.api.operations import json_reply, session_operation
from supervisor.messaging.outbox import IdempotencyConflict
from supervisor.storage.service import StorageError

log = logging.getLogger("supervisor.api.messages")
routes = web.RouteTableDef()


@session_operation(
    routes,
    "POST",
    "/session/{id}/send",
    id="sendMessage",
    tag="messages",
    summary="Send a message (JSON: text, location, contact, reaction; multipart/form-data: media)",
    body=bodies.SendRequest,
    form=bodies.SendMediaRequest,
    headers=bodies.SendHeaders,
    ok={
        200: json_reply(answers.SendResult, "sent (or failed) within SEND_TIMEOUT"),
        202: json_reply(answers.SendResult, "accepted and kept in the outbox; not confirmed yet"),
    },
    errors=(409, 413, 415, 429, 503),
)
async def send_message(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    key = v.headers(request, bodies.SendHeaders).idempotencyKey
    registry = request.app[REGISTRY]
    session = registry.get(session_id)  # 404 before anything else
    if request.content_type.startswith("multipart/"):
        if session.status != "connected":
            # Refused before the upload is read: the client should not stream megabytes for nothing.
            raise ApiError(
                409, ErrorCode.SESSION_NOT_CONNECTED, f"session {session_id!r} is {session.status}, not connected"
            )
        message = await _receive_media(request, session_id)
    else:
        message = send_request.parse_json_message(await v.json_body(request))
    try:
        # The fingerprint only matters to a reused key: no digest per send without one.
        digest = send_request.fingerprint(message) if key is not None else ""
        answer = await registry.send(session_id, message, idempotency_key=key, fingerprint=digest)
    except IdempotencyConflict as exc:
        raise ApiError(409, ErrorCode.IDEMPOTENCY_KEY_REUSED, str(exc)) from None
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


@session_operation(
    routes,
    "GET",
    "/session/{id}/messages",
    id="listMessages",
    tag="messages",
    summary="Message history, newest first",
    query=bodies.MessagesQuery,
    ok=json_reply(answers.MessagesPage),
)
async def list_messages(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    registry = request.app[REGISTRY]
    registry.get(session_id)
    asked = v.query(request, bodies.MessagesQuery)
    views, total = await registry.history(
        session_id,
        limit=asked.limit,
        offset=asked.offset,
        chat=asked.contact,
        direction=asked.direction,
        since=_epoch(asked.since),
        until=_epoch(asked.until),
    )
    data: dict[str, Any] = {
        "messages": views,
        "pagination": {"total": total, "limit": asked.limit, "offset": asked.offset},
    }
    return ok(data)


def _epoch(bound: float | datetime | None) -> float | None:
    return bound.timestamp() if isinstance(bound, datetime) else bound

"""The event log over HTTP: replay (``GET /events``), a live stream (SSE), and per-session webhooks."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from supervisor.api import validation as v
from supervisor.api.answers import ok
from supervisor.api.errors import ApiError
from supervisor.api.keys import EVENTS, REGISTRY, WEBHOOKS
from supervisor.events.log import envelope

routes = web.RouteTableDef()

MAX_LIMIT = 1000
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER: a larger number cannot even be bound to a query
STREAM_KEEPALIVE = 15.0


def _seq(raw: str | None, name: str) -> int:
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "INVALID_QUERY", f"{name} must be an event id (an integer)") from None
    if not 0 <= value <= MAX_SEQ:
        raise ApiError(400, "INVALID_QUERY", f"{name} must be between 0 and {MAX_SEQ}")
    return value


def _session_filter(request: web.Request) -> str | None:
    raw = request.query.get("sessionId")
    return None if raw is None else v.session_id(raw)


@routes.get("/events")
async def list_events(request: web.Request) -> web.Response:
    since = _seq(request.query.get("since"), "since")
    raw_limit = request.query.get("limit")
    limit = 100 if raw_limit is None else _seq(raw_limit, "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "INVALID_QUERY", f"limit must be between 1 and {MAX_LIMIT}")
    events = request.app[EVENTS]
    rows = await events.since(since, limit=limit, session_id=_session_filter(request))
    data: dict[str, Any] = {
        "events": [envelope(r) for r in rows],
        # Pass nextSince back as `since` to continue; equal to `since` when there was nothing new.
        "nextSince": rows[-1].seq if rows else since,
        "latest": await events.store.last_event_seq(),
    }
    return ok(data)


@routes.get("/events/stream")
async def stream_events(request: web.Request) -> web.StreamResponse:
    # Last-Event-ID (what EventSource sends on reconnect) wins over ?since=.
    cursor = _seq(request.headers.get("Last-Event-ID") or request.query.get("since"), "Last-Event-ID")
    session_id = _session_filter(request)
    events = request.app[EVENTS]
    registry = request.app[REGISTRY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        while not registry.draining:
            rows = await events.wait(cursor, timeout=STREAM_KEEPALIVE, session_id=session_id)
            if not rows:
                await response.write(b": keepalive\n\n")
                continue
            chunk = []
            for row in rows:
                body = json.dumps(envelope(row), separators=(",", ":"), default=str)
                chunk.append(f"id: {row.seq}\nevent: {row.event}\ndata: {body}\n\n")
                cursor = row.seq
            await response.write("".join(chunk).encode())
    return response


def _webhook_url(value: object) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise ApiError(400, "INVALID_WEBHOOK", "url must be an http(s) URL of at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "INVALID_WEBHOOK", "url must be an http(s) URL")
    return value


def webhook_fields(body: object) -> tuple[str, str | None]:
    """``(url, secret)`` from a ``{url, secret?}`` object, or a 400."""
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_WEBHOOK", "webhook must be an object {url, secret?}")
    url = _webhook_url(body.get("url"))
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 256):
        raise ApiError(400, "INVALID_WEBHOOK", "secret must be a string of 16 to 256 characters")
    return url, secret


async def set_webhook(request: web.Request, session_id: str, fields: tuple[str, str | None]) -> dict[str, Any]:
    """Set a session's webhook; answers ``{sessionId, url, secret}`` (the secret, generated if not given)."""
    url, secret = fields
    secret = await request.app[WEBHOOKS].set(session_id, url, secret)
    return {"sessionId": session_id, "url": url, "secret": secret}


@routes.put("/session/{id}/webhook")
async def put_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    data = await set_webhook(request, session_id, webhook_fields(await v.json_body(request)))
    return ok(data)


@routes.get("/session/{id}/webhook")
async def get_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    described = request.app[WEBHOOKS].describe(session_id)
    if described is None:
        raise ApiError(404, "WEBHOOK_NOT_FOUND", f"session {session_id!r} has no webhook")
    return ok({"sessionId": session_id, **described})


@routes.delete("/session/{id}/webhook")
async def delete_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    if not await request.app[WEBHOOKS].remove(session_id):
        raise ApiError(404, "WEBHOOK_NOT_FOUND", f"session {session_id!r} has no webhook")
    return ok({"sessionId": session_id, "deleted": True})

"""The event log over HTTP: replay (``GET /events``), a live stream (SSE), and per-session webhooks."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import EVENTS, REGISTRY, SETTINGS, WEBHOOKS
from supervisor.api.operations import Reply, json_reply, operation, session_operation
from supervisor.events.destinations import refused_url
from supervisor.events.log import envelope

routes = web.RouteTableDef()

STREAM_KEEPALIVE = 15.0


# An empty since= means "from the start" (as it always did): clients build it from an unset cursor.
BLANK_IS_ABSENT = ("since",)


@operation(
    routes,
    "GET",
    "/events",
    id="listEvents",
    tag="events",
    summary="Replay the durable event log (messages, statuses, receipts), oldest first",
    query=bodies.EventsQuery,
    ok=json_reply(answers.EventsPage),
    errors=(400,),
)
async def list_events(request: web.Request) -> web.Response:
    asked = v.query(request, bodies.EventsQuery, blank_is_absent=BLANK_IS_ABSENT)
    events = request.app[EVENTS]
    rows = await events.since(asked.since, limit=asked.limit, session_id=asked.sessionId)
    data: dict[str, Any] = {
        "events": [envelope(r) for r in rows],
        # Pass nextSince back as `since` to continue; equal to `since` when there was nothing new.
        "nextSince": rows[-1].seq if rows else asked.since,
        "latest": await events.store.last_event_seq(),
    }
    return ok(data)


@operation(
    routes,
    "GET",
    "/events/stream",
    id="streamEvents",
    tag="events",
    summary="The event log as a live Server-Sent Events stream (resumes from Last-Event-ID)",
    query=bodies.StreamQuery,
    headers=bodies.StreamHeaders,
    errors=(400,),
    ok=Reply(
        "text/event-stream: one event per log entry; its data is an Event as JSON",
        {"text/event-stream": answers.StreamedEvent},
        enveloped=False,
    ),
)
async def stream_events(request: web.Request) -> web.StreamResponse:
    asked = v.query(request, bodies.StreamQuery, blank_is_absent=BLANK_IS_ABSENT)
    last_id = request.headers.get("Last-Event-ID")
    resume = v.parse(bodies.StreamHeaders, {} if last_id is None else {"Last-Event-ID": last_id}).lastEventId
    # Last-Event-ID (what EventSource sends on reconnect) wins over ?since=.
    cursor = resume if isinstance(resume, int) else asked.since or 0
    session_id = asked.sessionId
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


def check_webhook_url(request: web.Request, url: str) -> None:
    """Refuse, with 400 WEBHOOK_URL_REFUSED, a webhook URL aimed at a non-public address (unless
    WEBHOOK_ALLOW_PRIVATE): the first of two checks, the second is at every delivery's connection."""
    if request.app[SETTINGS].webhook_allow_private:
        return
    reason = refused_url(url)
    if reason is not None:
        raise ApiError(
            400,
            ErrorCode.WEBHOOK_URL_REFUSED,
            f"webhook url refused: {reason}; webhooks reach public addresses only"
            " (WEBHOOK_ALLOW_PRIVATE=true allows others, for development)",
        )


async def set_webhook(request: web.Request, session_id: str, asked: bodies.WebhookRequest) -> dict[str, Any]:
    """Set a session's webhook; answers ``{sessionId, url, secret}`` (the secret, generated if not given)."""
    secret = await request.app[WEBHOOKS].set(session_id, asked.url, asked.secret)
    return {"sessionId": session_id, "url": asked.url, "secret": secret}


@session_operation(
    routes,
    "PUT",
    "/session/{id}/webhook",
    id="putWebhook",
    tag="events",
    summary="Set the session's webhook: its events are POSTed there, signed with the secret",
    body=bodies.WebhookRequest,
    ok=json_reply(answers.WebhookSet),
    errors=(413, 415),
)
async def put_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    asked = await v.body(request, bodies.WebhookRequest)
    check_webhook_url(request, asked.url)
    return ok(await set_webhook(request, session_id, asked))


@session_operation(
    routes,
    "GET",
    "/session/{id}/webhook",
    id="getWebhook",
    tag="events",
    summary="The session's webhook and its delivery figures",
    ok=json_reply(answers.WebhookInfo),
)
async def get_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    described = request.app[WEBHOOKS].describe(session_id)
    if described is None:
        raise ApiError(404, ErrorCode.WEBHOOK_NOT_FOUND, f"session {session_id!r} has no webhook")
    return ok({"sessionId": session_id, **described})


@session_operation(
    routes,
    "DELETE",
    "/session/{id}/webhook",
    id="deleteWebhook",
    tag="events",
    summary="Remove the session's webhook",
    ok=json_reply(answers.Deleted),
)
async def delete_webhook(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    if not await request.app[WEBHOOKS].remove(session_id):
        raise ApiError(404, ErrorCode.WEBHOOK_NOT_FOUND, f"session {session_id!r} has no webhook")
    return ok({"sessionId": session_id, "deleted": True})

"""Routes about a session's outbox: what waits to be sent (paced or not yet confirmed), and cancelling it."""

from __future__ import annotations

from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY
from supervisor.api.operations import json_reply, session_operation
from supervisor.timefmt import iso

routes = web.RouteTableDef()


@session_operation(
    routes,
    "GET",
    "/session/{id}/outbox",
    id="listOutbox",
    tag="messages",
    summary="The session's outbox: what waits (each message with when and why), the oldest's time, and the"
    " messages that ended unknown or failed",
    ok=json_reply(answers.OutboxPage),
)
async def list_outbox(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    registry = request.app[REGISTRY]
    figures = await registry.outbox_figures(session_id)
    return ok(
        {
            "sessionId": session_id,
            "pending": figures.pending,
            "oldestPendingAt": iso(figures.oldest_pending_at),
            "unknown": figures.unknown,
            "failed": figures.failed,
            "messages": registry.outbox_view(session_id),
        }
    )


@session_operation(
    routes,
    "DELETE",
    "/session/{id}/outbox/{messageId}",
    id="cancelQueued",
    tag="messages",
    summary="Cancel a message that waits in the outbox (it fails with error 'cancelled' and is never sent)",
    path_params=bodies.MessagePath,
    ok=json_reply(answers.Cancelled),
    errors=(409,),
)
async def cancel_queued(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    message_id = request.match_info["messageId"]
    registry = request.app[REGISTRY]
    cancelled = await registry.cancel_queued(session_id, message_id)
    if cancelled is None:
        raise ApiError(404, ErrorCode.UNKNOWN_MESSAGE, f"no message {message_id!r} waits in this session's outbox")
    if not cancelled:
        raise ApiError(409, ErrorCode.MESSAGE_SENDING, f"message {message_id!r} is being sent right now")
    return ok({"messageId": message_id, "status": "failed", "error": "cancelled"})

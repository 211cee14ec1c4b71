"""Routes that change a message already sent: edit its text, delete it for everyone (through the outbox)."""

from __future__ import annotations

from aiohttp import web

from supervisor.api import answers, bodies, send_request
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY
from supervisor.api.operations import Reply, json_reply, operation
from supervisor.messaging.changes import change_answer
from supervisor.messaging.outbox import IdempotencyConflict

routes = web.RouteTableDef()
# Unknown session or message (404), a message that cannot be changed (409), not connected (409, 503).
_ERRORS = (400, 404, 409, 429, 503)


def _replies(at_key: str) -> dict[int, Reply]:
    return {
        200: json_reply(answers.MessageChanged, f"sent (or failed) within SEND_TIMEOUT; {at_key} set once sent"),
        202: json_reply(answers.MessageChanged, "accepted and kept in the outbox; not confirmed yet"),
    }


async def _change(request: web.Request, text: str | None) -> web.Response:
    path = v.parse(bodies.MessagePath, dict(request.match_info))
    key = v.headers(request, bodies.SendHeaders).idempotencyKey
    registry = request.app[REGISTRY]
    registry.get(path.id)  # 404 for an unknown session before anything else
    asked = {"change": "edit" if text is not None else "revoke", "messageId": path.messageId, "text": text}
    try:
        answer = await registry.change_message(
            path.id,
            path.messageId,
            text=text,
            idempotency_key=key,
            fingerprint=send_request.fingerprint(asked) if key is not None else "",
        )
    except IdempotencyConflict as exc:
        raise ApiError(409, ErrorCode.IDEMPOTENCY_KEY_REUSED, str(exc)) from None
    at_key = "editedAt" if text is not None else "revokedAt"
    return ok(change_answer(path.messageId, answer.data, at_key), status=answer.http_status)


@operation(
    routes,
    "PATCH",
    "/session/{id}/messages/{messageId}",
    id="editMessage",
    tag="messages",
    summary="Edit our own text message or a media message's caption (within EDIT_WINDOW, WhatsApp's 15 minutes)",
    path_params=bodies.MessagePath,
    body=bodies.EditMessageRequest,
    headers=bodies.SendHeaders,
    ok=_replies("editedAt"),
    errors=(*_ERRORS, 413, 415),  # the JSON body: too large, or not JSON
)
async def edit_message(request: web.Request) -> web.Response:
    body = v.parse(bodies.EditMessageRequest, await v.json_body(request))
    return await _change(request, body.text)


@operation(
    routes,
    "DELETE",
    "/session/{id}/messages/{messageId}",
    id="revokeMessage",
    tag="messages",
    summary="Delete our own message for everyone (revoke)",
    path_params=bodies.MessagePath,
    headers=bodies.SendHeaders,
    ok=_replies("revokedAt"),
    errors=_ERRORS,
)
async def revoke_message(request: web.Request) -> web.Response:
    return await _change(request, None)

"""Routes about polls: the tally of the votes on a poll this session sent (or received)."""

from __future__ import annotations

from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY
from supervisor.api.operations import json_reply, operation

routes = web.RouteTableDef()


@operation(
    routes,
    "GET",
    "/session/{id}/polls/{messageId}",
    id="getPollResults",
    tag="messages",
    summary="A poll's votes: each option with its voters, each voter's latest vote counted (an empty vote retracts;"
    " a poll deleted for everyone answers 409 MESSAGE_REVOKED)",
    path_params=bodies.PollPath,
    errors=(400, 404, 409),
    ok=json_reply(answers.PollResults),
)
async def poll_results(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    path = v.parse(bodies.PollPath, dict(request.match_info))
    registry = request.app[REGISTRY]
    registry.get(session_id)  # 404 SESSION_NOT_FOUND first
    results = await registry.poll_results(session_id, path.messageId)
    if results is None:
        raise ApiError(404, ErrorCode.POLL_NOT_FOUND, f"no poll {path.messageId!r} in this session's history")
    return ok(results)

"""Routes about a session's account: read receipts, presence, settings and the chat list.

Read receipts and presence are carried out by the session's process (``SessionRegistry.ask``:
409 when not connected, 502 when the engine failed, 504 when it did not answer in time); settings
and chats are the worker's own records and answer whatever the session's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.errors import ok
from supervisor.api.keys import REGISTRY
from supervisor.api.operations import ACCOUNT_ERRORS, json_reply, session_operation
from supervisor.messaging.pacing import settings_view
from supervisor.sessions.settings import SessionSettings

if TYPE_CHECKING:
    from supervisor.sessions.registry import SessionRegistry

routes = web.RouteTableDef()


@session_operation(
    routes,
    "POST",
    "/session/{id}/read",
    id="markRead",
    tag="account",
    summary="Send read receipts for received messages of a chat (blue ticks on the sender's phone)",
    body=bodies.ReadRequest,
    ok=json_reply(answers.ReadResult),
    errors=(413, 415, 503, *ACCOUNT_ERRORS),
)
async def mark_read(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = await v.body(request, bodies.ReadRequest)
    read, unknown = await request.app[REGISTRY].account.mark_read(session_id, asked.chat, asked.messageIds)
    return ok({"chat": asked.chat, "read": read, "unknown": unknown})


@session_operation(
    routes,
    "POST",
    "/session/{id}/presence",
    id="sendPresence",
    tag="account",
    summary="Show the account available/unavailable, or typing, recording or paused in a chat",
    body=bodies.PresenceRequest,
    ok=json_reply(answers.PresenceResult),
    errors=(413, 415, 503, *ACCOUNT_ERRORS),
)
async def send_presence(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = await v.body(request, bodies.PresenceRequest)
    chat = asked.chat if asked.state in bodies.CHAT_STATES else None
    await request.app[REGISTRY].account.send_presence(session_id, asked.state, chat)
    return ok({"state": asked.state, "chat": chat})


@session_operation(
    routes,
    "GET",
    "/session/{id}/settings",
    id="getSettings",
    tag="account",
    summary="The session's settings",
    ok=json_reply(answers.SessionSettingsView),
)
async def get_settings(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    registry = request.app[REGISTRY]
    return ok(_settings_answer(registry, session_id, await registry.account.settings(session_id)))


@session_operation(
    routes,
    "PUT",
    "/session/{id}/settings",
    id="putSettings",
    tag="account",
    summary="Change some of the session's settings (kept across worker and process restarts)",
    body=bodies.SettingsRequest,
    ok=json_reply(answers.SessionSettingsView, "the settings now in force"),
    errors=(413, 415),
)
async def put_settings(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = await v.body(request, bodies.SettingsRequest)
    registry = request.app[REGISTRY]
    return ok(
        _settings_answer(registry, session_id, await registry.account.update_settings(session_id, asked.changes()))
    )


def _settings_answer(registry: SessionRegistry, session_id: str, settings: SessionSettings) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "rejectCalls": settings.reject_calls,
        "pacing": settings_view(registry.pacing_policy(session_id)),
        "pacingOwn": settings.pacing,
    }


@session_operation(
    routes,
    "GET",
    "/session/{id}/chats",
    id="listChats",
    tag="account",
    summary="Chats from history, latest activity first, with their unread counts",
    query=bodies.ChatsQuery,
    ok=json_reply(answers.ChatsPage),
)
async def list_chats(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = v.query(request, bodies.ChatsQuery)
    chats, total = await request.app[REGISTRY].account.chats(session_id, limit=asked.limit, offset=asked.offset)
    return ok({"chats": chats, "pagination": {"total": total, "limit": asked.limit, "offset": asked.offset}})

"""Routes about sessions: create, qr, status, delete, restart, logout, pair-code, process, list."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from supervisor.api import answers, bodies, event_routes
from supervisor.api import validation as v
from supervisor.api.errors import ok
from supervisor.api.keys import REGISTRY, SETTINGS
from supervisor.api.operations import json_reply, operation, session_operation
from supervisor.api.views import exit_view, process_view, status_view
from supervisor.qr_image import png_data_url
from supervisor.timefmt import iso

routes = web.RouteTableDef()

# What a backend does next with a session it created (OpenAPI links: also what stateful fuzzing follows).
SESSION_LINKS = {
    op: {"operationId": op, "parameters": {"id": "$response.body#/data/sessionId"}}
    for op in (
        "getQr",
        "getStatus",
        "getProcess",
        "sendMessage",
        "listMessages",
        "restartSession",
        "logoutSession",
        "pairCode",
        "deleteSession",
        "putWebhook",
        "getWebhook",
        "deleteWebhook",
    )
}


async def _qr_data_url(qr: str | None) -> str | None:
    return None if qr is None else await asyncio.to_thread(png_data_url, qr)


@operation(
    routes,
    "POST",
    "/session/create",
    id="createSession",
    tag="sessions",
    summary="Start a session (idempotent: an existing session answers its current state)",
    body=bodies.CreateSessionRequest,
    ok=json_reply(
        answers.CreateSessionResult, "started; qrCode is a PNG data URL when the first QR came within CREATE_QR_WAIT"
    ),
    errors=(400, 409, 413, 415, 429, 503),
    links=SESSION_LINKS,
)
async def create_session(request: web.Request) -> web.Response:
    asked = await v.body(request, bodies.CreateSessionRequest)
    if asked.webhook is not None:
        # Before anything is created: a refused webhook must not leave a half-made session.
        event_routes.check_webhook_url(request, asked.webhook.url)
    registry = request.app[REGISTRY]
    session = await registry.create(
        asked.sessionId,
        user_id=asked.userId,
        session_name=asked.sessionName,
        proxy=asked.proxy,
        takeover=asked.takeover,
    )
    answer: dict[str, Any] = {"sessionId": session.id}
    if asked.webhook is not None:
        # Set before waiting for the QR, so the webhook hears qr_ready too.
        hook = await event_routes.set_webhook(request, session.id, asked.webhook)
        answer["webhook"] = {"url": hook["url"], "secret": hook["secret"]}
    await registry.wait_for_qr(session, request.app[SETTINGS].create_qr_wait)
    answer.update(status=session.status, qrCode=await _qr_data_url(session.qr))
    return ok(answer)


@session_operation(
    routes,
    "GET",
    "/session/{id}/qr",
    id="getQr",
    tag="sessions",
    summary="The current QR",
    ok=json_reply(answers.QrResult),
)
async def get_qr(request: web.Request) -> web.Response:
    session = await request.app[REGISTRY].current_qr(v.path_session_id(request))
    # One consistent snapshot: the QR may rotate while the PNG is drawn.
    qr, expires_at, status, count = session.qr, session.qr_expires_at, session.status, session.qr_count
    return ok(
        {
            "sessionId": session.id,
            "qrCode": await _qr_data_url(qr),
            "qr": qr,
            "status": status,
            "expiresAt": iso(expires_at),
            "qrCount": count,
        }
    )


@session_operation(
    routes,
    "GET",
    "/session/{id}/status",
    id="getStatus",
    tag="sessions",
    summary="The session's status",
    ok=json_reply(answers.StatusResult),
)
async def get_status(request: web.Request) -> web.Response:
    session = request.app[REGISTRY].get(v.path_session_id(request))
    return ok(status_view(session))


@session_operation(
    routes,
    "DELETE",
    "/session/{id:(?!create$)[^/]+}",  # /session/create is the create route: never a session id
    id="deleteSession",
    tag="sessions",
    summary="Log out, stop the process, remove the auth state and history",
    ok=json_reply(answers.Deleted),
    errors=(405, 409, 429, 503),
)
async def delete_session(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    await request.app[REGISTRY].delete(session_id)
    return ok({"sessionId": session_id, "deleted": True})


@session_operation(
    routes,
    "POST",
    "/session/{id}/restart",
    id="restartSession",
    tag="sessions",
    summary="Restart the session's process (also revives failed and logged_out sessions)",
    ok=json_reply(answers.Restarted),
    errors=(409, 429, 503),
)
async def restart_session(request: web.Request) -> web.Response:
    session = await request.app[REGISTRY].restart(v.path_session_id(request))
    return ok({"sessionId": session.id, "status": session.status})


@operation(
    routes,
    "GET",
    "/sessions",
    id="listSessions",
    tag="operations",
    summary="Every session with its process figures",
    ok=json_reply(answers.SessionList),
)
async def list_sessions(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return ok({"sessions": [process_view(s) for s in registry]})


@session_operation(
    routes,
    "POST",
    "/session/{id}/logout",
    id="logoutSession",
    tag="sessions",
    summary="Unlink the device but keep the session: a new QR follows",
    ok=json_reply(answers.LoggedOut),
    errors=(409, 429, 503),
)
async def logout_session(request: web.Request) -> web.Response:
    session = await request.app[REGISTRY].logout(v.path_session_id(request))
    return ok({"sessionId": session.id, "status": session.status, "loggedOut": True})


@session_operation(
    routes,
    "POST",
    "/session/{id}/pair-code",
    id="pairCode",
    tag="sessions",
    summary="A pairing code: link a phone by entering a code instead of scanning the QR",
    body=bodies.PairCodeRequest,
    ok=json_reply(answers.PairingCode),
    errors=(409, 413, 415, 429, 503),
)
async def pair_code(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    phone = (await v.body(request, bodies.PairCodeRequest)).phoneNumber
    registry = request.app[REGISTRY]
    registry.get(session_id)  # 404 before anything else
    code = await registry.pair_code(session_id, phone)
    return ok({"sessionId": session_id, "phoneNumber": phone, "pairingCode": code})


@session_operation(
    routes,
    "GET",
    "/session/{id}/process",
    id="getProcess",
    tag="operations",
    summary="The session's process: figures and the recent exits with their reasons",
    ok=json_reply(answers.ProcessDetail),
)
async def get_process(request: web.Request) -> web.Response:
    session = request.app[REGISTRY].get(v.path_session_id(request))
    exits = [exit_view(e) for e in reversed(session.process().exits)]
    return ok({**process_view(session), "exits": exits})

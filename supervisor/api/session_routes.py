"""Routes about sessions: create, qr, status, delete, send, restart, list."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from supervisor.api import validation as v
from supervisor.api.errors import ApiError
from supervisor.api.keys import REGISTRY, SETTINGS
from supervisor.api.qr_image import png_data_url
from supervisor.api.views import process_view, status_view

routes = web.RouteTableDef()


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"success": True, "data": data}, status=status)


async def _qr_data_url(qr: str | None) -> str | None:
    return None if qr is None else await asyncio.to_thread(png_data_url, qr)


@routes.post("/session/create")
async def create_session(request: web.Request) -> web.Response:
    body = await v.json_body(request)
    session_id = v.session_id(body.get("sessionId"))
    user_id = v.optional_str(body, "userId")
    session_name = v.optional_str(body, "sessionName")
    proxy = v.optional_str(body, "proxy", max_len=2048)
    registry = request.app[REGISTRY]
    session = await registry.create(session_id, user_id=user_id, session_name=session_name, proxy=proxy)
    await registry.wait_for_qr(session, request.app[SETTINGS].create_qr_wait)
    return ok({"sessionId": session.id, "status": session.status, "qrCode": await _qr_data_url(session.qr)})


@routes.get("/session/{id}/qr")
async def get_qr(request: web.Request) -> web.Response:
    session = request.app[REGISTRY].get(v.path_session_id(request))
    return ok(
        {
            "sessionId": session.id,
            "qrCode": await _qr_data_url(session.qr),
            "qr": session.qr,
            "status": session.status,
            "expiresAt": session.qr_expires_at,
            "qrCount": session.qr_count,
        }
    )


@routes.get("/session/{id}/status")
async def get_status(request: web.Request) -> web.Response:
    session = request.app[REGISTRY].get(v.path_session_id(request))
    return ok(status_view(session))


@routes.delete("/session/{id}")
async def delete_session(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    await request.app[REGISTRY].delete(session_id)
    return ok({"sessionId": session_id, "deleted": True})


@routes.post("/session/{id}/restart")
async def restart_session(request: web.Request) -> web.Response:
    session = await request.app[REGISTRY].restart(v.path_session_id(request))
    return ok({"sessionId": session.id, "status": session.status})


@routes.post("/session/{id}/send")
async def send_message(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    body = await v.json_body(request)
    to = v.phone_target(body.get("to"))
    kind = body.get("type", "text")
    if kind != "text":
        raise ApiError(400, "UNSUPPORTED_TYPE", f"message type {kind!r} is not supported here; use 'text'")
    text = body.get("text", body.get("message"))
    if not isinstance(text, str) or not text:
        raise ApiError(400, "INVALID_TEXT", "text must be a non-empty string")
    if len(text) > v.MAX_TEXT:
        raise ApiError(400, "INVALID_TEXT", f"text is longer than {v.MAX_TEXT} characters")
    result = await request.app[REGISTRY].send_text(session_id, to, text)
    return ok(result)


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return ok({"sessions": [process_view(s) for s in registry]})

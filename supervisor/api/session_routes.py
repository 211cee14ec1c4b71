"""Routes about sessions: create, qr, status, delete, restart, logout, pair-code, process, list."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from supervisor.api import event_routes
from supervisor.api import validation as v
from supervisor.api.answers import ok
from supervisor.api.errors import ApiError
from supervisor.api.keys import REGISTRY, SETTINGS
from supervisor.api.views import exit_view, process_view, status_view
from supervisor.qr_image import png_data_url

routes = web.RouteTableDef()


async def _qr_data_url(qr: str | None) -> str | None:
    return None if qr is None else await asyncio.to_thread(png_data_url, qr)


@routes.post("/session/create")
async def create_session(request: web.Request) -> web.Response:
    body = await v.json_body(request)
    session_id = v.session_id(body.get("sessionId"))
    user_id = v.optional_str(body, "userId")
    session_name = v.optional_str(body, "sessionName")
    proxy = v.optional_str(body, "proxy", max_len=2048)
    takeover = body.get("takeover", False)
    if not isinstance(takeover, bool):
        raise ApiError(400, "INVALID_FIELD", "takeover must be true or false")
    # Checked before anything is created: a bad webhook must not leave a half-made session.
    webhook = event_routes.webhook_fields(body["webhook"]) if body.get("webhook") is not None else None
    registry = request.app[REGISTRY]
    session = await registry.create(
        session_id, user_id=user_id, session_name=session_name, proxy=proxy, takeover=takeover
    )
    answer: dict[str, Any] = {"sessionId": session.id}
    if webhook is not None:
        # Set before waiting for the QR, so the webhook hears qr_ready too.
        hook = await event_routes.set_webhook(request, session.id, webhook)
        answer["webhook"] = {"url": hook["url"], "secret": hook["secret"]}
    await registry.wait_for_qr(session, request.app[SETTINGS].create_qr_wait)
    answer.update(status=session.status, qrCode=await _qr_data_url(session.qr))
    return ok(answer)


@routes.get("/session/{id}/qr")
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
            "expiresAt": expires_at,
            "qrCount": count,
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


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    return ok({"sessions": [process_view(s) for s in registry]})


@routes.post("/session/{id}/logout")
async def logout_session(request: web.Request) -> web.Response:
    session = await request.app[REGISTRY].logout(v.path_session_id(request))
    return ok({"sessionId": session.id, "status": session.status, "loggedOut": True})


@routes.post("/session/{id}/pair-code")
async def pair_code(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    body = await v.json_body(request)
    phone = v.phone_digits(body.get("phoneNumber"), field="phoneNumber")
    registry = request.app[REGISTRY]
    registry.get(session_id)  # 404 before anything else
    code = await registry.pair_code(session_id, phone)
    return ok({"sessionId": session_id, "phoneNumber": phone, "pairingCode": code})


@routes.get("/session/{id}/process")
async def get_process(request: web.Request) -> web.Response:
    session = request.app[REGISTRY].get(v.path_session_id(request))
    exits = [exit_view(e) for e in reversed(session.process().exits)]
    return ok({**process_view(session), "exits": exits})

"""The hub's HTTP control API: what people do with their phones, plus faults and a debug view.

JSON in and out; errors are ``{"error": "...", "code": "..."}`` with a 4xx status.
Every route calls one public method of :class:`Hub`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from session_proc.sim import hub_changes_http
from session_proc.sim.hub import Hub, HubError, opt_str, req_str

HUB_KEY = web.AppKey("hub", Hub)
MAX_BODY_BYTES = 96 * 1024 * 1024  # media travel base64-encoded in the JSON body


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except HubError as exc:
        return web.json_response({"error": exc.message, "code": exc.code}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE"}.get(exc.status, "HTTP_ERROR")
        return web.json_response({"error": exc.reason, "code": code}, status=exc.status)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} without a body), or HubError 400."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HubError(400, "INVALID_JSON", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HubError(400, "INVALID_JSON", "the body must be a JSON object")
    return body


def _hub(request: web.Request) -> Hub:
    return request.app[HUB_KEY]


async def scan(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/scan {qr, pushName?}``."""
    body = await read_body(request)
    result = _hub(request).scan(
        request.match_info["phone"], req_str(body, "qr", max_len=4096), opt_str(body, "pushName", max_len=256)
    )
    return web.json_response(result)


async def pair(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/pair {code, pushName?}``."""
    body = await read_body(request)
    result = _hub(request).pair(
        request.match_info["phone"], req_str(body, "code", max_len=64), opt_str(body, "pushName", max_len=256)
    )
    return web.json_response(result)


async def send_message(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/messages {to, text, type?, caption?, mimetype?, mediaBase64?}``."""
    body = await read_body(request)
    return web.json_response(_hub(request).phone_send(request.match_info["phone"], body))


async def list_messages(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/messages``."""
    return web.json_response({"messages": _hub(request).phone_messages(request.match_info["phone"])})


async def vote(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/polls/{messageId}/vote {options}``: vote on a received poll ([] retracts)."""
    body = await read_body(request)
    hub = _hub(request)
    return web.json_response(hub.phone_vote(request.match_info["phone"], request.match_info["messageId"], body))


async def read(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/read {ids}``."""
    body = await read_body(request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise HubError(400, "BAD_REQUEST", "ids must be a list of message ids")
    return web.json_response({"read": _hub(request).phone_read(request.match_info["phone"], ids)})


async def unlink(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/unlink``."""
    return web.json_response({"unlinked": _hub(request).unlink(request.match_info["phone"])})


def _opt_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise HubError(400, "BAD_REQUEST", f"{key} must be true or false")
    return value


def _opt_number(body: dict[str, Any], key: str, *, limit: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= limit:
        raise HubError(400, "BAD_REQUEST", f"{key} must be a number from 0 to {limit:g}")  # NaN fails too
    return float(value)


async def set_faults(request: web.Request) -> web.Response:
    """``POST /faults {dropConnections?, latencyMs?, refuseSendsSeconds?, clear?}``."""
    body = await read_body(request)
    latency = _opt_number(body, "latencyMs", limit=60_000)
    result = _hub(request).set_faults(
        clear=_opt_bool(body, "clear"),
        drop_connections=_opt_bool(body, "dropConnections"),
        latency_ms=int(latency) if latency is not None else None,
        refuse_sends_seconds=_opt_number(body, "refuseSendsSeconds", limit=86_400),
    )
    return web.json_response(result)


async def get_faults(request: web.Request) -> web.Response:
    """``GET /faults``."""
    return web.json_response(_hub(request).faults.to_json())


async def devices(request: web.Request) -> web.Response:
    """``GET /devices``: linked devices and sessions waiting for a scan."""
    return web.json_response(_hub(request).devices_json())


def create_app(hub: Hub) -> web.Application:
    """The control API application for ``hub``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    app[HUB_KEY] = hub
    app.router.add_post("/phones/{phone}/scan", scan)
    app.router.add_post("/phones/{phone}/pair", pair)
    app.router.add_post("/phones/{phone}/messages", send_message)
    app.router.add_get("/phones/{phone}/messages", list_messages)
    app.router.add_post("/phones/{phone}/read", read)
    app.router.add_post("/phones/{phone}/polls/{messageId}/vote", vote)
    app.router.add_post("/phones/{phone}/unlink", unlink)
    app.router.add_post("/faults", set_faults)
    app.router.add_get("/faults", get_faults)
    app.router.add_get("/devices", devices)
    from session_proc.sim import hub_account_http  # imports this module

    hub_account_http.add_routes(app)

    # Feature routes live in their own modules, which read this module's helpers: imported here.
    from session_proc.sim.hub_phones_http import add_phone_routes

    add_phone_routes(app)

    hub_changes_http.add_routes(app)

    from session_proc.sim.hub_group_routes import add_group_routes

    add_group_routes(app)
    return app

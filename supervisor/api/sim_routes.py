"""The simulated network through the worker's own API (WA_ENGINE=sim only): a simulated phone scans a
session's QR, or sends the session a text. The hub's HTTP API is on another port, with no credentials;
these routes let the dashboard (same origin, same token) play the phone."""

from __future__ import annotations

import zlib
from typing import Any

import aiohttp
from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY, SETTINGS, WORKER
from supervisor.api.operations import json_reply, session_operation

routes = web.RouteTableDef()

HUB_TIMEOUT = 10.0


def _hub_url(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    if settings.engine != "sim":
        raise ApiError(409, ErrorCode.NOT_SUPPORTED, "the simulated network runs only with WA_ENGINE=sim")
    return request.app[WORKER].sim_hub_http or f"http://127.0.0.1:{settings.sim_port}"


def default_phone(session_id: str) -> str:
    """A simulated phone named for the session, so scanning twice links the same number."""
    return f"6289{zlib.crc32(session_id.encode()) % 10**8:08d}"


async def _hub_post(request: web.Request, path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = _hub_url(request) + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HUB_TIMEOUT)) as http,
            http.post(url, json=body) as resp,
        ):
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ApiError(
            503,
            ErrorCode.SIM_UNAVAILABLE,
            f"the simulated network did not answer: {exc!s:.200}",
            headers={"Retry-After": "2"},
        ) from None
    if resp.status >= 400 or not isinstance(answer, dict):
        why = answer.get("error") if isinstance(answer, dict) else None
        raise ApiError(409, ErrorCode.SIM_REFUSED, f"the simulated network refused: {why or resp.status}")
    return answer


@session_operation(
    routes,
    "POST",
    "/session/{id}/sim/scan",
    id="simScan",
    tag="operations",
    summary="WA_ENGINE=sim: a simulated phone scans the session's current QR",
    body=bodies.SimScanRequest,
    ok=json_reply(answers.SimScanned),
    errors=(409, 413, 415, 503),
)
async def sim_scan(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = await v.body(request, bodies.SimScanRequest)
    _hub_url(request)  # first: without the simulated network there is nothing to ask of a session
    session = request.app[REGISTRY].get(session_id)
    qr = session.qr
    if qr is None:
        raise ApiError(409, ErrorCode.SESSION_NOT_READY, f"session {session_id!r} shows no QR now ({session.status})")
    phone = asked.phoneNumber or default_phone(session_id)
    answer = await _hub_post(request, f"/phones/{phone}/scan", {"qr": qr})
    return ok({"sessionId": session_id, "phoneNumber": phone, "linked": bool(answer.get("linked"))})


@session_operation(
    routes,
    "POST",
    "/session/{id}/sim/message",
    id="simMessage",
    tag="operations",
    summary="WA_ENGINE=sim: a simulated phone sends the session a text",
    body=bodies.SimMessageRequest,
    ok=json_reply(answers.SimMessageSent),
    errors=(409, 413, 415, 503),
)
async def sim_message(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    asked = await v.body(request, bodies.SimMessageRequest)
    _hub_url(request)  # first: without the simulated network there is nothing to ask of a session
    session = request.app[REGISTRY].get(session_id)
    if session.phone is None:
        raise ApiError(409, ErrorCode.SESSION_NOT_CONNECTED, f"session {session_id!r} has no linked phone number yet")
    answer = await _hub_post(
        request, f"/phones/{asked.phoneNumber}/messages", {"to": session.phone, "text": asked.text}
    )
    return ok({"sessionId": session_id, "phoneNumber": asked.phoneNumber, "messageId": str(answer.get("id", ""))})

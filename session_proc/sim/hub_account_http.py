"""The hub's HTTP routes for read receipts, presence and calls: what a phone sent and whether it was
read, a phone's presence towards a linked account and what it saw of them, and a phone's calls.

Registered by ``hub_http.create_app``; each route calls one method of ``Hub.account``.
"""

from __future__ import annotations

from aiohttp import web

from session_proc.sim.hub import HubError, check_phone, req_str
from session_proc.sim.hub_account import HubAccount
from session_proc.sim.hub_http import HUB_KEY, read_body


def _account(request: web.Request) -> tuple[HubAccount, str]:
    return request.app[HUB_KEY].account, check_phone(request.match_info["phone"])


async def sent(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/sent``: ``{messages: [{id, to, type, text, status}]}``."""
    account, phone = _account(request)
    return web.json_response({"messages": account.sent(phone)})


async def send_presence(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/presence {to, state}``: ``{delivered: n}`` (online devices that heard it)."""
    account, phone = _account(request)
    body = await read_body(request)
    to = check_phone(body.get("to"), "to")
    state = req_str(body, "state", max_len=32)
    return web.json_response({"delivered": account.phone_presence(phone, to, state)})


async def presence(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/presence``: ``{presence: [{from, state, at}]}``."""
    account, phone = _account(request)
    return web.json_response({"presence": account.presence_seen(phone)})


async def call(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/call {to, video?}``: ``{id}``."""
    account, phone = _account(request)
    body = await read_body(request)
    to = check_phone(body.get("to"), "to")
    video = body.get("video", False)
    if not isinstance(video, bool):
        raise HubError(400, "BAD_REQUEST", "video must be true or false")
    return web.json_response(account.call(phone, to, video))


async def calls(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/calls``: ``{calls: [{id, to, video, status: ringing | rejected}]}``."""
    account, phone = _account(request)
    return web.json_response({"calls": account.calls(phone)})


def add_routes(app: web.Application) -> None:
    """Register these routes on the hub's control API."""
    app.router.add_get("/phones/{phone}/sent", sent)
    app.router.add_post("/phones/{phone}/presence", send_presence)
    app.router.add_get("/phones/{phone}/presence", presence)
    app.router.add_post("/phones/{phone}/call", call)
    app.router.add_get("/phones/{phone}/calls", calls)

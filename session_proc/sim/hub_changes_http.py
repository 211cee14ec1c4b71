"""The hub's HTTP routes for a phone changing a message it sent: edit it, delete it for everyone."""

from __future__ import annotations

from aiohttp import web

from session_proc.sim import hub_http
from session_proc.sim.hub import MAX_ID_LENGTH, HubError, req_str


def _message_id(request: web.Request) -> str:
    msg_id = request.match_info["id"]
    if len(msg_id) > MAX_ID_LENGTH:
        raise HubError(400, "BAD_REQUEST", f"a message id has at most {MAX_ID_LENGTH} characters")
    return msg_id


async def edit(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/messages/{id}/edit {text}``: the phone edits a message it sent."""
    body = await hub_http.read_body(request)
    hub = request.app[hub_http.HUB_KEY]
    text = req_str(body, "text", max_len=65536)
    return web.json_response(hub.phone_change(request.match_info["phone"], _message_id(request), "edit", text))


async def revoke(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/messages/{id}/revoke``: the phone deletes a message it sent for everyone."""
    hub = request.app[hub_http.HUB_KEY]
    return web.json_response(hub.phone_change(request.match_info["phone"], _message_id(request), "revoke"))


def add_routes(app: web.Application) -> None:
    """Register these routes on the hub's control API."""
    app.router.add_post("/phones/{phone}/messages/{id}/edit", edit)
    app.router.add_post("/phones/{phone}/messages/{id}/revoke", revoke)

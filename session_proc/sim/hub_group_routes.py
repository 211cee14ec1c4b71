"""The hub's HTTP routes for groups (issue 17): what a person does with a group on their phone."""

from __future__ import annotations

from aiohttp import web

from session_proc.sim.hub import Hub, HubError, check_phone, req_str
from session_proc.sim.hub_http import HUB_KEY, read_body


def _hub(request: web.Request) -> Hub:
    return request.app[HUB_KEY]


def _phone(request: web.Request) -> str:
    return check_phone(request.match_info["phone"])


async def create_group(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/groups {subject, participants}`` → ``{jid, group, results}``."""
    answer = _hub(request).groups.create(_phone(request), await read_body(request))
    return web.json_response({"jid": answer["group"]["jid"], **answer})


async def list_groups(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/groups`` → ``{groups: [{jid, subject, participants: [{phone, admin}], ...}]}``."""
    groups = _hub(request).groups.groups_of(_phone(request))
    return web.json_response({"groups": [g.to_json() for g in groups]})


async def participants(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/groups/{jid}/participants {action, participants}`` → ``{results}``."""
    hub = _hub(request)
    answer = hub.groups.participants(_phone(request), request.match_info["jid"], await read_body(request))
    return web.json_response(answer)


async def update_group(request: web.Request) -> web.Response:
    """``PATCH /phones/{phone}/groups/{jid} {subject?, description?, announce?, locked?}``."""
    answer = _hub(request).groups.update(_phone(request), request.match_info["jid"], await read_body(request))
    return web.json_response(answer)


async def join(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/groups/join {code}``."""
    body = await read_body(request)
    return web.json_response(_hub(request).groups.join(_phone(request), req_str(body, "code", max_len=256)))


async def leave(request: web.Request) -> web.Response:
    """``POST /phones/{phone}/groups/{jid}/leave``."""
    return web.json_response(_hub(request).groups.leave(_phone(request), request.match_info["jid"]))


async def invite(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/groups/{jid}/invite`` → ``{code, link}`` (admins)."""
    return web.json_response(_hub(request).groups.invite(_phone(request), request.match_info["jid"], revoke=False))


async def privacy(request: web.Request) -> web.Response:
    """``PUT /phones/{phone}/privacy {groupAdd: everyone | contacts | nobody}``."""
    body = await read_body(request)
    if "groupAdd" not in body:
        raise HubError(400, "BAD_REQUEST", "groupAdd is required")
    return web.json_response(_hub(request).groups.set_privacy(_phone(request), body))


def add_group_routes(app: web.Application) -> None:
    """Register the group routes on the hub's control API."""
    app.router.add_post("/phones/{phone}/groups", create_group)
    app.router.add_get("/phones/{phone}/groups", list_groups)
    app.router.add_post("/phones/{phone}/groups/join", join)
    app.router.add_patch("/phones/{phone}/groups/{jid}", update_group)
    app.router.add_post("/phones/{phone}/groups/{jid}/participants", participants)
    app.router.add_post("/phones/{phone}/groups/{jid}/leave", leave)
    app.router.add_get("/phones/{phone}/groups/{jid}/invite", invite)
    app.router.add_put("/phones/{phone}/privacy", privacy)

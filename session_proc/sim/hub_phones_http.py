"""The phone registry's HTTP routes: a number joins WhatsApp, changes its profile, is looked up.

``POST /phones {phone, pushName?, about?}``, ``GET /phones``, ``GET /phones/{phone}/profile``
and ``PUT /phones/{phone}/profile {pushName?, about?, pictureUrl?}``; registered by
:func:`session_proc.sim.hub_http.create_app`.
"""

from __future__ import annotations

from aiohttp import web

from session_proc.sim.hub import HubError, check_phone, opt_str
from session_proc.sim.hub_http import HUB_KEY
from session_proc.sim.hub_http import _body as json_body  # the hub's one JSON body reader
from session_proc.sim.hub_phones import PhoneProfile, PhoneRegistry

MAX_NAME = 256
MAX_ABOUT = 1024  # WhatsApp allows 139 characters; the hub only keeps memory bounded
MAX_URL = 2048


def _phones(request: web.Request) -> PhoneRegistry:
    return request.app[HUB_KEY].phones


def _not_on_whatsapp(phone: str) -> HubError:
    return HubError(404, "NOT_ON_WHATSAPP", f"{phone} is not on WhatsApp: POST /phones first")


async def join(request: web.Request) -> web.Response:
    """``POST /phones {phone, pushName?, about?}``: the number joins WhatsApp."""
    body = await json_body(request)
    phone = check_phone(body.get("phone"))
    profile = _phones(request).join(
        phone, push_name=opt_str(body, "pushName", max_len=MAX_NAME), about=opt_str(body, "about", max_len=MAX_ABOUT)
    )
    return web.json_response(profile.to_json(), status=201)


async def list_phones(request: web.Request) -> web.Response:
    """``GET /phones``: every number that joined, scanned or sent."""
    return web.json_response({"phones": [p.to_json() for p in _phones(request).all()]})


async def get_profile(request: web.Request) -> web.Response:
    """``GET /phones/{phone}/profile``."""
    phone = check_phone(request.match_info["phone"])
    profile = _phones(request).profile(phone)
    if profile is None:
        raise _not_on_whatsapp(phone)
    return web.json_response(profile.to_json())


async def put_profile(request: web.Request) -> web.Response:
    """``PUT /phones/{phone}/profile {pushName?, about?, pictureUrl?}``: fields left out stay as they are."""
    phone = check_phone(request.match_info["phone"])
    body = await json_body(request)
    profile: PhoneProfile | None = _phones(request).set_profile(
        phone,
        push_name=opt_str(body, "pushName", max_len=MAX_NAME),
        about=opt_str(body, "about", max_len=MAX_ABOUT),
        picture_url=opt_str(body, "pictureUrl", max_len=MAX_URL),
    )
    if profile is None:
        raise _not_on_whatsapp(phone)
    return web.json_response(profile.to_json())


def add_phone_routes(app: web.Application) -> None:
    """Register the phone registry's routes on the hub's control app."""
    app.router.add_post("/phones", join)
    app.router.add_get("/phones", list_phones)
    app.router.add_get("/phones/{phone}/profile", get_profile)
    app.router.add_put("/phones/{phone}/profile", put_profile)

"""Routes about other people: numbers on WhatsApp, contact profiles, the blocklist, disappearing timers.

Each is an account operation carried out by the session's process (``SessionRegistry.ask``): the
session must be connected (409 otherwise), the engine asks WhatsApp (or the simulated network).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.errors import ok
from supervisor.api.keys import REGISTRY
from supervisor.api.operations import ACCOUNT_ERRORS, json_reply, operation, session_operation
from transport import wire

routes = web.RouteTableDef()

# Engine codes the client sees as they are: a number that is not on WhatsApp is a 404.
PASSTHROUGH = frozenset({"NOT_ON_WHATSAPP", "NOT_SUPPORTED"})
_BODY_ERRORS = (413, 415)
_CONTACT_ERRORS = (400, 404, 503, *ACCOUNT_ERRORS)  # a bad jid or id, an unknown session or number
# "check" is the number check (POST /contacts/check), never a contact: GET there is a 405, not a lookup.
_CONTACT_PATH = "/session/{id}/contacts/{jid:(?!check(?:/|$))[^/]+}"


def _contact(request: web.Request) -> tuple[str, str]:
    path = v.parse(bodies.ContactPath, dict(request.match_info))
    return path.id, path.jid


@session_operation(
    routes,
    "POST",
    "/session/{id}/contacts/check",
    id="checkPhones",
    tag="contacts",
    summary="Which numbers are on WhatsApp (at most 50 at once)",
    body=bodies.CheckPhonesRequest,
    ok=json_reply(answers.PhoneChecks),
    errors=(*_BODY_ERRORS, 503, *ACCOUNT_ERRORS),
)
async def check_phones(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    phones = (await v.body(request, bodies.CheckPhonesRequest)).phones
    reply = await request.app[REGISTRY].ask(session_id, wire.CheckPhones(phones=phones), passthrough=PASSTHROUGH)
    return ok({"results": [{"phone": r.phone, "exists": r.exists, "jid": r.jid} for r in reply.results]})


@operation(
    routes,
    "GET",
    _CONTACT_PATH,
    id="getContact",
    tag="contacts",
    summary="A contact's profile: push name, about, picture URL (404 NOT_ON_WHATSAPP for other numbers)",
    path_params=bodies.ContactPath,
    ok=json_reply(answers.Contact),
    errors=_CONTACT_ERRORS,
)
async def get_contact(request: web.Request) -> web.Response:
    session_id, jid = _contact(request)
    card = await request.app[REGISTRY].ask(session_id, wire.ContactInfo(jid=jid), passthrough=PASSTHROUGH)
    return ok({"jid": card.jid, "pushName": card.push_name, "about": card.about, "pictureUrl": card.picture_url})


def _blocking(blocked: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def set_blocked(request: web.Request) -> web.Response:
        session_id, jid = _contact(request)
        await request.app[REGISTRY].ask(session_id, wire.SetBlocked(jid=jid, blocked=blocked), passthrough=PASSTHROUGH)
        return ok({"jid": jid, "blocked": blocked})

    return set_blocked


for _method, _blocked, _id, _summary in (
    ("PUT", True, "blockContact", "Block a contact: its messages stop reaching the session; sends to it fail"),
    (
        "DELETE",
        False,
        "unblockContact",
        "Unblock a contact: what it sends from now on arrives (never what it sent meanwhile)",
    ),
):
    operation(
        routes,
        _method,
        _CONTACT_PATH + "/block",
        id=_id,
        tag="contacts",
        summary=_summary,
        path_params=bodies.ContactPath,
        ok=json_reply(answers.BlockChange),
        errors=_CONTACT_ERRORS,
    )(_blocking(_blocked))


@session_operation(
    routes,
    "GET",
    "/session/{id}/blocklist",
    id="getBlocklist",
    tag="contacts",
    summary="The contacts the account blocked",
    ok=json_reply(answers.Blocklist),
    errors=(503, *ACCOUNT_ERRORS),
)
async def get_blocklist(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    reply = await request.app[REGISTRY].ask(session_id, wire.Blocklist(), passthrough=PASSTHROUGH)
    return ok({"jids": reply.jids})


@operation(
    routes,
    "PUT",
    "/session/{id}/chats/{jid}/disappearing",
    id="setDisappearing",
    tag="contacts",
    summary="Turn a chat's disappearing messages on (24 hours, 7 days, 90 days) or off",
    path_params=bodies.ChatPath,
    body=bodies.DisappearingRequest,
    ok=json_reply(answers.DisappearingTimer),
    errors=(400, 404, *_BODY_ERRORS, 503, *ACCOUNT_ERRORS),
)
async def set_disappearing(request: web.Request) -> web.Response:
    path = v.parse(bodies.ChatPath, dict(request.match_info))
    seconds = int((await v.body(request, bodies.DisappearingRequest)).seconds)  # 86400.0 is 86400
    request.app[REGISTRY].get(path.id)  # 404 before anything else
    await request.app[REGISTRY].ask(
        path.id, wire.SetDisappearing(chat=path.jid, seconds=seconds), passthrough=PASSTHROUGH
    )
    return ok({"chat": path.jid, "seconds": seconds})

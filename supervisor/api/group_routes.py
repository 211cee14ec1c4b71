"""Routes about WhatsApp groups (issue 17): create, list, read, administer, invite, join, leave.

Each is an account operation carried out by the session's process (``SessionRegistry.ask``);
WhatsApp's refusals reach the client as machine codes (409 NOT_ADMIN, 404 GROUP_NOT_FOUND,
404 INVITE_INVALID). A participant change answers one result per participant, never a silent
partial success. Sending to a group is ``POST /session/{id}/send`` with ``to`` a group JID.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import web

from supervisor.api import answers, bodies, upload
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, ok
from supervisor.api.keys import REGISTRY, SETTINGS
from supervisor.api.operations import ACCOUNT_ERRORS, json_reply, operation, session_operation
from supervisor.timefmt import iso
from transport import wire

routes = web.RouteTableDef()

INVITE_LINK = "https://chat.whatsapp.com/"
MAX_PICTURE_BYTES = 5 * 1024 * 1024
# The engine's codes that mean WhatsApp refused: passed to the client as they are.
GROUP_CODES = frozenset(
    {ErrorCode.NOT_ADMIN, ErrorCode.GROUP_NOT_FOUND, ErrorCode.INVITE_INVALID, ErrorCode.NOT_SUPPORTED}
)
GROUP_ERRORS = (*ACCOUNT_ERRORS, 404)


def group_view(group: wire.GroupInfo) -> dict[str, Any]:
    """A group as answers show it."""
    return {
        "jid": group.jid,
        "subject": group.subject,
        "description": group.description,
        "owner": group.owner,
        "createdAt": iso(group.created_at) if group.created_at else None,
        "announce": group.announce,
        "locked": group.locked,
        "participants": [{"jid": p.jid, "admin": p.admin} for p in group.participants],
    }


def _results(results: list[wire.ParticipantResult]) -> list[dict[str, Any]]:
    return [{"jid": r.jid, "result": r.result, "code": r.code} for r in results]


def _user_jids(participants: list[str]) -> list[str]:
    return list(dict.fromkeys(participants))  # each once, in the order first asked


def _group_path(request: web.Request) -> tuple[str, str]:
    path = v.parse(bodies.GroupPath, {"id": request.match_info["id"], "groupJid": request.match_info["groupJid"]})
    request.app[REGISTRY].get(path.id)  # 404 before anything else
    return path.id, path.groupJid


async def _ask(request: web.Request, session_id: str, body: wire.ChildRequest[wire.R]) -> wire.R:
    return await request.app[REGISTRY].ask(session_id, body, passthrough=GROUP_CODES)


def _group_operation(method: str, path: str, **declared: Any) -> Any:
    """An operation on one group of one session: both ids in the path."""
    errors = (400, 404, *declared.pop("errors", ()))
    return operation(routes, method, path, path_params=bodies.GroupPath, tag="groups", errors=errors, **declared)


@session_operation(
    routes,
    "POST",
    "/session/{id}/groups",
    id="createGroup",
    tag="groups",
    summary="Create a group with this account as its owner; one result per participant asked for",
    body=bodies.GroupCreateRequest,
    ok=json_reply(answers.GroupCreated),
    errors=(413, 415, *GROUP_ERRORS),
)
async def create_group(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)  # 404 before anything else
    body = await v.body(request, bodies.GroupCreateRequest)
    reply = await _ask(
        request, session_id, wire.GroupCreate(subject=body.subject, participants=_user_jids(body.participants))
    )
    return ok({"group": group_view(reply.group), "results": _results(reply.results)})


@session_operation(
    routes,
    "GET",
    "/session/{id}/groups",
    id="listGroups",
    tag="groups",
    summary="The groups this account is in",
    ok=json_reply(answers.GroupList),
    errors=GROUP_ERRORS,
)
async def list_groups(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    reply = await _ask(request, session_id, wire.GroupList())
    groups = [{"jid": g.jid, "subject": g.subject, "size": g.size, "isAdmin": g.is_admin} for g in reply.groups]
    return ok({"groups": groups})


@session_operation(
    routes,
    "GET",
    "/session/{id}/groups/invite-info",
    id="groupInviteInfo",
    tag="groups",
    summary="The group behind an invite code, without joining it",
    query=bodies.InviteInfoQuery,
    ok=json_reply(answers.Group),
    errors=GROUP_ERRORS,
)
async def invite_info(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    code = v.query(request, bodies.InviteInfoQuery).code
    return ok(group_view(await _ask(request, session_id, wire.GroupInviteInfo(code=code))))


@session_operation(
    routes,
    "POST",
    "/session/{id}/groups/join",
    id="joinGroup",
    tag="groups",
    summary="Join a group by its invite code or link",
    body=bodies.GroupJoinRequest,
    ok=json_reply(answers.GroupJoined),
    errors=(413, 415, *GROUP_ERRORS),
)
async def join_group(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    request.app[REGISTRY].get(session_id)
    body = await v.body(request, bodies.GroupJoinRequest)
    code = body.code or (body.link or "").removeprefix(INVITE_LINK)
    if not code:
        raise ApiError(400, ErrorCode.INVALID_FIELD, "give the invite code or the link")
    return ok({"group": group_view(await _ask(request, session_id, wire.GroupJoin(code=code)))})


@_group_operation(
    "GET",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}",
    id="getGroup",
    summary="A group's subject, description, settings and participants",
    ok=json_reply(answers.Group),
    errors=ACCOUNT_ERRORS,
)
async def get_group(request: web.Request) -> web.Response:
    session_id, jid = _group_path(request)
    return ok(group_view(await _ask(request, session_id, wire.GroupInfoRequest(jid=jid))))


@_group_operation(
    "PATCH",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}",
    id="updateGroup",
    summary="Change a group's subject, description, announce or locked setting (admins, or anyone when unlocked)",
    body=bodies.GroupUpdateRequest,
    ok=json_reply(answers.GroupDone),
    errors=(413, 415, *ACCOUNT_ERRORS),
)
async def update_group(request: web.Request) -> web.Response:
    session_id, jid = _group_path(request)
    body = await v.body(request, bodies.GroupUpdateRequest)
    if body.subject is None and body.description is None and body.announce is None and body.locked is None:
        raise ApiError(400, ErrorCode.INVALID_FIELD, "give at least one of subject, description, announce, locked")
    change = wire.GroupUpdate(
        jid=jid, subject=body.subject, description=body.description, announce=body.announce, locked=body.locked
    )
    await _ask(request, session_id, change)
    return ok({"group": jid})


@_group_operation(
    "PUT",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}/picture",
    id="setGroupPicture",
    summary="Set a group's picture: a JPEG (multipart/form-data, part 'file')",
    form=bodies.GroupPictureForm,
    ok=json_reply(answers.GroupDone),
    errors=(413, 415, *ACCOUNT_ERRORS),
)
async def set_picture(request: web.Request) -> web.Response:
    session_id, jid = _group_path(request)
    session = request.app[REGISTRY].get(session_id)
    if session.status != "connected":
        # Refused before the upload is read: the client should not stream megabytes for nothing.
        raise ApiError(
            409, ErrorCode.SESSION_NOT_CONNECTED, f"session {session_id!r} is {session.status}, not connected"
        )
    settings = request.app[SETTINGS]
    target = settings.storage_dir / "outgoing" / session_id / f"{secrets.token_hex(12)}.jpg"
    received = await upload.receive(request, target, max_bytes=MAX_PICTURE_BYTES)
    try:
        if received.mimetype != "image/jpeg":
            raise ApiError(415, ErrorCode.MEDIA_TYPE_MISMATCH, f"the picture must be a JPEG, not {received.mimetype}")
        await _ask(request, session_id, wire.GroupPicture(jid=jid, path=str(received.path)))
    finally:
        await asyncio.to_thread(target.unlink, True)
    return ok({"group": jid})


@_group_operation(
    "POST",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}/participants",
    id="groupParticipants",
    summary="Add, remove, promote or demote participants: one result per participant (admins only)",
    body=bodies.GroupParticipantsRequest,
    ok=json_reply(answers.ParticipantResults),
    errors=(413, 415, *ACCOUNT_ERRORS),
)
async def participants(request: web.Request) -> web.Response:
    session_id, jid = _group_path(request)
    body = await v.body(request, bodies.GroupParticipantsRequest)
    change = wire.GroupParticipants(jid=jid, action=body.action, participants=_user_jids(body.participants))
    reply = await _ask(request, session_id, change)
    return ok({"results": _results(reply.results)})


async def _invite(request: web.Request, *, revoke: bool) -> web.Response:
    session_id, jid = _group_path(request)
    reply = await _ask(request, session_id, wire.GroupInvite(jid=jid, revoke=revoke))
    return ok({"code": reply.code, "link": INVITE_LINK + reply.code})


@_group_operation(
    "GET",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}/invite",
    id="groupInvite",
    summary="The group's invite code and link (admins only)",
    ok=json_reply(answers.GroupInvite),
    errors=ACCOUNT_ERRORS,
)
async def get_invite(request: web.Request) -> web.Response:
    return await _invite(request, revoke=False)


@_group_operation(
    "POST",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}/invite/revoke",
    id="revokeGroupInvite",
    summary="A new invite code; the old one stops working (admins only)",
    ok=json_reply(answers.GroupInvite),
    errors=ACCOUNT_ERRORS,
)
async def revoke_invite(request: web.Request) -> web.Response:
    return await _invite(request, revoke=True)


@_group_operation(
    "POST",
    "/session/{id}/groups/{groupJid:[^/@]+@[^/]+}/leave",
    id="leaveGroup",
    summary="Leave a group",
    ok=json_reply(answers.GroupDone),
    errors=ACCOUNT_ERRORS,
)
async def leave_group(request: web.Request) -> web.Response:
    session_id, jid = _group_path(request)
    await _ask(request, session_id, wire.GroupLeave(jid=jid))
    return ok({"group": jid})

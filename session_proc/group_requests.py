"""The supervisor's group requests (issue 17), carried out by the session's engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from session_proc.engine import Engine, EngineError
from transport import wire


async def group_request(engine: Engine, request: wire.ChildRequest[Any]) -> wire.Reply:
    """Carry out one of ``wire.GROUP_REQUESTS`` with ``engine``; its reply."""
    match request:
        case wire.GroupCreate():
            return await engine.group_create(request)
        case wire.GroupList():
            return await engine.group_list()
        case wire.GroupInfoRequest(jid=jid):
            return await engine.group_info(jid)
        case wire.GroupUpdate():
            await engine.group_update(request)
        case wire.GroupPicture(jid=jid, path=path):
            try:
                jpeg = await asyncio.to_thread(Path(path).read_bytes)
            except OSError as exc:
                raise EngineError("MEDIA_MISSING", f"cannot read the picture: {exc.strerror}") from None
            await engine.group_picture(jid, jpeg)
        case wire.GroupParticipants():
            return await engine.group_participants(request)
        case wire.GroupInvite(jid=jid, revoke=revoke):
            return wire.InviteReply(code=await engine.group_invite(jid, revoke=revoke))
        case wire.GroupInviteInfo(code=code):
            return await engine.group_invite_info(code)
        case wire.GroupJoin(code=code):
            return await engine.group_join(code)
        case wire.GroupLeave(jid=jid):
            await engine.group_leave(jid)
        case _:
            raise EngineError(wire.PROTOCOL_ERROR, f"{request.OP!r} is not a group request")
    return wire.Done()

"""The sim engine's group operations (issue 17): requests to the hub's group registry, and the
hub's answers and group events as the wire contract's structs."""

from __future__ import annotations

import abc
from typing import Any

from session_proc.engine import EngineError
from session_proc.sim import ops
from session_proc.sim.jids import jid
from transport import wire


def _jid(phone: object) -> str:
    return jid(str(phone))


def _phones(values: object) -> list[str]:
    """Participants as the hub takes them: digits (a user JID is reduced to its number)."""
    if not isinstance(values, list):
        return []
    return [str(v).split("@", 1)[0] for v in values]


def group_info(body: dict[str, Any]) -> wire.GroupInfo:
    """A group as the hub shows it (phones) as the wire's GroupInfo (JIDs)."""
    created = body.get("createdAt")
    owner = body.get("owner")
    return wire.GroupInfo(
        jid=str(body["jid"]),
        subject=str(body.get("subject") or ""),
        description=body.get("description") if isinstance(body.get("description"), str) else None,
        owner=_jid(owner) if isinstance(owner, str) else None,
        created_at=float(created) if isinstance(created, int | float) else None,
        announce=body.get("announce") is True,
        locked=body.get("locked") is True,
        participants=[
            wire.GroupMember(jid=_jid(p["phone"]), admin=p.get("admin")) for p in body.get("participants") or []
        ],
    )


def _results(values: object) -> list[wire.ParticipantResult]:
    if not isinstance(values, list):
        return []
    return [wire.ParticipantResult(jid=_jid(r["phone"]), result=str(r["result"]), code=int(r["code"])) for r in values]


def group_event(body: dict[str, Any]) -> wire.GroupEvent:
    """A ``group_event`` push of the hub as the wire's GroupEvent (phones become JIDs)."""
    by = body.get("by")
    ts = body.get("timestamp")
    changes = body.get("changes")
    return wire.GroupEvent(
        id=str(body["id"]),
        kind=str(body["kind"]),
        group=str(body["group"]),
        timestamp=float(ts) if isinstance(ts, int | float) else 0.0,
        by=_jid(by) if isinstance(by, str) else None,
        subject=body.get("subject") if isinstance(body.get("subject"), str) else None,
        action=body.get("action") if isinstance(body.get("action"), str) else None,
        participants=[_jid(p) for p in _phones(body.get("participants"))],
        changes=changes if isinstance(changes, dict) else {},
    )


class SimGroups(abc.ABC):
    """Group operations of the sim engine, each one ``group`` request to the hub."""

    @abc.abstractmethod
    async def hub_request(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request to the hub while online."""

    async def _group(self, call: str, **fields: Any) -> dict[str, Any]:
        return await self.hub_request(ops.GROUP, {"call": call, **fields})

    async def group_create(self, request: wire.GroupCreate) -> wire.GroupCreateReply:
        """Create a group; one result per participant asked for."""
        answer = await self._group("create", subject=request.subject, participants=_phones(request.participants))
        return wire.GroupCreateReply(group=group_info(answer["group"]), results=_results(answer.get("results")))

    async def group_list(self) -> wire.GroupListReply:
        """The groups this account is in."""
        answer = await self._group("list")
        me = getattr(self, "credentials", None)
        mine = me.phone if me is not None else None
        groups = []
        for body in answer.get("groups") or []:
            members = body.get("participants") or []
            admin = any(p.get("phone") == mine and p.get("admin") for p in members)
            groups.append(
                wire.GroupSummary(jid=str(body["jid"]), subject=str(body["subject"]), size=len(members), is_admin=admin)
            )
        return wire.GroupListReply(groups=groups)

    async def group_info(self, jid: str) -> wire.GroupInfo:
        """One group's subject, settings and participants."""
        return group_info(await self._group("info", jid=jid))

    async def group_update(self, request: wire.GroupUpdate) -> None:
        """Change a group's subject, description, announce or locked setting."""
        fields = {
            key: value
            for key, value in (
                ("subject", request.subject),
                ("description", request.description),
                ("announce", request.announce),
                ("locked", request.locked),
            )
            if value is not None
        }
        await self._group("update", jid=request.jid, **fields)

    async def group_picture(self, jid: str, jpeg: bytes) -> None:
        """Set a group's picture."""
        await self._group("picture", jid=jid, jpeg=jpeg)

    async def group_participants(self, request: wire.GroupParticipants) -> wire.ParticipantResults:
        """Add, remove, promote or demote participants; one result each."""
        answer = await self._group(
            "participants", jid=request.jid, action=request.action, participants=_phones(request.participants)
        )
        return wire.ParticipantResults(results=_results(answer.get("results")))

    async def group_invite(self, jid: str, *, revoke: bool) -> str:
        """The group's invite code (a new one when ``revoke``)."""
        answer = await self._group("invite", jid=jid, revoke=revoke)
        return str(answer["code"])

    async def group_invite_info(self, code: str) -> wire.GroupInfo:
        """The group behind an invite code, without joining."""
        return group_info(await self._group("invite_info", code=code))

    async def group_join(self, code: str) -> wire.GroupInfo:
        """Join the group behind an invite code."""
        answer = await self._group("join", code=code)
        if "group" not in answer:
            raise EngineError("ENGINE_ERROR", "the hub answered a join without the group")
        return group_info(answer["group"])

    async def group_leave(self, jid: str) -> None:
        """Leave a group."""
        await self._group("leave", jid=jid)

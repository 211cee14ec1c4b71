"""The hub's group registry (issue 17): WhatsApp's rules for groups, on the simulated network.

Groups live in ``hub.db`` beside the hub's other state (tables ``groups`` and ``group_privacy``),
mirrored in memory and written through. Members are phone numbers; a linked device acts for its
phone. The rules are WhatsApp's: only admins change participants and the announce/locked settings;
in a locked group only admins change the subject, description and picture; an announce group takes
messages from admins only; a phone whose ``groupAdd`` privacy is not ``everyone`` cannot be added
directly (``invite_required``; the sim keeps no contact lists, so ``contacts`` counts as not
everyone). Every change is pushed to every member's linked devices (and to those of whoever it
removed) as a ``group`` event, which waits in the pending table until the device acks it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from session_proc.sim import ops
from session_proc.sim.hub import HubError, check_phone, opt_str, req_str
from session_proc.sim.jids import GROUP_SERVER, is_group

INVITE_PREFIX = "https://chat.whatsapp.com/"
MAX_SUBJECT = 100  # WhatsApp's limit on a group's subject
MAX_DESCRIPTION = 2048
PRIVACY_VALUES = ("everyone", "contacts", "nobody")
ACTIONS = ("add", "remove", "promote", "demote")

# Per-participant results and WhatsApp's numeric code for each (whatsmeow's GroupParticipant.Error).
RESULT_CODES = {"ok": 200, "not_admin": 401, "invite_required": 403, "not_found": 404, "already": 409}

ERR_NOT_ADMIN = "NOT_ADMIN"
ERR_GROUP_NOT_FOUND = "GROUP_NOT_FOUND"
ERR_INVITE_INVALID = "INVITE_INVALID"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (jid TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS group_privacy (phone TEXT PRIMARY KEY, group_add TEXT NOT NULL);
"""

Queue = Callable[[str, str, str, dict[str, Any]], bool]  # (device_id, kind, id, body) -> pushed now


def phone_of_member(value: object) -> str:
    """A participant given as digits or as a user JID, as digits; HubError 400 otherwise."""
    if isinstance(value, str) and value.endswith("@s.whatsapp.net"):
        value = value.split("@", 1)[0]
    return check_phone(value, "participant")


@dataclass(slots=True)
class Group:
    """One group: members map a phone to ``None``, ``"admin"`` or ``"superadmin"`` (the creator)."""

    jid: str
    subject: str
    owner: str
    created_at: float
    invite: str
    description: str | None = None
    announce: bool = False
    locked: bool = False
    picture_sha256: str | None = None
    members: dict[str, str | None] = field(default_factory=dict)

    def is_admin(self, phone: str) -> bool:
        """Whether ``phone`` is an admin (or the creator) of this group."""
        return self.members.get(phone) is not None

    def to_json(self) -> dict[str, Any]:
        """The group as the hub's routes and ops show it."""
        return {
            "jid": self.jid,
            "subject": self.subject,
            "description": self.description,
            "owner": self.owner,
            "createdAt": self.created_at,
            "announce": self.announce,
            "locked": self.locked,
            "picture": self.picture_sha256,
            "participants": [{"phone": phone, "admin": admin} for phone, admin in self.members.items()],
        }


class HubGroups:
    """The groups of the simulated network and the rules that keep them."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        queue: Queue,
        devices_of: Callable[[str], list[str]],
        exists: Callable[[str], bool],
    ) -> None:
        self._db = db  # the hub's own database (HubStore.db), which closes it
        self._db.executescript(_SCHEMA)
        self._queue = queue
        self._devices_of = devices_of  # phone -> ids of the devices linked to it
        self.exists = exists  # whether a number is on WhatsApp: the hub's phone registry
        self._groups: dict[str, Group] = {}
        for (body,) in self._db.execute("SELECT body FROM groups"):
            group = Group(**json.loads(body))
            self._groups[group.jid] = group
        self._privacy: dict[str, str] = dict(self._db.execute("SELECT phone, group_add FROM group_privacy").fetchall())
        self._invites = {g.invite: g.jid for g in self._groups.values()}

    # -- phones -------------------------------------------------------------------------
    def set_privacy(self, phone: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PUT /phones/{phone}/privacy {groupAdd}``: who may add this phone to a group directly."""
        check_phone(phone)
        if not self.exists(phone):
            raise HubError(404, "NOT_ON_WHATSAPP", f"{phone} is not on WhatsApp: POST /phones first")
        value = body.get("groupAdd")
        if value not in PRIVACY_VALUES:
            raise HubError(400, "BAD_REQUEST", f"groupAdd must be one of {', '.join(PRIVACY_VALUES)}")
        self._db.execute(
            "INSERT INTO group_privacy (phone, group_add) VALUES (?, ?)"
            " ON CONFLICT (phone) DO UPDATE SET group_add = excluded.group_add",
            (phone, value),
        )
        self._privacy[phone] = str(value)
        return {"phone": phone, "groupAdd": value}

    # -- what members do ---------------------------------------------------------------
    def create(self, phone: str, body: dict[str, Any]) -> dict[str, Any]:
        """``phone`` creates a group: ``{group, results}`` (one result per participant asked for)."""
        subject = req_str(body, "subject", max_len=MAX_SUBJECT)
        wanted = self._participants(body)
        jid = f"120363{secrets.randbelow(10**12):012d}@{GROUP_SERVER}"
        group = Group(jid=jid, subject=subject, owner=phone, created_at=time.time(), invite=_invite_code())
        group.members[phone] = "superadmin"
        results, added = self._add(group, wanted, by=phone)
        self._groups[jid] = group
        self._invites[group.invite] = jid
        self._save(group)
        self._notify(group, "joined", by=phone, participants=[phone, *added], extra_to=[])
        return {"group": group.to_json(), "results": results}

    def groups_of(self, phone: str) -> list[Group]:
        """The groups ``phone`` is in, oldest first."""
        return sorted((g for g in self._groups.values() if phone in g.members), key=lambda g: g.created_at)

    def info(self, phone: str, jid: str) -> Group:
        """A group ``phone`` is in; GROUP_NOT_FOUND otherwise (WhatsApp tells outsiders nothing)."""
        group = self._groups.get(jid)
        if group is None or phone not in group.members:
            raise HubError(404, ERR_GROUP_NOT_FOUND, f"no group {jid} with {phone} in it")
        return group

    def participants(self, phone: str, jid: str, body: dict[str, Any]) -> dict[str, Any]:
        """``phone`` adds, removes, promotes or demotes participants: ``{results}``, one per participant."""
        group = self.info(phone, jid)
        action = body.get("action")
        if action not in ACTIONS:
            raise HubError(400, "BAD_REQUEST", f"action must be one of {', '.join(ACTIONS)}")
        wanted = self._participants(body)
        if not group.is_admin(phone):
            raise HubError(409, ERR_NOT_ADMIN, f"{phone} is not an admin of {jid}")
        if action == "add":
            results, changed = self._add(group, wanted, by=phone)
        else:
            results, changed = self._change(group, str(action), wanted)
        if changed:
            self._save(group)
            removed = changed if action == "remove" else []
            self._notify(group, "participants", by=phone, action=str(action), participants=changed, extra_to=removed)
        return {"results": results}

    def update(self, phone: str, jid: str, body: dict[str, Any]) -> dict[str, Any]:
        """``phone`` changes the subject, description, announce or locked setting."""
        group = self.info(phone, jid)
        changes: dict[str, Any] = {}
        subject = opt_str(body, "subject", max_len=MAX_SUBJECT)
        if subject is not None:
            if not subject:
                raise HubError(400, "BAD_REQUEST", "subject cannot be empty")
            changes["subject"] = subject
        description = opt_str(body, "description", max_len=MAX_DESCRIPTION)
        if description is not None:
            changes["description"] = description or None
        for key in ("announce", "locked"):
            value = body.get(key)
            if value is not None:
                if not isinstance(value, bool):
                    raise HubError(400, "BAD_REQUEST", f"{key} must be true or false")
                changes[key] = value
        if "picture" in body:
            changes["picture"] = opt_str(body, "picture", max_len=64)
        admin_only = bool({"announce", "locked"} & changes.keys()) or group.locked
        if admin_only and not group.is_admin(phone):
            raise HubError(409, ERR_NOT_ADMIN, f"only admins may change this in {jid}")
        for key, value in changes.items():
            setattr(group, "picture_sha256" if key == "picture" else key, value)
        if changes:
            self._save(group)
            self._notify(group, "updated", by=phone, changes=changes, extra_to=[])
        return {"group": group.to_json()}

    def invite(self, phone: str, jid: str, *, revoke: bool) -> dict[str, Any]:
        """The group's invite code; a new one when ``revoke`` (admins only, as for reading it)."""
        group = self.info(phone, jid)
        if not group.is_admin(phone):
            raise HubError(409, ERR_NOT_ADMIN, f"only admins see or reset the invite link of {jid}")
        if revoke:
            self._invites.pop(group.invite, None)
            group.invite = _invite_code()
            self._invites[group.invite] = jid
            self._save(group)
        return {"code": group.invite, "link": INVITE_PREFIX + group.invite}

    def by_invite(self, code: str) -> Group:
        """The group behind an invite code (or a link); INVITE_INVALID when none is (any more)."""
        key = code.removeprefix(INVITE_PREFIX).strip()
        jid = self._invites.get(key)
        if jid is None or jid not in self._groups:
            raise HubError(404, ERR_INVITE_INVALID, "this invite code is not valid (revoked or never issued)")
        return self._groups[jid]

    def join(self, phone: str, code: str) -> dict[str, Any]:
        """``phone`` joins by invite code (privacy does not apply: the phone chose to)."""
        group = self.by_invite(code)
        if phone not in group.members:
            group.members[phone] = None
            self._save(group)
            self._notify(group, "participants", by=phone, action="add", participants=[phone], extra_to=[])
        return {"group": group.to_json()}

    def leave(self, phone: str, jid: str) -> dict[str, Any]:
        """``phone`` leaves; the oldest member becomes admin when the last admin left, as WhatsApp does."""
        group = self.info(phone, jid)
        del group.members[phone]
        if group.members and not any(a is not None for a in group.members.values()):
            group.members[next(iter(group.members))] = "admin"
        self._save(group)
        self._notify(group, "participants", by=phone, action="remove", participants=[phone], extra_to=[phone])
        return {}

    def recipients(self, phone: str, jid: str) -> list[str]:
        """The members a message from ``phone`` to the group goes to (everyone else in it).

        GROUP_NOT_FOUND if ``phone`` is not in it; NOT_ADMIN in an announce group for a non-admin.
        """
        group = self.info(phone, jid)
        if group.announce and not group.is_admin(phone):
            raise HubError(409, ERR_NOT_ADMIN, f"only admins may send to {jid}")
        return [member for member in group.members if member != phone]

    def others(self, phone: str, jid: str) -> list[str]:
        """The other members of a group ``phone`` is in, who see its chat states; none when it is not
        in the group (WhatsApp's server drops a chat state there and tells the sender nothing)."""
        group = self._groups.get(jid)
        if group is None or phone not in group.members:
            return []
        return [member for member in group.members if member != phone]

    def device_request(self, phone: str, body: dict[str, Any]) -> dict[str, Any]:
        """A linked device's ``group`` op for its ``phone``: ``body["call"]`` names the operation."""
        call = body.get("call")
        jid = body.get("jid")
        if call in ("info", "update", "participants", "invite", "leave", "picture") and not is_group(jid):
            raise HubError(400, "BAD_REQUEST", "jid must be a group JID like 120363...@g.us")
        group_jid = str(jid)
        match call:
            case "create":
                return self.create(phone, body)
            case "list":
                return {"groups": [g.to_json() for g in self.groups_of(phone)]}
            case "info":
                return self.info(phone, group_jid).to_json()
            case "update":
                return self.update(phone, group_jid, body)
            case "participants":
                return self.participants(phone, group_jid, body)
            case "invite":
                return self.invite(phone, group_jid, revoke=body.get("revoke") is True)
            case "invite_info":
                return self.by_invite(req_str(body, "code", max_len=256)).to_json()
            case "join":
                return self.join(phone, req_str(body, "code", max_len=256))
            case "leave":
                return self.leave(phone, group_jid)
            case "picture":
                jpeg = body.get("jpeg")
                if not isinstance(jpeg, bytes) or not jpeg.startswith(b"\xff\xd8"):
                    raise HubError(400, "BAD_REQUEST", "the picture must be a JPEG")
                return self.update(phone, group_jid, {"picture": hashlib.sha256(jpeg).hexdigest()})
        raise HubError(400, "BAD_REQUEST", f"no group call {call!r}")

    # -- internals -----------------------------------------------------------------------
    def _participants(self, body: dict[str, Any]) -> list[str]:
        raw = body.get("participants")
        if not isinstance(raw, list) or len(raw) > 1024:
            raise HubError(400, "BAD_REQUEST", "participants must be a list of phone numbers or JIDs")
        return list(dict.fromkeys(phone_of_member(p) for p in raw))

    def _add(self, group: Group, wanted: list[str], *, by: str) -> tuple[list[dict[str, Any]], list[str]]:
        results, added = [], []
        for phone in wanted:
            if phone in group.members:
                result = "already"
            elif not self.exists(phone):
                result = "not_found"
            elif self._privacy.get(phone, "everyone") != "everyone" and phone != by:
                result = "invite_required"
            else:
                group.members[phone] = None
                added.append(phone)
                result = "ok"
            results.append(_result(phone, result))
        return results, added

    def _change(self, group: Group, action: str, wanted: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        results, changed = [], []
        for phone in wanted:
            role = group.members.get(phone, "absent")
            if role == "absent":
                result = "not_found"
            elif role == "superadmin":
                result = "not_admin"  # nobody removes or demotes the creator
            elif (action == "promote" and role == "admin") or (action == "demote" and role is None):
                result = "already"
            else:
                if action == "remove":
                    del group.members[phone]
                else:
                    group.members[phone] = "admin" if action == "promote" else None
                changed.append(phone)
                result = "ok"
            results.append(_result(phone, result))
        return results, changed

    def _save(self, group: Group) -> None:
        self._db.execute(
            "INSERT INTO groups (jid, body) VALUES (?, ?) ON CONFLICT (jid) DO UPDATE SET body = excluded.body",
            (group.jid, json.dumps(asdict(group))),
        )

    def _notify(
        self,
        group: Group,
        kind: str,
        *,
        by: str,
        extra_to: list[str],
        action: str | None = None,
        participants: list[str] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Push one change to every member's devices (and to those of ``extra_to``, who just left).

        A member who is the subject of an add learns ``joined``; of a remove, ``left``; the rest learn
        ``participants``, ``updated`` or ``joined`` as given.
        """
        event_id = f"g{secrets.token_hex(8)}"
        now = time.time()
        for phone in [*group.members, *extra_to]:
            own = kind
            if kind == "participants" and phone in (participants or []) and action in ("add", "remove"):
                own = "joined" if action == "add" else "left"
            body: dict[str, Any] = {
                "id": event_id,
                "kind": own,
                "group": group.jid,
                "subject": group.subject,
                "by": by,
                "action": action,
                "participants": participants or [],
                "changes": changes or {},
                "timestamp": now,
            }
            for device_id in self._devices_of(phone):
                self._queue(device_id, ops.GROUP_EVENT, event_id, body)


def _result(phone: str, result: str) -> dict[str, Any]:
    return {"phone": phone, "result": result, "code": RESULT_CODES[result]}


def _invite_code() -> str:
    return secrets.token_urlsafe(16)[:22]

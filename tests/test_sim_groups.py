"""The hub's group registry (issue 17): WhatsApp's rules, the pushes they make, and what survives a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from session_proc.sim import ops
from session_proc.sim.hub import HubError
from session_proc.sim.hub_groups import HubGroups

OWNER, ADMIN, MEMBER, PRIVATE, STRANGER = "62810001", "62810002", "62810003", "62810004", "62810005"
ON_WHATSAPP = {OWNER, ADMIN, MEMBER, PRIVATE}


class _Network:
    """The hub's side of HubGroups: one device per phone, pushes recorded in order."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.pushed: list[tuple[str, str, dict[str, Any]]] = []  # (device, kind, body)

    def groups(self) -> HubGroups:
        return HubGroups(
            self.db,
            queue=self._queue,
            devices_of=lambda phone: [f"dev-{phone}"],
            exists=ON_WHATSAPP.__contains__,
        )

    def _queue(self, device_id: str, kind: str, _id: str, body: dict[str, Any]) -> bool:
        self.pushed.append((device_id, kind, body))
        return True

    def seen_by(self, phone: str) -> list[tuple[str, str | None, list[str]]]:
        return [
            (b["kind"], b["action"], b["participants"])
            for d, kind, b in self.pushed
            if d == f"dev-{phone}" and kind == ops.GROUP_EVENT
        ]


def _refused(code: str, call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(HubError) as refused:
        call(*args, **kwargs)
    assert refused.value.code == code


def test_whatsapps_rules_hold_and_every_member_hears_each_change(tmp_path: Path) -> None:
    net = _Network(tmp_path / "hub.db")
    groups = net.groups()
    groups.set_privacy(PRIVATE, {"groupAdd": "contacts"})
    created = groups.create(OWNER, {"subject": "Team", "participants": [ADMIN, f"{MEMBER}@s.whatsapp.net", PRIVATE]})
    jid = created["group"]["jid"]
    assert [(r["phone"], r["result"]) for r in created["results"]] == [
        (ADMIN, "ok"),
        (MEMBER, "ok"),
        (PRIVATE, "invite_required"),
    ]
    assert net.seen_by(MEMBER) == [("joined", None, [OWNER, ADMIN, MEMBER])]

    groups.participants(OWNER, jid, {"action": "promote", "participants": [ADMIN]})
    results = groups.participants(ADMIN, jid, {"action": "demote", "participants": [OWNER, MEMBER, STRANGER]})
    assert [r["result"] for r in results["results"]] == ["not_admin", "already", "not_found"]  # the creator stays
    _refused("NOT_ADMIN", groups.participants, MEMBER, jid, {"action": "add", "participants": [STRANGER]})
    _refused("GROUP_NOT_FOUND", groups.info, STRANGER, jid)

    groups.update(MEMBER, jid, {"subject": "Team!"})  # not locked: anyone may rename
    _refused("NOT_ADMIN", groups.update, MEMBER, jid, {"locked": True})
    groups.update(OWNER, jid, {"locked": True, "announce": True})
    _refused("NOT_ADMIN", groups.update, MEMBER, jid, {"description": "mine"})
    _refused("NOT_ADMIN", groups.recipients, MEMBER, jid)  # announce: admins only
    assert sorted(groups.recipients(ADMIN, jid)) == [OWNER, MEMBER]

    first = groups.invite(OWNER, jid, revoke=False)["code"]
    _refused("NOT_ADMIN", groups.invite, MEMBER, jid, revoke=False)
    second = groups.invite(OWNER, jid, revoke=True)["code"]
    _refused("INVITE_INVALID", groups.by_invite, first)
    groups.join(PRIVATE, f"https://chat.whatsapp.com/{second}")  # privacy does not stop a join by invite

    groups.participants(ADMIN, jid, {"action": "remove", "participants": [MEMBER]})
    assert net.seen_by(MEMBER)[-1] == ("left", "remove", [MEMBER])
    assert net.seen_by(OWNER)[-3:] == [
        ("updated", None, []),
        ("participants", "add", [PRIVATE]),
        ("participants", "remove", [MEMBER]),
    ]


def test_the_last_admin_leaving_hands_over_and_groups_survive_a_restart(tmp_path: Path) -> None:
    net = _Network(tmp_path / "hub.db")
    groups = net.groups()
    jid = groups.create(OWNER, {"subject": "Club", "participants": [MEMBER, ADMIN]})["group"]["jid"]
    groups.set_privacy(PRIVATE, {"groupAdd": "nobody"})
    groups.leave(OWNER, jid)
    assert groups.info(MEMBER, jid).members == {MEMBER: "admin", ADMIN: None}  # the oldest member

    again = _Network(tmp_path / "hub.db").groups()  # the hub restarted
    group = again.info(MEMBER, jid)
    assert (group.subject, group.members) == ("Club", {MEMBER: "admin", ADMIN: None})
    code = again.invite(MEMBER, jid, revoke=False)["code"]
    assert again.by_invite(code).jid == jid
    results = again.participants(MEMBER, jid, {"action": "add", "participants": [PRIVATE]})["results"]
    assert results == [{"phone": PRIVATE, "result": "invite_required", "code": 403}]  # privacy kept too
    _refused("NOT_ON_WHATSAPP", again.set_privacy, STRANGER, {"groupAdd": "everyone"})

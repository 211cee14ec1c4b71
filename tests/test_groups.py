"""Groups end to end on the simulated network (issue 17): real worker, session processes and hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from harness import Worker, history_message, running_worker, standalone_hub, wait_for
from test_backend import FakeBackend

A, B, C, D, E, F = (f"62817000{n:02d}" for n in range(1, 7))


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


async def _register(w: Worker, *phones: str, group_add: str = "everyone") -> None:
    """The phones join WhatsApp, with this privacy for being added to groups."""
    for phone in phones:
        status, body = await w.hub("POST", "/phones", json={"phone": phone})
        assert status == 201, body
        status, body = await w.hub("PUT", f"/phones/{phone}/privacy", json={"groupAdd": group_add})
        assert status == 200, body


async def _events(w: Worker, sid: str, prefix: str = "group.") -> list[dict[str, Any]]:
    status, body = await w.api("GET", "/events?since=0&limit=1000")
    assert status == 200, body
    return [e for e in body["data"]["events"] if e["sessionId"] == sid and e["event"].startswith(prefix)]


async def _wait_events(w: Worker, sid: str, count: int, prefix: str = "group.") -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = await _events(w, sid, prefix)
        return found if len(found) >= count else None

    return await wait_for(enough, what=f"{count} {prefix} events of {sid}")


async def _inbox(w: Worker, phone: str) -> list[dict[str, Any]]:
    status, body = await w.hub("GET", f"/phones/{phone}/messages")
    assert status == 200, body
    return list(body["messages"])


async def test_a_session_creates_a_group_and_talks_in_it(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("owner", A)
        await _register(w, B, C)
        status, body = await w.api(
            "POST", "/session/owner/groups", json={"subject": "Support", "participants": [B, jid(C), D]}
        )
        assert status == 200, body
        group = body["data"]["group"]
        gjid = group["jid"]
        assert gjid.endswith("@g.us") and group["subject"] == "Support" and group["owner"] == jid(A)
        assert body["data"]["results"] == [
            {"jid": jid(B), "result": "ok", "code": 200},
            {"jid": jid(C), "result": "ok", "code": 200},
            {"jid": jid(D), "result": "not_found", "code": 404},  # D is not on the network
        ]
        admins = {p["jid"]: p["admin"] for p in group["participants"]}
        assert admins == {jid(A): "superadmin", jid(B): None, jid(C): None}
        assert group["createdAt"].endswith("Z")

        joined = await _wait_events(w, "owner", 1)
        assert joined[0]["event"] == "group.joined"
        assert joined[0]["data"]["group"] == gjid and joined[0]["data"]["by"] == jid(A)

        status, body = await w.api("GET", "/session/owner/groups")
        assert status == 200, body
        assert body["data"]["groups"] == [{"jid": gjid, "subject": "Support", "size": 3, "isAdmin": True}]
        status, body = await w.api("GET", f"/session/owner/groups/{gjid}")
        assert status == 200 and body["data"]["jid"] == gjid, body

        # The session writes in the group, mentioning B: each phone gets it once, each receipt says whose.
        status, body = await w.api(
            "POST", "/session/owner/send", json={"to": gjid, "text": "hello team", "mentions": [B]}
        )
        assert status == 200 and body["data"]["status"] == "sent", body
        msg_id = body["data"]["messageId"]
        for phone in (B, C):
            got = [m for m in await _inbox(w, phone) if m["id"] == msg_id]
            assert len(got) == 1 and got[0]["deliveries"] == 1, got
            assert got[0]["to"] == gjid and got[0]["from"] == A and got[0]["mentions"] == [jid(B)]
        receipts = await _wait_events(w, "owner", 2, "message.status")
        by = {e["data"].get("by") for e in receipts if e["data"]["messageId"] == msg_id}
        assert by >= {jid(B), jid(C)}, receipts
        status, body = await w.hub("POST", f"/phones/{C}/read", json={"ids": [msg_id]})
        assert status == 200 and body["read"] == 1, body

        async def read_by_c() -> list[dict[str, Any]] | None:
            found = [e for e in await _events(w, "owner", "message.status") if e["data"]["status"] == "read"]
            return found or None

        read = await wait_for(read_by_c, what="C's read receipt")
        assert [(e["data"]["messageId"], e["data"]["by"]) for e in read] == [(msg_id, jid(C))]
        row = await history_message(w, "owner", msg_id)
        assert row is not None and row["status"] == "read" and row["chat"] == gjid

        # A phone writes in the group: history and message.received name the participant.
        status, body = await w.hub("POST", f"/phones/{B}/messages", json={"to": gjid, "text": "on it"})
        assert status == 200, body
        in_id = body["id"]
        row = await wait_for(lambda: history_message(w, "owner", in_id), what="B's group message in history")
        assert row["chat"] == gjid and row["participant"] == jid(B) and row["from"] == jid(B), row
        received = [e for e in await _events(w, "owner", "message.received") if e["data"]["message"]["id"] == in_id]
        assert received[0]["data"]["message"]["participant"] == jid(B)
        assert [m["id"] for m in await _inbox(w, C)].count(in_id) == 1  # C's phone got it too
        assert in_id not in [m["id"] for m in await _inbox(w, B)]  # never to its sender

        # The session reads B's group message: the receipt goes to B, the participant who sent it.
        status, body = await w.api("POST", "/session/owner/read", json={"chat": gjid, "messageIds": [in_id]})
        assert status == 200 and body["data"]["read"] == [in_id], body
        _, sent = await w.hub("GET", f"/phones/{B}/sent")
        assert [(m["id"], m["to"], m["status"]) for m in sent["messages"]] == [(in_id, gjid, "read")]
        # It types in the group: every other member's phone sees it, shown in that group.
        status, body = await w.api("POST", "/session/owner/presence", json={"state": "typing", "chat": gjid})
        assert status == 200 and body["data"] == {"state": "typing", "chat": gjid}, body
        for phone in (B, C):
            _, seen = await w.hub("GET", f"/phones/{phone}/presence")
            assert [(p["from"], p["state"], p.get("group")) for p in seen["presence"]] == [(A, "typing", gjid)]
        # Paced sending's typing shows in the group too, before the text and cleared after it.
        status, body = await w.api("PUT", "/session/owner/settings", json={"pacing": {"typing": True}})
        assert status == 200, body
        status, body = await w.api("POST", "/session/owner/send", json={"to": gjid, "text": "ok"})
        assert status == 200 and body["data"]["status"] == "sent", body
        _, seen = await w.hub("GET", f"/phones/{C}/presence")
        assert [p["state"] for p in seen["presence"]] == ["typing", "typing", "paused"], seen
        status, body = await w.api("PUT", "/session/owner/settings", json={"pacing": {"typing": None}})
        assert status == 200, body

        # A poll in the group reaches every member, and each member's vote is counted.
        poll = {"name": "Lunch?", "options": ["Rice", "Noodles"], "multiple": False}
        status, body = await w.api("POST", "/session/owner/send", json={"to": gjid, "type": "poll", "poll": poll})
        assert status == 200, body
        poll_id = body["data"]["messageId"]
        for phone, choice in ((B, "Rice"), (C, "Noodles")):
            status, body = await w.hub("POST", f"/phones/{phone}/polls/{poll_id}/vote", json={"options": [choice]})
            assert status == 200, body

        async def tallied() -> dict[str, Any] | None:
            status, body = await w.api("GET", f"/session/owner/polls/{poll_id}")
            assert status == 200, body
            return body["data"] if len(body["data"]["voters"]) == 2 else None

        tally = await wait_for(tallied, what="both members' votes")
        assert [(o["name"], o["voters"]) for o in tally["options"]] == [("Rice", [jid(B)]), ("Noodles", [jid(C)])]

        # A description set, read back, and removed with "".
        for description, shown in (("Ask here", "Ask here"), ("", None)):
            status, body = await w.api("PATCH", f"/session/owner/groups/{gjid}", json={"description": description})
            assert status == 200 and body["data"] == {"group": gjid}, body
            status, body = await w.api("GET", f"/session/owner/groups/{gjid}")
            assert status == 200 and body["data"]["description"] == shown, body

        # Bad input answers 400 with its code before any session process hears of it.
        for method, path, body, code in (
            ("POST", "/session/owner/groups", {"subject": "", "participants": [B]}, "INVALID_FIELD"),
            ("POST", "/session/owner/groups", {"subject": "x", "participants": []}, "INVALID_FIELD"),
            ("POST", "/session/owner/groups", {"subject": "x", "participants": [gjid]}, "INVALID_TARGET"),
            ("GET", "/session/owner/groups/628123@s.whatsapp.net", None, "INVALID_TARGET"),
            (
                "POST",
                f"/session/owner/groups/{gjid}/participants",
                {"action": "kick", "participants": [B]},
                "INVALID_FIELD",
            ),
            ("PATCH", f"/session/owner/groups/{gjid}", {}, "INVALID_FIELD"),
            ("PATCH", f"/session/owner/groups/{gjid}", {"announce": "yes"}, "INVALID_FIELD"),
            ("POST", "/session/owner/groups/join", {}, "INVALID_FIELD"),
            ("POST", "/session/owner/groups/join", {"link": "https://example.com/x"}, "INVALID_FIELD"),
            ("GET", "/session/owner/groups/invite-info", None, "INVALID_QUERY"),
        ):
            status, answer = await w.api(method, path, json=body)
            assert (status, answer["code"]) == (400, code), (method, path, body, answer)
        status, answer = await w.api("GET", "/session/nobody/groups")
        assert status == 404 and answer["code"] == "SESSION_NOT_FOUND", answer


async def _phone_group(w: Worker, owner: str, subject: str, members: list[str]) -> str:
    status, body = await w.hub("POST", f"/phones/{owner}/groups", json={"subject": subject, "participants": members})
    assert status == 200, body
    return str(body["jid"])


async def _change(w: Worker, phone: str, gjid: str, action: str, *who: str) -> list[dict[str, Any]]:
    status, body = await w.hub(
        "POST", f"/phones/{phone}/groups/{gjid}/participants", json={"action": action, "participants": list(who)}
    )
    assert status == 200, body
    return list(body["results"])


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str | None, list[str]]]:
    return [(e["event"], e["data"].get("action"), e["data"].get("participants", [])) for e in events]


async def test_a_phone_administers_and_the_session_hears_every_change_in_order(tmp_path: Path) -> None:
    async with standalone_hub(tmp_path) as hub_env:
        async with running_worker(tmp_path / "w", **hub_env) as w:
            await w.create_linked("member", A)
            await _register(w, B, C, D, F)
            await _register(w, E, group_add="nobody")
            gjid = await _phone_group(w, B, "Ops", [A, C])
            assert (await _change(w, B, gjid, "add", D))[0]["result"] == "ok"
            assert (await _change(w, B, gjid, "remove", C))[0]["result"] == "ok"
            assert await _change(w, B, gjid, "add", E) == [{"phone": E, "result": "invite_required", "code": 403}]
            # E joins by the invite B reads from its phone (privacy does not stop a join), then leaves.
            status, body = await w.hub("GET", f"/phones/{B}/groups/{gjid}/invite")
            assert status == 200, body
            status, body = await w.hub("POST", f"/phones/{E}/groups/join", json={"code": body["code"]})
            assert status == 200 and body["group"]["jid"] == gjid, body
            status, body = await w.hub("GET", f"/phones/{E}/groups")
            assert status == 200 and [g["jid"] for g in body["groups"]] == [gjid], body
            status, body = await w.hub("POST", f"/phones/{E}/groups/{gjid}/leave")
            assert status == 200, body
            status, body = await w.hub("GET", f"/phones/{E}/groups")
            assert status == 200 and body["groups"] == [], body
            status, body = await w.hub("GET", f"/phones/{B}/groups")
            assert status == 200, body
            members = {p["phone"]: p["admin"] for p in body["groups"][0]["participants"]}
            assert members == {B: "superadmin", A: None, D: None}, body
            events = await _wait_events(w, "member", 5)
            assert _summary(events) == [
                ("group.joined", None, []),
                ("group.participants", "add", [jid(D)]),
                ("group.participants", "remove", [jid(C)]),
                ("group.participants", "add", [jid(E)]),
                ("group.participants", "remove", [jid(E)]),
            ]
            assert [e["data"]["by"] for e in events] == [jid(B)] * 3 + [jid(E)] * 2  # E joined and left itself
            assert all(e["data"]["group"] == gjid for e in events)

            # A member who is not an admin: WhatsApp refuses, and so does the API.
            status, body = await w.api(
                "POST", f"/session/member/groups/{gjid}/participants", json={"action": "add", "participants": [F]}
            )
            assert status == 409 and body["code"] == "NOT_ADMIN", body
            status, body = await w.api("PATCH", f"/session/member/groups/{gjid}", json={"announce": True})
            assert status == 409 and body["code"] == "NOT_ADMIN", body

            # Promoted, the session adds people itself: one result per participant, never a silent partial.
            await _change(w, B, gjid, "promote", A)
            status, body = await w.api(
                "POST",
                f"/session/member/groups/{gjid}/participants",
                json={"action": "add", "participants": [F, E, D, "6289999999"]},
            )
            assert status == 200, body
            assert [(r["jid"], r["result"], r["code"]) for r in body["data"]["results"]] == [
                (jid(F), "ok", 200),
                (jid(E), "invite_required", 403),
                (jid(D), "already", 409),
                (jid("6289999999"), "not_found", 404),
            ]
            await _wait_events(w, "member", 7)

        # The worker is down; the group goes on. Nothing is lost, and the order holds when it is back.
        async with running_worker(tmp_path / "w2", **hub_env) as w2:
            assert (await _change(w2, B, gjid, "remove", D))[0]["result"] == "ok"
            await _change(w2, B, gjid, "demote", A)
            status, body = await w2.hub("PATCH", f"/phones/{B}/groups/{gjid}", json={"subject": "Ops 2"})
            assert status == 200, body
        async with running_worker(tmp_path / "w", **hub_env) as w:
            events = await _wait_events(w, "member", 10)
            assert _summary(events)[7:] == [
                ("group.participants", "remove", [jid(D)]),
                ("group.participants", "demote", [jid(A)]),
                ("group.updated", None, []),
            ]
            assert events[9]["data"]["changes"] == {"subject": "Ops 2"}
            seqs = [e["id"] for e in events]
            assert seqs == sorted(seqs) and len(set(e["data"]["id"] for e in events)) == 10


async def test_invite_join_and_leave_between_two_sessions(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("s1", A)
        await w.create_linked("s2", B)
        status, body = await w.api("POST", "/session/s1/groups", json={"subject": "Club", "participants": [C]})
        assert status == 200, body
        gjid = body["data"]["group"]["jid"]
        assert body["data"]["results"] == [{"jid": jid(C), "result": "not_found", "code": 404}]

        status, body = await w.api("GET", f"/session/s1/groups/{gjid}/invite")
        assert status == 200, body
        code, link = body["data"]["code"], body["data"]["link"]
        assert link == f"https://chat.whatsapp.com/{code}"
        status, body = await w.api("GET", f"/session/s2/groups/invite-info?code={code}")
        assert status == 200 and body["data"]["subject"] == "Club" and body["data"]["jid"] == gjid, body
        status, body = await w.api("GET", f"/session/s2/groups/{gjid}")
        assert status == 404 and body["code"] == "GROUP_NOT_FOUND", body  # not a member yet

        status, body = await w.api("POST", "/session/s2/groups/join", json={"link": link})
        assert status == 200 and body["data"]["group"]["jid"] == gjid, body
        s2 = await _wait_events(w, "s2", 1)
        assert s2[0]["event"] == "group.joined" and s2[0]["data"]["by"] == jid(B)
        s1 = await _wait_events(w, "s1", 2)
        assert _summary(s1)[1] == ("group.participants", "add", [jid(B)])

        # s2 writes; s1 has it with the participant. s1 changes the subject; s2 hears of it.
        status, body = await w.api("POST", "/session/s2/send", json={"to": gjid, "text": "hi all"})
        assert status == 200, body
        row = await wait_for(lambda: history_message(w, "s1", body["data"]["messageId"]), what="s2's message")
        assert row["participant"] == jid(B) and row["chat"] == gjid
        status, body = await w.api("PATCH", f"/session/s1/groups/{gjid}", json={"subject": "Club!", "locked": True})
        assert status == 200, body
        s2 = await _wait_events(w, "s2", 2)
        assert s2[1]["event"] == "group.updated" and s2[1]["data"]["changes"] == {"subject": "Club!", "locked": True}
        assert s2[1]["data"]["by"] == jid(A)

        # Locked and announce: WhatsApp's rules for a member who is not an admin.
        status, body = await w.api("PATCH", f"/session/s1/groups/{gjid}", json={"announce": True})
        assert status == 200, body
        status, body = await w.api("PATCH", f"/session/s2/groups/{gjid}", json={"subject": "mine now"})
        assert status == 409 and body["code"] == "NOT_ADMIN", body
        status, body = await w.api("POST", "/session/s2/send", json={"to": gjid, "text": "may I?"})
        assert status == 200 and body["data"]["status"] == "failed" and "admin" in body["data"]["error"], body

        jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(64)
        form = aiohttp.FormData()
        form.add_field("file", jpeg, filename="p.jpg", content_type="image/jpeg")
        status, body = await w.api("PUT", f"/session/s1/groups/{gjid}/picture", data=form)
        assert status == 200 and body["data"] == {"group": gjid}, body
        form = aiohttp.FormData()
        form.add_field("file", b"GIF89a" + bytes(32), filename="p.gif", content_type="image/gif")
        status, body = await w.api("PUT", f"/session/s1/groups/{gjid}/picture", data=form)
        assert status == 415, body
        s2 = await _wait_events(w, "s2", 4)
        assert s2[2]["data"]["changes"] == {"announce": True}
        assert set(s2[3]["data"]["changes"]) == {"picture"}

        status, body = await w.api("POST", f"/session/s1/groups/{gjid}/invite/revoke")
        assert status == 200 and body["data"]["code"] != code, body
        new_code = body["data"]["code"]
        status, body = await w.api("GET", f"/session/s2/groups/invite-info?code={code}")
        assert status == 404 and body["code"] == "INVITE_INVALID", body

        status, body = await w.api("POST", f"/session/s2/groups/{gjid}/leave")
        assert status == 200, body
        s2 = await _wait_events(w, "s2", 5)
        assert s2[4]["event"] == "group.left"
        s1 = await _wait_events(w, "s1", 6)
        assert [e["event"] for e in s1[2:5]] == ["group.updated"] * 3  # its own changes too
        assert _summary(s1)[5] == ("group.participants", "remove", [jid(B)])
        status, body = await w.api("GET", "/session/s2/groups")
        assert status == 200 and body["data"]["groups"] == [], body

        # Back in by the new code alone (a link was used above).
        status, body = await w.api("POST", "/session/s2/groups/join", json={"code": new_code})
        assert status == 200 and body["data"]["group"]["jid"] == gjid, body
        status, body = await w.api("GET", "/session/s2/groups")
        assert status == 200 and [g["jid"] for g in body["data"]["groups"]] == [gjid], body


async def test_group_events_reach_a_backend_that_was_down_in_order(tmp_path: Path) -> None:
    backend = FakeBackend()  # not started yet: the backend is down while the group changes
    async with running_worker(tmp_path / "w", BACKEND_URL=backend.url) as w:
        await w.create_linked("m", A)
        await _register(w, B, C)
        gjid = await _phone_group(w, B, "Night shift", [A])
        await _change(w, B, gjid, "add", C)
        await _change(w, B, gjid, "promote", A)
        await _change(w, B, gjid, "remove", C)
        produced = await _wait_events(w, "m", 4)
        backend.fail_every = 3  # and once up, it stumbles
        await backend.start()
        try:

            async def delivered() -> list[dict[str, Any]] | None:
                got = [e for e in backend.unique_events() if e["event"].startswith("group.")]
                return got if len(got) >= 4 else None

            got = await wait_for(delivered, timeout=60, what="the group events at the backend")
            assert [e["id"] for e in got] == [e["id"] for e in produced]
            assert _summary(got) == [
                ("group.joined", None, []),
                ("group.participants", "add", [jid(C)]),
                ("group.participants", "promote", [jid(A)]),
                ("group.participants", "remove", [jid(C)]),
            ]
        finally:
            await backend.stop()


async def test_edits_and_revokes_in_a_group_reach_every_member_as_the_groups(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("owner", A)
        await w.create_linked("member", B)
        await _register(w, C)
        status, body = await w.api("POST", "/session/owner/groups", json={"subject": "Ops", "participants": [B, C]})
        assert status == 200, body
        gjid = body["data"]["group"]["jid"]

        # The session edits, then revokes, what it wrote: the phone's inbox and the other session follow.
        status, body = await w.api("POST", "/session/owner/send", json={"to": gjid, "text": "draft"})
        assert status == 200, body
        ours = body["data"]["messageId"]
        await wait_for(lambda: history_message(w, "member", ours), what="our group message at the member")
        status, body = await w.api("PATCH", f"/session/owner/messages/{ours}", json={"text": "final"})
        assert status == 200 and body["data"]["status"] == "sent", body
        edited = await _wait_events(w, "member", 1, "message.edited")
        assert edited[0]["data"] | {"editedAt": None} == {
            "messageId": ours,
            "chat": gjid,
            "from": jid(A),
            "text": "final",
            "editedAt": None,
        }
        [at_c] = [m for m in await _inbox(w, C) if m["id"] == ours]
        assert at_c["text"] == "final" and at_c["edited"] is True
        status, body = await w.api("DELETE", f"/session/owner/messages/{ours}")
        assert status == 200, body
        revoked = await _wait_events(w, "member", 1, "message.revoked")
        assert revoked[0]["data"] == {"messageId": ours, "chat": gjid, "by": jid(A)}

        # A phone edits and revokes what it wrote in the group: both sessions hear it, as the group's.
        status, body = await w.hub("POST", f"/phones/{C}/messages", json={"to": gjid, "text": "typo"})
        assert status == 200, body
        theirs = body["id"]
        await wait_for(lambda: history_message(w, "owner", theirs), what="the phone's message at the owner")
        await wait_for(lambda: history_message(w, "member", theirs), what="the phone's message at the member")
        assert (await w.hub("POST", f"/phones/{C}/messages/{theirs}/edit", json={"text": "fixed"}))[0] == 200
        assert (await w.hub("POST", f"/phones/{C}/messages/{theirs}/revoke"))[0] == 200
        for sid in ("owner", "member"):
            [edit] = [e for e in await _wait_events(w, sid, 2, "message.edited") if e["data"]["messageId"] == theirs]
            assert (edit["data"]["chat"], edit["data"]["from"], edit["data"]["text"]) == (gjid, jid(C), "fixed")
            revokes = await _wait_events(w, sid, 2 if sid == "member" else 1, "message.revoked")
            [revoke] = [e for e in revokes if e["data"]["messageId"] == theirs]
            assert revoke["data"] == {"messageId": theirs, "chat": gjid, "by": jid(C)}
        [at_b] = [m for m in await _inbox(w, B) if m["id"] == theirs]
        assert at_b["revoked"] is True and at_b["text"] is None

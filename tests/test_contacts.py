"""Contacts, profiles, blocking and disappearing messages end to end: a real worker, its session
processes and the simulated network's hub, whose HTTP API plays the phones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import Worker, running_worker, wait_for

from transport import wire
from transport.protocol import REQ, Frame, decode, encode

ME = "6281700000"  # the number the session is linked to (it scanned the QR)
ANA = "6281700001"  # joins WhatsApp with a profile
BO = "6281700002"  # never joins, but sends a message: on WhatsApp too
NOBODY = "6281700009"  # not on WhatsApp


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


@pytest.mark.parametrize(
    ("request_body", "reply"),
    [
        (
            wire.CheckPhones(phones=[ANA, NOBODY]),
            wire.PhoneChecks(
                results=[
                    wire.PhoneCheck(phone=ANA, exists=True, jid=jid(ANA)),
                    wire.PhoneCheck(phone=NOBODY, exists=False),
                ]
            ),
        ),
        (wire.ContactInfo(jid=jid(ANA)), wire.ContactCard(jid=jid(ANA), push_name="Ana", about=None)),
        (wire.SetBlocked(jid=jid(ANA), blocked=True), wire.Done()),
        (wire.Blocklist(), wire.Blocked(jids=[jid(ANA)])),
        (wire.SetDisappearing(chat=jid(ANA), seconds=604800), wire.Done()),
    ],
)
def test_wire_round_trip(request_body: wire.ChildRequest[Any], reply: wire.Reply) -> None:
    frame = decode(encode(Frame(kind=REQ, op=request_body.OP, body=request_body, id=1)))
    assert isinstance(frame.body, dict)
    assert wire.decode_child_request(frame.op, frame.body) == request_body
    assert type(request_body).REPLY is type(reply)
    assert wire.parse(type(reply), msgspec.to_builtins(reply), what="reply") == reply
    with pytest.raises(wire.WireError):
        wire.decode_child_request(frame.op, {**frame.body, "extra": 1})


async def _ok(w: Worker, method: str, path: str, **kw: Any) -> Any:
    status, body = await w.api(method, path, **kw)
    assert status == 200 and body["success"], (status, body)
    return body["data"]


async def _refused(w: Worker, method: str, path: str, status: int, code: str, **kw: Any) -> None:
    got, body = await w.api(method, path, **kw)
    assert (got, body.get("code")) == (status, code), body


async def _texts_from(w: Worker, sid: str, phone: str) -> list[str]:
    data = await _ok(w, "GET", f"/session/{sid}/messages?contact={phone}&direction=in")
    return [m["text"] for m in reversed(data["messages"])]


async def test_check_numbers_and_look_contacts_up(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        status, joined = await w.hub("POST", "/phones", json={"phone": ANA, "pushName": "Ana", "about": "hi there"})
        assert status == 201, joined
        status, sent = await w.hub("POST", f"/phones/{BO}/messages", json={"to": ME, "text": "hello"})
        assert status == 200, sent

        checked = await _ok(w, "POST", "/session/c/contacts/check", json={"phones": [ANA, f"+{BO}", NOBODY, ME]})
        assert checked == {
            "results": [
                {"phone": ANA, "exists": True, "jid": jid(ANA)},
                {"phone": BO, "exists": True, "jid": jid(BO)},  # it sent a message
                {"phone": NOBODY, "exists": False, "jid": None},
                {"phone": ME, "exists": True, "jid": jid(ME)},  # it scanned the QR
            ]
        }

        assert await _ok(w, "GET", f"/session/c/contacts/{jid(ANA)}") == {
            "jid": jid(ANA),
            "pushName": "Ana",
            "about": "hi there",
            "pictureUrl": None,
        }
        status, _ = await w.hub(
            "PUT", f"/phones/{ANA}/profile", json={"about": "busy", "pictureUrl": "https://pps.example/ana.jpg"}
        )
        assert status == 200
        assert await _ok(w, "GET", f"/session/c/contacts/{ANA}") == {  # digits are a user JID too
            "jid": jid(ANA),
            "pushName": "Ana",
            "about": "busy",
            "pictureUrl": "https://pps.example/ana.jpg",
        }
        assert await _ok(w, "GET", f"/session/c/contacts/{jid(BO)}") == {
            "jid": jid(BO),
            "pushName": None,
            "about": None,
            "pictureUrl": None,
        }
        await _refused(w, "GET", f"/session/c/contacts/{jid(NOBODY)}", 404, "NOT_ON_WHATSAPP")
        await _refused(w, "PUT", f"/session/c/contacts/{jid(NOBODY)}/block", 404, "NOT_ON_WHATSAPP")


async def test_bad_input_and_unconnected_sessions(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        check = "/session/c/contacts/check"
        await _refused(w, "POST", check, 400, "INVALID_PHONE", json={"phones": ["62-abc"]})
        await _refused(w, "POST", check, 400, "INVALID_FIELD", json={"phones": []})
        await _refused(
            w, "POST", check, 400, "INVALID_FIELD", json={"phones": [str(6281000000 + n) for n in range(51)]}
        )
        await _refused(w, "POST", check, 400, "INVALID_FIELD", json={"phones": "6281"})
        await _refused(w, "GET", "/session/c/contacts/not-a-jid", 400, "INVALID_TARGET")
        await _refused(w, "GET", "/session/c/contacts/120363000000000001@g.us", 400, "INVALID_TARGET")
        await _refused(w, "PUT", "/session/c/contacts/x@y/block", 400, "INVALID_TARGET")
        timer = f"/session/c/chats/{jid(ANA)}/disappearing"
        for seconds in (5, -1, "86400", True, None, 86400.5):
            await _refused(w, "PUT", timer, 400, "INVALID_FIELD", json={"seconds": seconds})
        await _refused(w, "PUT", timer, 400, "INVALID_FIELD", json={})
        await _refused(w, "GET", "/session/nope/blocklist", 404, "SESSION_NOT_FOUND")
        await _refused(w, "GET", f"/session/nope/contacts/{jid(ANA)}", 404, "SESSION_NOT_FOUND")

        # A session that is not connected (waiting for its QR scan) cannot ask the network anything.
        status, body = await w.api("POST", "/session/create", json={"sessionId": "idle"})
        assert status == 200, body
        await w.wait_session("idle", lambda s: s["status"] == "qr_ready", what="idle shows a QR")
        await _refused(w, "POST", "/session/idle/contacts/check", 409, "SESSION_NOT_CONNECTED", json={"phones": [ANA]})
        await _refused(w, "GET", f"/session/idle/contacts/{jid(ANA)}", 409, "SESSION_NOT_CONNECTED")
        await _refused(w, "PUT", f"/session/idle/contacts/{jid(ANA)}/block", 409, "SESSION_NOT_CONNECTED")
        await _refused(w, "GET", "/session/idle/blocklist", 409, "SESSION_NOT_CONNECTED")
        await _refused(
            w, "PUT", f"/session/idle/chats/{jid(ANA)}/disappearing", 409, "SESSION_NOT_CONNECTED", json={"seconds": 0}
        )


async def test_a_blocked_number_never_reaches_the_session(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        await w.hub("POST", "/phones", json={"phone": ANA})
        await w.hub("POST", f"/phones/{ANA}/messages", json={"to": ME, "text": "before"})
        await wait_for(lambda: _has(w, "c", ANA, ["before"]), what="the first message")

        assert await _ok(w, "PUT", f"/session/c/contacts/{jid(ANA)}/block") == {"jid": jid(ANA), "blocked": True}
        assert await _ok(w, "PUT", f"/session/c/contacts/{ANA}/block") == {"jid": jid(ANA), "blocked": True}  # again
        assert await _ok(w, "GET", "/session/c/blocklist") == {"jids": [jid(ANA)]}
        assert (await w.hub("GET", f"/phones/{ME}/blocklist")) == (200, {"blocked": [ANA]})

        status, sent = await w.hub("POST", f"/phones/{ANA}/messages", json={"to": ME, "text": "while blocked"})
        assert status == 200, sent  # the sender is not told
        # The session cannot write to a number it blocked (WhatsApp asks to unblock first): a definite failure.
        result = await _ok(w, "POST", "/session/c/send", json={"to": ANA, "text": "to a blocked number"})
        assert result["status"] == "failed" and result["error"].startswith("RECIPIENT_BLOCKED"), result
        _, inbox = await w.hub("GET", f"/phones/{ANA}/messages")
        assert inbox["messages"] == []

        assert await _ok(w, "DELETE", f"/session/c/contacts/{jid(ANA)}/block") == {"jid": jid(ANA), "blocked": False}
        assert await _ok(w, "GET", "/session/c/blocklist") == {"jids": []}
        await w.hub("POST", f"/phones/{ANA}/messages", json={"to": ME, "text": "after"})
        # The hub pushes a chat's messages in order: once "after" is in, a late "while blocked" would be too.
        await wait_for(lambda: _has(w, "c", ANA, ["before", "after"]), what="the message sent after unblocking")
        result = await _ok(w, "POST", "/session/c/send", json={"to": ANA, "text": "friends again"})
        assert result["status"] == "sent", result


async def _has(w: Worker, sid: str, phone: str, texts: list[str]) -> bool:
    got = await _texts_from(w, sid, phone)
    assert set(got) <= {"before", "after"}, got  # never the message sent while blocked
    return got == texts


async def _events(w: Worker, name: str) -> list[dict[str, Any]]:
    data = await _ok(w, "GET", "/events?sessionId=c&limit=1000")
    return [e["data"] for e in data["events"] if e["event"] == name]


async def _ana_does_everything(w: Worker, first: str, second: str, poll: str, *, blocked: bool) -> None:
    """Ana edits ``first``, revokes ``second`` (while blocked) or ``first``, votes, types and calls."""
    tag = "while blocked" if blocked else "after"
    assert (await w.hub("POST", f"/phones/{ANA}/messages/{first}/edit", json={"text": f"edited {tag}"}))[0] == 200
    assert (await w.hub("POST", f"/phones/{ANA}/messages/{second if blocked else first}/revoke"))[0] == 200
    vote = await w.hub("POST", f"/phones/{ANA}/polls/{poll}/vote", json={"options": ["no" if blocked else "yes"]})
    assert vote[0] == 200, vote  # the voter is not told either
    state = "typing" if blocked else "recording"
    status, shown = await w.hub("POST", f"/phones/{ANA}/presence", json={"to": ME, "state": state})
    assert (status, shown["delivered"]) == (200, 0 if blocked else 1), shown
    assert (await w.hub("POST", f"/phones/{ANA}/call", json={"to": ME, "video": not blocked}))[0] == 200


async def test_a_blocked_number_reaches_the_session_with_nothing_at_all(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        await w.hub("POST", "/phones", json={"phone": ANA})
        first = (await w.hub("POST", f"/phones/{ANA}/messages", json={"to": ME, "text": "first"}))[1]["id"]
        second = (await w.hub("POST", f"/phones/{ANA}/messages", json={"to": ME, "text": "second"}))[1]["id"]

        async def both_in() -> bool:
            return await _texts_from(w, "c", ANA) == ["first", "second"]

        await wait_for(both_in, what="Ana's messages")
        poll_body = {"to": ANA, "type": "poll", "poll": {"name": "Lunch?", "options": ["yes", "no"]}}
        poll = (await _ok(w, "POST", "/session/c/send", json=poll_body))["messageId"]

        await _ok(w, "PUT", f"/session/c/contacts/{jid(ANA)}/block")
        await _ana_does_everything(w, first, second, poll, blocked=True)
        await _ok(w, "DELETE", f"/session/c/contacts/{jid(ANA)}/block")
        await _ana_does_everything(w, first, second, poll, blocked=False)

        # The hub pushes each kind in order: once the later one is in, a dropped earlier one would be too.
        async def all_in() -> bool:
            kinds = ("message.edited", "message.revoked", "poll.vote", "chat.presence", "call.received")
            return all([await _events(w, kind) for kind in kinds])

        await wait_for(all_in, what="what Ana did after she was unblocked")
        assert [e["text"] for e in await _events(w, "message.edited")] == ["edited after"]
        assert [e["messageId"] for e in await _events(w, "message.revoked")] == [first]
        assert [e["selectedOptions"] for e in await _events(w, "poll.vote")] == [["yes"]]
        assert [e["state"] for e in await _events(w, "chat.presence")] == ["recording"]
        assert [e["video"] for e in await _events(w, "call.received")] == [True]
        assert await _texts_from(w, "c", ANA) == [None, "second"]  # first revoked, second untouched


async def test_an_account_that_blocked_a_session_hears_none_of_its_edits_or_revokes(tmp_path: Path) -> None:
    # Another session (a linked device) blocks us after a message: our later changes to it must not reach it.
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        await w.create_linked("ana", ANA)
        sent = (await _ok(w, "POST", "/session/c/send", json={"to": ANA, "text": "before"}))["messageId"]

        async def received() -> bool:
            return await _texts_from(w, "ana", ME) == ["before"]

        await wait_for(received, what="the message at Ana's session")
        await _ok(w, "PUT", f"/session/ana/contacts/{jid(ME)}/block")
        await _ok(w, "PATCH", f"/session/c/messages/{sent}", json={"text": "edited while blocked"})
        await _ok(w, "DELETE", f"/session/ana/contacts/{jid(ME)}/block")
        await _ok(w, "DELETE", f"/session/c/messages/{sent}")

        async def changes_at_ana() -> list[str] | None:
            data = await _ok(w, "GET", "/events?sessionId=ana&limit=1000")
            seen = [e["event"] for e in data["events"] if e["event"] in ("message.edited", "message.revoked")]
            # The hub pushes in order: once the later revoke is in, the earlier edit would be too.
            return seen if "message.revoked" in seen else None

        assert await wait_for(changes_at_ana, what="the revoke at Ana's session") == ["message.revoked"]


async def test_disappearing_timer_is_kept_and_shown_by_the_network(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("c", ME)
        await w.hub("POST", "/phones", json={"phone": ANA})
        timer = f"/session/c/chats/{ANA}/disappearing"
        assert await _ok(w, "PUT", timer, json={"seconds": 604800}) == {"chat": jid(ANA), "seconds": 604800}
        status, shown = await w.hub("GET", f"/phones/{ANA}/disappearing")
        assert status == 200
        [chat] = shown["chats"]
        assert (chat["with"], chat["seconds"], chat["setBy"]) == (ME, 604800, ME)
        assert (await w.hub("GET", f"/phones/{ME}/disappearing"))[1]["chats"][0]["with"] == ANA  # the same chat

        first = await _ok(w, "POST", "/session/c/send", json={"to": ANA, "text": "gone in a week"})
        assert await _ok(w, "PUT", timer, json={"seconds": 0}) == {"chat": jid(ANA), "seconds": 0}
        assert (await w.hub("GET", f"/phones/{ANA}/disappearing")) == (200, {"chats": []})
        second = await _ok(w, "POST", "/session/c/send", json={"to": ANA, "text": "kept"})

        _, inbox = await w.hub("GET", f"/phones/{ANA}/messages")
        by_id = {m["id"]: m for m in inbox["messages"]}
        assert by_id[first["messageId"]]["disappearing"] == 604800
        assert "disappearing" not in by_id[second["messageId"]]

        await _refused(w, "PUT", f"/session/c/chats/{NOBODY}/disappearing", 404, "NOT_ON_WHATSAPP", json={"seconds": 0})

"""Polls, stickers, view-once and voice notes end to end: real worker, session process and hub; the hub's
HTTP API plays the phones (votes travel as option hashes and are mapped back by the worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import Worker, history_message, running_worker, wait_for
from test_messaging import _form, _inbox  # a multipart send form; what a phone received

PHONE = "6281777000"
ALICE, BOB = "6280101", "6280202"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
OGG = b"OggS" + bytes(60)
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def _send_poll(w: Worker, sid: str, to: str, poll: dict[str, Any]) -> str:
    status, resp = await w.api("POST", f"/session/{sid}/send", json={"to": to, "type": "poll", "poll": poll})
    assert status == 200 and resp["data"]["status"] == "sent", resp
    return str(resp["data"]["messageId"])


async def _vote(w: Worker, phone: str, poll_id: str, options: list[str]) -> tuple[int, Any]:
    return await w.hub("POST", f"/phones/{phone}/polls/{poll_id}/vote", json={"options": options})


async def _events(w: Worker, name: str) -> list[dict[str, Any]]:
    status, body = await w.api("GET", "/events?limit=1000")
    assert status == 200, body
    return [e["data"] for e in body["data"]["events"] if e["event"] == name]


async def test_poll_votes_are_tallied_and_reported(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("polls", PHONE)
        colours = {"name": "Colour?", "options": ["Red", "Green", "Blue"], "multiple": False}
        single = await _send_poll(w, "polls", ALICE, colours)
        multi = await _send_poll(w, "polls", BOB, {"name": "Days?", "options": ["Mon", "Tue", "Wed"], "multiple": True})
        # The phones see the polls as WhatsApp shows them.
        inbox = await _inbox(w, ALICE)
        assert inbox[single]["type"] == "poll" and inbox[single]["poll"] == colours
        # History shows the poll with its poll.
        status, page = await w.api("GET", "/session/polls/messages?contact=" + ALICE)
        assert status == 200 and page["data"]["messages"][0]["poll"] == colours

        # A single-choice poll refuses two options at the hub, and names that are not the poll's.
        status, body = await _vote(w, ALICE, single, ["Red", "Blue"])
        assert status == 400 and body["code"] == "TOO_MANY_OPTIONS", body
        status, body = await _vote(w, ALICE, single, ["Purple"])
        assert status == 400 and body["code"] == "UNKNOWN_OPTION", body
        status, body = await _vote(w, BOB, single, ["Red"])  # Bob never received that poll
        assert status == 404 and body["code"] == "POLL_NOT_FOUND", body

        # Alice votes, then changes her vote; Bob picks two days, then retracts.
        assert (await _vote(w, ALICE, single, ["Red"]))[0] == 200
        assert (await _vote(w, BOB, multi, ["Mon", "Wed"]))[0] == 200

        async def votes(n: int) -> list[dict[str, Any]] | None:
            seen = await _events(w, "poll.vote")
            return seen if len(seen) >= n else None

        first = await wait_for(lambda: votes(2), what="two poll.vote events")
        assert (await _vote(w, ALICE, single, ["Blue"]))[0] == 200
        assert (await _vote(w, BOB, multi, []))[0] == 200
        seen = await wait_for(lambda: votes(4), what="four poll.vote events")
        assert seen[:2] == first
        alice, bob = f"{ALICE}@s.whatsapp.net", f"{BOB}@s.whatsapp.net"
        by_voter = [(e["pollId"], e["voter"], e["selectedOptions"]) for e in seen]
        assert by_voter == [
            (single, alice, ["Red"]),
            (multi, bob, ["Mon", "Wed"]),
            (single, alice, ["Blue"]),
            (multi, bob, []),
        ]
        assert all(e["at"].endswith("Z") and "T" in e["at"] for e in seen)

        status, tally = await w.api("GET", f"/session/polls/polls/{single}")
        assert status == 200, tally
        assert tally["data"] == {
            "messageId": single,
            "name": "Colour?",
            "multiple": False,
            "options": [
                {"name": "Red", "votes": 0, "voters": []},
                {"name": "Green", "votes": 0, "voters": []},
                {"name": "Blue", "votes": 1, "voters": [alice]},
            ],
            "voters": [alice],
        }
        status, tally = await w.api("GET", f"/session/polls/polls/{multi}")
        assert status == 200 and tally["data"]["voters"] == [] and tally["data"]["multiple"] is True
        assert [o["votes"] for o in tally["data"]["options"]] == [0, 0, 0]

        # Not a poll, or no such message: 404 with its code.
        status, body = await w.api("GET", "/session/polls/polls/NOPE")
        assert status == 404 and body["code"] == "POLL_NOT_FOUND"
        status, body = await w.api("GET", "/session/nobody/polls/NOPE")
        assert status == 404 and body["code"] == "SESSION_NOT_FOUND"
        assert await _events(w, "poll.vote_failed") == []


async def test_a_revoked_poll_loses_its_content_and_its_tally(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("gone", PHONE)
        ours = await _send_poll(w, "gone", ALICE, {"name": "Lunch?", "options": ["Rice", "Noodles"]})
        assert (await _vote(w, ALICE, ours, ["Rice"]))[0] == 200

        async def voted() -> list[dict[str, Any]] | None:
            return await _events(w, "poll.vote") or None

        await wait_for(voted, what="the vote")
        status, body = await w.api("DELETE", f"/session/gone/messages/{ours}")
        assert status == 200, body
        # History keeps a revoked poll as a poll with no question, options or votes, as the phone sees it.
        row = await history_message(w, "gone", ours)
        assert row is not None and row["type"] == "poll" and row["revoked"] is True, row
        assert "poll" not in row, row
        assert "poll" not in (await _inbox(w, ALICE))[ours]
        status, body = await w.api("GET", f"/session/gone/polls/{ours}")
        assert status == 409 and body["code"] == "MESSAGE_REVOKED", body
        # The phone cannot vote on it any more (the hub removed it, as WhatsApp does).
        status, body = await _vote(w, ALICE, ours, ["Noodles"])
        assert status == 404 and body["code"] == "POLL_NOT_FOUND", body

        # A poll the phone sent and then deleted for everyone: the same in history.
        _, sent = await w.hub(
            "POST",
            f"/phones/{ALICE}/messages",
            json={"to": PHONE, "type": "poll", "poll": {"name": "Q", "options": ["a", "b"]}},
        )
        theirs = str(sent["id"])
        await wait_for(lambda: history_message(w, "gone", theirs), what="the phone's poll")
        assert (await w.hub("POST", f"/phones/{ALICE}/messages/{theirs}/revoke"))[0] == 200

        async def revoked() -> dict[str, Any] | None:
            row = await history_message(w, "gone", theirs)
            return row if row is not None and row.get("revoked") else None

        assert "poll" not in await wait_for(revoked, what="the phone's poll revoked")
        status, body = await w.api("GET", f"/session/gone/polls/{theirs}")
        assert status == 409 and body["code"] == "MESSAGE_REVOKED", body


async def test_bad_polls_are_refused_field_by_field(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("badpoll", PHONE)
        cases: list[tuple[Any, str]] = [
            (None, "INVALID_POLL"),
            ({"name": "", "options": ["a", "b"]}, "INVALID_POLL_NAME"),
            ({"name": "q", "options": ["a"]}, "INVALID_POLL_OPTIONS"),
            ({"name": "q", "options": [str(n) for n in range(13)]}, "INVALID_POLL_OPTIONS"),
            ({"name": "q", "options": ["a", " "]}, "INVALID_POLL_OPTIONS"),
            ({"name": "q", "options": ["a", 3]}, "INVALID_POLL_OPTIONS"),
            ({"name": "q", "options": ["a", "a"]}, "POLL_OPTIONS_NOT_DISTINCT"),
            ({"name": "q", "options": ["a", "b"], "multiple": "yes"}, "INVALID_FIELD"),
        ]
        for poll, code in cases:
            body: dict[str, Any] = {"to": ALICE, "type": "poll"}
            if poll is not None:
                body["poll"] = poll
            status, resp = await w.api("POST", "/session/badpoll/send", json=body)
            assert status == 400 and resp["code"] == code, (poll, resp)
        # viewOnce and voice belong to media; on a JSON message they are refused, not ignored.
        status, resp = await w.api("POST", "/session/badpoll/send", json={"to": ALICE, "text": "x", "viewOnce": True})
        assert status == 400 and resp["code"] == "VIEW_ONCE_NOT_ALLOWED", resp
        status, resp = await w.api("POST", "/session/badpoll/send", json={"to": ALICE, "text": "x", "voice": True})
        assert status == 400 and resp["code"] == "VOICE_NOT_ALLOWED", resp
        assert await _inbox(w, ALICE) == {}


async def test_stickers_view_once_and_voice_notes(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("media", PHONE)
        url = "/session/media/send"
        # A sticker is WebP by its bytes: a PNG declared as image/webp is refused.
        status, resp = await w.api(
            "POST", url, data=_form({"to": ALICE, "type": "sticker"}, PNG, "s.webp", "image/webp")
        )
        assert status == 415 and resp["code"] == "UNSUPPORTED_MEDIA_TYPE", resp
        status, resp = await w.api("POST", url, data=_form({"to": ALICE, "type": "sticker"}, WEBP, "s.bin", "x/y"))
        assert status == 200 and resp["data"]["status"] == "sent", resp
        sticker = resp["data"]["messageId"]

        form = _form({"to": ALICE, "type": "image", "viewOnce": "true", "caption": "once"}, PNG, "p.png", "image/png")
        status, resp = await w.api("POST", url, data=form)
        assert status == 200, resp
        once = resp["data"]["messageId"]
        status, resp = await w.api(
            "POST", url, data=_form({"to": ALICE, "type": "audio", "voice": "true"}, OGG, "v.ogg", "audio/ogg")
        )
        assert status == 200, resp
        voice = resp["data"]["messageId"]

        # Flags on the wrong type are refused with their own codes.
        form = _form({"to": ALICE, "type": "audio", "viewOnce": "true"}, OGG, "a.ogg", "audio/ogg")
        status, resp = await w.api("POST", url, data=form)
        assert status == 400 and resp["code"] == "VIEW_ONCE_NOT_ALLOWED", resp
        form = _form({"to": ALICE, "type": "image", "voice": "true"}, PNG, "p.png", "image/png")
        status, resp = await w.api("POST", url, data=form)
        assert status == 400 and resp["code"] == "VOICE_NOT_ALLOWED", resp
        form = _form({"to": ALICE, "type": "image", "viewOnce": "maybe"}, PNG, "p.png", "image/png")
        status, resp = await w.api("POST", url, data=form)
        assert status == 400 and resp["code"] == "INVALID_FIELD", resp

        inbox = await _inbox(w, ALICE)
        assert set(inbox) == {sticker, once, voice}
        assert inbox[sticker]["type"] == "sticker" and inbox[sticker]["mimetype"] == "image/webp"
        assert inbox[once]["type"] == "image" and inbox[once]["viewOnce"] is True and "voice" not in inbox[once]
        assert inbox[voice]["type"] == "audio" and inbox[voice]["voice"] is True and "viewOnce" not in inbox[voice]

        status, page = await w.api("GET", "/session/media/messages?contact=" + ALICE)
        assert status == 200
        shown = {m["id"]: m for m in page["data"]["messages"]}
        assert shown[once]["viewOnce"] is True and shown[voice]["voice"] is True
        assert shown[sticker]["type"] == "sticker" and "viewOnce" not in shown[sticker]

        # Received from a phone: the flags and a poll reach history and message.received.
        sent = await w.hub(
            "POST",
            f"/phones/{BOB}/messages",
            json={"to": PHONE, "type": "poll", "text": None, "poll": {"name": "Lunch?", "options": ["a", "b"]}},
        )
        assert sent[0] == 200, sent

        async def received() -> dict[str, Any] | None:
            got = [e["message"] for e in await _events(w, "message.received")]
            return got[0] if got else None

        message = await wait_for(received, what="the phone's poll received")
        assert message["type"] == "poll" and message["poll"] == {
            "name": "Lunch?",
            "options": ["a", "b"],
            "multiple": False,
        }

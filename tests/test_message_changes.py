"""Edits, revokes and reactions end to end: the API, the outbox, the simulated network, history and events."""

from __future__ import annotations

import base64
import functools
import signal
from pathlib import Path
from typing import Any

import aiohttp
from harness import Worker, history_message, pid_alive, running_worker, wait_for
from test_messaging import _form, _png  # a multipart send form; a real PNG

PHONE = "6281666000"
FRIEND = "6281666001"
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


async def _sent(w: Worker, sid: str, body: dict[str, Any]) -> str:
    status, resp = await w.api("POST", f"/session/{sid}/send", json={"to": FRIEND, **body})
    assert status == 200 and resp["data"]["status"] == "sent", resp
    return str(resp["data"]["messageId"])


async def _inbox_message(w: Worker, phone: str, message_id: str) -> dict[str, Any]:
    _, body = await w.hub("GET", f"/phones/{phone}/messages")
    return next(m for m in body["messages"] if m["id"] == message_id)


async def _events(w: Worker, sid: str, name: str) -> list[dict[str, Any]]:
    status, body = await w.api("GET", f"/events?sessionId={sid}&limit=1000")
    assert status == 200, body
    return [e["data"] for e in body["data"]["events"] if e["event"] == name]


async def _event(w: Worker, sid: str, name: str, message_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        return next((e for e in await _events(w, sid, name) if e["messageId"] == message_id), None)

    return await wait_for(found, what=f"{name} of {message_id}")


async def test_the_session_edits_and_revokes_its_own_messages(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("ed", PHONE)
        first = await _sent(w, "ed", {"text": "helo"})
        status, edited = await w.api("PATCH", f"/session/ed/messages/{first}", json={"text": "hello"})
        assert status == 200, edited
        assert edited["data"]["messageId"] == first and edited["data"]["status"] == "sent"
        assert edited["data"]["editedAt"] is not None
        # The phone sees the new text, marked edited; history and the event say the same.
        seen = await _inbox_message(w, FRIEND, first)
        assert (seen["text"], seen["edited"], seen["revoked"]) == ("hello", True, False)
        row = await history_message(w, "ed", first)
        assert row is not None and row["text"] == "hello" and row["editedAt"] == edited["data"]["editedAt"]
        event = await _event(w, "ed", "message.edited", first)
        assert event == {
            "messageId": first,
            "chat": f"{FRIEND}@s.whatsapp.net",
            "from": f"{PHONE}@s.whatsapp.net",
            "text": "hello",
            "editedAt": edited["data"]["editedAt"],
        }
        # An edit is not a message of its own: history holds the one message.
        status, page = await w.api("GET", "/session/ed/messages")
        assert page["data"]["pagination"]["total"] == 1

        status, revoked = await w.api("DELETE", f"/session/ed/messages/{first}")
        assert status == 200 and revoked["data"]["revokedAt"] is not None, revoked
        seen = await _inbox_message(w, FRIEND, first)
        assert (seen["revoked"], seen["text"]) == (True, None)
        row = await history_message(w, "ed", first)
        assert row is not None and (row["revoked"], row["text"], row["editedAt"]) == (True, None, None)
        assert await _event(w, "ed", "message.revoked", first) == {
            "messageId": first,
            "chat": f"{FRIEND}@s.whatsapp.net",
            "by": f"{PHONE}@s.whatsapp.net",
        }
        status, again = await w.api("PATCH", f"/session/ed/messages/{first}", json={"text": "too late"})
        assert status == 409 and again["code"] == "MESSAGE_REVOKED"

        # What cannot be changed: an unknown id, a received message, a location, a bad body.
        status, body = await w.api("PATCH", "/session/ed/messages/3EB0NOSUCHMESSAGE", json={"text": "x"})
        assert status == 404 and body["code"] == "UNKNOWN_MESSAGE"
        status, body = await w.api("DELETE", "/session/ed/messages/3EB0NOSUCHMESSAGE")
        assert status == 404 and body["code"] == "UNKNOWN_MESSAGE"
        _, got = await w.hub("POST", f"/phones/{FRIEND}/messages", json={"to": PHONE, "text": "mine"})
        await wait_for(functools.partial(history_message, w, "ed", got["id"]), what="incoming message")
        for method, kw in (("PATCH", {"json": {"text": "x"}}), ("DELETE", {})):
            status, body = await w.api(method, f"/session/ed/messages/{got['id']}", **kw)
            assert status == 409 and body["code"] == "NOT_OWN_MESSAGE", body
        pin = await _sent(w, "ed", {"type": "location", "latitude": 1.0, "longitude": 2.0})
        status, body = await w.api("PATCH", f"/session/ed/messages/{pin}", json={"text": "x"})
        assert status == 409 and body["code"] == "MESSAGE_NOT_EDITABLE"
        status, body = await w.api("PATCH", f"/session/ed/messages/{pin}", json={"text": ""})
        assert status == 400 and body["code"] == "INVALID_FIELD"
        status, body = await w.api("PATCH", "/session/nobody/messages/x", json={"text": "x"})
        assert status == 404 and body["code"] == "SESSION_NOT_FOUND"


async def test_an_edit_is_replayed_by_its_idempotency_key(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("idem", PHONE)
        target = await _sent(w, "idem", {"text": "one"})
        headers = {"Idempotency-Key": "edit-1"}
        path = f"/session/idem/messages/{target}"
        status, first = await w.api("PATCH", path, json={"text": "two"}, headers=headers)
        assert status == 200, first
        status, again = await w.api("PATCH", path, json={"text": "two"}, headers=headers)
        assert (status, again) == (200, first)
        status, clash = await w.api("PATCH", path, json={"text": "three"}, headers=headers)
        assert status == 409 and clash["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert len(await _events(w, "idem", "message.edited")) == 1
        assert (await _inbox_message(w, FRIEND, target))["text"] == "two"


async def test_an_edit_past_the_window_is_refused(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", EDIT_WINDOW="0") as w:
        await w.create_linked("late", PHONE)
        target = await _sent(w, "late", {"text": "old news"})
        status, body = await w.api("PATCH", f"/session/late/messages/{target}", json={"text": "new"})
        assert status == 409 and body["code"] == "EDIT_WINDOW_EXPIRED", body
        # A revoke has no such window.
        status, body = await w.api("DELETE", f"/session/late/messages/{target}")
        assert status == 200, body
        assert (await _inbox_message(w, FRIEND, target))["text"] is None


async def test_the_phones_edit_revoke_and_reaction_arrive_as_events_and_change_history(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("ph", PHONE)
        _, got = await w.hub("POST", f"/phones/{FRIEND}/messages", json={"to": PHONE, "text": "hi ther"})
        incoming = got["id"]
        await wait_for(functools.partial(history_message, w, "ph", incoming), what="incoming message")
        status, body = await w.hub("POST", f"/phones/{FRIEND}/messages/{incoming}/edit", json={"text": "hi there"})
        assert status == 200, body
        event = await _event(w, "ph", "message.edited", incoming)
        assert (event["from"], event["text"], event["chat"]) == (
            f"{FRIEND}@s.whatsapp.net",
            "hi there",
            f"{FRIEND}@s.whatsapp.net",
        )
        assert event["editedAt"] is not None
        row = await history_message(w, "ph", incoming)
        assert row is not None and row["text"] == "hi there" and row["editedAt"] == event["editedAt"]

        # The phone reacts to the session's message, changes its mind, then takes it back.
        ours = await _sent(w, "ph", {"text": "news"})
        for emoji in ("👍", "❤️"):
            status, body = await w.hub(
                "POST",
                f"/phones/{FRIEND}/messages",
                json={"to": PHONE, "type": "reaction", "messageId": ours, "emoji": emoji},
            )
            assert status == 200, body

        async def reacted(wanted: list[dict[str, Any]]) -> bool:
            row = await history_message(w, "ph", ours)
            return row is not None and row["reactions"] == wanted

        heart = [{"from": f"{FRIEND}@s.whatsapp.net", "emoji": "❤️"}]
        await wait_for(functools.partial(reacted, heart), what="the latest reaction in history")
        assert (await _inbox_message(w, FRIEND, ours))["reactions"] == [{"from": FRIEND, "emoji": "❤️"}]
        reactions = [e for e in await _events(w, "ph", "message.reaction") if e["messageId"] == ours]
        assert [e["emoji"] for e in reactions] == ["👍", "❤️"]
        await w.hub(
            "POST", f"/phones/{FRIEND}/messages", json={"to": PHONE, "type": "reaction", "messageId": ours, "emoji": ""}
        )
        await wait_for(functools.partial(reacted, []), what="the reaction removed")

        # The session's own reaction to the phone's message is listed on it too, once sent.
        await _sent(w, "ph", {"type": "reaction", "messageId": incoming, "emoji": "🔥"})
        row = await history_message(w, "ph", incoming)
        assert row is not None and row["reactions"] == [{"from": f"{PHONE}@s.whatsapp.net", "emoji": "🔥"}]
        mine = [e for e in await _events(w, "ph", "message.reaction") if e["messageId"] == incoming]
        assert mine == [
            {
                "messageId": incoming,
                "chat": f"{FRIEND}@s.whatsapp.net",
                "from": f"{PHONE}@s.whatsapp.net",
                "emoji": "🔥",
            }
        ]

        status, body = await w.hub("POST", f"/phones/{FRIEND}/messages/{incoming}/revoke")
        assert status == 200, body
        assert (await _event(w, "ph", "message.revoked", incoming))["by"] == f"{FRIEND}@s.whatsapp.net"
        row = await history_message(w, "ph", incoming)
        assert row is not None and (row["revoked"], row["text"], row["reactions"]) == (True, None, [])

        # The hub plays WhatsApp's rules: only the sender changes a message, only once revoked.
        status, body = await w.hub("POST", f"/phones/{FRIEND}/messages/{ours}/edit", json={"text": "x"})
        assert status == 409 and body["code"] == "NOT_OWN_MESSAGE"
        status, body = await w.hub("POST", f"/phones/{FRIEND}/messages/3EB0NOSUCH/revoke")
        assert status == 404 and body["code"] == "UNKNOWN_MESSAGE"
        status, body = await w.hub("POST", f"/phones/{FRIEND}/messages/{incoming}/revoke")
        assert status == 409 and body["code"] == "MESSAGE_REVOKED"


async def _url_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status


async def test_a_revoked_messages_media_leaves_storage(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("md", PHONE)
        form = _form({"to": FRIEND, "type": "image", "caption": "ours"}, _png(3000), "ours.png", "image/png")
        status, resp = await w.api("POST", "/session/md/send", data=form)
        assert status == 200 and resp["data"]["status"] == "sent", resp
        ours, ours_url = resp["data"]["messageId"], resp["data"]["mediaUrl"]
        photo = {"type": "image", "mimetype": "image/png", "mediaBase64": base64.b64encode(_png(2000)).decode()}
        _, pushed = await w.hub("POST", f"/phones/{FRIEND}/messages", json={"to": PHONE, **photo})
        theirs = await wait_for(functools.partial(history_message, w, "md", pushed["id"]), what="the phone's image")
        stored = tmp_path / "w" / "media" / "md"  # STORAGE_DIR's media objects of this session
        assert len(list(stored.iterdir())) == 2 and await _url_status(theirs["mediaUrl"]) == 200

        assert (await w.api("DELETE", f"/session/md/messages/{ours}"))[0] == 200
        assert (await w.hub("POST", f"/phones/{FRIEND}/messages/{pushed['id']}/revoke"))[0] == 200
        await _event(w, "md", "message.revoked", pushed["id"])

        async def removed() -> bool:
            return not list(stored.iterdir())

        # Removed after the revoke's commit, in the background: waited for, not assumed.
        await wait_for(removed, what="both revoked messages' media removed")
        assert await _url_status(ours_url) == 404 and await _url_status(theirs["mediaUrl"]) == 404
        assert "not removed" not in w.log()


async def test_an_edit_accepted_before_the_worker_is_killed_is_not_lost(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    w = Worker(storage, {"SEND_TIMEOUT": "0.5"})
    await w.start()
    try:
        await w.create_linked("kill", PHONE)
        target = await _sent(w, "kill", {"text": "draft"})
        status, _ = await w.hub("POST", "/faults", json={"refuseSendsSeconds": 600})
        assert status == 200
        status, pending = await w.api("PATCH", f"/session/kill/messages/{target}", json={"text": "final"})
        assert status == 202 and pending["data"]["status"] == "pending" and pending["data"]["editedAt"] is None
        children = w.child_pids()
        await w.stop(signal.SIGKILL)
        for pid in children:  # they leave by themselves; the test only waits for that

            async def gone(pid: int = pid) -> bool:
                return not pid_alive(pid)

            await wait_for(gone, timeout=15, what=f"child {pid} exit")
    finally:
        await w.stop()
    async with running_worker(storage, SEND_TIMEOUT="0.5") as w2:
        # A new hub (the worker's child) without the fault: the edit goes out after the reconnect.
        async def final() -> bool:
            return bool((await _inbox_message(w2, FRIEND, target))["text"] == "final")

        await wait_for(final, timeout=30, what="the edit delivered after the restart")
        event = await _event(w2, "kill", "message.edited", target)
        row = await history_message(w2, "kill", target)
        assert row is not None and row["text"] == "final" and row["editedAt"] == event["editedAt"]

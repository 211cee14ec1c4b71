"""Durable messaging end to end: outbox, idempotency, history, receipts, message types, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from harness import Worker, running_worker, wait_for

PHONE = "6281555000"


async def _send(w: Worker, sid: str, body: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
    status, resp = await w.api("POST", f"/session/{sid}/send", json=body, **kw)
    return status, resp


async def _history(w: Worker, sid: str, query: str = "") -> dict[str, Any]:
    status, body = await w.api("GET", f"/session/{sid}/messages{query}")
    assert status == 200, body
    return dict(body["data"])


async def _inbox(w: Worker, phone: str) -> dict[str, dict[str, Any]]:
    _, body = await w.hub("GET", f"/phones/{phone}/messages")
    return {m["id"]: m for m in body["messages"]}


async def test_history_receipts_and_filters(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("hist", PHONE)
        ids = []
        for n, to in enumerate(["6280001", "6280002", "6280001"]):
            status, resp = await _send(w, "hist", {"to": to, "text": f"out {n}"})
            assert status == 200 and resp["data"]["status"] == "sent", resp
            ids.append(resp["data"]["messageId"])
        await w.hub("POST", "/phones/6280001/messages", json={"to": PHONE, "text": "in 1"})
        await w.hub("POST", "/phones/6280003/messages", json={"to": PHONE, "text": "in 2"})

        async def five() -> dict[str, Any] | None:
            page = await _history(w, "hist")
            return page if page["pagination"]["total"] == 5 else None

        page = await wait_for(five, what="five messages in history")
        stamps = [m["timestamp"] for m in page["messages"]]
        assert stamps == sorted(stamps, reverse=True)  # newest first
        first = page["messages"][-1]
        assert first["id"] == ids[0] and first["direction"] == "out" and first["text"] == "out 0"
        assert set(first) >= {
            "id",
            "direction",
            "chat",
            "from",
            "to",
            "type",
            "text",
            "caption",
            "mediaUrl",
            "timestamp",
            "status",
        }
        # The hub's delivery receipts move outgoing messages to delivered; a read receipt to read.
        await wait_for(lambda: _all_status(w, "hist", ids, {"delivered"}), what="delivered receipts applied")
        await w.hub("POST", "/phones/6280001/read", json={"ids": [ids[0]]})
        await wait_for(lambda: _all_status(w, "hist", ids[:1], {"read"}), what="read receipt applied")

        p = await _history(w, "hist", "?limit=2&offset=1")
        assert p["pagination"] == {"total": 5, "limit": 2, "offset": 1} and len(p["messages"]) == 2
        assert [m["id"] for m in p["messages"]] == [m["id"] for m in page["messages"][1:3]]
        chat = await _history(w, "hist", "?contact=6280001")
        assert chat["pagination"]["total"] == 3
        assert {m["chat"] for m in chat["messages"]} == {"6280001@s.whatsapp.net"}
        incoming = await _history(w, "hist", "?direction=in")
        assert sorted(m["text"] for m in incoming["messages"]) == ["in 1", "in 2"]
        assert all(m["status"] == "received" for m in incoming["messages"])
        later = await _history(w, "hist", f"?since={time.time() + 60}")
        assert later["pagination"]["total"] == 0
        until = await _history(w, "hist", "?until=2000-01-01T00:00:00Z")
        assert until["pagination"]["total"] == 0
        status, st = await w.api("GET", "/session/hist/status")
        assert st["data"]["messageCount"] == 5
        for bad in ("?limit=0", "?limit=abc", "?offset=-1", "?direction=sideways", "?contact=nobody", "?since=x"):
            status, body = await w.api("GET", f"/session/hist/messages{bad}")
            assert status == 400 and body["code"] in ("INVALID_QUERY", "INVALID_TARGET"), (bad, body)


async def _all_status(w: Worker, sid: str, ids: list[str], wanted: set[str]) -> bool:
    page = await _history(w, sid, "?limit=500")
    found = {m["id"]: m["status"] for m in page["messages"]}
    return all(found.get(i) in wanted for i in ids)


async def test_message_types_reach_the_phone(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("types", PHONE)
        to = "6280777"
        _, first = await _send(w, "types", {"to": to, "text": "hello", "mentions": ["6280777"]})
        target = first["data"]["messageId"]
        cases: list[dict[str, Any]] = [
            {"type": "location", "latitude": -6.2, "longitude": 106.8, "name": "Monas", "address": "Jakarta"},
            {"type": "contact", "contact": {"name": "Budi", "phoneNumber": "628123456"}},
            {"type": "reaction", "messageId": target, "emoji": "👍"},
            {"type": "text", "text": "a reply", "quotedMessageId": target},
        ]
        sent: dict[str, str] = {}
        for case in cases:
            status, resp = await _send(w, "types", {"to": to, **case})
            assert status == 200, resp
            sent[case["type"] + ("-reply" if "quotedMessageId" in case else "")] = resp["data"]["messageId"]
        inbox = await _inbox(w, to)
        assert inbox[target]["mentions"] == ["6280777@s.whatsapp.net"]
        loc = inbox[sent["location"]]
        assert (loc["type"], loc["latitude"], loc["longitude"], loc["name"]) == ("location", -6.2, 106.8, "Monas")
        card = inbox[sent["contact"]]
        assert card["type"] == "contact" and "waid=628123456" in card["vcard"] and card["name"] == "Budi"
        react = inbox[sent["reaction"]]
        assert react["type"] == "reaction" and react["reactionTo"] == target and react["text"] == "👍"
        assert inbox[sent["text-reply"]]["quotedId"] == target
        bad_cases: list[tuple[dict[str, Any], str]] = [
            ({"type": "location", "latitude": 91, "longitude": 0}, "INVALID_FIELD"),
            ({"type": "contact", "contact": {"name": "x"}}, "INVALID_TARGET"),
            ({"type": "reaction", "emoji": "x"}, "INVALID_FIELD"),
            ({"type": "gif"}, "INVALID_TYPE"),
            ({"type": "text", "text": ""}, "INVALID_FIELD"),
            ({"type": "text", "text": "x", "mentions": "all"}, "INVALID_FIELD"),
        ]
        for bad, code in bad_cases:
            status, resp = await _send(w, "types", {"to": to, **bad})
            assert status == 400 and resp["code"] == code, (bad, resp)
        status, resp = await _send(w, "types", {"to": to, "type": "image"})
        assert status == 415
        status, resp = await _send(w, "types", {"to": to, "type": "sticker"})  # media: multipart only
        assert status == 415 and resp["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_idempotency_key_replays_the_first_answer_across_restarts(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    headers = {"Idempotency-Key": "order-42"}
    async with running_worker(storage) as w:
        await w.create_linked("idem", PHONE)
        status, first = await _send(w, "idem", {"to": "6280888", "text": "once"}, headers=headers)
        assert status == 200
        status, again = await _send(w, "idem", {"to": "6280888", "text": "once"}, headers=headers)
        assert (status, again) == (200, first)
        status, clash = await _send(w, "idem", {"to": "6280888", "text": "different"}, headers=headers)
        assert status == 409 and clash["code"] == "IDEMPOTENCY_KEY_REUSED"
        # Keys are per session: another session may use the same key for its own message.
        await w.create_linked("idem2", "6281555001")
        status, other = await _send(w, "idem2", {"to": "6280888", "text": "once"}, headers=headers)
        assert status == 200 and other["data"]["messageId"] != first["data"]["messageId"]
    async with running_worker(storage, START_STAGGER="6") as w2:
        # idem2 starts 6 s after idem: a known key is answered before its session process even runs.
        assert (await w2.session("idem2"))["pid"] is None
        status, replay = await _send(w2, "idem2", {"to": "6280888", "text": "once"}, headers=headers)
        assert (status, replay) == (200, other)
        await w2.wait_session("idem", lambda s: s["status"] == "connected")
        status, replay = await _send(w2, "idem", {"to": "6280888", "text": "once"}, headers=headers)
        assert (status, replay) == (200, first)
        inbox = await _inbox(w2, "6280888")
        assert inbox[first["data"]["messageId"]]["deliveries"] == 1
        assert len(inbox) == 2  # "once" from idem and from idem2, nothing more
        page = await _history(w2, "idem", "?direction=out")
        assert page["pagination"]["total"] == 1


async def _pending_sends(w: Worker, sid: str, count: int) -> list[str]:
    """Sends accepted while the network refuses them: they wait in the outbox."""
    status, _ = await w.hub("POST", "/faults", json={"refuseSendsSeconds": 600})
    assert status == 200
    ids = []
    for n in range(count):
        status, resp = await _send(w, sid, {"to": "6280999", "text": f"queued {n}"})
        assert status == 202 and resp["data"]["status"] == "pending", resp
        ids.append(resp["data"]["messageId"])
    return ids


async def _delivered_once(w: Worker, ids: list[str]) -> None:
    async def all_there() -> bool:
        inbox = await _inbox(w, "6280999")
        return all(i in inbox for i in ids)

    await wait_for(all_there, timeout=30, what="queued messages delivered")
    inbox = await _inbox(w, "6280999")
    assert all(inbox[i]["deliveries"] == 1 for i in ids)
    assert [m for m in inbox if m in ids] == ids  # in the order they were accepted


async def test_outbox_survives_a_graceful_restart(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    async with running_worker(storage, SEND_TIMEOUT="0.5") as w:
        await w.create_linked("ob", PHONE)
        ids = await _pending_sends(w, "ob", 3)
        await w.stop(signal.SIGTERM)
    async with running_worker(storage, SEND_TIMEOUT="0.5") as w2:
        # The hub is the worker's own child: a new hub, no faults. The sends go out after the reconnect.
        await _delivered_once(w2, ids)
        await wait_for(lambda: _all_status(w2, "ob", ids, {"sent", "delivered"}), what="history settled")


async def test_outbox_survives_a_killed_worker(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    w = Worker(storage, {"SEND_TIMEOUT": "0.5"})
    await w.start()
    try:
        await w.create_linked("obk", PHONE)
        ids = await _pending_sends(w, "obk", 3)
        children = w.child_pids()
        await w.stop(signal.SIGKILL)
        for pid in children:  # they leave by themselves; the test only waits for that
            await wait_for(functools.partial(_gone, pid), timeout=15, what=f"child {pid} exit")
    finally:
        await w.stop()
    async with running_worker(storage, SEND_TIMEOUT="0.5") as w2:
        await _delivered_once(w2, ids)


async def _gone(pid: int) -> bool:
    from harness import pid_alive

    return not pid_alive(pid)


async def test_unsent_messages_fail_after_their_ttl(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", SEND_TIMEOUT="0.2", MESSAGE_TTL="2") as w:
        await w.create_linked("ttl", PHONE)
        [mid] = await _pending_sends(w, "ttl", 1)
        await wait_for(lambda: _all_status(w, "ttl", [mid], {"failed"}), timeout=20, what="message failed")
        page = await _history(w, "ttl")
        assert page["messages"][0]["error"] == "ttl"
        assert mid not in await _inbox(w, "6280999")


async def test_crash_isolation_under_load(tmp_path: Path) -> None:
    """Sends from several sessions while their processes are SIGKILLed at random:
    every accepted message arrives exactly once, and the only errors are the retriable ones."""
    sessions = ["load-a", "load-b", "load-c"]
    recipient = {sid: f"62890{n}00" for n, sid in enumerate(sessions)}
    per_session = 60
    # Many kills in a short time: a higher restart intensity keeps them from ending in `failed`.
    # Back-to-back kills never give a run time to be stable, so the backoff would climb to its 30 s cap;
    # a 1 s cap keeps the test about crashes, not about waiting.
    # Senders go on while the killer works, past the per-session send limit (a test of its own).
    env = {
        "SEND_TIMEOUT": "2",
        "RESTART_INTENSITY": "100",
        "RESTART_BACKOFF_MAX": "1",
        "RATE_LIMIT_SEND_PER_SESSION": "0",
    }
    async with running_worker(tmp_path / "w", **env) as w:
        for n, sid in enumerate(sessions):
            await w.create_linked(sid, f"62816000{n:02d}")
        accepted: dict[str, list[str]] = {sid: [] for sid in sessions}
        refused: list[int] = []
        stop = asyncio.Event()  # set once the killer has done its kills
        kills_wanted = 8

        async def sender(sid: str) -> None:
            # At least per_session sends, and on while the killer works: however fast sending is,
            # the kills land while messages are in flight.
            n = 0
            while n < per_session or (not stop.is_set() and n < per_session * 10):
                n += 1
                status, resp = await _send(w, sid, {"to": recipient[sid], "text": f"{sid} {n}"})
                if status in (200, 202):
                    accepted[sid].append(resp["data"]["messageId"])
                else:
                    assert status in (409, 503), resp  # documented as retriable while a session restarts
                    refused.append(status)
                    await w.wait_session(sid, lambda s: s["status"] == "connected", timeout=30)

        kills = 0

        async def killer() -> None:
            nonlocal kills
            rng = random.Random(7)
            while kills < kills_wanted:
                sid = rng.choice(sessions)
                s = await w.session(sid)
                if s["pid"]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(s["pid"], signal.SIGKILL)
                        kills += 1
                await asyncio.sleep(0.15)  # pacing of the chaos, not a wait for a result
            stop.set()

        chaos = asyncio.create_task(killer())
        try:
            await asyncio.gather(*(sender(sid) for sid in sessions))
        finally:
            if not chaos.done():
                chaos.cancel()  # the senders hit their cap first: the assertion below says how far it got
        with contextlib.suppress(asyncio.CancelledError):
            await chaos  # a failure of the killer itself fails the test
        total = sum(len(v) for v in accepted.values())
        assert total >= len(sessions) * per_session // 2, (total, refused)
        for sid in sessions:
            await wait_for(
                functools.partial(_all_status, w, sid, accepted[sid], {"sent", "delivered", "read"}),
                timeout=60,
                what=f"{sid}: every accepted message sent",
            )
            inbox = await _inbox(w, recipient[sid])
            assert set(accepted[sid]) <= set(inbox), "an accepted message never arrived"
            assert len(inbox) == len(set(accepted[sid]))  # nothing extra, each id once
        # The restarts were real, and happened while messages were in flight.
        restarts = sum([(await w.session(sid))["restarts"] for sid in sessions])
        print(f"accepted {total}, refused {len(refused)}, restarts {restarts}")
        assert restarts >= 5, (kills, restarts)


def _png(size: int = 2048) -> bytes:
    """A real PNG (so sniffing says image/png), padded to about ``size`` bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00\xff\x00\x00" * 1)
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)) + chunk(b"IDAT", raw)
    padding = chunk(b"tEXt", b"pad\x00" + os.urandom(max(0, size // 2)).hex().encode()[: max(0, size - 100)])
    return b"\x89PNG\r\n\x1a\n" + body + padding + chunk(b"IEND", b"")


async def _fetch(url: str) -> bytes:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, url
        return await resp.read()


def _form(fields: dict[str, str], data: bytes, filename: str, content_type: str) -> Any:
    import aiohttp

    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", data, filename=filename, content_type=content_type)
    return form


async def test_media_round_trip_and_refusals(tmp_path: Path) -> None:
    import hashlib

    async with running_worker(tmp_path / "w", MAX_UPLOAD_MB="0.05") as w:
        await w.create_linked("media", PHONE)
        image = _png(4000)
        status, resp = await w.api(
            "POST",
            "/session/media/send",
            data=_form({"to": "6280444", "type": "image", "caption": "look"}, image, "cat.png", "image/png"),
        )
        assert status == 200, resp
        inbox = await _inbox(w, "6280444")
        got = inbox[resp["data"]["messageId"]]
        assert (got["type"], got["caption"], got["mimetype"]) == ("image", "look", "image/png")
        assert got["mediaSize"] == len(image) and got["mediaSha256"] == hashlib.sha256(image).hexdigest()
        page = await _history(w, "media")
        assert page["messages"][0]["mediaSize"] == len(image)
        # The media is kept by the worker and served at a signed URL, in the answer and in history.
        assert await _fetch(resp["data"]["mediaUrl"]) == image
        assert await _fetch(page["messages"][0]["mediaUrl"]) == image

        # Media a phone sends lands in history with a URL that serves the same bytes.
        import base64

        photo = _png(3000)
        _, pushed = await w.hub(
            "POST",
            "/phones/6280444/messages",
            json={
                "to": PHONE,
                "type": "image",
                "caption": "from phone",
                "mimetype": "image/png",
                "mediaBase64": base64.b64encode(photo).decode(),
            },
        )

        async def incoming() -> dict[str, Any] | None:
            got = (await _history(w, "media", "?direction=in"))["messages"]
            return got[0] if got else None

        entry = await wait_for(incoming, what="the phone's image in history")
        assert entry["id"] == pushed["id"] and entry["caption"] == "from phone" and entry["type"] == "image"
        assert await _fetch(entry["mediaUrl"]) == photo

        doc = b"%PDF-1.4\n" + b"x" * 100
        status, resp = await w.api(
            "POST",
            "/session/media/send",
            data=_form({"to": "6280444", "type": "document", "filename": "a.pdf"}, doc, "a.pdf", "application/pdf"),
        )
        assert status == 200, resp

        # Too large (MAX_UPLOAD_MB is 0.05 here), mistyped, and missing parts are refused; nothing is left behind.
        big = _png(80_000)
        status, resp = await w.api(
            "POST", "/session/media/send", data=_form({"to": "6280444", "type": "image"}, big, "big.png", "image/png")
        )
        assert status == 413 and resp["code"] == "PAYLOAD_TOO_LARGE"
        status, resp = await w.api(
            "POST", "/session/media/send", data=_form({"to": "6280444", "type": "image"}, doc, "x.png", "image/png")
        )
        assert status == 415 and resp["code"] == "MEDIA_TYPE_MISMATCH"
        status, resp = await w.api(
            "POST", "/session/media/send", data=_form({"to": "6280444", "type": "gif"}, image, "x.png", "image/png")
        )
        assert status == 400 and resp["code"] == "INVALID_TYPE"
        import aiohttp

        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("to", "6280444")
        form.add_field("type", "image")
        form.add_field("note", "no file here")
        status, resp = await w.api("POST", "/session/media/send", data=form)
        assert status == 400 and resp["code"] == "MEDIA_MISSING"
        # The body as a whole is bounded, chunked or not: by its number of parts and each field's size.
        many = aiohttp.FormData(default_to_multipart=True)
        for n in range(40):
            many.add_field(f"f{n}", "x")
        status, resp = await w.api("POST", "/session/media/send", data=many)
        assert status == 400 and resp["code"] == "INVALID_MULTIPART" and "at most 32 parts" in resp["error"]

        async def endless_field() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse up front
            yield b'--B\r\nContent-Disposition: form-data; name="caption"\r\n\r\n'
            for _ in range(64):  # 16 MiB unless the worker stops reading at the field's limit
                yield b"y" * 262_144
            yield b"\r\n--B--\r\n"

        status, resp = await w.api(
            "POST",
            "/session/media/send",
            data=endless_field(),
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
        assert status == 400 and resp["code"] == "INVALID_FIELD", resp
        unnamed = b"--B\r\nContent-Disposition: form-data\r\n\r\nwho am I\r\n--B--\r\n"
        status, resp = await w.api(
            "POST", "/session/media/send", data=unnamed, headers={"Content-Type": "multipart/form-data; boundary=B"}
        )
        assert status == 400 and resp["code"] == "INVALID_MULTIPART"
        # Staged uploads are gone once sent, and nothing of the refused ones was kept.
        assert list((w.storage / "outgoing" / "media").iterdir()) == []


async def test_incoming_messages_are_committed_once_even_across_a_crash(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        s = await w.create_linked("inbound", PHONE)
        # Stop the process cold: the hub queues what arrives meanwhile and redelivers it later.
        os.kill(s["pid"], signal.SIGSTOP)
        try:
            _, first = await w.hub("POST", "/phones/6280555/messages", json={"to": PHONE, "text": "while frozen"})
        finally:
            os.kill(s["pid"], signal.SIGKILL)
            os.kill(s["pid"], signal.SIGCONT)
        await w.wait_session("inbound", lambda x: x["status"] == "connected" and x["pid"] != s["pid"])
        _, second = await w.hub("POST", "/phones/6280555/messages", json={"to": PHONE, "text": "after"})

        async def both() -> dict[str, Any] | None:
            page = await _history(w, "inbound", "?direction=in")
            return page if page["pagination"]["total"] >= 2 else None

        page = await wait_for(both, what="both incoming messages in history")
        assert sorted(m["id"] for m in page["messages"]) == sorted([first["id"], second["id"]])
        _, devices = await w.hub("GET", "/devices")
        [device] = [d for d in devices["devices"] if d["phone"] == PHONE]
        assert device["pending"] == 0  # acknowledged to the network after the commit


async def test_messages_waiting_when_the_phone_unlinks_fail_and_never_leave_from_the_next_account(
    tmp_path: Path,
) -> None:
    async with running_worker(tmp_path / "w", SEND_TIMEOUT="0.3") as w:
        await w.create_linked("unlinked", PHONE)
        ids = await _pending_sends(w, "unlinked", 3)
        status, _ = await w.hub("POST", f"/phones/{PHONE}/unlink")
        assert status == 200
        await w.wait_session("unlinked", lambda s: s["status"] == "logged_out", what="logged out")

        async def all_failed() -> list[dict[str, Any]] | None:
            page = await _history(w, "unlinked", "?direction=out")
            messages = [m for m in page["messages"] if m["id"] in ids]
            return messages if all(m["status"] == "failed" for m in messages) else None

        for message in await wait_for(all_failed, what="waiting messages failed"):
            assert message["error"] == "logged_out"
        # The network takes sends again and another phone links the session: nothing old goes out.
        status, _ = await w.hub("POST", "/faults", json={"refuseSendsSeconds": 0})
        assert status == 200
        await w.api("POST", "/session/unlinked/restart")
        code = await wait_for(lambda: _qr(w, "unlinked"), what="a new QR")
        assert (await w.hub("POST", "/phones/6281777000/scan", json={"qr": code}))[0] == 200
        await w.wait_session("unlinked", lambda s: s["status"] == "connected", what="linked again")
        status, resp = await _send(w, "unlinked", {"to": "6280999", "text": "new"})
        assert status == 200
        inbox = await _inbox(w, "6280999")
        assert resp["data"]["messageId"] in inbox and not set(ids) & set(inbox)


async def _qr(w: Worker, sid: str) -> str | None:
    _, body = await w.api("GET", f"/session/{sid}/qr")
    return body["data"]["qr"] if body.get("success") else None

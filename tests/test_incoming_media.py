"""Received media end to end: the ceiling (MAX_INCOMING_MEDIA_MB), and no copy left behind once stored."""

from __future__ import annotations

import base64
from pathlib import Path

from harness import Worker, history_message, running_worker, wait_for

PHONE = "6281777000"
CONTACT = "6289777111"


async def _phone_sends(w: Worker, data: bytes, **fields: str) -> str:
    body = {"to": PHONE, "mediaBase64": base64.b64encode(data).decode(), **fields}
    status, pushed = await w.hub("POST", f"/phones/{CONTACT}/messages", json=body)
    assert status == 200, pushed
    return str(pushed["id"])


async def _pending_at_hub(w: Worker) -> int:
    _, body = await w.hub("GET", "/devices")
    return sum(int(d["pending"]) for d in body["devices"] if d["phone"] == PHONE)


async def test_media_over_the_ceiling_is_kept_without_it_and_acknowledged(tmp_path: Path) -> None:
    # 0.05 MB: a 100 kB document is over it, a 2 kB image is not.
    async with running_worker(tmp_path, MAX_INCOMING_MEDIA_MB="0.05") as w:
        await w.create_linked("inmedia", PHONE)
        big = b"%PDF-1.4\n" + b"x" * 100_000
        big_id = await _phone_sends(w, big, type="document", mimetype="application/pdf", name="big.pdf")
        small = b"\x89PNG\r\n\x1a\n" + b"p" * 2000
        small_id = await _phone_sends(w, small, type="image", mimetype="image/png")

        entry = await wait_for(lambda: history_message(w, "inmedia", big_id), what="the big document in history")
        assert entry["mediaError"] == "too_large" and entry["mediaUrl"] is None
        assert entry["mediaSize"] == len(big) and entry["type"] == "document" and entry["name"] == "big.pdf"
        pic = await wait_for(lambda: history_message(w, "inmedia", small_id), what="the small image in history")
        assert pic["mediaUrl"] and "mediaError" not in pic

        # The event says the same.
        status, body = await w.api("GET", "/events?since=0&limit=1000")
        assert status == 200, body
        received = {e["data"]["message"]["id"]: e["data"]["message"] for e in body["data"]["events"]
                    if e["event"] == "message.received"}  # fmt: skip
        assert received[big_id]["mediaError"] == "too_large"

        # Both were acknowledged (nothing waits at the network to be redelivered), and no byte of the big
        # one reached the session's disk; the small one's local copy is gone once it is in storage.
        async def acked() -> bool:
            return await _pending_at_hub(w) == 0

        await wait_for(acked, what="both messages acknowledged")
        media_dir = tmp_path / "sessions" / "inmedia" / "media"
        assert not media_dir.exists() or list(media_dir.iterdir()) == []

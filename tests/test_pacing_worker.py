"""Paced sending through real processes on the simulated network: bursts are accepted at once and
leave at their slots, in order, once each, across a SIGKILL; replies overtake outreach; a queued
message can be cancelled; the daily cap and the TTL hold."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import Worker, running_worker, wait_for

SESSION_PHONE = "6281777000"


# The hub and the worker read one clock; this covers rounding only.
CLOCK_TOLERANCE = 0.005


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _slots(storage: Path) -> dict[str, float]:
    """The paced slots of the messages waiting in a running worker's outbox, as stored (epoch seconds)."""
    with contextlib.closing(sqlite3.connect(storage / "worker.db")) as db:
        rows = db.execute("SELECT message_id, scheduled_at FROM outbox WHERE scheduled_at IS NOT NULL").fetchall()
    return {str(r[0]): float(r[1]) for r in rows}


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _phone(n: int) -> str:
    return f"628133{n:04d}"


async def _send(w: Worker, sid: str, to: str, text: str) -> dict[str, Any]:
    status, resp = await w.api("POST", f"/session/{sid}/send", json={"to": to, "text": text})
    assert status in (200, 202), resp
    data = dict(resp["data"])
    assert (status == 202) == (data["status"] in ("queued", "pending")), resp
    return data


async def _arrival(w: Worker, phone: str, message_id: str) -> float | None:
    """When the hub took the message for ``phone`` (its clock, epoch seconds), or None."""
    _, body = await w.hub("GET", f"/phones/{phone}/messages")
    assert sum(1 for m in body["messages"] if m["id"] == message_id) <= 1  # never two messages
    for m in body["messages"]:
        if m["id"] == message_id:
            # One entry per id: the phone sees a message once. The one in flight at a SIGKILL is sent again
            # under its id after the restart, which the network counts as a second delivery of the same one.
            assert m["deliveries"] <= 2, m
            return float(m["timestamp"])
    return None


async def _arrivals(w: Worker, sent: list[tuple[str, dict[str, Any]]]) -> list[float]:
    async def all_there() -> list[float] | None:
        times = [await _arrival(w, phone, data["messageId"]) for phone, data in sent]
        return None if any(t is None for t in times) else [t for t in times if t is not None]

    return await wait_for(all_there, timeout=60, what="every paced message delivered")


async def _outbox(w: Worker, sid: str) -> list[dict[str, Any]]:
    status, body = await w.api("GET", f"/session/{sid}/outbox")
    assert status == 200, body
    return list(body["data"]["messages"])


async def test_a_burst_to_new_chats_is_accepted_at_once_and_leaves_spaced_with_jitter_in_order(
    tmp_path: Path,
) -> None:
    gap = 0.25
    async with running_worker(tmp_path / "w", PACING_COLD_GAP=str(gap), PACING_JITTER="0.5") as w:
        await w.create_linked("burst", SESSION_PHONE)
        sent = [(_phone(n), await _send(w, "burst", _phone(n), f"hello {n}")) for n in range(20)]
        slots_now = _slots(w.storage)  # exact, while most still wait (answers carry milliseconds only)
        assert sent[0][1]["status"] == "sent"  # the first cold chat waits for nobody
        # Every later one waits for its slot (the second only if the first's own send took less than a gap).
        assert all(d["status"] == "queued" for _, d in sent[2:])
        queued = [d for _, d in sent[1:] if d["status"] == "queued"]
        assert all(d["timestamp"] is None for d in queued)
        waiting = await _outbox(w, "burst")  # those whose slot has not come yet: the last ones, in order
        assert [e["messageId"] for e in waiting] == [d["messageId"] for _, d in sent[len(sent) - len(waiting) :]]
        assert {e["reason"] for e in waiting} <= {"cold_chat", "sending", "due"}

        slots = [_epoch(d["scheduledAt"]) for d in queued]
        assert all(g >= gap - 0.002 for g in _gaps(slots))  # ISO times carry milliseconds
        exact = [slots_now[d["messageId"]] for d in queued if d["messageId"] in slots_now]
        assert len(exact) >= 10 and len(set(_gaps(exact))) == len(exact) - 1  # jittered: no two gaps equal
        arrivals = await _arrivals(w, sent)
        # At the phones, in the order accepted, each at least a gap after the one before: the next send starts
        # a gap after the previous one was confirmed, so a slow send delays the rest instead of crowding them.
        assert arrivals == sorted(arrivals)
        assert all(g >= gap - CLOCK_TOLERANCE for g in _gaps(arrivals)), _gaps(arrivals)
        for slot, arrived in zip(slots, arrivals[len(arrivals) - len(slots) :], strict=True):
            assert arrived >= slot - 0.002  # never before its slot (later on a busy machine: never earlier)

        async def drained() -> bool:
            return await _outbox(w, "burst") == []

        # The phone holds the last message a moment before the session's confirmation leaves it in the outbox.
        await wait_for(drained, what="the outbox emptied once the last message was confirmed")


async def test_a_reply_to_a_chat_that_wrote_overtakes_queued_outreach(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", PACING_COLD_GAP="1.5") as w:
        await w.create_linked("reply", SESSION_PHONE)
        customer = "6281444000"
        status, _ = await w.hub("POST", f"/phones/{customer}/messages", json={"to": SESSION_PHONE, "text": "hi?"})
        assert status == 200

        async def received() -> bool:
            _, page = await w.api("GET", "/session/reply/messages?direction=in")
            return bool(page["data"]["messages"])

        await wait_for(received, what="the customer's message in history")
        outreach = [await _send(w, "reply", _phone(n), f"offer {n}") for n in range(5)]
        assert [d["status"] for d in outreach[2:]] == ["queued"] * 3  # the second too, unless the first took 1.5 s
        answer = await _send(w, "reply", customer, "here to help")
        assert answer["status"] == "sent" and answer.get("scheduledAt") is None
        # Sent while the outreach still waits for its slots.
        waiting = {e["messageId"] for e in await _outbox(w, "reply")}
        assert outreach[-1]["messageId"] in waiting
        assert await _arrival(w, customer, answer["messageId"]) is not None


async def test_a_killed_worker_loses_no_queued_message_sends_none_twice_and_keeps_the_pace_after(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "w"
    gap = 0.5
    env = {"PACING_COLD_GAP": str(gap)}
    w = Worker(storage, env)
    await w.start()
    try:
        await w.create_linked("kill", SESSION_PHONE)
        sent = [(_phone(n), await _send(w, "kill", _phone(n), f"n{n}")) for n in range(6)]

        async def some_out() -> bool:
            return await _arrival(w, sent[1][0], sent[1][1]["messageId"]) is not None

        await wait_for(some_out, timeout=30, what="the first two out")
        await w.stop(signal.SIGKILL)
    finally:
        await w.stop()
    # Restarted once every slot has passed (a known moment, not a guess): all that waits is overdue.
    last_slot = max(_epoch(d["scheduledAt"]) for _, d in sent if d.get("scheduledAt"))
    await asyncio.sleep(max(0.0, last_slot - time.time()))
    async with running_worker(storage, **env) as w2:
        arrivals = await _arrivals(w2, sent)  # each exactly once (checked in _arrival)
        # Overdue messages keep the pace after the restart (re-spaced from then), not a burst; in order.
        assert arrivals == sorted(arrivals)
        assert all(g >= gap - CLOCK_TOLERANCE for g in _gaps(arrivals)), _gaps(arrivals)

        async def settled() -> bool:
            # The phone has a message a moment before its settlement commits.
            _, page = await w2.api("GET", "/session/kill/messages?limit=50")
            return {m["status"] for m in page["data"]["messages"]} <= {"sent", "delivered", "read"}

        await wait_for(settled, what="every message settled in history")


async def test_a_cancelled_message_never_reaches_the_phone(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", PACING_COLD_GAP="0.8") as w:
        await w.create_linked("cancel", SESSION_PHONE)
        sent = [(_phone(n), await _send(w, "cancel", _phone(n), f"c{n}")) for n in range(4)]
        victim_phone, victim = sent[2]
        status, body = await w.api("DELETE", f"/session/cancel/outbox/{victim['messageId']}")
        assert status == 200 and body["data"] == {
            "messageId": victim["messageId"],
            "status": "failed",
            "error": "cancelled",
        }
        status, body = await w.api("DELETE", f"/session/cancel/outbox/{victim['messageId']}")
        assert status == 404 and body["code"] == "UNKNOWN_MESSAGE"
        # The last one's slot comes after the cancelled one's: once it arrived, the cancelled one would have.
        await _arrivals(w, [sent[0], sent[1], sent[3]])
        assert await _arrival(w, victim_phone, victim["messageId"]) is None
        _, page = await w.api("GET", "/session/cancel/messages?limit=10")
        row = next(m for m in page["data"]["messages"] if m["id"] == victim["messageId"])
        assert (row["status"], row["error"]) == ("failed", "cancelled")
        status, body = await w.api("DELETE", f"/session/cancel/outbox/{sent[0][1]['messageId']}")
        assert status == 404  # already sent: nothing waits by that id


async def test_the_daily_cap_queues_outreach_for_the_next_day_and_the_ttl_still_fails_it(tmp_path: Path) -> None:
    env = {"PACING_COLD_GAP": "0", "PACING_DAILY_CAP": "2", "MESSAGE_TTL": "3"}
    async with running_worker(tmp_path / "w", **env) as w:
        await w.create_linked("cap", SESSION_PHONE)
        sent = [await _send(w, "cap", _phone(n), f"d{n}") for n in range(3)]
        assert [d["status"] for d in sent] == ["sent", "sent", "queued"]
        now = datetime.now(UTC)
        tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400
        assert _epoch(sent[2]["scheduledAt"]) >= tomorrow
        [entry] = await _outbox(w, "cap")
        assert entry["reason"] == "daily_cap"

        async def failed() -> dict[str, Any] | None:
            _, page = await w.api("GET", "/session/cap/messages?limit=10")
            row = next(m for m in page["data"]["messages"] if m["id"] == sent[2]["messageId"])
            return row if row["status"] == "failed" else None

        row = await wait_for(failed, timeout=20, what="the capped message past its TTL")
        assert row["error"] == "ttl"
        assert await _outbox(w, "cap") == []


async def test_a_sessions_own_pace_is_kept_across_restarts_and_types_before_a_text(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    async with running_worker(storage, PACING_COLD_GAP="0") as w:
        await w.create_linked("own", SESSION_PHONE)
        status, body = await w.api("PUT", "/session/own/settings", json={"pacing": {"coldGap": 0.4, "typing": True}})
        assert status == 200, body
        assert body["data"]["pacingOwn"] == {"coldGap": 0.4, "typing": True}
        assert body["data"]["pacing"]["coldGap"] == 0.4 and body["data"]["pacing"]["gap"] == 0.0
        for bad in ({"gap": -1}, {"dailyCap": 1.5}, {"typing": "yes"}, {"coldGap": 7200}):
            status, body = await w.api("PUT", "/session/own/settings", json={"pacing": bad})
            assert status == 400 and body["code"] == "INVALID_FIELD", (bad, body)
    async with running_worker(storage, PACING_COLD_GAP="0") as w:
        await w.wait_session("own", lambda s: s["status"] == "connected", what="connected again")
        _, body = await w.api("GET", "/session/own/settings")
        assert body["data"]["pacingOwn"] == {"coldGap": 0.4, "typing": True}  # kept across the restart
        text = "x" * 15  # typed for 1 s at 15 characters a second
        # At once: the second is accepted while the first is being typed.
        sent = list(await asyncio.gather(*(_send(w, "own", _phone(n), text) for n in range(2))))
        assert sorted(d["status"] for d in sent) == ["queued", "sent"]  # the session's own cold gap, not 0
        arrivals = await _arrivals(w, [(_phone(n), d) for n, d in enumerate(sent)])
        for n, arrived in enumerate(arrivals):
            _, seen = await w.hub("GET", f"/phones/{_phone(n)}/presence")
            typing = [p for p in seen["presence"] if p["state"] == "typing"]
            assert typing and typing[0]["from"].startswith(SESSION_PHONE), seen
            assert arrived - typing[0]["at"] >= 0.95  # the text went out after about a second of typing
        # null puts a setting back to the worker's default
        status, body = await w.api("PUT", "/session/own/settings", json={"pacing": {"typing": None}})
        assert status == 200 and body["data"]["pacingOwn"] == {"coldGap": 0.4}, body
        status, body = await w.api("PUT", "/session/own/settings", json={"pacing": {"dailyCap": 2.0}})
        assert status == 200 and body["data"]["pacingOwn"] == {"coldGap": 0.4, "dailyCap": 2}, body
        status, body = await w.api("PUT", "/session/own/settings", json={"pacing": {"dailyCap": None, "gap": None}})
        assert status == 200 and body["data"]["pacingOwn"] == {"coldGap": 0.4}, body


async def test_metrics_show_each_sessions_outbox_depth_and_oldest_wait(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", PACING_COLD_GAP="30") as w:
        await w.create_linked("depth", SESSION_PHONE)
        for n in range(3):
            await _send(w, "depth", _phone(n), "hello")
        status, metrics = await w.api("GET", "/metrics?format=prometheus")
        assert status == 200
        assert 'wa_worker_session_outbox_messages{sessionId="depth"} 2.0' in metrics
        oldest = 'wa_worker_session_outbox_oldest_seconds{sessionId="depth"}'
        [line] = [m for m in metrics.splitlines() if m.startswith(oldest)]
        assert float(line.split()[-1]) > 0.0  # the second message has waited since it was accepted
        status, figures = await w.api("GET", "/metrics")
        assert status == 200
        [depth] = [o for o in figures["outboxes"] if o["sessionId"] == "depth"]
        assert depth["pending"] == 2 and depth["oldestPendingAge"] > 0.0
        assert _epoch(depth["oldestPendingAt"]) <= _epoch(figures["timestamp"]) - depth["oldestPendingAge"] + 0.002
        assert figures["database"]["outboxWaiting"] == 2  # the seed's figure, unchanged


async def test_warm_up_counts_from_when_the_number_was_linked_not_from_the_sessions_creation(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    env = {"PACING_COLD_GAP": "0.3", "PACING_JITTER": "0.2", "PACING_WARMUP_DAYS": "1"}
    async with running_worker(storage, **env) as w:
        await w.create_linked("warm", SESSION_PHONE)
    # A session created long ago, whose number was linked just now (and the link kept across a restart).
    with contextlib.closing(sqlite3.connect(storage / "worker.db")) as db, db:
        db.execute("UPDATE sessions SET created_at = created_at - 30 * 86400 WHERE id = 'warm'")
    async with running_worker(storage, **env) as w:
        await w.wait_session("warm", lambda s: s["status"] == "connected", what="connected again")
        sent = [await _send(w, "warm", _phone(n), f"w{n}") for n in range(3)]
        slots = [_epoch(d["scheduledAt"]) for d in sent[1:]]
        assert slots[1] - slots[0] >= 3 * 0.3 - 0.002  # warming up: three times the cold gap

"""The outbox without processes: a scripted stand-in for the router, a real SQLite store in tmp_path.

Each test scripts what the session process answers to each send attempt and checks what the
store ends up holding and what the router was asked, in which order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from supervisor.database.store import MessageRow, OutboxRow, Store
from supervisor.messaging.outbox import IdempotencyConflict, Outbox, OutboxSettings, SendAnswer
from supervisor.timefmt import iso
from transport import wire
from transport.channel import Body, PeerGone, RemoteError, RequestTimeout
from transport.protocol import Payload

SESSION = "s1"
IDENTITY = b"s1:1"
NETWORK_TS = 1_760_000_000.0

# One scripted answer to one attempt: given the request's body, the reply's result (or an exception).
Step = Callable[[dict[str, Any]], Awaitable[Body]]


async def confirm(body: dict[str, Any]) -> Body:
    return {"id": body["id"], "timestamp": NETWORK_TS}


def refuse(code: str, message: str = "scripted") -> Step:
    async def step(_body: dict[str, Any]) -> Body:
        raise RemoteError(code, message)

    return step


def lose(exc: Exception) -> Step:
    async def step(_body: dict[str, Any]) -> Body:
        raise exc

    return step


def hold(gate: asyncio.Future[None], then: Step = confirm) -> Step:
    """Keep the attempt in flight until ``gate`` is resolved, then answer as ``then``."""

    async def step(body: dict[str, Any]) -> Body:
        await gate
        return await then(body)

    return step


class ScriptedRouter:
    """Answers the outbox's send requests as the test scripts them; confirms once the script runs out."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[bytes, str, dict[str, Any]]] = []
        self.called = asyncio.Event()

    async def request(self, identity: bytes, op: str, body: Payload | None = None, *, timeout: float) -> Body:
        plain = msgspec.to_builtins(body)
        # The body must be a valid send request: the session process decodes it strictly.
        assert isinstance(wire.decode_child_request(op, plain), wire.OutgoingMessage)
        self.calls.append((identity, op, plain))
        self.called.set()
        step = self.steps.pop(0) if self.steps else confirm
        return await step(plain)

    @property
    def sent_ids(self) -> list[str]:
        return [body["id"] for _, _, body in self.calls]

    async def wait_calls(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self.called.clear()
                await self.called.wait()


class Target:
    """Which sessions count as connected (the registry's answer in the worker)."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected

    def __call__(self, session_id: str) -> bytes | None:
        return IDENTITY if self.connected and session_id == SESSION else None


FAST = OutboxSettings(
    attempt_timeout=1.0, send_timeout=2.0, message_ttl=60.0, retry_initial=0.05, retry_max=0.2, sweep_interval=0.05
)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "worker.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest_asyncio.fixture
async def outboxes(store: Store) -> AsyncIterator[list[Outbox]]:
    """Outboxes a test starts; each is closed when the test ends."""
    started: list[Outbox] = []
    try:
        yield started
    finally:
        for outbox in started:
            await outbox.close()


async def start_outbox(
    store: Store, outboxes: list[Outbox], router: ScriptedRouter, target: Target, settings: OutboxSettings = FAST
) -> Outbox:
    outbox = Outbox(store, router, target, settings)
    await outbox.start()
    outboxes.append(outbox)
    return outbox


def message(message_id: str, text: str = "hello") -> tuple[MessageRow, wire.OutgoingMessage]:
    to = "628222@s.whatsapp.net"
    row = MessageRow(SESSION, message_id, "out", to, None, to, "text", time.time(), "pending", text=text)
    return row, wire.OutgoingMessage(id=message_id, to=to, text=text)


async def submit(outbox: Outbox, message_id: str, **kw: Any) -> SendAnswer:
    row, payload = message(message_id)
    return await outbox.submit(row.session_id, payload, row=row, **kw)


async def status_of(store: Store, message_id: str) -> tuple[str, str | None, float]:
    row = await store.message(SESSION, message_id)
    assert row is not None
    return row.status, row.error, row.timestamp


async def settled(store: Store, message_id: str, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            status, _, _ = await status_of(store, message_id)
            if status != "pending":
                return status
            await asyncio.sleep(0.02)


async def test_a_confirmed_send_is_settled_sent_at_the_networks_time(store: Store, outboxes: list[Outbox]) -> None:
    router = ScriptedRouter(confirm)
    outbox = await start_outbox(store, outboxes, router, Target())
    answer = await submit(outbox, "m1")
    assert answer == SendAnswer(200, {"messageId": "m1", "status": "sent", "timestamp": iso(NETWORK_TS)})
    assert router.calls == [(IDENTITY, "send", {"id": "m1", "to": "628222@s.whatsapp.net", "text": "hello"})]
    assert await status_of(store, "m1") == ("sent", None, NETWORK_TS)
    assert await store.outbox() == []
    assert (outbox.sent, outbox.failed, outbox.waiting) == (1, 0, 0)


@pytest.mark.parametrize(
    "first",
    [
        refuse("NOT_CONNECTED", "the device is offline"),
        lose(RequestTimeout("send got no reply within 1.0s")),
        lose(PeerGone("peer unreachable")),
    ],
    ids=["retriable-error", "timeout", "peer-gone"],
)
async def test_an_unconfirmed_attempt_is_retried_under_the_same_id(
    store: Store, outboxes: list[Outbox], first: Step
) -> None:
    router = ScriptedRouter(first, confirm)
    outbox = await start_outbox(store, outboxes, router, Target())
    answer = await submit(outbox, "m1")
    assert answer.http_status == 200 and answer.data["status"] == "sent"  # retried within the send timeout
    assert router.sent_ids == ["m1", "m1"]
    assert router.calls[0][2] == router.calls[1][2]  # the very same request, so the network deduplicates it
    assert await status_of(store, "m1") == ("sent", None, NETWORK_TS)


async def test_retries_back_off_and_the_attempts_are_counted_in_the_store(store: Store, outboxes: list[Outbox]) -> None:
    router = ScriptedRouter(*[refuse("NOT_CONNECTED")] * 3, confirm)
    settings = OutboxSettings(
        attempt_timeout=1.0, send_timeout=0.05, message_ttl=60.0, retry_initial=0.1, retry_max=0.15, sweep_interval=0.01
    )
    outbox = await start_outbox(store, outboxes, router, Target(), settings)
    started = time.monotonic()
    answer = await submit(outbox, "m1")
    assert answer == SendAnswer(202, {"messageId": "m1", "status": "pending", "timestamp": None})
    [row] = await store.outbox()
    assert row.attempts >= 1 and row.next_attempt_at > time.time() - 0.05
    assert await settled(store, "m1") == "sent"
    # Three retries, after 0.1 s, 0.2 s capped to 0.15 s, and 0.15 s: never sooner.
    assert time.monotonic() - started >= 0.39 and router.sent_ids == ["m1"] * 4
    assert outbox.waiting == 0 and await store.outbox() == []


@pytest.mark.parametrize(
    "step, status, error",
    [
        (refuse("INVALID_RECIPIENT", "no such number"), "failed", "INVALID_RECIPIENT: no such number"),
        (refuse(wire.PROTOCOL_ERROR, "unknown field `txt`"), "failed", "PROTOCOL_ERROR: unknown field `txt`"),
        (refuse("OUTCOME_UNKNOWN", "interrupted"), "unknown", "interrupted"),
    ],
    ids=["permanent", "protocol-error", "outcome-unknown"],
)
async def test_what_no_retry_can_fix_is_settled_at_once_and_never_resent(
    store: Store, outboxes: list[Outbox], step: Step, status: str, error: str
) -> None:
    router = ScriptedRouter(step)
    outbox = await start_outbox(store, outboxes, router, Target())
    answer = await submit(outbox, "m1")
    assert answer.http_status == 200 and answer.data["status"] == status and answer.data["error"] == error
    await asyncio.sleep(FAST.sweep_interval * 4)  # sweeps come and go: nothing is sent again
    assert router.sent_ids == ["m1"]
    assert (await status_of(store, "m1"))[:2] == (status, error)
    assert await store.outbox() == []


async def test_a_message_not_sent_within_its_ttl_fails(store: Store, outboxes: list[Outbox]) -> None:
    router = ScriptedRouter()
    settings = OutboxSettings(attempt_timeout=1.0, send_timeout=0.05, message_ttl=0.3, sweep_interval=0.02)
    outbox = await start_outbox(store, outboxes, router, Target(connected=False), settings)
    answer = await submit(outbox, "m1")
    assert answer.http_status == 202
    assert await settled(store, "m1") == "failed"
    assert (await status_of(store, "m1"))[1] == "ttl"
    assert router.calls == []  # never connected: never attempted
    assert await store.outbox() == [] and outbox.failed == 1


async def test_a_send_in_flight_is_neither_resent_nor_expired_until_it_is_answered(
    store: Store, outboxes: list[Outbox]
) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    router = ScriptedRouter(hold(gate))
    settings = OutboxSettings(attempt_timeout=5.0, send_timeout=0.05, message_ttl=0.2, sweep_interval=0.02)
    outbox = await start_outbox(store, outboxes, router, Target(), settings)
    answer = await submit(outbox, "m1")
    assert answer.http_status == 202 and outbox.inflight == 1
    await asyncio.sleep(0.4)  # past the TTL, many sweeps later
    assert router.sent_ids == ["m1"]  # not attempted twice while the first attempt is open
    assert (await status_of(store, "m1"))[0] == "pending"  # and not failed: the network may have it
    gate.set_result(None)
    assert await settled(store, "m1") == "sent"
    assert outbox.inflight == 0 and await store.outbox() == []


async def test_an_idempotency_key_replays_the_first_answer_without_a_second_send(
    store: Store, outboxes: list[Outbox]
) -> None:
    router = ScriptedRouter(confirm)
    outbox = await start_outbox(store, outboxes, router, Target())
    first = await submit(outbox, "m1", idempotency_key="k1", fingerprint="f")
    again = await submit(outbox, "m2", idempotency_key="k1", fingerprint="f")
    assert again == first and first.data["messageId"] == "m1"
    assert router.sent_ids == ["m1"]
    assert await store.message(SESSION, "m2") is None  # the replay accepted nothing new
    with pytest.raises(IdempotencyConflict):
        await submit(outbox, "m3", idempotency_key="k1", fingerprint="another request")


async def test_an_answer_stored_in_epoch_seconds_replays_with_an_iso_timestamp(
    tmp_path: Path, store: Store, outboxes: list[Outbox]
) -> None:
    """A key answered by a version from before the one time format (keys last 24 h) replays in today's."""
    outbox = await start_outbox(store, outboxes, ScriptedRouter(confirm), Target())
    first = await submit(outbox, "m1", idempotency_key="k1", fingerprint="f")
    old = json.dumps({**first.data, "timestamp": NETWORK_TS})
    with sqlite3.connect(tmp_path / "worker.db") as db:
        db.execute("UPDATE idempotency SET response = ? WHERE key = 'k1'", (old,))
    assert await outbox.replay(SESSION, "k1", "f") == first
    assert first.data["timestamp"] == iso(NETWORK_TS)


async def test_concurrent_calls_with_one_key_accept_one_message_and_answer_alike(
    store: Store, outboxes: list[Outbox]
) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    router = ScriptedRouter(hold(gate))
    outbox = await start_outbox(store, outboxes, router, Target())
    # Both arrive before either is committed (a client retrying a request that seemed to hang).
    calls = [asyncio.create_task(submit(outbox, f"m{n}", idempotency_key="k1", fingerprint="f")) for n in (1, 2)]
    await router.wait_calls(1)
    assert not any(call.done() for call in calls)  # the second waits for the first instead of racing it
    gate.set_result(None)
    first, second = await asyncio.gather(*calls)
    assert first == second and first.data == {"messageId": "m1", "status": "sent", "timestamp": iso(NETWORK_TS)}
    assert router.sent_ids == ["m1"]
    assert await store.message(SESSION, "m2") is None
    # Later replays give exactly that answer, without the session process.
    assert await outbox.replay(SESSION, "k1", "f") == first
    assert await outbox.replay(SESSION, "new key", "f") is None


async def test_a_sessions_messages_go_out_one_at_a_time_in_the_order_accepted(
    store: Store, outboxes: list[Outbox]
) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    router = ScriptedRouter(hold(gate))
    target = Target(connected=False)
    settings = OutboxSettings(attempt_timeout=5.0, send_timeout=0.01, message_ttl=60.0, sweep_interval=0.02)
    outbox = await start_outbox(store, outboxes, router, target, settings)
    for n in range(5):
        assert (await submit(outbox, f"m{n}")).http_status == 202  # offline: they wait in the outbox
    target.connected = True
    outbox.kick(SESSION)
    await router.wait_calls(1)
    await asyncio.sleep(0.1)
    assert router.sent_ids == ["m0"]  # the next waits for the first one's answer
    gate.set_result(None)
    for n in range(5):
        assert await settled(store, f"m{n}") == "sent"
    assert router.sent_ids == [f"m{n}" for n in range(5)]


async def test_a_new_outbox_sends_what_the_last_one_left_in_order(store: Store, outboxes: list[Outbox]) -> None:
    target = Target(connected=False)
    settings = OutboxSettings(attempt_timeout=1.0, send_timeout=0.01, message_ttl=60.0, sweep_interval=0.02)
    before = await start_outbox(store, outboxes, ScriptedRouter(), target, settings)
    for n in range(3):
        await submit(before, f"m{n}")
    await before.close()  # the worker stops with three messages unsent
    router = ScriptedRouter()
    target.connected = True
    after = await start_outbox(store, outboxes, router, target, settings)
    assert after.waiting == 3
    after.kick(SESSION)
    for n in range(3):
        assert await settled(store, f"m{n}") == "sent"
    assert router.sent_ids == ["m0", "m1", "m2"]


async def test_forgetting_a_session_answers_its_waiting_senders(store: Store, outboxes: list[Outbox]) -> None:
    settings = OutboxSettings(attempt_timeout=1.0, send_timeout=5.0, message_ttl=60.0, sweep_interval=0.02)
    outbox = await start_outbox(store, outboxes, ScriptedRouter(), Target(connected=False), settings)
    waiting = asyncio.create_task(submit(outbox, "m1"))
    async with asyncio.timeout(5):
        while outbox.waiting == 0:
            await asyncio.sleep(0.01)
    outbox.forget_session(SESSION)
    answer = await waiting
    assert answer.http_status == 200 and answer.data["status"] == "failed"
    assert answer.data["error"] == "the session was deleted"


async def test_an_unlinked_sessions_waiting_messages_fail_and_are_never_sent_later(
    store: Store, outboxes: list[Outbox]
) -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    router = ScriptedRouter(hold(gate, then=refuse("NOT_CONNECTED")), confirm)
    target = Target()
    outbox = await start_outbox(store, outboxes, router, target, replace(FAST, send_timeout=0.1))
    assert (await submit(outbox, "m1")).http_status == 202
    await router.wait_calls(1)  # m1 is with the session process when the phone unlinks
    target.connected = False
    assert (await submit(outbox, "m2")).http_status == 202  # waits for the session
    assert await outbox.fail_queued(SESSION, "logged_out") == 1  # m2 at once; m1 once its attempt is back
    gate.set_result(None)
    assert await settled(store, "m1") == "failed"
    for message_id in ("m1", "m2"):
        row = await store.message(SESSION, message_id)
        assert row is not None and (row.status, row.error) == ("failed", "logged_out")
    # Another account links: only what is accepted from now on goes out.
    target.connected = True
    await submit(outbox, "m3")
    assert await settled(store, "m3") == "sent"
    assert router.sent_ids == ["m1", "m3"] and await store.outbox() == []


async def test_start_removes_staged_uploads_no_waiting_message_refers_to(
    store: Store, outboxes: list[Outbox], tmp_path: Path
) -> None:
    staging = tmp_path / "outgoing"
    (staging / SESSION).mkdir(parents=True)
    (staging / "s2").mkdir()
    waiting = staging / SESSION / "waiting.upload"
    orphans = [staging / SESSION / "settled.upload", staging / "s2" / "cut-off.upload"]
    for path in (waiting, *orphans):
        path.write_bytes(b"media")
    row, payload = message("m-media")
    payload = msgspec.structs.replace(payload, type="image", media_path=str(waiting))
    await store.accept_outgoing(row, OutboxRow(SESSION, "m-media", msgspec.to_builtins(payload), 0, 0.0, 1e12, 0.0))
    settings = replace(FAST, staging_dir=staging)
    await start_outbox(store, outboxes, ScriptedRouter(), Target(connected=False), settings)
    assert waiting.exists() and not any(path.exists() for path in orphans)


@pytest.mark.parametrize("how", ["cancel", "ttl"])
async def test_a_message_being_failed_is_never_sent_by_a_flush_woken_meanwhile(
    store: Store, outboxes: list[Outbox], how: str
) -> None:
    """Cancelling (DELETE .../outbox/{id}) or expiring a waiting message takes it out of the queue before
    its commit is awaited: a flush woken in that window (the session connects) has nothing to send."""
    router = ScriptedRouter()
    target = Target(connected=False)
    ttl = 0.2 if how == "ttl" else 60.0
    settings = OutboxSettings(attempt_timeout=1.0, send_timeout=0.01, message_ttl=ttl, sweep_interval=0.02)
    outbox = await start_outbox(store, outboxes, router, target, settings)
    assert (await submit(outbox, "m1")).http_status == 202  # offline: it waits
    committing = asyncio.Event()
    finish = store.finish_outgoing

    async def finish_slowly(*args: Any, **kwargs: Any) -> bool:
        committing.set()
        # The session connects while the failure is being committed.
        target.connected = True
        outbox.kick(SESSION)
        await asyncio.sleep(0.05)
        return await finish(*args, **kwargs)

    store.finish_outgoing = finish_slowly  # type: ignore[method-assign]
    if how == "cancel":
        assert await outbox.cancel(SESSION, "m1")
    else:
        async with asyncio.timeout(5):
            await committing.wait()
    assert await settled(store, "m1") == "failed"
    await asyncio.sleep(settings.sweep_interval * 4)  # the flush and a few sweeps have come and gone
    assert router.calls == []
    assert (await status_of(store, "m1"))[1] == ("cancelled" if how == "cancel" else "ttl")
    assert outbox.waiting == 0 and await store.outbox() == []

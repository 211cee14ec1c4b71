"""The outbox: every accepted outgoing message is written down, with its final
WhatsApp id, before any session process sees it, and is retried under that same
id until it is confirmed, refused for good, or too old.

A retry after a crash reuses the id, so the recipient sees one message (the
network deduplicates by id; whatsmeow's ``SendRequestExtra.ID``, the sim hub
likewise). An engine that cannot send under a chosen id answers
``OUTCOME_UNKNOWN`` for a send a crash left undecided: such a message is never
resent blindly, it is settled as ``unknown``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from common.tasks import cancel_and_wait
from supervisor.database.store import IdempotencyRow, MessageRow, OutboxRow, Store
from supervisor.messaging.pacer import Pacer
from supervisor.messaging.status import BEYOND_SENT, MessageStatus
from supervisor.timefmt import iso
from transport import wire
from transport.channel import PeerGone, RemoteError, RequestTimeout

log = logging.getLogger("supervisor.messaging.outbox")

# Engine error codes that no retry can fix (a message the session process refuses as a protocol error
# is refused again on every retry).
PERMANENT_ERRORS = frozenset(
    {
        "INVALID_RECIPIENT",
        "MEDIA_MISSING",
        "BAD_REQUEST",
        "UNSUPPORTED_TYPE",
        "INVALID_MESSAGE",
        "NOT_SUPPORTED",
        "FFMPEG_MISSING",  # a voice note that needs converting, on a machine without ffmpeg
        "MEDIA_CONVERSION_FAILED",
        "RECIPIENT_BLOCKED",  # the account blocked the recipient: unblock it first
        wire.PROTOCOL_ERROR,
        # An edit or revoke the network refuses (messaging/changes.py checks these first).
        "UNKNOWN_MESSAGE",
        "NOT_OWN_MESSAGE",
        "EDIT_WINDOW_EXPIRED",
        # issue 17: a group that refuses this sender (an announce group, or one it is not in)
        "NOT_ADMIN",
        "GROUP_NOT_FOUND",
    }
)
# The engine sent without a chosen id and cannot tell whether an interrupted send went out.
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
# Statuses of a message not sent yet: a send answers 202 for them, with no timestamp.
WAITING = (MessageStatus.QUEUED, MessageStatus.PENDING)
# The error of a message failed because it was not sent within MESSAGE_TTL.
TTL_ERROR = "ttl"
# The error of a queued message cancelled by DELETE /session/{id}/outbox/{messageId}.
CANCELLED_ERROR = "cancelled"


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Tunables of delivery."""

    attempt_timeout: float = 15.0  # one try: the session process must confirm within this
    send_timeout: float = 10.0  # the HTTP call waits this long, then answers 202 pending
    message_ttl: float = 3600.0  # a message not sent by then is failed
    idempotency_ttl: float = 24 * 3600.0
    retry_initial: float = 0.5  # the first retry waits this long; each further one twice as long as the last
    retry_max: float = 30.0  # ...up to this
    sweep_interval: float = 1.0  # how often due retries are started and expired messages failed
    # Where uploaded media waits to be sent (STORAGE_DIR/outgoing/<session>/): start() removes every
    # file there that no waiting message refers to (an upload cut off by a crash, a settled send whose
    # removal a crash interrupted). None: nothing is swept.
    staging_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class SendAnswer:
    """What POST /send answers: an HTTP status and the ``data`` object."""

    http_status: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Settled:
    """How an outgoing message was settled, as its waiting sender learns it."""

    status: MessageStatus  # sent / failed / unknown
    timestamp: float | None
    error: str | None


def _send_answer(message_id: str, status: str, timestamp: float | None, error: str | None) -> SendAnswer:
    """What a send answers for a message in ``status``: 202 while pending, else 200."""
    data: dict[str, Any] = {"messageId": message_id, "status": status, "timestamp": iso(timestamp)}
    if error:
        data["error"] = error
    return SendAnswer(202 if status in WAITING else 200, data)


class IdempotencyConflict(Exception):
    """An Idempotency-Key reused with a different request."""


# Given a session id: the routing identity of its process if it is connected, else None.
TargetLookup = Callable[[str], bytes | None]


class Outbox:
    """Delivery of accepted outgoing messages, at least once, under one id each."""

    def __init__(
        self,
        store: Store,
        router: wire.ChildRequester,
        target: TargetLookup,
        settings: OutboxSettings,
        pacer: Pacer | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.target = target
        self.settings = settings
        self.pacer = pacer
        self._wakes: dict[str, asyncio.TimerHandle] = {}  # session -> the flush at its next paced slot
        # The outbox table, mirrored: every change to it goes through this class, after its commit,
        # so delivery never has to read the table back (only start() loads it).
        self._queues: dict[str, dict[str, OutboxRow]] = {}  # session -> message id -> row, oldest first
        self._settled: dict[tuple[str, str], asyncio.Future[Settled]] = {}
        self._flushing: dict[str, asyncio.Task[None]] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._again: set[str] = set()  # sessions whose running flush must read the outbox once more
        self._sweeper: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        # One call at a time per (session, Idempotency-Key): a second concurrent call waits for the
        # first and answers its answer, instead of accepting the message twice.
        self._keys: dict[tuple[str, str], asyncio.Lock] = {}
        # Sessions whose messages accepted before a time fail instead of being sent (unlinked): time, error.
        self._closed: dict[str, tuple[float, str]] = {}
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        """Load the waiting messages and remove staged media none of them refers to; then deliver."""
        rows = await self.store.outbox()
        for row in rows:
            self._queues.setdefault(row.session_id, {})[row.message_id] = row
        if self.pacer is not None:
            await self.pacer.restore(rows)
        if self.settings.staging_dir is not None:
            # Before the API serves: no upload can be arriving in the directory meanwhile.
            wanted = {str(row.payload["media_path"]) for row in rows if row.payload.get("media_path")}
            removed = await asyncio.to_thread(_sweep_staged, self.settings.staging_dir, wanted)
            if removed:
                log.info("removed %d staged uploads no waiting message refers to", removed)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="outbox-sweeper")

    async def close(self) -> None:
        if self._settling:  # confirmed sends: let their settlements commit
            await asyncio.wait(list(self._settling), timeout=5)
        for wake in self._wakes.values():
            wake.cancel()
        await cancel_and_wait(self._sweeper, *self._flushing.values())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def waiting(self) -> int:
        """Messages accepted and not settled yet."""
        return sum(len(q) for q in self._queues.values())

    def waiting_of(self, session_id: str) -> tuple[int, float | None]:
        """How many of ``session_id``'s messages wait, and when the oldest was accepted (the dashboard's figures)."""
        queue = self._queues.get(session_id) or {}
        return len(queue), min((row.created_at for row in queue.values()), default=None)

    # -- accepting ---------------------------------------------------------------------
    async def submit(
        self,
        session_id: str,
        payload: wire.OutgoingMessage,
        *,
        row: MessageRow | None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> SendAnswer:
        """Accept a message durably, try to send it, and answer within the send timeout.

        ``row`` is its history row; None for a change of a message in history (an edit, a revoke),
        which has none of its own: once sent, it changes its target's (``Store.finish_outgoing``).
        """
        if idempotency_key is None:
            return await self._submit(session_id, row, payload, None, fingerprint)
        key = (session_id, idempotency_key)
        lock = self._keys.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._submit(session_id, row, payload, idempotency_key, fingerprint)
        finally:
            if not lock.locked() and self._keys.get(key) is lock:
                del self._keys[key]

    async def replay(self, session_id: str, idempotency_key: str, fingerprint: str) -> SendAnswer | None:
        """The answer a call with this Idempotency-Key was given (or its message's state now, while that
        call still waits); None when the key is new. Needs no session process: answered even while the
        session restarts."""
        previous = await self.store.idempotency(session_id, idempotency_key, max_age=self.settings.idempotency_ttl)
        return None if previous is None else await self._replay(previous, fingerprint)

    async def _submit(
        self,
        session_id: str,
        message: MessageRow | None,
        payload: wire.OutgoingMessage,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> SendAnswer:
        message_id = payload.id
        if idempotency_key is not None:
            previous = await self.replay(session_id, idempotency_key, fingerprint)
            if previous is not None:
                return previous
        slot = None
        if self.pacer is not None:
            waiting = self._queues.get(session_id, {}).values()
            slot = await self.pacer.place(session_id, payload.to, payload.type, waiting)
            payload.typing = self.pacer.typing(session_id, payload.type, payload.text)
        now = time.time()
        due = slot.at if slot is not None else now
        paced = slot is not None and slot.reason is not None and message is not None
        if message is not None and paced:
            message.status = MessageStatus.QUEUED
        changed = self._queues.get(session_id, {}).get(payload.edit_of or payload.revoke_of or "")
        if changed is not None:
            # An edit or revoke goes after the message it changes, which may still wait for its slot.
            due = max(due, changed.next_attempt_at)
        outbox = OutboxRow(
            session_id=session_id,
            message_id=message_id,
            payload=msgspec.to_builtins(payload),  # the outbox table holds it as JSON
            attempts=0,
            next_attempt_at=due,
            expires_at=now + self.settings.message_ttl,
            created_at=now,
            scheduled_at=slot.at if slot is not None else None,
            lane=slot.lane if slot is not None else None,
            wait=slot.reason if slot is not None else None,
            cold=slot is not None and slot.cold,
        )
        idem = (
            IdempotencyRow(session_id, idempotency_key, fingerprint, message_id, None, None, now)
            if idempotency_key is not None
            else None
        )
        await self.store.accept_outgoing(message, outbox, idem)
        self._queues.setdefault(session_id, {})[message_id] = outbox
        if paced:
            # Accepted and waiting for its slot: answered now, sent when its time comes.
            self._wake(session_id, outbox.next_attempt_at)
            answer = SendAnswer(
                202,
                {
                    "messageId": message_id,
                    "status": MessageStatus.QUEUED,
                    "timestamp": None,
                    "scheduledAt": iso(outbox.next_attempt_at),
                },
            )
            if idempotency_key is not None:
                await self.store.save_idempotent_answer(session_id, idempotency_key, answer.http_status, answer.data)
            return answer
        settled = self._future(session_id, message_id)
        self._spawn_flush(session_id)
        try:
            async with asyncio.timeout(self.settings.send_timeout):
                outcome = await asyncio.shield(settled)
        except TimeoutError:
            answer = await self._answer(session_id, message_id)
        else:
            # Settled while the caller waited: answered from the settlement, no need to read it back.
            answer = _send_answer(message_id, outcome.status, outcome.timestamp, outcome.error)
        if idempotency_key is not None:
            await self.store.save_idempotent_answer(session_id, idempotency_key, answer.http_status, answer.data)
        return answer

    async def _replay(self, previous: IdempotencyRow, fingerprint: str) -> SendAnswer:
        if previous.fingerprint != fingerprint:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        if previous.response is not None and previous.http_status is not None:
            stored = previous.response
            if isinstance(stored.get("timestamp"), int | float):  # saved by a version that answered epoch seconds
                stored = {**stored, "timestamp": iso(stored["timestamp"])}
            return SendAnswer(previous.http_status, stored)
        # The first call is still waiting: answer with the message's state now.
        return await self._answer(previous.session_id, previous.message_id)

    async def _answer(self, session_id: str, message_id: str) -> SendAnswer:
        row = await self.store.message(session_id, message_id)
        status = row.status if row is not None else MessageStatus.PENDING
        if status in BEYOND_SENT:
            # The answer tells whether the send happened; history and message.status events tell how far it got.
            status = MessageStatus.SENT
        if row is None:
            return _send_answer(message_id, status, None, None)
        return _send_answer(message_id, status, row.timestamp if status not in WAITING else None, row.error)

    def _future(self, session_id: str, message_id: str) -> asyncio.Future[Settled]:
        key = (session_id, message_id)
        fut = self._settled.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._settled[key] = fut
        return fut

    def _settle(self, session_id: str, message_id: str, outcome: Settled) -> None:
        fut = self._settled.pop((session_id, message_id), None)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    # -- delivering ----------------------------------------------------------------------
    def kick(self, session_id: str) -> None:
        """The session (re)connected: send what waits for it, oldest first."""
        self._spawn_flush(session_id)

    def _spawn_flush(self, session_id: str) -> None:
        running = self._flushing.get(session_id)
        if running is not None and not running.done():
            # A flush is under way; it re-reads the outbox before it stops, so nothing is left behind.
            self._again.add(session_id)
            return
        task = asyncio.create_task(self._flush(session_id), name=f"outbox-{session_id}")
        self._flushing[session_id] = task

    async def _flush(self, session_id: str) -> None:
        try:
            while True:
                self._again.discard(session_id)
                now = time.time()
                queue = self._queues.get(session_id, {})
                rows = [r for r in queue.values() if r.next_attempt_at <= now]
                for row in rows:
                    if self.target(session_id) is None:
                        return  # not connected: the next `connected` kicks us again
                    if row.message_id not in queue:  # settled meanwhile (sweep, deletion, cancel)
                        continue
                    if row.next_attempt_at > time.time() or not await self._keeps_pace(row):
                        continue  # re-spaced: it waits for its new slot
                    await self._attempt(row)
                if session_id not in self._again:
                    self._wake_next(session_id)
                    return
        except Exception:
            log.exception("outbox flush failed", extra={"sessionId": session_id})
        finally:
            if self._flushing.get(session_id) is asyncio.current_task():
                del self._flushing[session_id]

    async def _keeps_pace(self, row: OutboxRow) -> bool:
        """Whether a due message may go now; False: the pace does not let it, and the session's paced
        messages were re-spaced (after a restart, a reconnect, or a send slower than its gap, overdue
        messages leave one by one, spaced from now, instead of back to back)."""
        if self.pacer is None or row.lane is None or self.pacer.keeps_pace(row, time.time()):
            return True
        await self._respace(row.session_id)
        return row.next_attempt_at <= time.time()

    async def _respace(self, session_id: str) -> None:
        """Give the session's waiting paced messages new slots from now, stored before any is sent by them."""
        assert self.pacer is not None
        queue = self._queues.get(session_id, {})
        waiting = [r for r in queue.values() if (session_id, r.message_id) not in self._inflight]
        moved = self.pacer.respace(session_id, waiting, time.time())
        if not moved:
            return
        slots = {row.message_id: slot for row, slot in moved}
        changes: list[tuple[str, float, float | None, str | None]] = [
            (row.message_id, slot.at, slot.at, slot.reason or row.wait) for row, slot in moved
        ]
        # An edit or revoke goes after the message it changes.
        for row in waiting:
            target = slots.get(str(row.payload.get("edit_of") or row.payload.get("revoke_of") or ""))
            if target is not None and row.message_id not in slots and row.next_attempt_at < target.at:
                changes.append((row.message_id, target.at, row.scheduled_at, row.wait))
        await self.store.outbox_reslot(session_id, changes)
        for message_id, at, slot_at, wait in changes:
            kept = queue.get(message_id)
            if kept is not None:  # not settled meanwhile
                kept.next_attempt_at, kept.scheduled_at, kept.wait = at, slot_at, wait
        log.info(
            "%d overdue paced messages re-spaced, the next at %s",
            len(moved),
            iso(min(slot.at for slot in slots.values())),
            extra={"sessionId": session_id},
        )

    def _wake(self, session_id: str, at: float) -> None:
        """Flush the session's outbox at ``at`` (a paced slot), unless a flush is due earlier."""
        current = self._wakes.get(session_id)
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, at - time.time())
        if current is not None and not current.cancelled() and current.when() <= when:
            return
        if current is not None:
            current.cancel()
        self._wakes[session_id] = loop.call_at(when, self._woken, session_id)

    def _woken(self, session_id: str) -> None:
        self._wakes.pop(session_id, None)
        self._spawn_flush(session_id)

    def _wake_next(self, session_id: str) -> None:
        """After a flush: wake at the session's next paced slot (retries are the sweep's)."""
        now = time.time()
        slots = [
            r.next_attempt_at
            for r in self._queues.get(session_id, {}).values()
            if r.scheduled_at is not None and r.next_attempt_at > now and r.attempts == 0
        ]
        if slots:
            self._wake(session_id, min(slots))

    def waiting_in(self, session_id: str) -> list[OutboxRow]:
        """The session's messages waiting to be sent, in the order they were accepted."""
        return list(self._queues.get(session_id, {}).values())

    def sending(self, session_id: str, message_id: str) -> bool:
        """Whether the message is on its way to the session's process right now."""
        return (session_id, message_id) in self._inflight

    async def cancel(self, session_id: str, message_id: str) -> bool:
        """Cancel a waiting message (failed with error ``cancelled``); False: it is being sent now."""
        row = self._queues.get(session_id, {}).get(message_id)
        if row is None or (session_id, message_id) in self._inflight:
            return False
        await self._drop(row, CANCELLED_ERROR)
        return True

    async def _drop(self, row: OutboxRow, error: str) -> None:
        """Fail a waiting message that is not on its way (cancelled, past its TTL, unlinked). It leaves the
        queue before the commit is awaited: a flush woken meanwhile cannot send it any more."""
        self._withdraw(row)
        try:
            await self._finish(row, MessageStatus.FAILED, error=error)
        except Exception:
            self._put_back(row)  # still in the outbox table: it waits again, in its place
            raise

    def _withdraw(self, row: OutboxRow) -> None:
        queue = self._queues.get(row.session_id)
        if queue is not None:
            queue.pop(row.message_id, None)
            if not queue:
                del self._queues[row.session_id]

    def _put_back(self, row: OutboxRow) -> None:
        queue = self._queues.setdefault(row.session_id, {})
        queue[row.message_id] = row
        ordered = sorted(queue.values(), key=lambda r: (r.created_at, r.message_id))
        queue.clear()
        queue.update((r.message_id, r) for r in ordered)

    async def _attempt(self, row: OutboxRow) -> None:
        session_id, message_id = row.session_id, row.message_id
        key = (session_id, message_id)
        identity = self.target(session_id)
        if identity is None or key in self._inflight:
            return
        self._inflight.add(key)
        settling = False
        try:
            message = wire.parse(wire.OutgoingMessage, row.payload, what="outbox payload")
            # Typing shown before the text (paced sending) is part of the attempt.
            timeout = self.settings.attempt_timeout + message.typing
            result = await wire.ask_child(self.router, identity, message, timeout=timeout)
        except wire.WireError as exc:
            # A row this version cannot read, or a reply that breaks the contract: a retry would change nothing.
            log.error("message %s: %s", message_id, exc, extra={"sessionId": session_id})
            await self._finish(row, MessageStatus.FAILED, error=f"{wire.PROTOCOL_ERROR}: {exc}")
        except RemoteError as exc:
            if exc.code in PERMANENT_ERRORS:
                await self._finish(row, MessageStatus.FAILED, error=f"{exc.code}: {exc.message}")
            elif exc.code == OUTCOME_UNKNOWN:
                await self._finish(row, MessageStatus.UNKNOWN, error=exc.message)
            else:
                await self._retry_later(row, f"{exc.code}: {exc.message}")
        except (RequestTimeout, PeerGone) as exc:
            # The outcome is open; the retry reuses the id, so the recipient still sees one message.
            if self.pacer is not None:
                self.pacer.sent(row, time.time())  # it may have gone out: the pace counts it
            await self._retry_later(row, str(exc))
        else:
            if self.pacer is not None:
                self.pacer.sent(row, time.time())
            # The session's next message goes out while this one's settlement is committed: the network
            # has it, and a crash before the commit only resends it under its id. It stays in flight
            # (never attempted again meanwhile) until settled.
            settling = True
            task = asyncio.create_task(self._settle_sent(row, result.timestamp or time.time()))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        finally:
            if not settling:
                self._inflight.discard(key)

    async def _settle_sent(self, row: OutboxRow, timestamp: float) -> None:
        try:
            await self._finish(row, MessageStatus.SENT, timestamp=timestamp)
        except Exception:
            # Still in the outbox: the sweep sends it again under its id, and that settles it.
            log.exception("settling sent message %s failed", row.message_id, extra={"sessionId": row.session_id})
        finally:
            self._inflight.discard((row.session_id, row.message_id))

    async def _finish(
        self, row: OutboxRow, status: MessageStatus, *, timestamp: float | None = None, error: str | None = None
    ) -> None:
        session_id, message_id = row.session_id, row.message_id
        finished = await self.store.finish_outgoing(
            session_id, message_id, status, timestamp=timestamp, error=error, payload=row.payload
        )
        queue = self._queues.get(session_id)
        if queue is not None:
            queue.pop(message_id, None)
            if not queue:
                del self._queues[session_id]
        if finished:
            staged = row.payload.get("media_path")
            if staged:
                # The session process sent from this copy; the stored object serves mediaUrl from now on.
                await asyncio.to_thread(Path(staged).unlink, True)
            if status == MessageStatus.SENT:
                self.sent += 1
            elif status == MessageStatus.FAILED:
                self.failed += 1
            if status != MessageStatus.SENT:
                log.warning("message %s %s: %s", message_id, status, error, extra={"sessionId": session_id})
        # A message not sent keeps the time it was accepted, as its history row does.
        self._settle(
            session_id, message_id, Settled(status, timestamp if timestamp is not None else row.created_at, error)
        )

    async def fail_queued(self, session_id: str, error: str) -> int:
        """Fail every message accepted for the session so far (its device was unlinked); how many now.

        A message on its way to the session process right now is failed when its attempt comes back
        without a send; messages accepted later are sent as usual.
        """
        self._closed[session_id] = (time.time(), error)
        queue = self._queues.get(session_id, {})
        waiting = [row for row in queue.values() if (session_id, row.message_id) not in self._inflight]
        for row in waiting:  # all out of the queue before the first commit is awaited
            self._withdraw(row)
        for n, row in enumerate(waiting):
            try:
                await self._drop(row, error)
            except Exception:
                for rest in waiting[n + 1 :]:
                    self._put_back(rest)
                raise
        return len(waiting)

    async def _retry_later(self, row: OutboxRow, why: str) -> None:
        closed = self._closed.get(row.session_id)
        if closed is not None and row.created_at <= closed[0]:
            await self._finish(row, MessageStatus.FAILED, error=closed[1])
            return
        attempts = row.attempts + 1
        delay = min(self.settings.retry_max, self.settings.retry_initial * 2 ** min(attempts - 1, 10))
        at = time.time() + delay
        await self.store.outbox_retry_at(row.session_id, row.message_id, attempts, at)
        row.attempts, row.next_attempt_at = attempts, at
        log.info(
            "message %s not confirmed (attempt %d): %s; retrying in %.1fs",
            row.message_id,
            attempts,
            why,
            delay,
            extra={"sessionId": row.session_id},
        )

    async def _sweep_loop(self) -> None:
        """Retry what is due for connected sessions; fail what outlived the TTL."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                now = time.time()
                due: set[str] = set()
                for row in [r for q in list(self._queues.values()) for r in q.values()]:
                    if (row.session_id, row.message_id) in self._inflight:
                        continue  # its outcome is being decided (or committed) right now
                    if row.message_id not in self._queues.get(row.session_id, {}):
                        continue  # settled while an earlier one was being failed
                    if row.expires_at <= now:
                        await self._drop(row, TTL_ERROR)
                    elif row.next_attempt_at <= now and self.target(row.session_id) is not None:
                        due.add(row.session_id)
                for session_id in due:
                    self._spawn_flush(session_id)
                await self.store.purge_idempotency(now - self.settings.idempotency_ttl)
            except Exception:
                log.exception("outbox sweep failed")

    def forget_session(self, session_id: str) -> None:
        """A deleted session: nobody waits for its messages any more."""
        self._queues.pop(session_id, None)
        wake = self._wakes.pop(session_id, None)
        if wake is not None:
            wake.cancel()
        if self.pacer is not None:
            self.pacer.forget(session_id)
        for key in [k for k in self._settled if k[0] == session_id]:
            self._settle(*key, Settled(MessageStatus.FAILED, None, "the session was deleted"))


def _sweep_staged(staging_dir: Path, wanted: set[str]) -> int:
    """Delete the files under ``staging_dir/<session>/`` whose absolute path is not in ``wanted``."""
    keep = {str(Path(path).absolute()) for path in wanted}
    removed = 0
    for path in staging_dir.glob("*/*"):
        if path.is_file() and str(path.absolute()) not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed

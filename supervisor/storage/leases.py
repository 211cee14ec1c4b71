"""Session leases: one object per session naming the worker that runs it, until when.

``sessions/<id>/lease.json`` = ``{"workerId", "expiresAt", "acquiredAt", "renewedAt",
"incarnation"}``. A worker takes a lease before it starts a session's process and
renews it every ``ttl / 3`` (``LEASE_TTL``, 60 s) while the process runs. Every
write is conditional: a fresh lease with ``If-None-Match: *``, a renewal or a
takeover with ``If-Match: <etag we read>``. Of two workers racing for one session
exactly one write succeeds; the other gets 412 and sees the winner's live lease.

Fast failover: another worker's lease is in force while it has not expired
*and* its worker is alive. Each worker keeps one liveness record, renewed every
second or so (:mod:`supervisor.storage.liveness`); a lease whose holder's record
lapsed may be taken over at once (still conditionally, on the etag read), so a
killed worker's sessions move in about ``WORKER_ALIVE_TTL`` (3 s) instead of
``LEASE_TTL``. :func:`takeover_reason` is the whole decision. A holder with no
record at all is judged by its lease: an older worker that keeps none (no
``incarnation`` in its lease) until the lease expires; one that keeps records
(its record deleted at a clean stop, or removed) once the lease has gone
unrenewed for a renewal period plus ``WORKER_ALIVE_TTL``, which a live holder's
lease never does. The lease TTL itself only matters when liveness cannot be
read or the holder keeps no record.

Limits, by design: expiry is wall-clock time, so workers' clocks must agree to
well within ``WORKER_ALIVE_TTL`` (NTP). A worker that cannot reach the store keeps
running what it runs (an outage must not stop sessions) and retries. Its
liveness record lapses after ``WORKER_ALIVE_TTL``, so a worker that can reach the
store may take its sessions over then: until the cut-off worker reaches the store
again, its next lease renewal fails its condition and it stops the session, both
run the session (split brain, for as long as the cut-off lasts plus one renewal;
the liveness record's return wakes the lease renewals at once). The same happens
to a worker whose event loop stalls longer than ``WORKER_ALIVE_TTL``. WhatsApp
(and the simulated network) keeps only the newer of two connections with the
same credentials, so in practice the older one is disconnected meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.tasks import cancel_and_wait
from supervisor.storage.liveness import AliveRecord, WorkerLiveness, read_alive
from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError, StorageUnavailable

log = logging.getLogger("supervisor.storage")

WAIT_POLL = 0.25  # how often a waiting takeover reads the lease again (storage has no change notification)
LEASE_WAIT_MARGIN = 5.0  # a takeover waits out another worker's lease TTL plus this
# A takeover gives up this long after the holder's record was still being renewed past its TTL:
# a worker that was gone when the wait began has a lapsed record by then (clock skew included).
ALIVE_WAIT_MARGIN = 2.0


def lease_key(session_id: str) -> str:
    return f"sessions/{session_id}/lease.json"


class LeaseHeld(Exception):
    """Another worker holds a live lease on the session."""

    def __init__(self, session_id: str, holder: str, expires_in: float, *, holder_alive: bool | None = None) -> None:
        super().__init__(
            f"session {session_id!r} runs on worker {holder!r} (its lease expires in {max(expires_in, 0):.0f}s)"
        )
        self.holder = holder
        self.expires_in = expires_in
        # True: the holder's liveness record is live; None: no record to go by (the lease decides).
        self.holder_alive = holder_alive


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as stored."""

    worker_id: str
    expires_at: float
    etag: str
    renewed_at: float | None = None  # None: written by a worker that does not say (an older version)
    incarnation: str | None = None  # the holder's run; None: the holder keeps no liveness record

    @staticmethod
    def parse(data: bytes, etag: str) -> Lease:
        try:
            body = json.loads(data)
            renewed = body.get("renewedAt")
            incarnation = body.get("incarnation")
            return Lease(
                str(body["workerId"]),
                float(body["expiresAt"]),
                etag,
                float(renewed) if renewed is not None else None,
                str(incarnation) if incarnation is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # An unreadable lease protects nothing: treat it as expired (takeover is still conditional).
            return Lease("?", 0.0, etag)


def takeover_reason(lease: Lease, holder: AliveRecord | None, *, now: float, alive_ttl: float) -> str | None:
    """Why another worker's lease may be taken over now; None while it is in force.

    ``holder`` is the holder's liveness record (None: it has none). ``alive_ttl`` is
    WORKER_ALIVE_TTL, the fleet's setting (a holder without a record cannot tell its own).
    """
    if lease.expires_at <= now:
        return "its lease expired"
    if holder is not None:
        if holder.alive_until > now:
            return None
        return f"its liveness record lapsed {now - holder.alive_until:.1f}s ago"
    if lease.incarnation is None or lease.renewed_at is None:
        return None  # a worker that keeps no liveness record: only its lease's expiry tells
    # A live holder renews its lease every third of its TTL; one whose record is gone and whose lease
    # went unrenewed a renewal period plus the liveness TTL has stopped (or is cut off from the store).
    period = (lease.expires_at - lease.renewed_at) / 3
    silent = now - lease.renewed_at
    if silent > period + alive_ttl:
        return f"it has no liveness record and its lease went unrenewed for {silent:.1f}s"
    return None


LostHandler = Callable[[str, str], None]


class LeaseManager:
    """The leases this worker holds, and the loop that renews them.

    With ``liveness`` (this worker's :class:`WorkerLiveness`), leases carry the
    worker's incarnation and other workers' leases are judged by their liveness
    records too (:func:`takeover_reason`); without it, by expiry alone.
    """

    def __init__(
        self,
        objects: ObjectStore,
        bucket: str,
        worker_id: str,
        ttl: float,
        *,
        liveness: WorkerLiveness | None = None,
    ) -> None:
        self.objects = objects
        self.bucket = bucket
        self.worker_id = worker_id
        self.ttl = ttl
        self.liveness = liveness
        self.held: dict[str, str] = {}  # session id -> etag of our lease
        self.unverified: set[str] = set()  # running without a confirmed lease (store was down)
        self.on_lost: LostHandler = lambda session_id, holder: None
        self._locks: dict[str, asyncio.Lock] = {}
        self._acquired_at: dict[str, float] = {}
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _body(self, session_id: str) -> bytes:
        now = time.time()
        body: dict[str, object] = {
            "workerId": self.worker_id,
            "expiresAt": now + self.ttl,
            "acquiredAt": self._acquired_at.get(session_id, now),
            "renewedAt": now,
        }
        if self.liveness is not None:
            body["incarnation"] = self.liveness.incarnation
        return json.dumps(body).encode()

    async def read(self, session_id: str) -> Lease | None:
        """The stored lease of a session, if any."""
        obj = await self.objects.get(self.bucket, lease_key(session_id))
        return Lease.parse(obj.data, obj.etag) if obj is not None else None

    async def acquire(self, session_id: str, *, wait: bool = False) -> None:
        """Take or renew the session's lease; raises LeaseHeld or StorageUnavailable.

        With ``wait`` (a create with takeover), another worker's lease is read again
        until it may be taken: up to WORKER_ALIVE_TTL and a margin while its holder's
        liveness record keeps being renewed (that worker is alive: LeaseHeld), else up
        to LEASE_TTL and a margin.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        logged = False
        while True:
            async with self._lock(session_id):
                try:
                    await self._acquire(session_id)
                    return
                except LeaseHeld as exc:
                    if not wait or self._give_up(exc, loop.time() - started):
                        raise
                    if not logged:
                        logged = True
                        log.info(
                            "waiting for worker %s's lease to lapse or its liveness record to expire",
                            exc.holder,
                            extra={"sessionId": session_id},
                        )
            await asyncio.sleep(WAIT_POLL)

    def _give_up(self, exc: LeaseHeld, waited: float) -> bool:
        if waited > self.ttl + LEASE_WAIT_MARGIN:
            return True
        # A worker that was gone when we began waiting cannot still have a live record now.
        return bool(exc.holder_alive and self.liveness is not None and waited > self.liveness.ttl + ALIVE_WAIT_MARGIN)

    async def _acquire(self, session_id: str) -> None:
        key = lease_key(session_id)
        for _ in range(3):  # a lost race re-reads the winner's lease
            current = await self.read(session_id)
            try:
                if current is None:
                    etag = await self.objects.put(
                        self.bucket, key, self._body(session_id), content_type="application/json", if_none_match=True
                    )
                else:
                    if current.worker_id != self.worker_id:
                        await self._may_take(session_id, current)
                    etag = await self.objects.put(
                        self.bucket,
                        key,
                        self._body(session_id),
                        content_type="application/json",
                        if_match=current.etag,
                    )
            except PreconditionFailed:
                continue
            self.held[session_id] = etag
            self._acquired_at.setdefault(session_id, time.time())
            self.unverified.discard(session_id)
            return
        current = await self.read(session_id)
        holder = current.worker_id if current else "?"
        raise LeaseHeld(session_id, holder, (current.expires_at - time.time()) if current else 0.0)

    async def _may_take(self, session_id: str, current: Lease) -> None:
        """Return when another worker's lease may be taken over; raise LeaseHeld while it is in force."""
        now = time.time()
        if current.expires_at <= now:
            return
        if self.liveness is None:
            raise LeaseHeld(session_id, current.worker_id, current.expires_at - now)
        record = await read_alive(self.objects, self.bucket, current.worker_id)
        now = time.time()
        reason = takeover_reason(current, record, now=now, alive_ttl=self.liveness.ttl)
        if reason is None:
            alive = record is not None and record.alive_until > now
            raise LeaseHeld(session_id, current.worker_id, current.expires_at - now, holder_alive=alive or None)
        log.info("taking over worker %s's lease: %s", current.worker_id, reason, extra={"sessionId": session_id})

    def hold_unverified(self, session_id: str) -> None:
        """Run the session without a confirmed lease (store unreachable); take it when the store is back."""
        self.unverified.add(session_id)

    async def release(self, session_id: str) -> None:
        """Give the lease up (the session stopped here); only our own lease is deleted."""
        async with self._lock(session_id):
            self.unverified.discard(session_id)
            etag = self.held.pop(session_id, None)
            self._acquired_at.pop(session_id, None)
            if etag is None:
                return
            with contextlib.suppress(PreconditionFailed):  # not ours any more: leave it alone
                await self.objects.delete(self.bucket, lease_key(session_id), if_match=etag)

    def drop(self, session_id: str) -> None:
        """Forget a lease without touching the store (it was lost to another worker)."""
        self.held.pop(session_id, None)
        self._acquired_at.pop(session_id, None)
        self.unverified.discard(session_id)

    def holds(self, session_id: str) -> bool:
        return session_id in self.held or session_id in self.unverified

    async def confirm(self, session_id: str) -> bool:
        """Renew our lease now, conditional on it being unchanged since we last wrote it: True proves we
        hold it at this moment (a backup may become current); False when it is not ours (or unconfirmed)."""
        async with self._lock(session_id):
            etag = self.held.get(session_id)
            if etag is None:
                return False
            try:
                await self._extend(session_id, etag)
            except PreconditionFailed:
                return False  # changed under us: the renewal loop finds out by whom and stops the session
            return True

    async def _extend(self, session_id: str, etag: str) -> None:
        """Rewrite our lease with a later expiry, only if it is still the one we wrote (``etag``)."""
        self.held[session_id] = await self.objects.put(
            self.bucket, lease_key(session_id), self._body(session_id), content_type="application/json", if_match=etag
        )

    # -- renewal ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.create_task(self._renew_loop(), name="lease-renewal")

    async def close(self) -> None:
        await cancel_and_wait(self._loop)

    def wake(self) -> None:
        """Renew every lease now (our liveness record is back after a lapse: were sessions taken over?)."""
        self._wake.set()

    async def _renew_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 3):
                    await self._wake.wait()
            self._wake.clear()
            for session_id in [*self.held, *self.unverified]:
                try:
                    await self.renew(session_id)
                except Exception:
                    log.exception("lease renewal failed", extra={"sessionId": session_id})

    async def renew(self, session_id: str) -> None:
        """Extend our lease; when another worker holds it now, report the session lost."""
        async with self._lock(session_id):
            etag = self.held.get(session_id)
            if etag is None and session_id not in self.unverified:
                return  # released meanwhile
            try:
                if etag is not None:
                    try:
                        await self._extend(session_id, etag)
                        return
                    except PreconditionFailed:
                        pass  # changed under us: find out by whom
                await self._acquire(session_id)
            except LeaseHeld as exc:
                self.drop(session_id)
                log.warning("lease lost to worker %s", exc.holder, extra={"sessionId": session_id})
                self.on_lost(session_id, exc.holder)
            except StorageUnavailable:
                pass  # keep running; the store's outage shows in /health
            except StorageError as exc:
                log.warning("lease renewal failed: %s", exc, extra={"sessionId": session_id})

"""Session leases: one object per session naming the worker that runs it, until when.

``sessions/<id>/lease.json`` = ``{"workerId", "expiresAt", "acquiredAt"}``. A
worker takes a lease before it starts a session's process and renews it every
``ttl / 3`` while the process runs. Every write is conditional: a fresh lease with
``If-None-Match: *``, a renewal or a takeover of an expired lease with
``If-Match: <etag we read>``. Of two workers racing for one session exactly one
write succeeds; the other gets 412 and sees the winner's live lease.

Limits, by design: expiry is wall-clock time, so workers' clocks must agree to
well within the TTL (NTP). A worker that cannot reach the store keeps running
what it runs (an outage must not stop sessions) and retries; if another worker
took the lease meanwhile, the next renewal fails its condition and this worker
stops the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError, StorageUnavailable

log = logging.getLogger("supervisor.storage")


def lease_key(session_id: str) -> str:
    return f"sessions/{session_id}/lease.json"


class LeaseHeld(Exception):
    """Another worker holds a live lease on the session."""

    def __init__(self, session_id: str, holder: str, expires_in: float) -> None:
        super().__init__(
            f"session {session_id!r} runs on worker {holder!r} (its lease expires in {max(expires_in, 0):.0f}s)"
        )
        self.holder = holder
        self.expires_in = expires_in


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as stored."""

    worker_id: str
    expires_at: float
    etag: str

    @staticmethod
    def parse(data: bytes, etag: str) -> Lease:
        try:
            body = json.loads(data)
            return Lease(str(body["workerId"]), float(body["expiresAt"]), etag)
        except (ValueError, KeyError, TypeError):
            # An unreadable lease protects nothing: treat it as expired (takeover is still conditional).
            return Lease("?", 0.0, etag)


LostHandler = Callable[[str, str], None]


class LeaseManager:
    """The leases this worker holds, and the loop that renews them."""

    def __init__(self, objects: ObjectStore, bucket: str, worker_id: str, ttl: float) -> None:
        self.objects = objects
        self.bucket = bucket
        self.worker_id = worker_id
        self.ttl = ttl
        self.held: dict[str, str] = {}  # session id -> etag of our lease
        self.unverified: set[str] = set()  # running without a confirmed lease (store was down)
        self.on_lost: LostHandler = lambda session_id, holder: None
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.Task[None] | None = None

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"workerId": self.worker_id, "expiresAt": now + self.ttl, "acquiredAt": now}).encode()

    async def read(self, session_id: str) -> Lease | None:
        """The stored lease of a session, if any."""
        obj = await self.objects.get(self.bucket, lease_key(session_id))
        return Lease.parse(obj.data, obj.etag) if obj is not None else None

    async def acquire(self, session_id: str) -> None:
        """Take or renew the session's lease; raises LeaseHeld or StorageUnavailable."""
        async with self._lock(session_id):
            await self._acquire(session_id)

    async def _acquire(self, session_id: str) -> None:
        key = lease_key(session_id)
        for _ in range(3):  # a lost race re-reads the winner's lease
            current = await self.read(session_id)
            try:
                if current is None:
                    etag = await self.objects.put(
                        self.bucket, key, self._body(), content_type="application/json", if_none_match=True
                    )
                else:
                    remaining = current.expires_at - time.time()
                    if current.worker_id != self.worker_id and remaining > 0:
                        raise LeaseHeld(session_id, current.worker_id, remaining)
                    etag = await self.objects.put(
                        self.bucket, key, self._body(), content_type="application/json", if_match=current.etag
                    )
            except PreconditionFailed:
                continue
            self.held[session_id] = etag
            self.unverified.discard(session_id)
            return
        current = await self.read(session_id)
        holder = current.worker_id if current else "?"
        raise LeaseHeld(session_id, holder, (current.expires_at - time.time()) if current else 0.0)

    def hold_unverified(self, session_id: str) -> None:
        """Run the session without a confirmed lease (store unreachable); take it when the store is back."""
        self.unverified.add(session_id)

    async def release(self, session_id: str) -> None:
        """Give the lease up (the session stopped here); only our own lease is deleted."""
        async with self._lock(session_id):
            self.unverified.discard(session_id)
            etag = self.held.pop(session_id, None)
            if etag is None:
                return
            with contextlib.suppress(PreconditionFailed):  # not ours any more: leave it alone
                await self.objects.delete(self.bucket, lease_key(session_id), if_match=etag)

    def drop(self, session_id: str) -> None:
        """Forget a lease without touching the store (it was lost to another worker)."""
        self.held.pop(session_id, None)
        self.unverified.discard(session_id)

    def holds(self, session_id: str) -> bool:
        return session_id in self.held or session_id in self.unverified

    # -- renewal ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.create_task(self._renew_loop(), name="lease-renewal")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(BaseException):
                await self._loop

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
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
                        self.held[session_id] = await self.objects.put(
                            self.bucket,
                            lease_key(session_id),
                            self._body(),
                            content_type="application/json",
                            if_match=etag,
                        )
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

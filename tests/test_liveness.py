"""Worker liveness records and the lease takeover they allow (real objects in moto's S3 server).

The decision itself (:func:`takeover_reason`) is a pure function; everything
else runs against the S3 server through the real ``minio`` client.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest
from harness import wait_for
from s3server import ACCESS_KEY, SECRET_KEY, S3Server, s3  # noqa: F401 - s3 is a fixture

from supervisor.storage.leases import Lease, LeaseHeld, LeaseManager, takeover_reason
from supervisor.storage.liveness import AliveRecord, WorkerLiveness, alive_key, read_alive
from supervisor.storage.objects import ObjectStore, StoredObject
from supervisor.storage.s3 import MinioObjectStore

NOW = 1_000_000.0


def _lease(
    *, expires_in: float | None = None, renewed_ago: float | None = 1.0, incarnation: str | None = "i1"
) -> Lease:
    """A's lease (TTL 60 s, so renewed every 20 s), renewed ``renewed_ago`` seconds before NOW."""
    renewed = NOW - renewed_ago if renewed_ago is not None else None
    if expires_in is None:
        expires_in = 60.0 - (renewed_ago or 0.0)
    return Lease("A", NOW + expires_in, "etag", renewed, incarnation)


def _record(alive_for: float) -> AliveRecord:
    return AliveRecord("A", "i1", NOW + alive_for, NOW - 1, "etag")


@pytest.mark.parametrize(
    ("lease", "record", "free"),
    [
        (_lease(expires_in=-0.1), _record(2.0), True),  # expired lease: free whatever the record says
        (_lease(), _record(2.0), False),  # holder alive
        (_lease(), _record(-0.1), True),  # holder's record lapsed: taken at once
        (_lease(renewed_ago=1.0), None, False),  # no record, lease fresh: in force
        (_lease(renewed_ago=19.0), None, False),  # renewal period (20 s) not yet overdue
        (_lease(renewed_ago=24.0), None, True),  # no record and a renewal period + TTL without a renewal
        (_lease(renewed_ago=50.0, incarnation=None), None, False),  # holder keeps no record: its lease decides
        (_lease(renewed_ago=None, incarnation=None), None, False),
    ],
)
def test_takeover_reason(lease: Lease, record: AliveRecord | None, free: bool) -> None:
    reason = takeover_reason(lease, record, now=NOW, alive_ttl=3.0)
    assert (reason is not None) is free, reason


def _store(s3: S3Server) -> MinioObjectStore:  # noqa: F811
    return MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)


async def _bucket(s3: S3Server) -> tuple[MinioObjectStore, str]:  # noqa: F811
    store, bucket = _store(s3), f"lv{secrets.token_hex(4)}"
    await store.ensure_buckets([bucket])
    return store, bucket


async def _worker(
    s3: S3Server,  # noqa: F811
    bucket: str,
    worker_id: str,
    *,
    lease_ttl: float = 60.0,
    alive_ttl: float = 1.5,
    store: ObjectStore | None = None,
) -> tuple[WorkerLiveness, LeaseManager]:
    """One worker's liveness record (started) and lease manager, on a store of its own."""
    objects = store or _store(s3)
    liveness = WorkerLiveness(objects, bucket, worker_id, alive_ttl)
    await liveness.start()
    leases = LeaseManager(objects, bucket, worker_id, lease_ttl, liveness=liveness)
    liveness.on_recovered = leases.wake
    return liveness, leases


async def _lapsed(objects: ObjectStore, bucket: str, worker_id: str) -> bool:
    record = await read_alive(objects, bucket, worker_id)
    return record is not None and record.alive_until < time.time()


async def test_the_record_is_renewed_independently_of_sessions_and_deleted_at_a_clean_stop(
    s3: S3Server,  # noqa: F811
) -> None:
    store, bucket = await _bucket(s3)
    liveness, leases = await _worker(s3, bucket, "A")
    first = await read_alive(store, bucket, "A")
    assert first is not None and first.worker_id == "A" and first.incarnation == liveness.incarnation
    assert first.alive_until > time.time()

    async def renewed() -> bool:
        again = await read_alive(store, bucket, "A")
        return again is not None and again.alive_until > first.alive_until and again.etag != first.etag

    await wait_for(renewed, what="a renewal of A's record")
    # Leases carry the incarnation, so a taker can tell a liveness-keeping holder.
    await leases.acquire("s1")
    lease = await leases.read("s1")
    assert lease is not None and lease.incarnation == liveness.incarnation and lease.renewed_at is not None
    await leases.release("s1")
    await liveness.close()
    assert await store.get(bucket, alive_key("A")) is None
    await store.close()
    await liveness.objects.close()


async def test_a_dead_workers_lease_is_taken_over_before_it_expires_and_the_old_holder_hears_of_it(
    s3: S3Server,  # noqa: F811
) -> None:
    store, bucket = await _bucket(s3)
    a_live, a = await _worker(s3, bucket, "A", lease_ttl=60)
    b_live, b = await _worker(s3, bucket, "B", lease_ttl=60)
    await a.acquire("s1")
    # A is alive: B is refused, and told so.
    with pytest.raises(LeaseHeld) as held:
        await b.acquire("s1")
    assert held.value.holder == "A" and held.value.holder_alive is True
    a_lease = await a.read("s1")
    assert a_lease is not None
    # A stops renewing its record (killed); its lease runs for another minute.
    await a_live.close(delete=False)
    await wait_for(lambda: _lapsed(store, bucket, "A"), what="A's record to lapse")
    await b.acquire("s1")
    taken = await b.read("s1")
    assert taken is not None and taken.worker_id == "B"
    assert time.time() < a_lease.expires_at  # the liveness path, not the lease's expiry
    # A comes back: its renewal fails its condition, it learns B runs the session (B is alive).
    lost: list[tuple[str, str]] = []
    a.on_lost = lambda session_id, holder: lost.append((session_id, holder))
    await a.renew("s1")
    assert lost == [("s1", "B")] and not a.holds("s1")
    await b_live.close()
    for objects in (store, a.objects, b.objects):
        await objects.close()


async def test_two_takers_of_a_dead_workers_lease_exactly_one_wins(s3: S3Server) -> None:  # noqa: F811
    store, bucket = await _bucket(s3)
    a_live, a = await _worker(s3, bucket, "A")
    b_live, b = await _worker(s3, bucket, "B")
    c_live, c = await _worker(s3, bucket, "C")
    await a.acquire("s1")
    await a_live.close(delete=False)
    await wait_for(lambda: _lapsed(store, bucket, "A"), what="A's record to lapse")
    results = await asyncio.gather(b.acquire("s1"), c.acquire("s1"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["LeaseHeld", "NoneType"]
    winner, loser = (b, c) if results[0] is None else (c, b)
    refused = results[1] if results[0] is None else results[0]
    assert isinstance(refused, LeaseHeld) and refused.holder == winner.worker_id and refused.holder_alive
    stored = await winner.read("s1")
    assert stored is not None and stored.worker_id == winner.worker_id and not loser.holds("s1")
    for live in (b_live, c_live):
        await live.close()
    for objects in (store, a.objects, b.objects, c.objects):
        await objects.close()


async def test_a_holder_without_a_record_is_judged_by_its_lease(s3: S3Server) -> None:  # noqa: F811
    store, bucket = await _bucket(s3)
    # An older worker that keeps no liveness record: its lease holds until it expires.
    old = LeaseManager(_store(s3), bucket, "OLD", 60)
    await old.acquire("s1")
    b_live, b = await _worker(s3, bucket, "B")
    with pytest.raises(LeaseHeld) as held:
        await b.acquire("s1")
    assert held.value.holder == "OLD" and held.value.holder_alive is None
    # A worker that kept a record but whose record is gone (deleted at a stop that could not release
    # the lease): the lease is taken once it went unrenewed a renewal period (2 s) plus the liveness TTL.
    a_live, a = await _worker(s3, bucket, "A", lease_ttl=6)
    await a.acquire("s2")
    await a_live.close()  # deletes the record; the lease stays (its renewal loop never ran)
    with pytest.raises(LeaseHeld) as held:
        await b.acquire("s2")
    assert held.value.holder_alive is None
    a_lease = await a.read("s2")
    assert a_lease is not None

    async def taken() -> bool:
        try:
            await b.acquire("s2")
        except LeaseHeld:
            return False
        return True

    await wait_for(taken, what="B to take the unrenewed lease")
    assert time.time() < a_lease.expires_at
    await b_live.close()
    for objects in (store, old.objects, a.objects, b.objects):
        await objects.close()


async def test_a_waiting_takeover_gets_a_dead_workers_lease_and_gives_up_on_a_live_one(
    s3: S3Server,  # noqa: F811
) -> None:
    store, bucket = await _bucket(s3)
    a_live, a = await _worker(s3, bucket, "A", lease_ttl=60)
    a.start()  # A renews its leases too
    b_live, b = await _worker(s3, bucket, "B", lease_ttl=60)
    await a.acquire("live")
    await a.acquire("dead")
    # Against a live A, the wait ends with LeaseHeld once A's record outlived a gone worker's.
    with pytest.raises(LeaseHeld) as held:
        await b.acquire("live", wait=True)
    assert held.value.holder_alive is True
    assert (await b.read("live")) is not None and a.holds("live")
    # A dies while B waits: B gets the lease, well before it would have expired.
    a_lease = await a.read("dead")
    assert a_lease is not None
    waiting = asyncio.ensure_future(b.acquire("dead", wait=True))
    await a.close()
    await a_live.close(delete=False)
    await waiting
    assert b.holds("dead") and time.time() < a_lease.expires_at
    await b_live.close()
    for objects in (store, a.objects, b.objects):
        await objects.close()


class StallOnce(ObjectStore):
    """The real store, except that one write of the liveness record hangs (a stalled connection)."""

    kind = "minio"

    def __init__(self, inner: ObjectStore, stall_at: int) -> None:
        super().__init__()
        self.inner = inner
        self.puts = 0
        self.stall_at = stall_at
        self.stalled = asyncio.Event()

    async def ensure_buckets(self, buckets: list[str]) -> None:
        await self.inner.ensure_buckets(buckets)

    async def get(self, bucket: str, key: str) -> StoredObject | None:
        return await self.inner.get(bucket, key)

    async def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        self.puts += 1
        if self.puts == self.stall_at:
            self.stalled.set()
            await asyncio.Event().wait()  # never answers; the caller has to give up on it
        etag = await self.inner.put(
            bucket, key, data, content_type=content_type, if_none_match=if_none_match, if_match=if_match
        )
        await self.landed()
        return etag

    async def landed(self) -> None:
        """A write landed; its answer goes back when this returns."""

    async def put_file(self, bucket: str, key: str, path: Path, *, content_type: str) -> None:
        await self.inner.put_file(bucket, key, path, content_type=content_type)

    async def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        await self.inner.delete(bucket, key, if_match=if_match)

    async def list(self, bucket: str, prefix: str) -> list[str]:
        return await self.inner.list(bucket, prefix)

    async def presigned_get(self, bucket: str, key: str, expiry: float) -> str:
        return await self.inner.presigned_get(bucket, key, expiry)

    async def close(self) -> None:
        await self.inner.close()


async def test_one_stalled_renewal_does_not_let_the_record_lapse(s3: S3Server) -> None:  # noqa: F811
    store, bucket = await _bucket(s3)
    stalling = StallOnce(_store(s3), stall_at=3)
    liveness = WorkerLiveness(stalling, bucket, "A", 3.0)
    await liveness.start()
    seen: list[float] = []

    async def renewed_after_the_stall() -> bool:
        record = await read_alive(store, bucket, "A")
        assert record is not None
        seen.append(record.alive_until - time.time())
        return stalling.stalled.is_set() and liveness.renewals >= 4

    await wait_for(renewed_after_the_stall, timeout=20, interval=0.1, what="a renewal after the stalled one")
    assert min(seen) > 0, "the record lapsed while one call hung"
    assert not liveness.health()["lapsed"]
    await liveness.close()
    await store.close()
    await stalling.close()


async def test_a_record_of_another_incarnation_is_overwritten_and_reported(
    s3: S3Server,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, bucket = await _bucket(s3)
    # A previous run of worker A, killed a moment ago: its record is still live.
    body = {"workerId": "A", "incarnation": "old", "startedAt": 1.0, "renewedAt": time.time()}
    await store.put(bucket, alive_key("A"), json.dumps({**body, "aliveUntil": time.time() + 30}).encode())
    with caplog.at_level("WARNING", logger="supervisor.storage"):
        liveness = WorkerLiveness(_store(s3), bucket, "A", 3.0)
        await liveness.start()
    record = await read_alive(store, bucket, "A")
    assert record is not None and record.incarnation == liveness.incarnation
    assert "another run is still live" in caplog.text
    await liveness.close()
    await store.close()
    await liveness.objects.close()


class HoldsAnswers(StallOnce):
    """The real store, except that a write's answer can be held back after the write landed."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner, stall_at=0)
        self.hold = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def landed(self) -> None:
        if self.hold:
            self.holding.set()
            await self.release.wait()


async def test_close_stops_renewing_when_a_renewal_lands_as_it_is_cancelled(s3: S3Server) -> None:  # noqa: F811
    # Python 3.11's asyncio.wait_for returned the result and dropped the cancellation when both
    # arrived in one loop turn: the renewal task then ran for ever and close() never returned.
    store, bucket = await _bucket(s3)
    holding = HoldsAnswers(_store(s3))
    liveness = WorkerLiveness(holding, bucket, "A", 3.0)
    await liveness.start()
    holding.hold = True

    async def parked() -> bool:
        return holding.holding.is_set()

    await wait_for(parked, what="the next renewal waiting for its answer")
    holding.release.set()  # the renewal's answer and the cancellation below reach the task in the same turn
    closing = asyncio.create_task(liveness.close())

    async def closed() -> bool:
        return closing.done()

    try:
        await wait_for(closed, timeout=10, what="close() to return (the renewal task outlived its cancellation)")
    finally:
        closing.cancel()
    await closing
    await store.close()
    await holding.close()

"""Worker liveness: one record per worker saying "alive until", so its sessions fail over in seconds.

``workers/<workerId>/alive.json`` (in the sessions bucket) =
``{"workerId", "incarnation", "startedAt", "renewedAt", "aliveUntil"}``. A worker
writes it when its storage starts and renews it every ``ttl / 3``
(``WORKER_ALIVE_TTL``, 3 s by default): one conditional write per period, however
many sessions the worker runs. A clean shutdown deletes it after the sessions'
leases were released. Another worker that finds a session's lease held by a
worker whose record lapsed may take that lease over at once instead of waiting
for the lease's own, longer, expiry (the decision: :func:`supervisor.storage.leases.takeover_reason`).

Writes are conditional like the leases' (``If-None-Match: *`` for a new record,
``If-Match: <etag>`` for a renewal): a renewal that finds the record changed by
someone else means a second process renews under the same ``WORKER_ID``, which
is logged as an error (it would keep a dead twin's sessions from failing over).

Renewals run in a task of their own, never behind session-lease renewals or
backups. A slow call is abandoned after one period and tried again at once (a
stalled connection must not cost the whole TTL), so the record lapses only
after about two periods without one successful write: the store down, cut off,
or slower than a period per call. The worker logs when its record is about to
lapse and when it lapsed, and wakes its lease renewals when it is back so it
learns at once whether another worker took a session over meanwhile.

Limits, by design: ``aliveUntil`` is the writer's wall clock and is compared with
the reader's, so workers' clocks must agree to well within a second (NTP). A
worker whose event loop stalls, or that is cut off from the store, for longer
than the TTL looks dead to the others although it still runs its sessions (see
:mod:`supervisor.storage.leases` for what happens then).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.tasks import cancel_and_wait
from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError, StorageUnavailable
from supervisor.timefmt import iso

log = logging.getLogger("supervisor.storage")

# A second writer under our WORKER_ID is reported at most this often (it would fill the log every period).
_TWIN_LOG_INTERVAL = 60.0


def alive_key(worker_id: str) -> str:
    """The key of a worker's liveness record."""
    return f"workers/{worker_id}/alive.json"


@dataclass(frozen=True, slots=True)
class AliveRecord:
    """A worker's liveness record as stored."""

    worker_id: str
    incarnation: str
    alive_until: float
    renewed_at: float
    etag: str

    @staticmethod
    def parse(data: bytes, etag: str) -> AliveRecord | None:
        """The record, or None when it cannot be read (an unreadable record proves nothing either way)."""
        try:
            body = json.loads(data)
            return AliveRecord(
                str(body["workerId"]),
                str(body.get("incarnation", "")),
                float(body["aliveUntil"]),
                float(body.get("renewedAt", 0.0)),
                etag,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


async def read_alive(objects: ObjectStore, bucket: str, worker_id: str) -> AliveRecord | None:
    """A worker's liveness record, or None when it has none (or an unreadable one)."""
    obj = await objects.get(bucket, alive_key(worker_id))
    return AliveRecord.parse(obj.data, obj.etag) if obj is not None else None


class WorkerLiveness:
    """This worker's liveness record and the task that renews it."""

    def __init__(self, objects: ObjectStore, bucket: str, worker_id: str, ttl: float) -> None:
        self.objects = objects
        self.bucket = bucket
        self.worker_id = worker_id
        self.ttl = ttl
        self.period = ttl / 3
        # Tells this run of the worker from an earlier one (or from a twin with the same WORKER_ID).
        self.incarnation = secrets.token_hex(8)
        self.started_at = time.time()
        self.alive_until = 0.0  # as last written successfully (our clock)
        self.renewals = 0
        self.on_recovered: Callable[[], None] = lambda: None  # the record was renewed again after it lapsed
        self._etag: str | None = None  # of our last write; None: read the record before writing
        self._lapsed = False
        self._twin_logged_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def _body(self, now: float) -> bytes:
        return json.dumps(
            {
                "workerId": self.worker_id,
                "incarnation": self.incarnation,
                "startedAt": self.started_at,
                "renewedAt": now,
                "aliveUntil": now + self.ttl,
            }
        ).encode()

    async def renew(self) -> None:
        """Write the record once (``aliveUntil`` = now + ttl); raises StorageError when it did not land."""
        key = alive_key(self.worker_id)
        for _ in range(3):  # a changed record is read again, then overwritten
            try:
                if self._etag is None:
                    current = await self.objects.get(self.bucket, key)
                    if current is not None:
                        self._notice_other(AliveRecord.parse(current.data, current.etag))
                    now = time.time()
                    etag = await self.objects.put(
                        self.bucket,
                        key,
                        self._body(now),
                        content_type="application/json",
                        if_none_match=current is None,
                        if_match=current.etag if current is not None else None,
                    )
                else:
                    now = time.time()
                    etag = await self.objects.put(
                        self.bucket, key, self._body(now), content_type="application/json", if_match=self._etag
                    )
            except PreconditionFailed:
                self._etag = None
                continue
            self._etag = etag
            self.alive_until = now + self.ttl
            self.renewals += 1
            return
        raise StorageError("the liveness record kept changing under this worker")

    def _notice_other(self, record: AliveRecord | None) -> None:
        """The stored record is not the one we wrote last: say whose it is."""
        if record is None or record.incarnation == self.incarnation:
            return  # ours (a renewal that landed although we gave up on it), or unreadable
        now = time.time()
        if self.renewals == 0:
            if record.alive_until > now:
                # Either our own previous run, killed moments ago, or a twin: the next renewals tell.
                log.warning(
                    "worker %s's liveness record of another run is still live (until %.1fs from now)",
                    self.worker_id,
                    record.alive_until - now,
                )
            return
        if now - self._twin_logged_at >= _TWIN_LOG_INTERVAL:
            self._twin_logged_at = now
            log.error(
                "another process renews worker %s's liveness record (incarnation %s, ours %s): "
                "WORKER_ID must be unique per worker",
                self.worker_id,
                record.incarnation,
                self.incarnation,
            )

    # -- the renewal task -----------------------------------------------------------------
    async def start(self) -> None:
        """Write the record once (bounded by one period; failures are retried by the task), then renew it."""
        await self._attempt()
        self._task = asyncio.create_task(self._loop(), name="worker-liveness")

    async def _attempt(self) -> bool:
        """One renewal, abandoned after one period; returns whether it landed."""
        try:
            async with asyncio.timeout(self.period):
                await self.renew()
        except TimeoutError:
            log.warning("liveness record renewal took longer than %.1fs; trying again", self.period)
            ok = False
        except StorageUnavailable:
            ok = False  # the store's outage shows in /health; the lapse below is logged
        except StorageError as exc:
            log.warning("liveness record renewal failed: %s", exc)
            ok = False
        else:
            ok = True
        self._observe(ok)
        return ok

    def _observe(self, ok: bool) -> None:
        now = time.time()
        if ok:
            if self._lapsed:
                self._lapsed = False
                log.info("liveness record renewed again")
                try:
                    self.on_recovered()
                except Exception:
                    log.exception("liveness recovery callback failed")
            return
        if not self.renewals:
            return  # never written yet: nothing of ours can lapse (start() logged nothing: the store's state shows)
        left = self.alive_until - now
        if left <= 0:
            if not self._lapsed:
                log.error(
                    "liveness record lapsed: other workers may take over this worker's sessions "
                    "(it keeps running them until it learns so from their leases)"
                )
            self._lapsed = True
        elif left < self.period * 1.5:
            log.warning("liveness record not renewed; it lapses in %.1fs", left)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # A timed-out attempt is tried again at once; otherwise one write per period.
            if not await self._attempt() and loop.time() - started >= self.period:
                continue
            await asyncio.sleep(max(self.period - (loop.time() - started), 0.0))

    async def close(self, timeout: float = 5.0, *, delete: bool = True) -> None:
        """Stop renewing and delete the record (only our own write; a clean stop: nothing left to fail over).

        ``delete=False`` leaves the record to lapse by itself, as a killed worker's does.
        """
        await cancel_and_wait(self._task)
        self._task = None
        if self._etag is None or not delete:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.objects.delete(self.bucket, alive_key(self.worker_id), if_match=self._etag)
        except (StorageError, TimeoutError) as exc:
            # It lapses by itself within the TTL.
            log.info("liveness record not deleted: %s", type(exc).__name__)
        self._etag = None

    def health(self) -> dict[str, Any]:
        """The liveness part of /health's ``storage``."""
        return {"aliveUntil": iso(self.alive_until or None), "lapsed": self._lapsed}

"""What the session registry asks of storage: leases, restore before start, backups, cleanup, media.

One :class:`SessionStorage` per worker, over MinIO or the local filesystem. The
registry calls its hooks at the points of a session's life (before its process
starts, on a credentials change, when it stopped, logged out, was deleted);
nothing here stops the worker when the store is down: the store's state shows
in ``/health`` and waiting backups are retried until they land.

Over MinIO the worker also keeps its liveness record (``workers/<id>/alive.json``,
:mod:`supervisor.storage.liveness`): written before any lease is taken, renewed
on its own, deleted at a clean stop after the leases were released, so that
other workers take a killed worker's sessions over in seconds. The local
filesystem serves one worker alone: no record there (nobody else would read it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from common.closing import Closing
from common.tasks import cancel_and_wait
from supervisor.config import Settings
from supervisor.storage import snapshot
from supervisor.storage.backups import BackupScheduler, BackupSettings, NotLeaseHolder
from supervisor.storage.cipher import BackupCipher, BackupRefused
from supervisor.storage.leases import LeaseHeld, LeaseManager, lease_key
from supervisor.storage.liveness import WorkerLiveness
from supervisor.storage.local import LocalObjectStore
from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError, StorageUnavailable
from supervisor.storage.removals import PendingRemovals
from supervisor.storage.s3 import MinioObjectStore
from supervisor.storage.versions import SeenVersions
from supervisor.timefmt import iso

log = logging.getLogger("supervisor.storage")

PROBE_INTERVAL = 2.0  # how often a down store is tried again
MEDIA_PREFIX = "media"

__all__ = [
    "BackupRefused",
    "LeaseHeld",
    "SessionStorage",
    "StorageError",
    "StorageUnavailable",
    "build_storage",
    "open_objects",
]


def open_objects(settings: Settings, *, url_secret: bytes) -> ObjectStore:
    """The object store the settings ask for: MinIO when MINIO_ENDPOINT is set, else local files."""
    if settings.minio_endpoint:
        return MinioObjectStore(
            f"{settings.minio_endpoint}:{settings.minio_port}",
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key,
            secure=settings.minio_use_ssl,
            public_url=settings.minio_public_url,
        )
    return LocalObjectStore(
        {
            settings.sessions_bucket: settings.storage_dir / "backups",
            # Keys are media/<sessionId>/...: the files land in STORAGE_DIR/media/<sessionId>/.
            settings.media_bucket: settings.storage_dir,
        },
        url_base=settings.worker_endpoint,
        url_secret=url_secret,
    )


class SessionStorage:
    """Leases, backups and media of this worker's sessions."""

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self.objects = objects
        self.settings = settings
        self.sessions_bucket = settings.sessions_bucket
        self.media_bucket = settings.media_bucket
        self.cipher = BackupCipher(settings.encryption_key)
        self.backups = BackupScheduler(
            objects,
            self.cipher,
            bucket=settings.sessions_bucket,
            sessions_dir=settings.storage_dir / "sessions",
            worker_id=settings.worker_id,
            settings=BackupSettings(debounce=settings.backup_debounce, retry_max=settings.backup_retry_max),
            seen=SeenVersions(settings.storage_dir / "backup-versions.json"),
            confirm_lease=self._confirm_lease,
        )
        # Only a shared store has other workers to fail over to.
        self.liveness = (
            WorkerLiveness(objects, settings.sessions_bucket, settings.worker_id, settings.worker_alive_ttl)
            if objects.kind != "local"
            else None
        )
        self.leases = LeaseManager(
            objects, settings.sessions_bucket, settings.worker_id, settings.lease_ttl, liveness=self.liveness
        )
        if self.liveness is not None:
            self.liveness.on_recovered = self.leases.wake
        self.buckets_ready = False
        self._logged_out: set[str] = set()
        self._forgotten: set[str] = set()
        # One task per session at a time of each kind (see _one_per_session).
        self._finals: dict[str, asyncio.Task[None]] = {}
        self._logout_removals: dict[str, asyncio.Task[None]] = {}
        self._delete_removals: dict[str, asyncio.Task[None]] = {}
        # Deleted sessions whose objects are still in the store (it was down at the delete).
        self.pending_removals = PendingRemovals(settings.storage_dir / "pending-removals.json")
        self._drained: set[str] = set()  # backed up by the drain step
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probe: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None

    async def _confirm_lease(self, session_id: str) -> bool:
        return await self.leases.confirm(session_id)

    @property
    def connected(self) -> bool:
        return self.objects.connected and self.buckets_ready

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Create the buckets, or keep trying in the background: a down store never stops the worker."""
        swept = await asyncio.to_thread(snapshot.sweep_restores, self.settings.storage_dir / "sessions")
        if swept:
            log.info("removed %d restores a crash left unfinished", swept)
        await self._ensure_buckets()
        self._probe = asyncio.create_task(self._probe_loop(), name="storage-probe")
        self._watch = asyncio.create_task(self._watch_loop(), name="backup-watch")
        if self.liveness is not None:
            await self.liveness.start()  # before any lease: our leases name a worker others can see alive
        self.leases.start()

    async def _ensure_buckets(self) -> bool:
        try:
            await self.objects.ensure_buckets([self.sessions_bucket, self.media_bucket])
        except StorageUnavailable as exc:
            if self.buckets_ready or self._probe is None:
                log.warning("object storage unavailable, retrying every %.0fs: %s", PROBE_INTERVAL, exc)
            self.buckets_ready = False
            return False
        except StorageError as exc:
            log.error("object storage refuses to set up buckets: %s", exc)
            self.buckets_ready = False
            return False
        if not self.buckets_ready:
            log.info("object storage ready (%s)", self.objects.kind)
        self.buckets_ready = True
        return True

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            was_up = self.connected
            if not self.objects.connected or self.objects.needs_setup:
                self.buckets_ready = False
            if not self.buckets_ready:
                self.objects.needs_setup = not await self._ensure_buckets()
            if self.connected and not was_up:
                self.backups.store_is_back()
            if self.connected and len(self.pending_removals):
                await self._retry_deleted()

    async def _watch_loop(self) -> None:
        """Back up every session we run whose auth state changed, each ``backup_interval``."""
        while True:
            await asyncio.sleep(self.settings.backup_interval)
            running = [
                s
                for s in [*self.leases.held, *self.leases.unverified]
                if s not in self._logged_out and s not in self._forgotten and s not in self._finals
            ]
            try:
                await self.backups.backup_changed(running)
            except Exception:
                log.exception("looking for changed auth state failed")

    async def close(self, timeout: float = 10.0) -> None:
        """At shutdown: let final backups land (bounded), give up our leases, stop the timers."""
        await cancel_and_wait(self._watch)
        finals = list(self._finals.values())
        if finals:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*finals, return_exceptions=True)
        # Each step runs even when one before it failed: a failed flush must not keep our leases.
        closing = Closing(log)
        with closing.step("backups"):
            await self.backups.flush(timeout)
            await self.backups.close()
        with closing.step("leases"):
            await self.leases.close()
            for session_id in [*self.leases.held, *self.leases.unverified]:
                with contextlib.suppress(StorageError, TimeoutError):
                    async with asyncio.timeout(5):
                        await self.leases.release(session_id)
        if self.liveness is not None:
            # Last: a lease we could not release is taken over once it goes unrenewed (see leases.py).
            with closing.step("liveness record"):
                await self.liveness.close()
        for task in list(self._tasks):  # the finals among them, had they not finished in time
            task.cancel()
        await cancel_and_wait(self._probe)
        with closing.step("object store client"):
            await self.objects.close()
        closing.raise_if_failed()

    async def backup_running(self) -> None:
        """Drain step: back up every session we hold, now (the snapshot is consistent while it runs)."""
        held = [s for s in [*self.leases.held, *self.leases.unverified] if s not in self._logged_out]
        for session_id in held:
            self.backups.cancel(session_id)

        async def one(session_id: str) -> None:
            try:
                await self.backups.backup_now(session_id)
                self._drained.add(session_id)  # the stop that follows needs no second upload
            except Exception as exc:
                log.warning("backup at drain failed: %s", exc, extra=_extra(session_id))

        await asyncio.gather(*(one(s) for s in held))

    def set_lease_lost_handler(self, handler: Callable[[str, str], None]) -> None:
        """Called with (sessionId, holder) when another worker took a session's lease."""

        def lost(session_id: str, holder: str) -> None:
            self.backups.cancel(session_id)  # our state is no longer the session's truth
            handler(session_id, holder)

        self.leases.on_lost = lost

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _one_per_session(
        self,
        tasks: dict[str, asyncio.Task[None]],
        session_id: str,
        start: Callable[[], Coroutine[Any, Any, None]],
    ) -> asyncio.Task[None]:
        """The session's running task in ``tasks``, or a new one from ``start``; it leaves ``tasks`` when done."""
        task = tasks.get(session_id)
        if task is None:
            task = self._spawn(start())
            tasks[session_id] = task
            task.add_done_callback(lambda _t: tasks.pop(session_id, None))
        return task

    def session_figures(self, session_id: str) -> tuple[str, float | None]:
        """The session's lease here (held, unverified: running while the store was down, or none) and
        when its last backup landed since this worker started (None: none yet)."""
        if session_id in self.leases.unverified:
            lease = "unverified"
        else:
            lease = "held" if session_id in self.leases.held else "none"
        return lease, self.backups.last_backup_of.get(session_id)

    def health(self) -> dict[str, Any]:
        """The ``storage`` part of /health."""
        return {
            "type": self.objects.kind,
            # The seed's boolean: false also when no MinIO is configured (``type`` says which store it is).
            "minioConnected": self.objects.kind == "minio" and self.connected,
            "connected": self.connected,
            "pendingBackups": self.backups.pending,
            "lastBackupAt": iso(self.backups.last_backup_at),
            "backupsDone": self.backups.backups_done,
            "leasesHeld": len(self.leases.held),
            "leasesUnverified": len(self.leases.unverified),
            # Deleted sessions whose objects are still in the store (removed once it is back).
            "pendingRemovals": len(self.pending_removals),
            # This worker's liveness record (MinIO only): when it lapses unless renewed, whether it lapsed.
            "liveness": self.liveness.health() if self.liveness is not None else None,
            "encrypted": self.cipher.encrypting,
        }

    # -- hooks of a session's life ----------------------------------------------------
    async def before_start(self, session_id: str, *, restore: bool = True, takeover: bool = False) -> bool:
        """Take the session's lease and restore its auth state when it is missing here or stale.

        Local auth state is stale when the current backup was written by another
        worker: that worker ran the session after this one last did, so its state
        is the newer one (the lease lets one worker at a time write backups).
        Returns True when a backup was restored. Raises LeaseHeld (another worker
        runs it), BackupRefused (a backup that must not be loaded) or
        StorageError (no local auth state and the store cannot be asked).
        ``restore=False`` after a logout: the old credentials must not come back.
        ``takeover``: wait for another worker's lease to become free (see LeaseManager.acquire).
        """
        await self._settle_final(session_id)
        if session_id in self.pending_removals:
            # The id was deleted while the store was down: its old backups must go before it is used
            # again, or this create would restore the deleted session's login.
            await self._remove_deleted(session_id)
        removal = self._logout_removals.get(session_id)
        if removal is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await asyncio.shield(removal)
        self._logged_out.discard(session_id)
        self._forgotten.discard(session_id)
        session_dir = self.backups.session_dir(session_id)
        local = await asyncio.to_thread(snapshot.has_auth_state, session_dir)
        try:
            await self.leases.acquire(session_id, wait=takeover)
        except StorageUnavailable:
            if not local:
                raise
            # Availability first: we hold the auth state, so we run it and confirm the lease later.
            log.warning("starting without a confirmed lease: object storage unavailable", extra=_extra(session_id))
            self.leases.hold_unverified(session_id)
            return False
        if not restore:
            return False
        if local:
            return await self._replace_if_stale(session_id)
        try:
            return await self.backups.restore(session_id)
        except (BackupRefused, StorageError):
            with contextlib.suppress(StorageError):
                await self.leases.release(session_id)
            raise

    async def _replace_if_stale(self, session_id: str) -> bool:
        """Restore over the local auth state when another worker wrote the current backup."""
        if self.objects.kind == "local":
            return False  # local files: no other worker writes this worker's backups
        try:
            writer = await self.backups.current_writer(session_id)
            if writer is None or writer == self.settings.worker_id:
                return False  # ours: the local state is at least as new as anything stored
            log.info(
                "another worker (%s) ran this session since: its backup replaces the local copy",
                writer,
                extra=_extra(session_id),
            )
            return await self.backups.restore(session_id)
        except BackupRefused as exc:
            log.error("the newer backup is refused (%s); starting with the local copy", exc, extra=_extra(session_id))
        except StorageError as exc:
            # Availability first, as when the lease cannot be confirmed: we hold auth state that works.
            log.warning(
                "cannot check for a newer backup (%s); starting with the local copy", exc, extra=_extra(session_id)
            )
        return False

    def on_creds(self, session_id: str) -> None:
        """The engine's credentials changed: back them up soon (only while we hold the lease)."""
        if self.leases.holds(session_id) and session_id not in self._forgotten:
            self.backups.schedule(session_id)

    def on_logged_out(self, session_id: str) -> None:
        """Unlinked: the backups are worthless now (history stays in the worker's database)."""
        self._logged_out.add(session_id)
        self.backups.cancel(session_id)
        if self.leases.holds(session_id):
            self._one_per_session(self._logout_removals, session_id, lambda: self._remove_auth(session_id))

    async def _remove_auth(self, session_id: str) -> None:
        try:
            await self.backups.remove(session_id)
        except StorageError as exc:
            log.warning("cannot remove backups after logout: %s", exc, extra=_extra(session_id))

    def on_stopped(self, session_id: str) -> None:
        """The session's process is down for good (stopped, exited, failed): final backup, then release."""
        if session_id in self._forgotten or not self.leases.holds(session_id):
            return
        self._one_per_session(self._finals, session_id, lambda: self._final(session_id))

    async def _final(self, session_id: str) -> None:
        # A credentials change after the drain's backup is still dirty: close() flushes it.
        if session_id not in self._logged_out and session_id not in self._drained:
            self.backups.cancel(session_id)
            try:
                await self.backups.backup_now(session_id)
            except StorageError as exc:
                log.warning("backup at stop failed, retrying: %s", exc, extra=_extra(session_id))
                self.backups.schedule(session_id, delay=0)
                return  # the lease stays ours until the retry landed or the worker stops
            except NotLeaseHolder:
                log.warning("final backup not made current: the lease is not ours", extra=_extra(session_id))
            except Exception:
                log.exception("backup at stop failed", extra=_extra(session_id))
        try:
            await self.leases.release(session_id)
        except StorageError as exc:
            log.info("lease not released (it expires by itself): %s", exc, extra=_extra(session_id))

    async def _settle_final(self, session_id: str) -> None:
        task = self._finals.get(session_id)
        if task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await asyncio.shield(task)

    async def abandon(self, session_id: str) -> None:
        """A create that took the session's lease failed before the session existed: give the lease back."""
        try:
            await self.leases.release(session_id)
        except StorageError as exc:
            log.info("lease of a failed create not released (it expires by itself): %s", exc, extra=_extra(session_id))

    async def forget(self, session_id: str) -> None:
        """The session is deleted: remove its backups, lease and media from the store.

        When the store fails, the removal is remembered (on disk) and retried until it lands.
        """
        deleted_at = time.time()
        self._forgotten.add(session_id)
        self.backups.cancel(session_id)
        await self._settle_final(session_id)
        try:
            await self.backups.remove(session_id)
            await self.delete_media(session_id)
            self.leases.drop(session_id)
            await self.objects.delete(self.sessions_bucket, lease_key(session_id))
        except StorageError as exc:
            self.leases.drop(session_id)
            await self.pending_removals.add(session_id, deleted_at)
            log.warning(
                "objects of a deleted session are still in the store (%s); removed once it is back",
                exc,
                extra=_extra(session_id),
            )

    async def _retry_deleted(self) -> None:
        """Retry the removals the store could not take when their sessions were deleted."""
        for session_id, _ in self.pending_removals.items():
            try:
                await self._remove_deleted(session_id)
            except StorageError as exc:
                log.info("removal of a deleted session's objects failed again: %s", exc, extra=_extra(session_id))
                return  # the store is failing: the next probe tries again
            except Exception:  # a bug here must not stop the probe that retries it
                log.exception("removal of a deleted session's objects failed", extra=_extra(session_id))

    async def _remove_deleted(self, session_id: str) -> None:
        """Remove a deleted session's objects now (one run at a time per session); raises StorageError."""
        task = self._one_per_session(self._delete_removals, session_id, lambda: self._remove_deleted_once(session_id))
        await asyncio.shield(task)

    async def _remove_deleted_once(self, session_id: str) -> None:
        deleted_at = self.pending_removals.get(session_id)
        if deleted_at is None:
            return
        lease = await self.leases.read(session_id)
        if lease is not None and lease.worker_id != self.settings.worker_id:
            # Our lease stayed in the store with the rest: another worker took it, so it created the id
            # again meanwhile, and what is in the store is that worker's now (live lease or not).
            log.warning(
                "a deleted session runs on worker %s now: its objects stay in the store",
                lease.worker_id,
                extra=_extra(session_id),
            )
        else:
            await self.backups.remove_written_before(session_id, deleted_at)
            await self.delete_media(session_id)
            if lease is not None:
                with contextlib.suppress(PreconditionFailed):
                    await self.objects.delete(self.sessions_bucket, lease_key(session_id), if_match=lease.etag)
            log.info("objects of a deleted session removed from the store", extra=_extra(session_id))
        await self.pending_removals.done(session_id)

    # -- media -------------------------------------------------------------------------
    def media_key(self, session_id: str, name: str) -> str:
        """The key of a media object: ``media/<sessionId>/<name>``."""
        return f"{MEDIA_PREFIX}/{session_id}/{name}"

    async def put_media(
        self, session_id: str, path: Path, *, content_type: str | None = None, name: str | None = None
    ) -> str:
        """Upload a media file (streamed from disk); returns its key. Raises StorageError."""
        if name is None:
            extension = mimetypes.guess_extension(content_type or "") or path.suffix
            name = f"{secrets.token_hex(12)}{extension}"
        key = self.media_key(session_id, name)
        await self.objects.put_file(
            self.media_bucket, key, path, content_type=content_type or "application/octet-stream"
        )
        return key

    async def media_url(self, key: str, expiry: float | None = None) -> str:
        """A presigned GET URL of a media object, valid for PRESIGN_EXPIRY seconds by default."""
        return await self.objects.presigned_get(
            self.media_bucket, key, self.settings.presign_expiry if expiry is None else expiry
        )

    async def remove_media(self, key: str) -> None:
        """Delete one media object (a message past MESSAGE_RETENTION_DAYS). Raises StorageError."""
        await self.objects.delete(self.media_bucket, key)

    async def delete_media(self, session_id: str) -> int:
        """Delete every media object of a session."""
        return await self.objects.delete_prefix(self.media_bucket, f"{MEDIA_PREFIX}/{session_id}/")


def _extra(session_id: str) -> dict[str, str]:
    return {"sessionId": session_id}


def build_storage(settings: Settings, token: str) -> SessionStorage:
    """The worker's storage, over MinIO when MINIO_ENDPOINT is set, else over STORAGE_DIR.

    Local media URLs are signed with a key derived from the worker token: only
    this worker can mint them, and they stay valid across its restarts.
    """
    url_secret = hashlib.sha256(b"wa-worker media url\n" + token.encode()).digest()
    return SessionStorage(open_objects(settings, url_secret=url_secret), settings)

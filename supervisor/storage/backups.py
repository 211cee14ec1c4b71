"""Session backups: debounced per session, uploaded as new versions, switched by a manifest.

Objects of a session in the sessions bucket::

    sessions/<id>/auth/<version>.bak   sealed snapshots (see storage.cipher), one per backup
    sessions/<id>/auth/current.json    the manifest: which version is current, its SHA-256

A backup uploads a new version first and rewrites the manifest only once that
upload completed, so a half-written upload never replaces a good backup; older
versions are pruned after the switch. The manifest is rewritten only right after
this worker renewed the session's lease (``confirm_lease``): a worker that lost the
lease can never point ``current.json`` at its stale keys for the new owner to
restore. A restore refuses a version older than the newest this worker has seen
(:mod:`supervisor.storage.versions`). Credential changes arrive in bursts
(pairing writes several times), so a backup waits ``debounce`` seconds for the
burst to end; a failed upload is retried with exponential backoff until it lands.

The auth state also changes with every conversation (Signal sessions, pre-keys,
app state in the engine's database), without an event saying so: ``backup_changed``
compares each session's files with what its last backup saw and backs up those
that changed. The storage service calls it every ``BACKUP_INTERVAL``, which bounds
the auth state a failover can lose, for both engines alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from supervisor.storage import snapshot
from supervisor.storage.cipher import BackupCipher, BackupRefused
from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError
from supervisor.storage.versions import SeenVersions

log = logging.getLogger("supervisor.storage.backups")

KEEP_VERSIONS = 2  # the current one and the one before it


def auth_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/auth/"


def manifest_key(session_id: str) -> str:
    return f"{auth_prefix(session_id)}current.json"


def _version_key(session_id: str) -> str:
    # Named by the time it was written: a removal bounded by time can tell old versions from new.
    return f"{auth_prefix(session_id)}{time.time_ns():020d}-{secrets.token_hex(4)}.bak"


def _written_at(key: str) -> float:
    """When a backup version was written (its name says); +inf for a name that does not, so it stays."""
    name = key.rsplit("/", 1)[-1]
    try:
        return int(name[:20]) / 1e9
    except ValueError:
        return float("inf")


def _manifest_object(data: bytes) -> str | None:
    """The backup version a manifest points at; None when it is unreadable."""
    try:
        key = json.loads(data)["object"]
    except (ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


class NotLeaseHolder(Exception):
    """This worker no longer holds the session's lease: its backup must not become the current one."""


@dataclass(frozen=True, slots=True)
class BackupSettings:
    """Timing of backups."""

    debounce: float = 1.0  # wait this long after a credentials change for the burst to end
    retry_initial: float = 1.0
    retry_max: float = 10.0


class BackupScheduler:
    """Backs up and restores the auth state of sessions."""

    def __init__(
        self,
        objects: ObjectStore,
        cipher: BackupCipher,
        *,
        bucket: str,
        sessions_dir: Path,
        worker_id: str,
        settings: BackupSettings,
        seen: SeenVersions | None = None,
        confirm_lease: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.objects = objects
        self.cipher = cipher
        self.bucket = bucket
        self.sessions_dir = sessions_dir
        self.worker_id = worker_id
        self.settings = settings
        self.seen = seen or SeenVersions(None)
        # True while this worker holds the session's lease, renewing it as proof; None: no leases (tests).
        self.confirm_lease = confirm_lease
        self.last_backup_at: float | None = None
        self.last_backup_of: dict[str, float] = {}  # session -> when its last backup landed (the dashboard)
        self.backups_done = 0
        self._dirty: set[str] = set()
        # The auth files as each session's last landed backup (or restore) saw them.
        self._saw: dict[str, tuple[tuple[str, int, int], ...]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Sessions whose latest auth state has not landed in the store yet."""
        return len(self._dirty | set(self._tasks))

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    # -- scheduling ---------------------------------------------------------------------
    def schedule(self, session_id: str, *, delay: float | None = None) -> None:
        """Back the session up soon (debounced; retried until it lands)."""
        self._dirty.add(session_id)
        if session_id not in self._tasks:
            wait = self.settings.debounce if delay is None else delay
            task = asyncio.create_task(self._run(session_id, wait), name=f"backup-{session_id}")
            self._tasks[session_id] = task

    def store_is_back(self) -> None:
        """Retry waiting backups now instead of at the end of their backoff."""
        self._wake.set()
        self._wake = asyncio.Event()

    async def _run(self, session_id: str, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            delay = self.settings.retry_initial
            while session_id in self._dirty:
                self._dirty.discard(session_id)
                try:
                    await self.backup_now(session_id)
                    delay = self.settings.retry_initial
                except NotLeaseHolder:
                    log.warning("backup not made current: the lease is not ours", extra={"sessionId": session_id})
                    return
                except StorageError as exc:
                    self._dirty.add(session_id)
                    log.warning("backup failed, retrying in %.1fs: %s", delay, exc, extra={"sessionId": session_id})
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    delay = min(delay * 2, self.settings.retry_max)
                except Exception:
                    log.exception("backup failed", extra={"sessionId": session_id})
                    return
        finally:
            self._tasks.pop(session_id, None)

    async def backup_changed(self, session_ids: list[str]) -> int:
        """Schedule a backup of each session whose auth files changed since its last backup; how many."""
        due = [s for s in session_ids if s not in self._tasks]

        def changed() -> list[str]:
            out = []
            for session_id in due:
                seen = snapshot.fingerprint(self.session_dir(session_id))
                if seen and seen != self._saw.get(session_id):  # no files yet: nothing to back up
                    out.append(session_id)
            return out

        found = await asyncio.to_thread(changed)
        for session_id in found:
            self.schedule(session_id, delay=0)
        return len(found)

    def cancel(self, session_id: str) -> None:
        """Drop a waiting backup (logged out, deleted, lease lost)."""
        self._dirty.discard(session_id)
        task = self._tasks.pop(session_id, None)
        if task is not None:
            task.cancel()

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) for waiting backups to land: at shutdown, run them now."""
        for session_id in list(self._tasks):
            self.cancel(session_id)
            self._dirty.add(session_id)
        dirty = list(self._dirty)
        if not dirty:
            return

        async def one(session_id: str) -> None:
            try:
                await self.backup_now(session_id)
                self._dirty.discard(session_id)
            except Exception as exc:
                log.warning("final backup failed: %s", exc, extra={"sessionId": session_id})

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(one(s) for s in dirty))

    async def close(self) -> None:
        for session_id in list(self._tasks):
            self.cancel(session_id)

    # -- one backup ------------------------------------------------------------------------
    async def backup_now(self, session_id: str) -> bool:
        """Snapshot, seal and upload the session's auth state; False when it has none."""
        async with self._lock(session_id):
            session_dir = self.session_dir(session_id)
            if not await asyncio.to_thread(snapshot.has_auth_state, session_dir):
                return False
            # Taken before the snapshot: a write during it shows as a change at the next look.
            seen = await asyncio.to_thread(snapshot.fingerprint, session_dir)
            archive = await asyncio.to_thread(snapshot.snapshot, session_dir)
            key = _version_key(session_id)
            blob = await asyncio.to_thread(self.cipher.seal, archive, session_id, key)
            await self.objects.put(self.bucket, key, blob)
            if self.confirm_lease is not None and not await self.confirm_lease(session_id):
                with contextlib.suppress(StorageError):
                    await self.objects.delete(self.bucket, key)
                raise NotLeaseHolder(session_id)
            manifest = {
                "format": 1,
                "object": key,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "size": len(blob),
                "encrypted": self.cipher.encrypting,
                "createdAt": time.time(),
                "workerId": self.worker_id,
            }
            # Only now, with the new version complete in the store, does it become the current one.
            await self.objects.put(
                self.bucket, manifest_key(session_id), json.dumps(manifest).encode(), content_type="application/json"
            )
            self._saw[session_id] = seen
            await self.seen.saw(session_id, _written_at(key), binds_version=True)
            self.last_backup_at = self.last_backup_of[session_id] = time.time()
            self.backups_done += 1
            log.info("backup stored (%d bytes)", len(blob), extra={"sessionId": session_id})
            await self._prune(session_id, keep=key)
            return True

    async def _prune(self, session_id: str, *, keep: str) -> None:
        try:
            versions = [k for k in await self.objects.list(self.bucket, auth_prefix(session_id)) if k.endswith(".bak")]
            for key in versions[:-KEEP_VERSIONS]:
                if key != keep:
                    await self.objects.delete(self.bucket, key)
        except StorageError as exc:
            log.info("pruning old backups failed (next backup retries): %s", exc, extra={"sessionId": session_id})

    async def current_writer(self, session_id: str) -> str | None:
        """The worker that wrote the session's current backup (None: no backup, or one that does not say).

        Raises StorageError when the store cannot be asked.
        """
        found = await self.objects.get(self.bucket, manifest_key(session_id))
        if found is None:
            return None
        try:
            writer = json.loads(found.data).get("workerId")
        except (ValueError, AttributeError):
            return None  # restore() refuses an unreadable manifest with its reason
        return writer if isinstance(writer, str) else None

    async def restore(self, session_id: str) -> bool:
        """Unpack the current backup into the session dir; False when there is none.

        Raises BackupRefused for a backup that must not be loaded, StorageError when the store fails.
        """
        async with self._lock(session_id):
            found = await self.objects.get(self.bucket, manifest_key(session_id))
            if found is None:
                return False
            try:
                manifest = json.loads(found.data)
                key, digest = str(manifest["object"]), str(manifest["sha256"])
            except (ValueError, KeyError, TypeError):
                raise BackupRefused("the backup manifest is unreadable") from None
            written_at = _written_at(key)
            if not key.startswith(auth_prefix(session_id)) or written_at == float("inf"):
                raise BackupRefused(f"the backup manifest points at {key}, not a version of this session")
            newest = self.seen.get(session_id)
            if newest is not None and written_at < newest.written_at:
                raise BackupRefused(
                    "the backup manifest points at a version older than one this worker has seen (rolled back?)"
                )
            obj = await self.objects.get(self.bucket, key)
            if obj is None:
                raise BackupRefused(f"the backup manifest points at a missing object {key}")
            if hashlib.sha256(obj.data).hexdigest() != digest:
                raise BackupRefused("the backup does not match its manifest's checksum (corrupt or tampered)")
            binds = self.cipher.binds_version(obj.data)
            if not binds and newest is not None and newest.binds_version:
                raise BackupRefused("the backup is in the older format that does not authenticate its version")
            archive = await asyncio.to_thread(self.cipher.open, obj.data, session_id, key)
            try:
                names = await asyncio.to_thread(snapshot.restore, archive, self.session_dir(session_id))
            except (ValueError, OSError) as exc:
                raise BackupRefused(f"the backup archive is unusable: {exc}") from None
            await self.seen.saw(session_id, written_at, binds_version=binds)
            # What was restored is what the store holds: no backup until the engine writes.
            self._saw[session_id] = await asyncio.to_thread(snapshot.fingerprint, self.session_dir(session_id))
            log.info("auth state restored from backup (%d files)", len(names), extra={"sessionId": session_id})
            return True

    async def remove(self, session_id: str) -> None:
        """Delete every backup of the session (logout, delete)."""
        self.cancel(session_id)
        self._saw.pop(session_id, None)
        self.last_backup_of.pop(session_id, None)
        await self.seen.forget(session_id)
        async with self._lock(session_id):
            await self.objects.delete(self.bucket, manifest_key(session_id))
            await self.objects.delete_prefix(self.bucket, auth_prefix(session_id))

    async def remove_written_before(self, session_id: str, before: float) -> None:
        """Delete the session's backups written before ``before`` (a delete retried later; see removals.py)."""
        async with self._lock(session_id):
            found = await self.objects.get(self.bucket, manifest_key(session_id))
            if found is not None:
                current = _manifest_object(found.data)
                if current is None or _written_at(current) < before:
                    # Conditional: a manifest rewritten meanwhile belongs to a newer run and stays.
                    with contextlib.suppress(PreconditionFailed):
                        await self.objects.delete(self.bucket, manifest_key(session_id), if_match=found.etag)
            for key in await self.objects.list(self.bucket, auth_prefix(session_id)):
                if key.endswith(".bak") and _written_at(key) < before:
                    await self.objects.delete(self.bucket, key)

"""Storage against a real S3 server (moto, through the minio client) and the local filesystem:
conditional writes, presigned URLs, sealed backups (refused when tampered), snapshots, leases."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import sqlite3
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from harness import TOKEN, running_worker, wait_for
from s3server import ACCESS_KEY, SECRET_KEY, S3Server, s3  # noqa: F401 - s3 is a fixture

from supervisor.config import load
from supervisor.storage import snapshot
from supervisor.storage.backups import BackupScheduler, BackupSettings, NotLeaseHolder, manifest_key
from supervisor.storage.cipher import BackupCipher, BackupRefused
from supervisor.storage.leases import LeaseHeld, LeaseManager
from supervisor.storage.local import LocalObjectStore, check_signature
from supervisor.storage.objects import ObjectStore, PreconditionFailed
from supervisor.storage.removals import PendingRemovals
from supervisor.storage.s3 import MinioObjectStore
from supervisor.storage.service import build_storage
from supervisor.storage.versions import SeenVersions

KEY = "k" * 40
BUCKET = "sessions"


@pytest.fixture(params=["local", "minio"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path, s3: S3Server) -> AsyncIterator[ObjectStore]:  # noqa: F811
    store: ObjectStore
    if request.param == "local":
        store = LocalObjectStore(
            {BUCKET: tmp_path / "b", "media": tmp_path / "m"}, url_base="http://127.0.0.1:1", url_secret=b"x"
        )
        await store.ensure_buckets([BUCKET, "media"])
    else:
        store = MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
        prefix = f"u{secrets.token_hex(4)}"
        await store.ensure_buckets([f"{prefix}-s"])
        store.bucket = f"{prefix}-s"  # type: ignore[attr-defined]
    yield store
    await store.close()


def bucket_of(store: ObjectStore) -> str:
    return getattr(store, "bucket", BUCKET)


async def test_conditional_writes(objects: ObjectStore) -> None:
    bucket = bucket_of(objects)
    first = await objects.put(bucket, "a/lease.json", b"one", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        await objects.put(bucket, "a/lease.json", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        await objects.put(bucket, "a/lease.json", b"two", if_match="0" * 32)
    second = await objects.put(bucket, "a/lease.json", b"two", if_match=first)
    got = await objects.get(bucket, "a/lease.json")
    assert got is not None and got.data == b"two" and got.etag == second
    with pytest.raises(PreconditionFailed):
        await objects.delete(bucket, "a/lease.json", if_match=first)
    await objects.delete(bucket, "a/lease.json", if_match=second)
    assert await objects.get(bucket, "a/lease.json") is None


async def test_list_and_delete_prefix(objects: ObjectStore) -> None:
    bucket = bucket_of(objects)
    for key in ("s/x/1", "s/x/2", "s/y/1"):
        await objects.put(bucket, key, key.encode())
    assert await objects.list(bucket, "s/x/") == ["s/x/1", "s/x/2"]
    assert await objects.delete_prefix(bucket, "s/x/") == 2
    assert await objects.list(bucket, "s/") == ["s/y/1"]


async def _presigned_media(store: MinioObjectStore, media: Path) -> str:
    """Store ``media`` (300 kB of JPEG-ish bytes) in a new bucket; its presigned GET URL."""
    bucket = f"m{secrets.token_hex(4)}"
    await store.ensure_buckets([bucket])
    await asyncio.to_thread(media.write_bytes, b"\xff\xd8" + secrets.token_bytes(300_000))
    await store.put_file(bucket, f"media/s1/{media.name}", media, content_type="image/jpeg")
    return await store.presigned_get(bucket, f"media/s1/{media.name}", 60)


async def test_presigned_get_from_minio(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    store = MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    media = tmp_path / "photo.jpg"
    url = await _presigned_media(store, media)
    async with aiohttp.ClientSession() as http, http.get(url) as resp:  # no credentials: the URL is the key
        assert resp.status == 200
        assert await resp.read() == media.read_bytes()
    # The URL itself asks S3 to answer with the disposition: a document is a download, an image shows.
    query = parse_qs(urlsplit(url).query)
    assert query["response-content-disposition"] == ["inline"] and query["response-content-type"] == ["image/jpeg"]
    document = parse_qs(urlsplit(await store.presigned_get("whatsapp-media", "media/s1/page.html", 60)).query)
    assert document["response-content-disposition"] == ["attachment; filename*=UTF-8''page.html"]
    await store.close()


async def test_presigned_get_is_signed_for_the_public_url(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    # Clients reach MinIO through another name (an ingress): the URL names it. (moto checks no
    # signatures, so what the signature covers is the SDK's business; the host it signs for is ours.)
    public = "http://127.0.0.2:8443"  # a name moto reads as path-style, as MinIO does any host
    store = MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, public_url=public)
    media = tmp_path / "photo.jpg"
    parts = urlsplit(await _presigned_media(store, media))
    assert f"{parts.scheme}://{parts.netloc}" == public
    assert "X-Amz-Signature=" in parts.query and f"X-Amz-Credential={ACCESS_KEY}" in parts.query
    # What the ingress does: forward path and query to MinIO with the public Host header.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{s3.endpoint}{parts.path}?{parts.query}", headers={"Host": parts.netloc}) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == media.read_bytes()
    await store.close()


def test_local_presigned_url_signature(tmp_path: Path) -> None:
    store = LocalObjectStore({"media": tmp_path}, url_base="http://w:8001", url_secret=b"secret")
    url = asyncio.run(store.presigned_get("media", "media/s1/a.png", 60))
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert url.startswith("http://w:8001/media/media/media/s1/a.png?")
    assert check_signature(b"secret", "media", "media/s1/a.png", query["expires"], query["signature"])
    assert not check_signature(b"secret", "media", "media/s1/b.png", query["expires"], query["signature"])
    assert not check_signature(b"other", "media", "media/s1/a.png", query["expires"], query["signature"])
    assert not check_signature(b"secret", "media", "media/s1/a.png", "1", query["signature"])


# -- sealing ---------------------------------------------------------------------------------------
V1 = "sessions/s1/auth/01764551958000000000-aa.bak"
V2 = "sessions/s1/auth/01764551959000000000-bb.bak"


def test_sealed_backup_opens_only_with_its_key_session_and_version() -> None:
    cipher = BackupCipher(KEY)
    blob = cipher.seal(b"auth state", "s1", V2)
    assert b"auth state" not in blob and blob.startswith(b"WAB2")
    assert BackupCipher(KEY).open(blob, "s1", V2) == b"auth state"  # another worker, same key
    with pytest.raises(BackupRefused, match="wrong ENCRYPTION_KEY, or it was tampered"):
        BackupCipher("x" * 40).open(blob, "s1", V2)
    with pytest.raises(BackupRefused, match="tampered"):
        BackupCipher(KEY).open(blob, "s2", V2)  # moved to another session's name
    with pytest.raises(BackupRefused, match="tampered"):
        BackupCipher(KEY).open(blob, "s1", V1)  # copied under another version's name
    tampered = bytearray(blob)
    tampered[-20] ^= 1
    with pytest.raises(BackupRefused, match="tampered"):
        BackupCipher(KEY).open(bytes(tampered), "s1", V2)
    with pytest.raises(BackupRefused, match="set ENCRYPTION_KEY"):
        BackupCipher(None).open(blob, "s1", V2)
    with pytest.raises(BackupRefused, match="not encrypted"):
        BackupCipher(KEY).open(BackupCipher(None).seal(b"plain", "s1", V2), "s1", V2)


# -- snapshots -----------------------------------------------------------------------------------
def test_snapshot_of_a_database_being_written_is_consistent(tmp_path: Path) -> None:
    session_dir = tmp_path / "sessions" / "s1"
    session_dir.mkdir(parents=True)
    db = sqlite3.connect(session_dir / "auth.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (n INTEGER, pad TEXT)")
    (session_dir / "device.json").write_text("{}")
    (session_dir / "media").mkdir()
    (session_dir / "media" / "big.bin").write_bytes(b"0" * 1000)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 500))
            db.execute("INSERT INTO t VALUES (?, ?)", (n, "y" * 500))
            db.execute("COMMIT")
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        archives = [snapshot.snapshot(session_dir) for _ in range(5)]
    finally:
        stop.set()
        thread.join()
        db.close()
    for i, archive in enumerate(archives):
        names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
        assert sorted(names) == ["auth.db", "device.json"]  # no journals, no media dir
        target = tmp_path / "restored" / str(i)
        assert sorted(snapshot.restore(archive, target)) == ["auth.db", "device.json"]
        check = sqlite3.connect(target / "auth.db")
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Transactions are whole: every n appears twice or not at all.
        assert check.execute("SELECT COUNT(*) FROM (SELECT n FROM t GROUP BY n HAVING COUNT(*) != 2)").fetchone() == (
            0,
        )
        check.close()


async def test_restores_a_crash_interrupted_are_swept_at_start(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    leftover = sessions / ".restore-abc123"
    leftover.mkdir(parents=True)
    (leftover / "neonize.db").write_bytes(b"half a session's keys")
    (sessions / "s1").mkdir()
    settings = load({"STORAGE_DIR": str(tmp_path), "WORKER_AUTH_TOKEN": TOKEN})
    storage = build_storage(settings, TOKEN)
    await storage.start()
    try:
        assert sorted(p.name for p in sessions.iterdir()) == ["s1"]
    finally:
        await storage.close()


def test_restore_refuses_paths_outside_the_session_dir(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../evil.db")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="unexpected entry"):
        snapshot.restore(buffer.getvalue(), tmp_path / "sessions" / "s1")
    assert not (tmp_path / "sessions" / "evil.db").exists()


# -- backups in S3 ---------------------------------------------------------------------------------
async def _scheduler(s3: S3Server, root: Path, key: str | None) -> BackupScheduler:  # noqa: F811
    store = MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    bucket = f"b{secrets.token_hex(4)}"
    await store.ensure_buckets([bucket])
    return BackupScheduler(
        store,
        BackupCipher(key),
        bucket=bucket,
        sessions_dir=root / "sessions",
        worker_id="w1",
        settings=BackupSettings(debounce=0.01),
    )


def _other_worker(backups: BackupScheduler, root: Path, seen: SeenVersions | None = None) -> BackupScheduler:
    """Worker w2 with its own directory under ``root`` and the same key, on ``backups``' bucket."""
    return BackupScheduler(
        backups.objects,
        BackupCipher(KEY),
        bucket=backups.bucket,
        sessions_dir=root / "sessions",
        worker_id="w2",
        settings=BackupSettings(),
        seen=seen,
    )


def _device_db(path: Path, secret: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "sim-device.db")
    db.execute("CREATE TABLE IF NOT EXISTS device (secret TEXT)")
    db.execute("DELETE FROM device")
    db.execute("INSERT INTO device VALUES (?)", (secret,))
    db.commit()
    db.close()


async def _backed_up_twice(s3: S3Server, root: Path, first: str, second: str) -> tuple[BackupScheduler, float]:  # noqa: F811
    """A scheduler whose session s1 was backed up holding ``first``, then ``second``; a time between the two."""
    backups = await _scheduler(s3, root, KEY)
    _device_db(root / "sessions" / "s1", first)
    assert await backups.backup_now("s1")
    between = time.time()
    _device_db(root / "sessions" / "s1", second)
    assert await backups.backup_now("s1")
    return backups, between


async def test_encrypted_backup_restores_elsewhere_and_is_not_sqlite_in_the_bucket(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    backups, _ = await _backed_up_twice(s3, tmp_path / "a", "first", "second")
    names = s3.keys(backups.bucket, "sessions/s1/")
    versions = [n for n in names if n.endswith(".bak")]
    assert len(versions) == 2 and "sessions/s1/auth/current.json" in names
    for name in versions:
        raw = s3.read(backups.bucket, name)
        # Neither the SQLite header nor the tar's file names are visible: the archive is sealed.
        assert b"SQLite format 3" not in raw and b"sim-device.db" not in raw and b"second" not in raw
    # Another worker (own directory, same key) restores the latest.
    other = _other_worker(backups, tmp_path / "b")
    assert await other.restore("s1")
    db = sqlite3.connect(tmp_path / "b" / "sessions" / "s1" / "sim-device.db")
    assert db.execute("SELECT secret FROM device").fetchone() == ("second",)
    db.close()
    assert not await other.restore("nobody")
    # Who wrote the current backup is what tells a worker its own copy is stale (another ran it since).
    assert await other.current_writer("s1") == "w1"
    assert await other.current_writer("nobody") is None
    await backups.objects.put(backups.bucket, manifest_key("s1"), b"not json")
    assert await other.current_writer("s1") is None  # unreadable: restore() says why if asked
    await backups.objects.close()


async def test_auth_state_written_by_the_engine_is_backed_up_once_per_change(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    # whatsmeow writes its database with every conversation and says nothing: what a failover
    # restores must follow those writes, not only pairing.
    backups = await _scheduler(s3, tmp_path / "a", KEY)
    session_dir = tmp_path / "a" / "sessions" / "s1"
    _device_db(session_dir, "paired")

    async def backed_up(expected: int) -> None:
        await wait_for(lambda: _ready(backups.backups_done == expected and not backups.pending), what="backup")

    assert await backups.backup_changed(["s1", "never-started"]) == 1  # nothing backed up yet; no files
    await backed_up(1)
    assert await backups.backup_changed(["s1"]) == 0  # unchanged: nothing to upload
    db = sqlite3.connect(session_dir / "sim-device.db")
    db.execute("PRAGMA journal_mode=WAL")  # whatsmeow's writes sit in the WAL until a checkpoint
    db.execute("UPDATE device SET secret = 'after a conversation'")
    db.commit()
    try:
        assert await backups.backup_changed(["s1"]) == 1
        await backed_up(2)
        assert await backups.backup_changed(["s1"]) == 0
    finally:
        db.close()
    other = _other_worker(backups, tmp_path / "b")
    assert await other.restore("s1")
    assert await other.backup_changed(["s1"]) == 0  # restored is what the store holds
    restored = sqlite3.connect(tmp_path / "b" / "sessions" / "s1" / "sim-device.db")
    assert restored.execute("SELECT secret FROM device").fetchone() == ("after a conversation",)
    restored.close()
    await backups.objects.close()


async def _ready(value: bool) -> bool:
    return value


async def test_a_retried_removal_takes_only_backups_written_before_the_delete(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Deleted between the two backups: the second one is a new run under the same id.
    backups, deleted_at = await _backed_up_twice(s3, tmp_path / "a", "deleted one", "created again")
    before = await backups.objects.list(backups.bucket, "sessions/s1/auth/")
    await backups.remove_written_before("s1", deleted_at)
    after = await backups.objects.list(backups.bucket, "sessions/s1/auth/")
    assert len(before) == 3 and len(after) == 2  # the older version went; the newer and its manifest stay
    assert await backups.restore("s1")
    # Nothing newer: everything goes, the manifest with it.
    await backups.remove_written_before("s1", time.time())
    assert await backups.objects.list(backups.bucket, "sessions/s1/auth/") == []
    await backups.objects.close()


async def test_pending_removals_survive_a_restart_and_a_damaged_file_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pending-removals.json"
    removals = PendingRemovals(path)
    await removals.add("s1", 100.0)
    await removals.add("s2", 50.0)
    again = PendingRemovals(path)
    assert again.items() == [("s2", 50.0), ("s1", 100.0)] and "s1" in again and again.get("s1") == 100.0
    await again.done("s2")
    assert PendingRemovals(path).items() == [("s1", 100.0)]
    path.write_text("{not json")
    assert len(PendingRemovals(path)) == 0
    assert "pending-removals.json is unreadable" in caplog.text


async def test_tampered_backup_is_refused_and_nothing_is_written(s3: S3Server, tmp_path: Path) -> None:  # noqa: F811
    backups = await _scheduler(s3, tmp_path / "a", KEY)
    _device_db(tmp_path / "a" / "sessions" / "s1", "secret")
    await backups.backup_now("s1")
    found = await backups.objects.get(backups.bucket, manifest_key("s1"))
    assert found is not None
    manifest = json.loads(found.data)
    blob = await backups.objects.get(backups.bucket, manifest["object"])
    assert blob is not None
    tampered = bytearray(blob.data)
    tampered[len(tampered) // 2] ^= 0x40
    await backups.objects.put(backups.bucket, manifest["object"], bytes(tampered))
    target = tmp_path / "b" / "sessions"
    restorer = _other_worker(backups, tmp_path / "b")
    with pytest.raises(BackupRefused, match="checksum"):
        await restorer.restore("s1")
    # An attacker who also fixes the manifest's checksum still fails authentication.
    manifest["sha256"] = hashlib.sha256(bytes(tampered)).hexdigest()
    await backups.objects.put(backups.bucket, manifest_key("s1"), json.dumps(manifest).encode())
    with pytest.raises(BackupRefused, match="tampered"):
        await restorer.restore("s1")
    # ...and so does a restore with the wrong key.
    manifest["sha256"] = hashlib.sha256(blob.data).hexdigest()
    await backups.objects.put(backups.bucket, manifest["object"], blob.data)
    await backups.objects.put(backups.bucket, manifest_key("s1"), json.dumps(manifest).encode())
    restorer.cipher = BackupCipher("w" * 40)
    with pytest.raises(BackupRefused, match="wrong ENCRYPTION_KEY"):
        await restorer.restore("s1")
    assert not (target / "s1" / "sim-device.db").exists()
    await backups.objects.close()


async def test_a_restore_never_goes_back_to_an_older_version_than_this_worker_has_seen(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    backups, _ = await _backed_up_twice(s3, tmp_path / "a", "first", "second")
    found = await backups.objects.get(backups.bucket, manifest_key("s1"))
    assert found is not None
    newest = json.loads(found.data)
    older = sorted(k for k in s3.keys(backups.bucket, "sessions/s1/auth/") if k.endswith(".bak"))[0]
    assert older != newest["object"]
    seen_file = tmp_path / "b" / "backup-versions.json"

    def restorer() -> BackupScheduler:
        return _other_worker(backups, tmp_path / "b", SeenVersions(seen_file))

    assert await restorer().restore("s1")  # the newest: remembered on disk
    # Whoever can write the bucket points the manifest back at the older version (a valid backup).
    blob = await backups.objects.get(backups.bucket, older)
    assert blob is not None
    rolled_back = {**newest, "object": older, "sha256": hashlib.sha256(blob.data).hexdigest()}
    await backups.objects.put(backups.bucket, manifest_key("s1"), json.dumps(rolled_back).encode())
    with pytest.raises(BackupRefused, match="older than one this worker has seen"):
        await restorer().restore("s1")  # a new run of the worker: it read the file again
    # Copying the old backup under a newer version's name fails authentication instead.
    renamed = older.replace("/auth/0", "/auth/9")
    await backups.objects.put(backups.bucket, renamed, blob.data)
    await backups.objects.put(
        backups.bucket, manifest_key("s1"), json.dumps({**rolled_back, "object": renamed}).encode()
    )
    with pytest.raises(BackupRefused, match="tampered"):
        await restorer().restore("s1")
    # A backup in the format that did not authenticate its version is refused once the newer was seen.
    cipher = BackupCipher(KEY)
    archive = cipher.open(blob.data, "s1", older)
    nonce = secrets.token_bytes(12)
    header = b"WAB1" + cipher._salt + nonce
    legacy = header + AESGCM(cipher._key(cipher._salt)).encrypt(nonce, archive, header + b"s1")
    await backups.objects.put(backups.bucket, renamed, legacy)
    legacy_manifest = {**rolled_back, "object": renamed, "sha256": hashlib.sha256(legacy).hexdigest()}
    await backups.objects.put(backups.bucket, manifest_key("s1"), json.dumps(legacy_manifest).encode())
    with pytest.raises(BackupRefused, match="older format"):
        await restorer().restore("s1")
    seen_file.unlink()  # a worker that never saw the newer format still restores it (backups made before)
    assert await restorer().restore("s1")
    await backups.objects.close()


async def test_a_worker_that_lost_the_lease_cannot_make_its_backup_current(
    s3: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    backups = await _scheduler(s3, tmp_path / "a", KEY)
    leases = await _leases(s3, backups.bucket, "w1", 30)
    backups.confirm_lease = leases.confirm
    _device_db(tmp_path / "a" / "sessions" / "s1", "ours")
    await leases.acquire("s1")
    assert await backups.backup_now("s1")
    found = await backups.objects.get(backups.bucket, manifest_key("s1"))
    assert found is not None
    # Another worker took the session over (its lease replaced ours) while this one still runs it.
    await backups.objects.put(
        backups.bucket,
        "sessions/s1/lease.json",
        json.dumps({"workerId": "w2", "expiresAt": time.time() + 30}).encode(),
    )
    _device_db(tmp_path / "a" / "sessions" / "s1", "stale")
    with pytest.raises(NotLeaseHolder):
        await backups.backup_now("s1")
    after = await backups.objects.get(backups.bucket, manifest_key("s1"))
    assert after is not None and after.data == found.data  # current.json still names the good backup
    versions = [k for k in s3.keys(backups.bucket, "sessions/s1/auth/") if k.endswith(".bak")]
    assert versions == [json.loads(found.data)["object"]]  # the refused upload was removed
    await backups.objects.close()
    await leases.objects.close()


# -- leases ----------------------------------------------------------------------------------------
async def _leases(s3: S3Server, bucket: str, worker: str, ttl: float) -> LeaseManager:  # noqa: F811
    store = MinioObjectStore(s3.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    await store.ensure_buckets([bucket])
    return LeaseManager(store, bucket, worker, ttl)


async def test_leases_exclude_a_second_worker_until_expiry_and_the_loser_hears_of_it(
    s3: S3Server,  # noqa: F811
) -> None:
    bucket = f"l{secrets.token_hex(4)}"
    a = await _leases(s3, bucket, "A", 1.0)
    b = await _leases(s3, bucket, "B", 1.0)
    # Both at once: exactly one wins.
    results = await asyncio.gather(a.acquire("s1"), b.acquire("s1"), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["LeaseHeld", "NoneType"]
    winner, loser = (a, b) if results[0] is None else (b, a)
    assert winner.holds("s1") and not loser.holds("s1")
    lost: list[tuple[str, str]] = []
    winner.on_lost = lambda session_id, holder: lost.append((session_id, holder))
    await winner.renew("s1")
    with pytest.raises(LeaseHeld):
        await loser.acquire("s1")
    # The winner stops renewing (its worker died): once the lease expired the other takes it over...
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await loser.acquire("s1")
            break
        except LeaseHeld:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    # ...and the old holder's next renewal learns it lost the session.
    await winner.renew("s1")
    assert lost == [("s1", loser.worker_id)] and not winner.holds("s1")
    # Release deletes only one's own lease.
    await winner.release("s1")
    assert (await loser.read("s1")) is not None
    await loser.release("s1")
    assert (await loser.read("s1")) is None
    await a.objects.close()
    await b.objects.close()


async def test_local_backend_media_urls_are_served_by_the_worker_until_they_expire(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        media = tmp_path / "w" / "media" / "s1" / "photo.png"
        media.parent.mkdir(parents=True)
        media.write_bytes(b"\x89PNG" + secrets.token_bytes(5000))
        # The worker signs local media URLs with a key derived from its token; mint one the same way.
        secret = hashlib.sha256(b"wa-worker media url\n" + TOKEN.encode()).digest()
        store = LocalObjectStore({"whatsapp-media": tmp_path / "w"}, url_base=w.url, url_secret=secret)
        url = await store.presigned_get("whatsapp-media", "media/s1/photo.png", 60)
        expired = await store.presigned_get("whatsapp-media", "media/s1/photo.png", -5)
        async with aiohttp.ClientSession() as http:  # no worker token: the signature is the credential
            async with http.get(url) as resp:
                assert resp.status == 200 and await resp.read() == media.read_bytes()
                assert resp.headers["Content-Type"] == "image/png"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Content-Disposition"] == "inline"  # images, audio and video show
            # A contact's "page": a download, never rendered on the worker's origin.
            page = media.with_name("invoice.html")
            page.write_bytes(b"<script>alert(1)</script>")
            async with http.get(await store.presigned_get("whatsapp-media", "media/s1/invoice.html", 60)) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "text/html"
                assert resp.headers["Content-Disposition"] == "attachment; filename*=UTF-8''invoice.html"
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
            async with http.get(url.replace("photo.png", "other.png")) as resp:
                assert resp.status == 403 and (await resp.json())["code"] == "FORBIDDEN"
            async with http.get(expired) as resp:
                assert resp.status == 403
        _, health = await w.api("GET", "/health")
        assert health["storage"]["type"] == "local" and health["storage"]["pendingBackups"] == 0
        status, text = await w.api("GET", "/metrics?format=prometheus")
        assert status == 200 and "wa_worker_storage_pending_backups 0.0" in text
        assert "wa_worker_liveness_lapsed" not in text  # local files: no record for others to read


async def test_a_running_session_whose_auth_state_changed_is_backed_up_within_the_interval(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", BACKUP_INTERVAL="1") as w:
        await w.create_linked("s1", "628555")
        manifest = tmp_path / "w" / "backups" / "sessions" / "s1" / "auth" / "current.json"

        async def current() -> str | None:
            return json.loads(manifest.read_bytes())["object"] if manifest.exists() else None

        first = await wait_for(current, what="the pairing's backup")
        databases = sorted((tmp_path / "w" / "sessions" / "s1").glob("*.db"))
        assert databases, "the engine keeps its auth state in a database"
        # As whatsmeow does with every conversation: the engine writes its database, and says nothing.
        db = sqlite3.connect(databases[0])
        db.execute("CREATE TABLE IF NOT EXISTS signal_sessions (peer TEXT)")
        db.execute("INSERT INTO signal_sessions VALUES ('628999')")
        db.commit()
        db.close()
        await wait_for(lambda: _changed(current, first), timeout=15, what="a backup of the changed state")


async def _changed(current: Callable[[], Awaitable[str | None]], before: str) -> bool:
    now = await current()
    return now is not None and now != before

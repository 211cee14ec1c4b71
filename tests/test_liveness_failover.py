"""Failover through worker liveness records, end to end: two real workers, moto S3, one shared sim hub.

Session leases are long here (LEASE_TTL 60 s), so a session that moves to the
other worker before its lease's ``expiresAt`` moved because its worker's
liveness record lapsed, not because the lease ran out.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import Worker, kill_tree, pid_alive, running_worker, standalone_hub, wait_for
from s3server import S3Server, s3  # noqa: F401 - s3 is a fixture

KEY = "liveness-test-key-0123456789abcdefghij"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A standalone simulated network both workers share."""
    async with standalone_hub(tmp_path) as env:
        yield env


def worker_env(s3: S3Server, hub: dict[str, str], worker_id: str, prefix: str) -> dict[str, str]:  # noqa: F811
    return {
        **hub,
        **s3.worker_env(prefix=prefix),
        "WORKER_ID": worker_id,
        "ENCRYPTION_KEY": KEY,
        "LEASE_TTL": "60",
        "WORKER_ALIVE_TTL": "3",
        "BACKUP_DEBOUNCE": "0.1",
        "BACKUP_RETRY_MAX": "1",
        "RATE_LIMIT_SESSION_OPS": "0",
    }


def stored_json(s3: S3Server, bucket: str, key: str) -> dict[str, Any] | None:  # noqa: F811
    """An object of the store as JSON, or None when it does not exist."""
    client = s3.client()
    names = [o.object_name for o in client.list_objects(bucket, key)]
    if key not in names:
        return None
    resp = client.get_object(bucket, key)
    try:
        return dict(json.loads(resp.read()))
    finally:
        resp.close()
        resp.release_conn()


async def backed_up(w: Worker) -> bool:
    _, body = await w.api("GET", "/health")
    storage = body["storage"]
    return bool(storage["backupsDone"] >= 1 and storage["pendingBackups"] == 0)


async def test_a_killed_workers_session_moves_before_its_lease_expires(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    bucket = "lvk-sessions"
    a = Worker(tmp_path / "a", worker_env(s3, hub, "worker-a", "lvk"))
    await a.start()
    children: list[int] = []
    try:
        async with running_worker(tmp_path / "b", **worker_env(s3, hub, "worker-b", "lvk")) as b:
            await a.create_linked("lv1", "6285200001")
            await wait_for(lambda: backed_up(a), what="the backup to land")
            record = stored_json(s3, bucket, "workers/worker-a/alive.json")
            assert record is not None and record["workerId"] == "worker-a"
            lease = stored_json(s3, bucket, "sessions/lv1/lease.json")
            assert lease is not None and lease["workerId"] == "worker-a"
            assert lease["incarnation"] == record["incarnation"]
            children = a.child_pids()
            assert a.proc is not None
            a.proc.kill()  # SIGKILL: its record and its lease stay behind
            a.proc.wait()
            status, body = await b.api("POST", "/session/create", json={"sessionId": "lv1", "takeover": True})
            assert status == 200, body
            item = await b.wait_session("lv1", lambda s: s["status"] == "connected", what="lv1 connected on B")
            # Connected while A's lease was still unexpired: A's lapsed liveness record let B in.
            assert time.time() < lease["expiresAt"]
            assert item["qrCount"] == 0 and item["phoneNumber"] == "6285200001"
            taken = stored_json(s3, bucket, "sessions/lv1/lease.json")
            assert taken is not None and taken["workerId"] == "worker-b"
            dead = stored_json(s3, bucket, "workers/worker-a/alive.json")
            assert dead is not None and dead["aliveUntil"] < time.time()
            status, sent = await b.api("POST", "/session/lv1/send", json={"to": "6289200001", "text": "from B"})
            assert status == 200 and sent["data"]["status"] == "sent", sent
    finally:
        await a.stop()
        await kill_tree([p for p in children if pid_alive(p)])


async def test_a_live_workers_session_is_not_taken_over_and_a_clean_stop_removes_its_record(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    bucket = "lvl-sessions"
    async with running_worker(tmp_path / "b", **worker_env(s3, hub, "worker-b", "lvl")) as b:
        async with running_worker(tmp_path / "a", **worker_env(s3, hub, "worker-a", "lvl")) as a:
            await a.create_linked("lv2", "6285200002")
            status, refused = await b.api("POST", "/session/create", json={"sessionId": "lv2"})
            assert status == 409 and refused["code"] == "SESSION_LEASED", refused
            # With takeover, B waits only as long as a gone worker's record would take to lapse:
            # A keeps renewing it, so the answer is still 409 (well before the 60 s lease TTL).
            status, refused = await b.api("POST", "/session/create", json={"sessionId": "lv2", "takeover": True})
            assert status == 409 and refused["code"] == "SESSION_LEASED", refused
            item = await a.session("lv2")
            assert item["status"] == "connected" and item["pid"]
            lease = stored_json(s3, bucket, "sessions/lv2/lease.json")
            assert lease is not None and lease["workerId"] == "worker-a"
            _, health = await a.api("GET", "/health")
            liveness = health["storage"]["liveness"]
            assert liveness["lapsed"] is False and liveness["aliveUntil"] > time.time()
            assert stored_json(s3, bucket, "workers/worker-a/alive.json") is not None
            assert await a.stop() == 0
        # A clean stop released the lease and then deleted the record.
        assert stored_json(s3, bucket, "sessions/lv2/lease.json") is None
        assert stored_json(s3, bucket, "workers/worker-a/alive.json") is None
        assert stored_json(s3, bucket, "workers/worker-b/alive.json") is not None
        status, body = await b.api("POST", "/session/create", json={"sessionId": "lv2"})
        assert status == 200, body
        await b.wait_session("lv2", lambda s: s["status"] == "connected", what="lv2 connected on B")

"""Failover between workers through object storage (moto S3 on loopback, real workers, one shared sim hub)."""

from __future__ import annotations

import asyncio
import base64
import io
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import Worker, kill_tree, pid_alive, running_worker, standalone_hub, wait_for
from s3server import S3Outage, S3Server, s3  # noqa: F401 - s3 is a fixture

from supervisor.timefmt import epoch

KEY = "failover-test-key-0123456789abcdefghij"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A standalone simulated network that several workers share."""
    async with standalone_hub(tmp_path) as env:
        yield env


def worker_env(s3: S3Server, hub: dict[str, str], worker_id: str, prefix: str) -> dict[str, str]:  # noqa: F811
    return {
        **hub,
        **s3.worker_env(prefix=prefix),
        "WORKER_ID": worker_id,
        "ENCRYPTION_KEY": KEY,
        "LEASE_TTL": "3",
        "BACKUP_DEBOUNCE": "0.1",
        "BACKUP_RETRY_MAX": "1",
        "RATE_LIMIT_SESSION_OPS": "0",  # create is retried until a lease lapses
    }


async def health(w: Worker) -> dict[str, Any]:
    _, body = await w.api("GET", "/health")
    return dict(body["storage"])


async def backed_up(w: Worker) -> bool:
    storage = await health(w)
    return bool(storage["backupsDone"] >= 1 and storage["pendingBackups"] == 0)


# Long enough that worker B starts and asks while the killed worker A's record still counts, on a
# loaded machine too (B's plain create must meet a live lease); the takeover then waits it out.
SLOW_LAPSE = {"LEASE_TTL": "10", "WORKER_ALIVE_TTL": "10"}


async def _phone_sends_an_image(w: Worker, phone: str, to: str, session_id: str) -> str:
    """A phone sends the session a small PNG; its id, once it is the session's one message in history."""
    photo = b"\x89PNG\r\n\x1a\n" + b"\0" * 500
    body = {"to": to, "type": "image", "mimetype": "image/png", "mediaBase64": base64.b64encode(photo).decode()}
    status, pushed = await w.hub("POST", f"/phones/{phone}/messages", json=body)
    assert status == 200, pushed
    await w.wait_session(session_id, lambda s: s["messageCount"] == 1, what="the image in history")
    return str(pushed["id"])


async def test_failover_to_another_worker_without_a_scan(tmp_path: Path, s3: S3Server, hub: dict[str, str]) -> None:  # noqa: F811
    a = Worker(tmp_path / "a", {**worker_env(s3, hub, "worker-a", "fo"), **SLOW_LAPSE})
    await a.start()
    try:
        await a.create_linked("fo1", "6285000001")
        await wait_for(lambda: backed_up(a), what="the backup to land")
        children = a.child_pids()
        assert a.proc is not None
        a.proc.kill()  # SIGKILL: no final backup, no lease release
        a.proc.wait()

        async def orphans_gone() -> bool:
            return not [p for p in children if pid_alive(p)]

        await wait_for(orphans_gone, what="worker A's session processes to exit by themselves")
    finally:
        await a.stop()
    # The bucket holds no readable SQLite: the backup is sealed.
    client = s3.client()
    bucket = "fo-sessions"
    for key in s3.keys(bucket, "sessions/fo1/auth/"):
        if key.endswith(".bak"):
            raw = s3.read(bucket, key)
            assert b"SQLite format 3" not in raw and b"6285000001" not in raw

    async with running_worker(tmp_path / "b", **{**worker_env(s3, hub, "worker-b", "fo"), **SLOW_LAPSE}) as b:
        assert not (tmp_path / "b" / "sessions" / "fo1").exists()
        # A live lease of the dead worker: a plain create is refused, a takeover waits it out.
        status, refused = await b.api("POST", "/session/create", json={"sessionId": "fo1"})
        assert status == 409 and refused["code"] == "SESSION_LEASED"
        status, body = await b.api("POST", "/session/create", json={"sessionId": "fo1", "takeover": True})
        assert status == 200, body
        created = body["data"]
        assert created["qrCode"] is None
        item = await b.wait_session("fo1", lambda s: s["status"] == "connected", what="fo1 connected on B")
        assert item["qrCount"] == 0 and item["phoneNumber"] == "6285000001"  # no scan on B
        status, sent = await b.api("POST", "/session/fo1/send", json={"to": "6289000001", "text": "from B"})
        assert status == 200 and sent["data"]["status"] == "sent", sent
        _, inbox = await b.hub("GET", "/phones/6289000001/messages")
        assert [m["from"] for m in inbox["messages"]] == ["6285000001"]
        await b.hub("POST", "/phones/6289000001/messages", json={"to": "6285000001", "text": "to B"})
        await b.wait_session("fo1", lambda s: s["messageCount"] == 2, what="the incoming message on B")
        # Delete takes the session's objects along: backups, lease, media.
        client.put_object("fo-media", "media/fo1/x.jpg", io.BytesIO(b"jpeg"), 4)
        status, body = await b.api("DELETE", "/session/fo1")
        assert status == 200, body
        assert not s3.keys(bucket, "sessions/fo1/")
        assert not s3.keys("fo-media", "media/fo1/")


async def test_two_workers_asked_at_once_run_it_exactly_once(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    async with (
        running_worker(tmp_path / "a", **worker_env(s3, hub, "worker-a", "two")) as a,
        running_worker(tmp_path / "b", **worker_env(s3, hub, "worker-b", "two")) as b,
    ):
        answers = await asyncio.gather(
            a.api("POST", "/session/create", json={"sessionId": "both"}),
            b.api("POST", "/session/create", json={"sessionId": "both"}),
        )
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 409], answers
        loser = next(body for status, body in answers if status == 409)
        assert loser["code"] == "SESSION_LEASED" and loser["success"] is False
        running = []
        for w in (a, b):
            _, body = await w.api("GET", "/sessions")
            running += [s for s in body["data"]["sessions"] if s["sessionId"] == "both" and s["pid"]]
        assert len(running) == 1


async def test_s3_outage_keeps_sessions_messaging_and_the_pending_backup_lands_later(
    tmp_path: Path, hub: dict[str, str]
) -> None:
    server = S3Server(tmp_path / "moto.log")
    server.start()
    try:
        async with running_worker(tmp_path / "w", **worker_env(server, hub, "worker-o", "out")) as w:
            await w.create_linked("up", "6286000001")
            await wait_for(lambda: backed_up(w), what="the first backup")
            # A second session waits for its scan while the store goes away.
            status, body = await w.api("POST", "/session/create", json={"sessionId": "late"})
            assert status == 200, body
            _, qr = await w.api("GET", "/session/late/qr")
            server.kill()

            async def down() -> bool:
                return (await health(w))["minioConnected"] is False

            await wait_for(down, timeout=30, what="minioConnected false")
            await w.hub("POST", "/phones/6286000002/scan", json={"qr": qr["data"]["qr"]})
            await w.wait_session("late", lambda s: s["status"] == "connected", what="late linked during the outage")

            async def pending() -> bool:
                return bool((await health(w))["pendingBackups"] >= 1)

            await wait_for(pending, what="a pending backup")
            # Sessions keep messaging both ways.
            status, sent = await w.api("POST", "/session/up/send", json={"to": "6286000002", "text": "still here"})
            assert status == 200 and sent["data"]["status"] == "sent", sent
            await w.hub("POST", "/phones/6289000003/messages", json={"to": "6286000002", "text": "hello"})
            await w.wait_session("late", lambda s: s["messageCount"] == 2, what="messages on late")
            _, h = await w.api("GET", "/health")
            assert h["status"] in ("healthy", "degraded")

            server.start()  # same port, empty store: the worker sets its buckets up again

            async def landed() -> bool:
                storage = await health(w)
                if not storage["minioConnected"] or storage["pendingBackups"]:
                    return False
                return "sessions/late/auth/current.json" in server.keys("out-sessions", "sessions/late/auth/")

            await wait_for(landed, timeout=30, what="the pending backup to land")
    finally:
        server.stop()


async def test_a_session_deleted_during_an_outage_loses_its_objects_once_the_store_is_back(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    outage = S3Outage(s3)
    await outage.restore()
    env = {**worker_env(s3, hub, "worker-d", "dlt"), **outage.worker_env(prefix="dlt")}
    try:
        async with running_worker(tmp_path / "w", **env) as w:
            await w.create_linked("d1", "6285400001")
            await _phone_sends_an_image(w, "6289400009", "6285400001", "d1")
            await wait_for(lambda: backed_up(w), what="the backup")
            assert s3.keys("dlt-media", "media/d1/") and "sessions/d1/auth/current.json" in s3.keys("dlt-sessions", "")
            await outage.cut()

            async def down() -> bool:
                return (await health(w))["minioConnected"] is False

            await wait_for(down, timeout=30, what="minioConnected false")
            status, body = await w.api("DELETE", "/session/d1")
            assert status == 200, body
            assert (await health(w))["pendingRemovals"] == 1
            assert s3.keys("dlt-sessions", "sessions/d1/auth/")  # still there: the store was out of reach
            # The id again, while the deleted session's backup is still stored: refused, not restored.
            status, body = await w.api("POST", "/session/create", json={"sessionId": "d1"})
            assert status == 503 and body["code"] == "STORAGE_UNAVAILABLE", body
            assert await w.stop() == 0
        await outage.restore()
        # A new run of the worker still knows (the removal is on disk) and finishes it.
        async with running_worker(tmp_path / "w", **env) as w:

            async def removed() -> bool:
                return not s3.keys("dlt-sessions", "sessions/d1/") and not s3.keys("dlt-media", "media/d1/")

            await wait_for(removed, timeout=30, what="the deleted session's objects to go")
            assert (await health(w))["pendingRemovals"] == 0
            status, body = await w.api("POST", "/session/create", json={"sessionId": "d1"})
            assert status == 200, body
            item = await w.wait_session("d1", lambda s: s["status"] == "qr_ready", what="a new login for d1")
            assert item["phoneNumber"] is None  # a new session: the deleted one's login did not come back
    finally:
        await outage.cut()


async def test_a_revoked_messages_media_the_outage_and_a_kill_left_is_removed_at_the_next_start(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    outage = S3Outage(s3)
    await outage.restore()
    env = {**worker_env(s3, hub, "worker-r", "rvk"), **outage.worker_env(prefix="rvk")}
    try:
        w = Worker(tmp_path / "w", env)
        await w.start()
        try:
            await w.create_linked("r1", "6285600001")
            image = await _phone_sends_an_image(w, "6289600009", "6285600001", "r1")
            assert s3.keys("rvk-media", "media/r1/")
            await outage.cut()
            status, body = await w.hub("POST", f"/phones/6289600009/messages/{image}/revoke")
            assert status == 200, body

            async def refused() -> bool:
                return f"media of revoked message {image} not removed" in w.log()

            await wait_for(refused, timeout=30, what="the revoke's removal refused by the store")
            children = w.child_pids()
            await w.stop(signal.SIGKILL)  # no drain, no later retry in this run
            await kill_tree(children)
        finally:
            await w.stop()
        assert s3.keys("rvk-media", "media/r1/")  # still stored: history no longer names it
        await outage.restore()
        # The revoke queued its removal in its own commit: the next run finds it and finishes it.
        async with running_worker(tmp_path / "w", **env) as w:

            async def removed() -> bool:
                return not s3.keys("rvk-media", "media/r1/")

            await wait_for(removed, timeout=30, what="the revoked message's media to go")
    finally:
        await outage.cut()


async def test_graceful_stop_backs_up_and_releases_so_another_worker_takes_over_at_once(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    env_a = {**worker_env(s3, hub, "worker-a", "grace"), "LEASE_TTL": "60", "BACKUP_DEBOUNCE": "30"}
    async with running_worker(tmp_path / "a", **env_a) as a:
        await a.create_linked("g1", "6285100001")
        # The debounce is long: the backup that lands is the one made on the way down.
        assert (await health(a))["pendingBackups"] == 1
        code = await a.stop()
        assert code == 0
    names = s3.keys("grace-sessions", "sessions/g1/")
    assert "sessions/g1/auth/current.json" in names
    assert "sessions/g1/lease.json" not in names  # released: no waiting out a 60 s lease
    async with running_worker(tmp_path / "b", **worker_env(s3, hub, "worker-b", "grace")) as b:
        status, body = await b.api("POST", "/session/create", json={"sessionId": "g1"})
        assert status == 200, body
        item = await b.wait_session("g1", lambda s: s["status"] == "connected", what="g1 connected on B")
        assert item["qrCount"] == 0


async def test_a_worker_back_to_a_session_takes_the_newer_backup_over_its_stale_local_copy(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    # A ran the session and keeps its auth state on disk; B ran it after A and linked it again (new device).
    # A's copy is stale: the network forgot that device when B logged it out.
    env_a = worker_env(s3, hub, "worker-a", "stale")
    async with running_worker(tmp_path / "a", **env_a) as a:
        await a.create_linked("st1", "6285300001")
        await wait_for(lambda: backed_up(a), what="A's backup")
        assert await a.stop() == 0
    async with running_worker(tmp_path / "b", **worker_env(s3, hub, "worker-b", "stale")) as b:
        status, body = await b.api("POST", "/session/create", json={"sessionId": "st1"})
        assert status == 200, body
        await b.wait_session("st1", lambda s: s["status"] == "connected", what="st1 connected on B")
        status, body = await b.api("POST", "/session/st1/logout")
        assert status == 200, body
        relinked = await b.wait_session("st1", lambda s: s["status"] == "qr_ready", what="a new QR on B")
        assert relinked["phoneNumber"] is None
        _, qr = await b.api("GET", "/session/st1/qr")
        status, body = await b.hub("POST", "/phones/6285300002/scan", json={"qr": qr["data"]["qr"]})
        assert status == 200, body
        await b.wait_session("st1", lambda s: s["phoneNumber"] == "6285300002", what="st1 linked again on B")
        await wait_for(lambda: backed_up(b), what="B's backup")
        assert await b.stop() == 0
    manifest = s3.stored_json("stale-sessions", "sessions/st1/auth/current.json")
    assert manifest is not None and manifest["workerId"] == "worker-b"
    # A starts its sessions again at boot, with its own copy of st1 on disk.
    async with running_worker(tmp_path / "a", **env_a) as a:
        item = await a.wait_session("st1", lambda s: s["status"] == "connected", what="st1 connected on A")
        assert item["phoneNumber"] == "6285300002"


# -- failover through worker liveness records ---------------------------------------------------
# Session leases are long here (LEASE_TTL 60 s), so a session that moves to the other worker before
# its lease's ``expiresAt`` moved because its worker's liveness record lapsed, not because the lease
# ran out.


def liveness_env(s3: S3Server, hub: dict[str, str], worker_id: str, prefix: str) -> dict[str, str]:  # noqa: F811
    return {**worker_env(s3, hub, worker_id, prefix), "LEASE_TTL": "60", "WORKER_ALIVE_TTL": "3"}


async def test_a_killed_workers_session_moves_before_its_lease_expires(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hub: dict[str, str],
) -> None:
    bucket = "lvk-sessions"
    a = Worker(tmp_path / "a", liveness_env(s3, hub, "worker-a", "lvk"))
    await a.start()
    children: list[int] = []
    try:
        async with running_worker(tmp_path / "b", **liveness_env(s3, hub, "worker-b", "lvk")) as b:
            await a.create_linked("lv1", "6285200001")
            await wait_for(lambda: backed_up(a), what="the backup to land")
            record = s3.stored_json(bucket, "workers/worker-a/alive.json")
            assert record is not None and record["workerId"] == "worker-a"
            lease = s3.stored_json(bucket, "sessions/lv1/lease.json")
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
            taken = s3.stored_json(bucket, "sessions/lv1/lease.json")
            assert taken is not None and taken["workerId"] == "worker-b"
            dead = s3.stored_json(bucket, "workers/worker-a/alive.json")
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
    async with running_worker(tmp_path / "b", **liveness_env(s3, hub, "worker-b", "lvl")) as b:
        async with running_worker(tmp_path / "a", **liveness_env(s3, hub, "worker-a", "lvl")) as a:
            await a.create_linked("lv2", "6285200002")
            status, refused = await b.api("POST", "/session/create", json={"sessionId": "lv2"})
            assert status == 409 and refused["code"] == "SESSION_LEASED", refused
            # With takeover, B waits only as long as a gone worker's record would take to lapse:
            # A keeps renewing it, so the answer is still 409 (well before the 60 s lease TTL).
            status, refused = await b.api("POST", "/session/create", json={"sessionId": "lv2", "takeover": True})
            assert status == 409 and refused["code"] == "SESSION_LEASED", refused
            item = await a.session("lv2")
            assert item["status"] == "connected" and item["pid"]
            lease = s3.stored_json(bucket, "sessions/lv2/lease.json")
            assert lease is not None and lease["workerId"] == "worker-a"
            _, health = await a.api("GET", "/health")
            liveness = health["storage"]["liveness"]
            assert liveness["lapsed"] is False and epoch(liveness["aliveUntil"]) > time.time()
            _, text = await a.api("GET", "/metrics?format=prometheus")
            gauges = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith("wa_worker_liveness_"))
            assert gauges["wa_worker_liveness_lapsed"] == "0.0"
            assert float(gauges["wa_worker_liveness_alive_until_seconds"]) > time.time()
            assert s3.stored_json(bucket, "workers/worker-a/alive.json") is not None
            assert await a.stop() == 0
        # A clean stop released the lease and then deleted the record.
        assert s3.stored_json(bucket, "sessions/lv2/lease.json") is None
        assert s3.stored_json(bucket, "workers/worker-a/alive.json") is None
        assert s3.stored_json(bucket, "workers/worker-b/alive.json") is not None
        status, body = await b.api("POST", "/session/create", json={"sessionId": "lv2"})
        assert status == 200, body
        await b.wait_session("lv2", lambda s: s["status"] == "connected", what="lv2 connected on B")

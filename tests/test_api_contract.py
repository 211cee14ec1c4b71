"""The REST API as the backend uses it: every endpoint against a real worker, with the
shapes, status codes and error codes of the contract (docs/architecture.md, HTTP API)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import contract
import jwt
from harness import TOKEN, Worker, running_worker, wait_for
from yarl import URL

from supervisor.api.openapi import document
from supervisor.api.operations import template
from supervisor.app import build_app
from supervisor.config import load
from supervisor.supervision.capacity import read_capacity
from supervisor.timefmt import epoch
from supervisor.version import worker_version

ERROR_KEYS = {"success", "error", "code"}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def assert_error(status: int, body: Any, want_status: int, want_code: str) -> None:
    """The one error shape, with the status and machine code expected."""
    assert status == want_status, body
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert body["success"] is False and body["code"] == want_code, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]


def assert_ok(status: int, body: Any, want_status: int = 200) -> dict[str, Any]:
    assert status == want_status, body
    assert body["success"] is True, body
    return dict(body["data"])


async def raw(w: Worker, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    """A request whose path goes out exactly as written (no client-side normalisation of .. or %2F)."""
    assert w.http is not None
    async with w.http.request(method, URL(w.url + path, encoded=True), **kwargs) as resp:
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = await resp.text()
        return resp.status, body, dict(resp.headers)


async def test_session_lifecycle_as_the_backend_calls_it(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        # create: waits for the first QR and hands it out as a PNG data URL
        data = assert_ok(
            *await w.api("POST", "/session/create", json={"sessionId": "shop-1", "userId": "u1", "sessionName": "Shop"})
        )
        assert set(data) == {"sessionId", "status", "qrCode"}
        assert data["sessionId"] == "shop-1" and data["status"] == "qr_ready"
        assert data["qrCode"].startswith("data:image/png;base64,")
        assert base64.b64decode(data["qrCode"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        # creating again is idempotent: the current state, no second process
        pid = (await w.session("shop-1"))["pid"]
        again = assert_ok(*await w.api("POST", "/session/create", json={"sessionId": "shop-1"}))
        assert again["sessionId"] == "shop-1" and again["status"] == "qr_ready"
        assert (await w.session("shop-1"))["pid"] == pid

        qr = assert_ok(*await w.api("GET", "/session/shop-1/qr"))
        assert {"qrCode", "qr", "status", "expiresAt"} <= set(qr)
        assert qr["status"] == "qr_ready" and isinstance(qr["qr"], str) and epoch(qr["expiresAt"]) > time.time()

        status = assert_ok(*await w.api("GET", "/session/shop-1/status"))
        assert {"sessionId", "status", "phoneNumber", "lastSeen", "messageCount"} <= set(status)
        assert status["phoneNumber"] is None and status["messageCount"] == 0

        # a phone scans the QR (the sim hub's HTTP API plays the phone)
        assert (await w.hub("POST", "/phones/628111000/scan", json={"qr": qr["qr"]}))[0] == 200
        await w.wait_session("shop-1", lambda s: s["status"] == "connected")
        status = assert_ok(*await w.api("GET", "/session/shop-1/status"))
        assert status["status"] == "connected" and status["phoneNumber"] == "628111000"
        assert ISO.match(status["lastSeen"])

        listed = assert_ok(*await w.api("GET", "/sessions"))
        [item] = listed["sessions"]
        for key in (
            "sessionId",
            "status",
            "phoneNumber",
            "pid",
            "restarts",
            "uptime",
            "cpuPercent",
            "memory",
            "lastExit",
            "lastError",
            "qrCount",
        ):
            assert key in item, key
        assert set(item["memory"]) == {"rss", "uss"} and item["pid"] > 0

        proc = assert_ok(*await w.api("GET", "/session/shop-1/process"))
        assert proc["pid"] == item["pid"] and proc["exits"] == [] and proc["processState"] in ("STARTING", "RUNNING")

        # send (JSON text) and history
        sent = assert_ok(*await w.api("POST", "/session/shop-1/send", json={"to": "628999000", "text": "hello"}))
        assert {"messageId", "status", "timestamp"} <= set(sent) and sent["status"] == "sent"
        assert abs(epoch(sent["timestamp"]) - time.time()) < 30
        page = assert_ok(*await w.api("GET", "/session/shop-1/messages?limit=10&offset=0"))
        assert page["pagination"] == {"total": 1, "limit": 10, "offset": 0}
        [msg] = page["messages"]
        for key in (
            "id",
            "direction",
            "chat",
            "from",
            "to",
            "type",
            "text",
            "caption",
            "mediaUrl",
            "timestamp",
            "status",
        ):
            assert key in msg, key
        assert msg["id"] == sent["messageId"] and msg["direction"] == "out"

        # pairing by code is for unlinked sessions only
        status_code, body = await w.api("POST", "/session/shop-1/pair-code", json={"phoneNumber": "628111000"})
        assert_error(status_code, body, 409, "ALREADY_LINKED")

        # logout: unlinked on the phone's side, the session stays and shows a new QR
        out = assert_ok(*await w.api("POST", "/session/shop-1/logout"))
        assert out["sessionId"] == "shop-1" and out["loggedOut"] is True
        await w.wait_session("shop-1", lambda s: s["status"] == "qr_ready" and s["phoneNumber"] is None)
        _, devices = await w.hub("GET", "/devices")
        assert all(d.get("phone") != "628111000" for d in devices["devices"])
        new_qr = assert_ok(*await w.api("GET", "/session/shop-1/qr"))
        assert new_qr["qr"] and new_qr["qr"] != qr["qr"]
        proc = assert_ok(*await w.api("GET", "/session/shop-1/process"))
        assert proc["exits"] and proc["exits"][0]["crashed"] is False  # a logout is a clean exit
        assert proc["restarts"] == 0

        # ... and links again by pairing code instead of a QR
        paired = assert_ok(*await w.api("POST", "/session/shop-1/pair-code", json={"phoneNumber": "+62 8222 000"}))
        assert paired["phoneNumber"] == "628222000" and re.match(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$", paired["pairingCode"])
        assert (await w.hub("POST", "/phones/628222000/pair", json={"code": paired["pairingCode"]}))[0] == 200
        await w.wait_session("shop-1", lambda s: s["status"] == "connected" and s["phoneNumber"] == "628222000")

        restarted = assert_ok(*await w.api("POST", "/session/shop-1/restart"))
        assert restarted["sessionId"] == "shop-1"
        await w.wait_session("shop-1", lambda s: s["status"] == "connected" and s["pid"] != item["pid"])

        metrics = await w.api("GET", "/metrics")
        assert metrics[0] == 200 and metrics[1]["messages"]["sent"] == 1 and metrics[1]["messages"]["lastHour"] == 1

        deleted = assert_ok(*await w.api("DELETE", "/session/shop-1"))
        assert deleted == {"sessionId": "shop-1", "deleted": True}
        assert_error(*await w.api("GET", "/session/shop-1/status"), 404, "SESSION_NOT_FOUND")
        assert not (w.storage / "sessions" / "shop-1").exists()


BIG = "x" * 20_000  # past MAX_UPLOAD_MB=0.01 (10 KiB) below

# (method, path, request kwargs, status, code): each bad input the contract names.
BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # session ids, in bodies and paths
    ("POST", "/session/create", {"json": {}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": ""}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": 12}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": "a" * 65}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": "-lead"}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": "sp ace"}}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": "ok", "userId": 5}}, 400, "INVALID_FIELD"),
    ("POST", "/session/create", {"json": {"sessionId": "ok", "sessionName": ["x"]}}, 400, "INVALID_FIELD"),
    ("GET", "/session/bad$id/status", {}, 400, "INVALID_SESSION_ID"),
    ("GET", "/session/%2e%2e/qr", {}, 400, "INVALID_SESSION_ID"),
    ("DELETE", "/session/.hidden", {}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/~x/restart", {}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/a*b/logout", {}, 400, "INVALID_SESSION_ID"),
    ("GET", "/session/a%20b/process", {}, 400, "INVALID_SESSION_ID"),
    ("GET", "/session/%ff/status", {}, 400, "INVALID_SESSION_ID"),
    ("GET", "/session/a%00/status", {}, 400, "INVALID_SESSION_ID"),
    ("GET", "/session/abc%0A/status", {}, 400, "INVALID_SESSION_ID"),
    ("POST", "/session/create", {"json": {"sessionId": "abc\n"}}, 400, "INVALID_SESSION_ID"),
    # bodies: not JSON, malformed JSON, not an object, too large
    (
        "POST",
        "/session/create",
        {"data": "sessionId=x", "headers": {"Content-Type": "text/plain"}},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "POST",
        "/session/create",
        {"data": "{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "INVALID_JSON",
    ),
    ("POST", "/session/create", {"json": ["sessionId"]}, 400, "INVALID_JSON"),
    (
        "POST",
        "/session/create",
        {"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
        400,
        "INVALID_JSON",
    ),
    (
        "POST",
        "/session/create",
        {"data": b'{"sessionId": "ok", "userId": "\\ud800"}', "headers": {"Content-Type": "application/json"}},
        400,
        "INVALID_JSON",
    ),
    (
        "POST",
        "/session/create",
        {"data": b"[" * 5000, "headers": {"Content-Type": "application/json"}},
        400,
        "INVALID_JSON",
    ),
    ("POST", "/session/create", {"json": {"sessionId": "big", "sessionName": BIG}}, 413, "PAYLOAD_TOO_LARGE"),
    # unknown sessions
    ("GET", "/session/nobody/qr", {}, 404, "SESSION_NOT_FOUND"),
    ("GET", "/session/nobody/status", {}, 404, "SESSION_NOT_FOUND"),
    ("GET", "/session/nobody/process", {}, 404, "SESSION_NOT_FOUND"),
    ("GET", "/session/nobody/messages", {}, 404, "SESSION_NOT_FOUND"),
    ("DELETE", "/session/nobody", {}, 404, "SESSION_NOT_FOUND"),
    ("POST", "/session/nobody/restart", {}, 404, "SESSION_NOT_FOUND"),
    ("POST", "/session/nobody/logout", {}, 404, "SESSION_NOT_FOUND"),
    ("POST", "/session/nobody/pair-code", {"json": {"phoneNumber": "628123"}}, 404, "SESSION_NOT_FOUND"),
    ("POST", "/session/nobody/send", {"json": {"to": "628123", "text": "x"}}, 404, "SESSION_NOT_FOUND"),
    # phone targets, message types, pairing numbers
    ("POST", "/session/idle/send", {"json": {"to": "not-a-phone", "text": "x"}}, 400, "INVALID_TARGET"),
    ("POST", "/session/idle/send", {"json": {"to": "12", "text": "x"}}, 400, "INVALID_TARGET"),
    ("POST", "/session/idle/send", {"json": {"to": 628123, "text": "x"}}, 400, "INVALID_TARGET"),
    ("POST", "/session/idle/send", {"json": {"to": "628123@evil.com", "text": "x"}}, 400, "INVALID_TARGET"),
    ("POST", "/session/idle/send", {"json": {"to": "628123", "type": "hologram", "text": "x"}}, 400, "INVALID_TYPE"),
    ("POST", "/session/idle/send", {"json": {"to": "628123", "text": ""}}, 400, "INVALID_FIELD"),
    ("POST", "/session/idle/send", {"json": {"to": "628123", "text": "x"}}, 409, "SESSION_NOT_CONNECTED"),
    ("POST", "/session/idle/pair-code", {"json": {"phoneNumber": "phone"}}, 400, "INVALID_PHONE"),
    ("POST", "/session/idle/pair-code", {"json": {"phoneNumber": "628123@s.whatsapp.net"}}, 400, "INVALID_PHONE"),
    ("POST", "/session/idle/pair-code", {"json": {}}, 400, "INVALID_PHONE"),
    (
        "POST",
        "/session/idle/pair-code",
        {"data": "x", "headers": {"Content-Type": "text/plain"}},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    # limit / offset ranges
    ("GET", "/session/idle/messages?limit=0", {}, 400, "INVALID_QUERY"),
    ("GET", "/session/idle/messages?limit=501", {}, 400, "INVALID_QUERY"),
    ("GET", "/session/idle/messages?limit=ten", {}, 400, "INVALID_QUERY"),
    ("GET", "/session/idle/messages?offset=-1", {}, 400, "INVALID_QUERY"),
    ("GET", "/session/idle/messages?contact=nobody", {}, 400, "INVALID_TARGET"),
    ("GET", "/metrics?format=xml", {}, 400, "INVALID_QUERY"),
    # routes and methods that do not exist
    ("GET", "/nowhere", {}, 404, "NOT_FOUND"),
    ("PUT", "/session/create", {}, 405, "METHOD_NOT_ALLOWED"),
]


async def test_every_bad_input_answers_in_the_one_error_shape(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", MAX_UPLOAD_MB="0.01", CREATE_QR_WAIT="0") as w:
        assert_ok(*await w.api("POST", "/session/create", json={"sessionId": "idle"}))
        failures = []
        for method, path, kwargs, want_status, want_code in BAD_INPUTS:
            status, body, _ = await raw(w, method, path, **kwargs)
            if status != want_status or not isinstance(body, dict) or body.get("code") != want_code:
                failures.append((method, path, status, body))
                continue
            assert_error(status, body, want_status, want_code)
        assert not failures, failures
        # 405 tells what would work
        _, _, headers = await raw(w, "PUT", "/session/create")
        assert "POST" in headers.get("Allow", "")
        # none of it created a session, and the worker is fine
        listed = assert_ok(*await w.api("GET", "/sessions"))
        assert [s["sessionId"] for s in listed["sessions"]] == ["idle"]
        assert (await w.api("GET", "/health"))[0] == 200


TRAVERSALS = [
    "..",
    "..%2F..%2Fvictim",
    "..%2fvictim",
    "%2e%2e%2fvictim",
    "%2e%2e",
    "..%5Cvictim",
    "victim%00",
    "%2Fetc%2Fpasswd",
    ".%2E%2Fvictim",
    "a%2F..%2F..%2Fvictim",
]


async def test_path_traversal_ids_never_touch_the_filesystem(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        victim = w.storage / "victim"
        victim.mkdir()
        (victim / "keep").write_text("precious")
        sessions_dir = w.storage / "sessions"
        before = sorted(os.listdir(sessions_dir)) if sessions_dir.exists() else []
        for sid in TRAVERSALS:
            for method, path in [
                ("DELETE", f"/session/{sid}"),
                ("GET", f"/session/{sid}/status"),
                ("POST", f"/session/{sid}/restart"),
                ("POST", f"/session/{sid}/logout"),
            ]:
                status, body, _ = await raw(w, method, path)
                # 400 when the id reaches us; 404 when it does not even match a route
                assert status in (400, 404), (method, path, status, body)
                assert isinstance(body, dict) and set(body) == ERROR_KEYS
            status, body = await w.api("POST", "/session/create", json={"sessionId": sid.replace("%2F", "/")})
            assert_error(status, body, 400, "INVALID_SESSION_ID")
        for sid in ("../victim", "..", "/tmp/x", "..\\victim", "a/../../victim"):
            assert_error(*await w.api("POST", "/session/create", json={"sessionId": sid}), 400, "INVALID_SESSION_ID")
        assert (victim / "keep").read_text() == "precious"
        after = sorted(os.listdir(sessions_dir)) if sessions_dir.exists() else []
        assert after == before
        assert assert_ok(*await w.api("GET", "/sessions"))["sessions"] == []


async def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path / "w",
        RATE_LIMIT_SESSION_OPS="3",
        RATE_LIMIT_SESSION_OPS_BURST="3",
        RATE_LIMIT_SEND_PER_SESSION="2",
        JWT_SECRET="s" * 32,
    ) as w:
        await w.create_linked("rl", "628333000")  # session op 1
        assert_ok(*await w.api("POST", "/session/create", json={"sessionId": "rl"}))  # 2
        assert_ok(*await w.api("POST", "/session/rl/restart"))  # 3
        await w.wait_session("rl", lambda s: s["status"] == "connected" and s["processState"] == "RUNNING")
        status, body, headers = await raw(w, "POST", "/session/create", json={"sessionId": "rl2"})
        assert_error(status, body, 429, "RATE_LIMITED")
        assert 1 <= int(headers["Retry-After"]) <= 20  # one operation every 20 s refills the bucket
        assert (await w.api("GET", "/sessions"))[0] == 200  # reads are not limited
        # per client: another credential has its own allowance
        other = jwt.encode({"sub": "ops-dashboard", "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {other}"}) as client:
            async with client.post(f"{w.url}/session/create", json={"sessionId": "rl"}) as resp:
                assert resp.status == 200
        # sends: per session
        for n in range(2):
            assert_ok(*await w.api("POST", "/session/rl/send", json={"to": "628444000", "text": f"m{n}"}))
        status, body, headers = await raw(w, "POST", "/session/rl/send", json={"to": "628444000", "text": "m3"})
        assert_error(status, body, 429, "RATE_LIMITED")
        assert 1 <= int(headers["Retry-After"]) <= 60
        # the refused send was not sent
        _, inbox = await w.hub("GET", "/phones/628444000/messages")
        assert sorted(m["text"] for m in inbox["messages"]) == ["m0", "m1"]


async def test_capacity_answers_503_with_retry_after(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", MAX_SESSIONS="1", CREATE_QR_WAIT="0") as w:
        assert_ok(*await w.api("POST", "/session/create", json={"sessionId": "one"}))
        status, body, headers = await raw(w, "POST", "/session/create", json={"sessionId": "two"})
        assert_error(status, body, 503, "CAPACITY")
        assert int(headers["Retry-After"]) > 0


async def test_health_and_metrics_show_real_figures(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("m1", "628555000")
        await w.wait_session("m1", lambda s: s["memory"]["rss"] is not None)
        async with aiohttp.ClientSession() as anon:  # /health needs no token (it then shows the seed's fields)
            async with anon.get(f"{w.url}/health") as resp:
                assert resp.status == 200
        status, health = await w.api("GET", "/health")  # with the token: the details too
        assert status == 200
        for key in ("status", "workerId", "uptime", "sessions", "resources", "storage", "database"):
            assert key in health
        assert health["status"] == "healthy" and health["workerId"] == "test-worker"
        assert health["sessions"]["total"] == 1 and health["sessions"]["connected"] == 1
        assert health["database"]["status"] == "ok" and health["storage"]["writable"] is True
        assert health["storage"]["freeBytes"] > 0 and health["resources"]["system"]["memory"]["total"] > 0
        assert health["backend"] == {"status": "not_configured"}

        status, metrics = await w.api("GET", "/metrics")
        assert status == 200 and "success" not in metrics
        assert metrics["worker"]["id"] == "test-worker"
        assert metrics["sessions"]["byStatus"]["connected"] == 1 and metrics["sessions"]["total"] == 1
        assert set(metrics["messages"]) >= {"sent", "received", "failed", "lastHour"}
        assert set(metrics["performance"]) >= {"avgResponseTime", "errorRate", "throughput"}
        assert metrics["performance"]["avgResponseTime"] > 0
        database = metrics["database"]  # the create above wrote the session: at least one commit
        assert database["writes"] >= database["commits"] >= 1 and database["outboxWaiting"] == 0

        asks: list[dict[str, Any]] = [{"params": {"format": "prometheus"}}, {"headers": {"Accept": "text/plain"}}]
        for kwargs in asks:
            assert w.http is not None
            async with w.http.get(f"{w.url}/metrics", **kwargs) as resp:
                assert resp.status == 200 and resp.content_type == "text/plain"
                text = await resp.text()
            assert re.search(r'^wa_worker_session_memory_rss_bytes\{sessionId="m1"\} [0-9.e+]+$', text, re.M)
            assert re.search(r'^wa_worker_session_cpu_percent\{sessionId="m1"\} ', text, re.M)
            assert 'wa_worker_session_restarts_total{sessionId="m1"} 0.0' in text
            assert re.search(r'^wa_worker_http_request_duration_seconds_bucket\{.*route="/session/create"', text, re.M)
            assert 'wa_worker_sessions{status="connected"} 1.0' in text
            assert re.search(r"^wa_worker_db_commits_total [1-9]", text, re.M)
            assert "wa_worker_outbox_waiting 0.0" in text


async def test_health_and_metrics_carry_the_seed_shapes(tmp_path: Path) -> None:
    """A backend written against the seed reads /health and /metrics unchanged: its fields, every time ISO."""
    async with running_worker(tmp_path / "w", WORKER_ENDPOINT="http://w1:8001") as w:
        await w.create_linked("seed1", "628555001")
        await w.wait_session("seed1", lambda s: s["memory"]["rss"] is not None)
        _, health = await w.api("GET", "/health")
        assert abs(epoch(health["timestamp"]) - time.time()) < 30
        resources = health["resources"]
        # The worker's share of what it may use, in percent; memoryTotal in MB.
        assert 0 <= resources["cpuUsage"] <= 100 and 0 < resources["memoryUsage"] <= 100
        assert resources["memoryTotal"] == read_capacity().memory // 2**20
        rss = resources["supervisor"]["memory"]["rss"] + resources["sessions"]["memory"]["rss"]
        assert abs(resources["memoryUsage"] - rss / read_capacity().memory * 100) <= 0.01
        # Without MinIO: not connected to it; the database answers.
        assert health["storage"]["minioConnected"] is False and health["storage"]["dbConnected"] is True
        assert "path" in health["storage"] and "pid" in resources["supervisor"]  # details need credentials

        # A probe without credentials (or with wrong ones) reads the seed's fields and nothing that maps the
        # machine: no paths, pids, URLs or settings.
        for headers in ({}, {"X-Worker-Token": "wrong"}):
            async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{w.url}/health", headers=headers) as resp:
                assert resp.status == 200
                public = await resp.json()
            assert set(public) == {"status", "workerId", "uptime", "timestamp", "sessions", "resources", "storage"}
            assert public["sessions"] == {"total": 1, "connected": 1, "disconnected": 0}
            assert set(public["resources"]) == {"cpuUsage", "memoryUsage", "memoryTotal"}
            assert public["storage"] == {"minioConnected": False, "dbConnected": True}

        _, metrics = await w.api("GET", "/metrics")
        worker = metrics["worker"]
        assert worker["id"] == "test-worker" and worker["endpoint"] == "http://w1:8001"
        assert worker["version"] == worker_version() != "0+unknown"
        started = epoch(worker["startTime"])
        assert abs(started + worker["uptime"] - epoch(metrics["timestamp"])) < 0.01
        assert time.time() - 120 < started < time.time()


async def test_health_is_unhealthy_when_the_database_is_unusable(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        db = w.storage / "worker.db"
        # Garbage over the database and its WAL and index headers: SQLite calls it "not a database".
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if path.exists():
                with open(path, "r+b") as f:
                    f.write(b"\xff" * 4096)

        async def unhealthy() -> dict[str, Any] | None:
            status, body = await w.api("GET", "/health")
            return body if status == 503 else None

        body = await wait_for(unhealthy, timeout=10, what="/health 503")
        assert body["status"] == "unhealthy" and body["database"]["status"] == "error"


# Group operations whose path says everything (issue 17).
BODYLESS_GROUP_POSTS = ("/session/{id}/groups/{groupJid}/invite/revoke", "/session/{id}/groups/{groupJid}/leave")


async def test_docs_and_openapi_cover_every_route(tmp_path: Path) -> None:
    settings = load({"STORAGE_DIR": str(tmp_path), "WORKER_AUTH_TOKEN": TOKEN})
    app = build_app(settings, TOKEN)  # not started: only its routing table is read
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        if route.method in ("HEAD", "*") or "prefix" in info or "directory" in info:
            continue
        canonical = route.resource.canonical if route.resource else ""
        canonical = template(canonical)  # a path parameter with a regex, named plainly in OpenAPI
        if canonical.startswith(("/docs/assets", "/dashboard/assets")):  # the pages' files, not API
            continue
        served.add((route.method.lower(), canonical))
    doc = document()
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (method, path)
            for status in ("400", "404", "409", "413", "415", "429", "503"):
                if status in op["responses"] and path != "/health":  # /health answers 503 with its figures
                    assert op["responses"][status] == {"$ref": f"#/components/responses/{status}"}
            if method == "post" and path not in (
                "/session/{id}/restart",
                "/session/{id}/logout",
                *BODYLESS_GROUP_POSTS,
            ):
                assert "requestBody" in op, path

    async with running_worker(tmp_path / "w") as w, aiohttp.ClientSession() as anon:
        async with anon.get(f"{w.url}/openapi.json") as resp:
            assert resp.status == 200
            served_doc = await resp.json()
        assert served_doc["openapi"].startswith("3.") and served_doc["paths"].keys() == doc["paths"].keys()
        async with anon.get(f"{w.url}/docs") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            html = await resp.text()
        # every asset the page loads is served by the worker itself
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/docs/assets/") for a in assets)
        for asset in assets:
            async with anon.get(f"{w.url}{asset}") as resp:
                assert resp.status == 200, asset
                assert len(await resp.read()) > 0


async def test_streamed_events_match_their_declared_schema(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("sse", "628777000")  # a QR, then connected: events already in the log
        everything = assert_ok(*await w.api("GET", "/events?sessionId=sse"))["events"]
        assert len(everything) >= 2
        assert w.http is not None
        events: list[dict[str, str]] = []
        async with w.http.get(f"{w.url}/events/stream", params={"sessionId": "sse"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            fields: dict[str, str] = {}
            async with asyncio.timeout(20):
                while len(events) < len(everything):
                    line = (await resp.content.readline()).decode().rstrip("\n")
                    if line.startswith(":"):
                        continue  # a keepalive comment
                    if not line:
                        if fields:
                            events.append(fields)
                        fields = {}
                        continue
                    name, _, value = line.partition(": ")
                    fields[name] = value
        for event in events:
            assert not contract.check_sse_event(event), (event, contract.check_sse_event(event))
        # the check itself fails a stray field
        stray = json.loads(events[0]["data"])
        stray["stray"] = 1
        assert contract.check_sse_event({**events[0], "data": json.dumps(stray)})

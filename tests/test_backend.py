"""Backend integration against a fake backend served by the test (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import contract
from aiohttp import web
from harness import TOKEN, Worker, free_port, running_worker, wait_for, webhook_receiver

from supervisor.supervision.capacity import read_capacity
from supervisor.timefmt import epoch

PHONE = "6281777000"


class FakeBackend:
    """Records what the worker sends; fails on demand."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[tuple[float, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []  # every delivery, duplicates included
        self.tokens: set[str | None] = set()
        self.fail_every = 0  # answer 500 to every n-th event call
        self.forget_worker = False  # answer the next heartbeat with 404
        self.calls = 0
        self.time_problems: list[str] = []  # time fields of what it received that are not ISO strings
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/admin/workers/register", self._register)
        app.router.add_put("/api/admin/workers/{wid}/heartbeat", self._heartbeat)
        app.router.add_post("/api/admin/workers/{wid}/events", self._event)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        assert not self.time_problems, self.time_problems

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.time_problems += [f"{request.path}{p}" for p in contract.time_problems(body)]
        return body

    async def _register(self, request: web.Request) -> web.Response:
        self.tokens.add(request.headers.get("X-Worker-Token"))
        self.registrations.append(await self._body(request))
        return web.json_response({"success": True})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.tokens.add(request.headers.get("X-Worker-Token"))
        if self.forget_worker:
            self.forget_worker = False
            return web.json_response({"success": False}, status=404)
        self.heartbeats.append((time.monotonic(), await self._body(request)))
        return web.json_response({"success": True})

    async def _event(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            await request.read()
            return web.json_response({"error": "flaky"}, status=500)
        body = await self._body(request)
        assert request.headers["X-Event-Id"] == str(body["id"])
        self.events.append(body)
        return web.json_response({"success": True})

    def unique_events(self) -> list[dict[str, Any]]:
        seen: dict[int, dict[str, Any]] = {}
        for e in self.events:
            if e["id"] in seen:
                assert seen[e["id"]] == e, "a redelivery must be the same event"
            seen.setdefault(e["id"], e)
        return [seen[k] for k in sorted(seen)]


async def _all_events(w: Worker) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        status, body = await w.api("GET", f"/events?since={since}&limit=1000")
        assert status == 200, body
        out += body["data"]["events"]
        if not body["data"]["events"]:
            return out
        since = body["data"]["nextSince"]


async def _activity(w: Worker, sid: str, phone: str) -> None:
    """Three sends and a reply; returns once every event they cause is in the log (each send's
    ``delivered`` receipt and the reply), so a test's later reads see no late arrivals."""
    await w.create_linked(sid, phone)
    sent: set[str] = set()
    for n in range(3):
        status, body = await w.api("POST", f"/session/{sid}/send", json={"to": "6280100", "text": f"m{n}"})
        assert status == 200
        sent.add(body["data"]["messageId"])
    await w.hub("POST", "/phones/6280100/messages", json={"to": phone, "text": "reply"})

    async def settled() -> bool:
        events = await _all_events(w)
        delivered = {
            e["data"]["messageId"]
            for e in events
            if e["event"] == "message.status" and e["data"].get("status") == "delivered"
        }
        return delivered >= sent and any(e["event"] == "message.received" for e in events)

    await wait_for(settled, what="the activity's events")


async def test_registers_once_the_backend_is_up_and_heartbeats_with_metrics(tmp_path: Path) -> None:
    backend = FakeBackend()
    # The backend's address carries a credential of its own: /health shows the URL with it masked.
    url = backend.url.replace("http://", "http://gateway:gw-password@")
    env = {"BACKEND_URL": url, "HEARTBEAT_INTERVAL": "200", "WORKER_ENDPOINT": "http://w1:8001"}
    async with running_worker(tmp_path / "w", **env) as w:
        # The backend is down: the worker serves anyway.
        status, _ = await w.api("POST", "/session/create", json={"sessionId": "early"})
        assert status == 200
        _, health = await w.api("GET", "/health")
        assert health["backend"]["url"] == url.replace("gw-password", "***")
        await backend.start()
        try:
            await wait_for(lambda: _truthy(backend.registrations), timeout=40, what="registration")
            reg = backend.registrations[0]
            assert reg["workerId"] == "test-worker" and reg["endpoint"] == "http://w1:8001"
            assert reg["status"] == "online" and reg["maxSessions"] == 50 and reg["capabilities"]["engine"] == "sim"
            assert backend.tokens == {TOKEN}
            await wait_for(lambda: _truthy(len(backend.heartbeats) >= 3), what="three heartbeats")
            beat = backend.heartbeats[-1][1]
            # The seed's heartbeat: status, an ISO timestamp and its five metrics.
            assert beat["status"] == "online" and abs(epoch(beat["timestamp"]) - time.time()) < 30
            metrics = beat["metrics"]
            assert set(metrics) == {"sessionCount", "connectedSessions", "cpuUsage", "memoryUsage", "uptime"}
            assert metrics["sessionCount"] == 1 and metrics["connectedSessions"] == 0
            # Percents of what the worker may use: the supervisor and its session process hold some memory.
            assert 0 <= metrics["cpuUsage"] <= 100 and 0 < metrics["memoryUsage"] <= 100
            own_rss = beat["resources"]["worker"]["rss"] + beat["resources"]["sessions"]["rss"]
            assert metrics["memoryUsage"] == round(own_rss / read_capacity().memory * 100, 2)
            assert 0 < metrics["uptime"] < 120
            # Ours beside them.
            assert beat["sessions"]["total"] == 1 and sum(beat["sessions"]["byStatus"].values()) == 1
            assert beat["resources"]["worker"]["rss"] > 0 and "messages" in beat
            # A backend that forgot the worker gets a new registration.
            backend.forget_worker = True
            await wait_for(lambda: _truthy(len(backend.registrations) == 2), what="re-registration after 404")
        finally:
            children = w.child_pids()
            await w.stop(signal.SIGTERM)
            await backend.stop()
        statuses = [b["status"] for _, b in backend.heartbeats]
        assert statuses[-2:] == ["draining", "offline"], statuses
        assert children


async def _truthy(value: object) -> bool:
    return bool(value)


async def test_every_event_arrives_in_order_despite_a_flaky_backend(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.fail_every = 3
    await backend.start()
    try:
        async with running_worker(tmp_path / "w", BACKEND_URL=backend.url) as w:
            await _activity(w, "ev", PHONE)

            async def received_everything() -> bool:
                produced = await _all_events(w)
                return bool(produced) and [e["id"] for e in backend.unique_events()] == [e["id"] for e in produced]

            await wait_for(received_everything, timeout=60, what="the backend to have every event")
            produced = await _all_events(w)
            assert backend.unique_events() == produced  # same content, same order
            names = [e["event"] for e in produced]
            for expected in ("qr_ready", "connected", "message.status", "message.received"):
                assert expected in names, names
            assert names.index("qr_ready") < names.index("connected")
            qr = next(e for e in produced if e["event"] == "qr_ready")
            assert qr["data"]["qrCode"].startswith("data:image/png;base64,")
            assert next(e for e in produced if e["event"] == "connected")["data"]["phoneNumber"] == PHONE
            received = next(e for e in produced if e["event"] == "message.received")["data"]["message"]
            assert received["text"] == "reply" and received["direction"] == "in"
            assert backend.calls > len(produced)  # some calls failed and were retried: none was lost
    finally:
        await backend.stop()


async def test_events_survive_a_killed_worker(tmp_path: Path) -> None:
    port = free_port()
    backend = FakeBackend(port)
    storage = tmp_path / "w"
    w = Worker(storage, {"BACKEND_URL": backend.url})
    await w.start()
    try:
        await _activity(w, "kill", PHONE)
        produced = await _all_events(w)
        await w.stop(signal.SIGKILL)
    finally:
        await w.stop()
    await backend.start()
    try:
        async with running_worker(storage, BACKEND_URL=backend.url) as w2:
            want = [e["id"] for e in produced]

            async def delivered() -> bool:
                return [e["id"] for e in backend.unique_events()][: len(want)] == want

            await wait_for(delivered, timeout=60, what="events produced before the kill")
            assert backend.unique_events()[: len(want)] == produced
            assert w2.proc is not None
    finally:
        await backend.stop()


def _recipe(secret: str, body: bytes, header: str) -> bool:
    """The README's verification recipe, written as a receiver would."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


async def test_webhooks_are_signed_and_verifiable(tmp_path: Path) -> None:
    received: list[tuple[bytes, str]] = []
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Signature"]))
        return web.Response(status=204)

    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        # The receiver is on loopback: refused unless allowed (test_webhook_urls_aimed_inside_are_refused).
        async with running_worker(tmp_path / "w", WEBHOOK_ALLOW_PRIVATE="true") as w:
            await w.create_linked("hooked", PHONE)
            secret = "s3cr3t-" + "x" * 20
            status, body = await w.api(
                "PUT", "/session/hooked/webhook", json={"url": f"http://127.0.0.1:{port}/hook", "secret": secret}
            )
            assert status == 200 and body["data"]["secret"] == secret
            status, _ = await w.api("POST", "/session/hooked/send", json={"to": "6280100", "text": "hi"})
            assert status == 200
            await wait_for(lambda: _truthy(len(received) >= 1), what="a webhook call")
            raw, signature = received[0]
            assert _recipe(secret, raw, signature)
            assert not _recipe("wrong-secret-" + "y" * 20, raw, signature)
            assert not _recipe(secret, raw + b" ", signature)
            event = json.loads(raw)
            assert event["sessionId"] == "hooked" and event["event"] == "message.status"
            status, info = await w.api("GET", "/session/hooked/webhook")
            assert status == 200 and "secret" not in info["data"] and info["data"]["delivered"] >= 1
            # Deleting the session sends its last event, then the webhook is gone.
            await w.api("DELETE", "/session/hooked")
            await wait_for(
                lambda: _truthy(any(json.loads(r)["event"] == "session.deleted" for r, _ in received)),
                what="session.deleted at the webhook",
            )
            # A webhook given at create hears the session from its first QR on.
            status, created = await w.api(
                "POST",
                "/session/create",
                json={"sessionId": "hooked3", "webhook": {"url": f"http://127.0.0.1:{port}/hook"}},
            )
            assert status == 200 and len(created["data"]["webhook"]["secret"]) >= 32

            async def qr_at_hook() -> tuple[bytes, str] | None:
                for raw, sig in received:
                    event = json.loads(raw)
                    if event["sessionId"] == "hooked3" and event["event"] == "qr_ready":
                        return raw, sig
                return None

            raw, signature = await wait_for(qr_at_hook, what="qr_ready of hooked3 at its webhook")
            assert _recipe(created["data"]["webhook"]["secret"], raw, signature)
            # Every time a webhook received (the event's, a QR's expiresAt, ...) is an ISO string.
            assert not [p for r, _ in received for p in contract.time_problems(json.loads(r))]
            status, resp = await w.api(
                "POST", "/session/create", json={"sessionId": "hooked4", "webhook": {"url": "mailto:x"}}
            )
            assert status == 400 and resp["code"] == "INVALID_WEBHOOK"
            assert (await w.api("GET", "/session/hooked4/status"))[0] == 404  # nothing was created
            status, resp = await w.api("PUT", "/session/hooked/webhook", json={"url": "http://127.0.0.1/h"})
            assert status == 404 and resp["code"] == "SESSION_NOT_FOUND"
            await w.api("POST", "/session/create", json={"sessionId": "hooked2"})
            not_ipv6 = {"url": "http://[FD97D5bC8EcDB1432DcC3.5Bc1:049CF]/h"}  # no client can reach or parse it
            for bad in ({"url": "ftp://x"}, {"url": "http://127.0.0.1/h", "secret": "short"}, {}, not_ipv6):
                status, resp = await w.api("PUT", "/session/hooked2/webhook", json=bad)
                assert status == 400 and resp["code"] == "INVALID_WEBHOOK", resp
    finally:
        await runner.cleanup()


REFUSED_WEBHOOKS = [
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://example.com@127.0.0.1/hook",
]


async def test_webhook_urls_aimed_inside_are_refused(tmp_path: Path) -> None:
    # BACKEND_URL: plain http to a name, so the start warns (nothing listens there; the worker serves anyway).
    async with running_worker(tmp_path / "w", BACKEND_URL="http://backend.invalid:3000") as w:
        await w.api("POST", "/session/create", json={"sessionId": "h1"})
        for url in REFUSED_WEBHOOKS:
            status, resp = await w.api("PUT", "/session/h1/webhook", json={"url": url})
            assert status == 400 and resp["code"] == "WEBHOOK_URL_REFUSED", (url, resp)
        assert (await w.api("GET", "/session/h1/webhook"))[0] == 404
        # At create, before anything is made: no half-made session.
        status, resp = await w.api(
            "POST", "/session/create", json={"sessionId": "h2", "webhook": {"url": "http://192.168.0.10/h"}}
        )
        assert status == 400 and resp["code"] == "WEBHOOK_URL_REFUSED"
        assert (await w.api("GET", "/session/h2/status"))[0] == 404
        # A name is accepted when set; what it resolves to is checked at each delivery.
        status, _ = await w.api("PUT", "/session/h1/webhook", json={"url": "https://hooks.example.com/wa"})
        assert status == 200
        warned = [json.loads(line) for line in w.log().splitlines() if "BACKEND_URL is plain http" in line]
        assert [line["level"].upper() for line in warned] == ["WARNING"], warned


async def test_webhooks_follow_no_redirect_and_report_error_categories(tmp_path: Path) -> None:
    async def figures(w: Worker, failures: int) -> dict[str, Any] | None:
        status, info = await w.api("GET", "/session/r1/webhook")
        assert status == 200, info
        return info["data"] if info["data"]["failures"] >= failures else None

    async with webhook_receiver() as (port, got):
        async with running_worker(tmp_path / "w", WEBHOOK_ALLOW_PRIVATE="true") as w:
            await w.api("POST", "/session/create", json={"sessionId": "r1"})
            status, _ = await w.api("PUT", "/session/r1/webhook", json={"url": f"http://127.0.0.1:{port}/redirect"})
            assert status == 200
            await w.api("POST", "/session/r1/restart")  # events for the webhook
            # Retried like any failed delivery, and never followed.
            data = await wait_for(lambda: figures(w, 2), what="two redirected deliveries")
            assert data["lastError"] == "http_3xx" and data["delivered"] == 0
            assert got == []
            # A closed port: the category, not the connection error (a port-scan oracle).
            closed = free_port()
            await w.api("PUT", "/session/r1/webhook", json={"url": f"http://127.0.0.1:{closed}/hook"})
            await w.api("POST", "/session/r1/restart")
            data = await wait_for(lambda: figures(w, 1), what="a refused delivery")
            assert data["lastError"] == "refused", data
            assert f"{closed}" in w.log()  # the detail is in the log, for the operator


async def test_backend_calls_follow_no_redirect(tmp_path: Path) -> None:
    """The worker token goes to BACKEND_URL only: a 307 to elsewhere is a failed call, retried."""
    thief_tokens: list[str | None] = []
    calls: dict[str, int] = {"register": 0, "events": 0}
    thief = web.Application()

    async def steal(request: web.Request) -> web.Response:
        thief_tokens.append(request.headers.get("X-Worker-Token"))
        return web.json_response({"success": True})

    thief.router.add_route("*", "/{tail:.*}", steal)
    backend = web.Application()

    def redirecting(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            calls[kind] += 1
            await request.read()
            raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{thief_port}{request.path}")

        return handler

    backend.router.add_post("/api/admin/workers/register", redirecting("register"))
    backend.router.add_post("/api/admin/workers/{wid}/events", redirecting("events"))
    runners = [web.AppRunner(thief), web.AppRunner(backend)]
    thief_port, backend_port = free_port(), free_port()
    for runner, port in zip(runners, (thief_port, backend_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with running_worker(tmp_path / "w", BACKEND_URL=f"http://127.0.0.1:{backend_port}") as w:
            await w.api("POST", "/session/create", json={"sessionId": "b1"})  # an event for the feed
            await wait_for(
                lambda: _truthy(calls["register"] >= 2 and calls["events"] >= 2), what="retried backend calls"
            )
            assert thief_tokens == []
            assert "BACKEND_URL is plain http" not in w.log()  # loopback: no warning
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_pull_replay_and_sse_resume(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await _activity(w, "pull", PHONE)
        everything = await _all_events(w)
        ids = [e["id"] for e in everything]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        # A consumer that saw up to the third event replays exactly the rest.
        status, body = await w.api("GET", f"/events?since={ids[2]}&limit=1000")
        assert [e["id"] for e in body["data"]["events"]] == ids[3:]
        status, body = await w.api("GET", "/events?since=-1")
        assert status == 400

        assert w.http is not None
        seen: list[int] = []

        async def read_sse(resp: aiohttp.ClientResponse, count: int) -> None:
            while len(seen) < count:
                line = (await resp.content.readline()).decode().strip()
                if line.startswith("id: "):
                    seen.append(int(line[4:]))

        async with w.http.get(f"{w.url}/events/stream") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            await asyncio.wait_for(read_sse(resp, 4), 20)
        # Resume from the last id seen: the rest and then live events, no gap, no repeat.
        async with w.http.get(f"{w.url}/events/stream", headers={"Last-Event-ID": str(seen[-1])}) as resp:
            await asyncio.wait_for(read_sse(resp, len(ids)), 20)
            status, _ = await w.api("POST", "/session/pull/send", json={"to": "6280100", "text": "live"})
            assert status == 200
            await asyncio.wait_for(read_sse(resp, len(ids) + 1), 20)
        assert seen[: len(ids)] == ids and len(seen) == len(set(seen))
        # An empty Last-Event-ID (a proxy's or a library's; browsers leave it out) means none: ?since= decides.
        seen.clear()
        stream = f"{w.url}/events/stream?since={ids[2]}"
        async with w.http.get(stream, headers={"Last-Event-ID": ""}) as resp:
            assert resp.status == 200
            await asyncio.wait_for(read_sse(resp, 2), 20)
        assert seen == ids[3:5]
        async with w.http.get(stream, headers={"Last-Event-ID": "x"}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "INVALID_QUERY"

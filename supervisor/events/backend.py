"""This worker's relationship with the backend gateway: registration, heartbeats,
the event feed, and saying goodbye.

Seed contract: ``POST {BACKEND_URL}/api/admin/workers/register``,
``PUT .../workers/{workerId}/heartbeat`` every ``HEARTBEAT_INTERVAL`` ms, and
``POST .../workers/{workerId}/events``; every call carries ``X-Worker-Token``.
A backend that is down delays all of this and loses none of it: registration
retries with backoff, a missed heartbeat is logged, events wait in the store.

No call follows a redirect: the token must reach BACKEND_URL and nothing else, so a 3xx
is a failed call like a 5xx.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from common.tasks import cancel_and_wait
from supervisor.config import Settings
from supervisor.events.delivery import Deliverer, Target
from supervisor.events.log import EventLog
from supervisor.sessions import SessionRegistry
from supervisor.timefmt import iso
from supervisor.version import worker_version

log = logging.getLogger("supervisor.events.backend")

CALL_TIMEOUT = 10.0
REGISTER_RETRY_MAX = 30.0


def plain_http_to_network(url: str) -> bool:
    """True when ``url`` is plain http to a host other than this machine: the token travels in the clear."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it goes over the network


class BackendLink:
    """Registration, heartbeats and the event feed to BACKEND_URL."""

    def __init__(
        self,
        settings: Settings,
        registry: SessionRegistry,
        events: EventLog,
        http: aiohttp.ClientSession,
        token: str,
    ) -> None:
        assert settings.backend_url is not None
        self.settings = settings
        self.registry = registry
        self.http = http
        self.base = settings.backend_url.rstrip("/") + "/api/admin/workers"
        self.headers = {"X-Worker-Token": token}
        self.status = "online"
        self.registered = False
        self.last_heartbeat_ok: float | None = None
        self.last_error: str | None = None
        self.feed = Deliverer(
            events,
            http,
            Target(name="backend", url=f"{self.base}/{settings.worker_id}/events", headers=self.headers),
            worker_id=settings.worker_id,
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._extra = {"workerId": settings.worker_id}

    def start(self) -> None:
        if plain_http_to_network(self.base):
            # Said once, at start: a warning per call would drown the log and change nothing.
            log.warning(
                "BACKEND_URL is plain http to another host: the worker token and every event cross the"
                " network unencrypted; use https (or a loopback address for a sidecar)",
                extra=self._extra,
            )
        self._task = asyncio.create_task(self._run(), name="backend-link")
        self.feed.start()

    async def close(self) -> None:
        """Stop the loops and tell the backend this worker is offline (one try; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        await self.feed.close()
        if self.registered:
            self.status = "offline"
            await self._heartbeat(quiet=True)

    async def draining(self) -> None:
        """The worker started draining: say so at once instead of at the next beat."""
        self.status = "draining"
        if self.registered:
            await self._heartbeat(quiet=True)

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        await self._register()
        interval = self.settings.backend_heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            if await self._heartbeat() == 404:
                # The backend forgot us (restarted, or pruned a silent worker): introduce ourselves again.
                log.warning("backend does not know this worker; registering again", extra=self._extra)
                self.registered = False
                await self._register()

    async def _register(self) -> None:
        delay = 1.0
        failed_before = False
        while True:
            status, error = await self._call("POST", f"{self.base}/register", self._registration())
            if status is not None and 200 <= status < 300:
                self.registered = True
                log.info("registered with the backend at %s", self.settings.backend_url, extra=self._extra)
                return
            self.last_error = error or f"HTTP {status}"
            if not failed_before:
                log.warning(
                    "cannot register with the backend (%s); retrying with backoff, serving meanwhile",
                    self.last_error,
                    extra=self._extra,
                )
                failed_before = True
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(REGISTER_RETRY_MAX, delay * 2)

    async def _heartbeat(self, *, quiet: bool = False) -> int | None:
        body = await self.heartbeat_body()
        status, error = await self._call("PUT", f"{self.base}/{self.settings.worker_id}/heartbeat", body)
        if status is not None and 200 <= status < 300:
            if self.last_error is not None and not quiet:
                log.info("backend answers heartbeats again", extra=self._extra)
            self.last_heartbeat_ok = time.time()
            self.last_error = None
        elif status != 404:
            if self.last_error is None and not quiet:
                log.warning("heartbeat missed: %s", error or f"HTTP {status}", extra=self._extra)
            self.last_error = error or f"HTTP {status}"
        return status

    async def _call(self, method: str, url: str, body: dict[str, Any]) -> tuple[int | None, str | None]:
        try:
            async with self.http.request(
                method,
                url,
                json=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                return resp.status, None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    # -- what we say -----------------------------------------------------------------
    def _registration(self) -> dict[str, Any]:
        s = self.settings
        return {
            "workerId": s.worker_id,
            "endpoint": s.worker_endpoint,
            "maxSessions": s.max_sessions,
            "status": self.status,
            "version": worker_version(),
            "capabilities": {
                "engine": s.engine,
                "media": True,
                "pairCode": True,
                "idempotency": True,
                "events": ["pull", "sse", "webhooks"],
            },
        }

    async def heartbeat_body(self) -> dict[str, Any]:
        """The seed's heartbeat (status, timestamp, metrics) and ours beside it: sessions by status,
        each process's CPU and memory, message counts."""
        snap = self.registry.snapshot()
        own, children = snap.supervisor, snap.session_processes
        figures = await self.registry.message_figures()
        return {
            "workerId": self.settings.worker_id,
            "status": self.status,
            "timestamp": iso(snap.at),
            "metrics": {
                "sessionCount": snap.total,
                "connectedSessions": snap.active,
                # Percent of the CPUs and memory the worker may use (see supervisor/sessions/snapshot.py).
                "cpuUsage": snap.cpu_usage,
                "memoryUsage": snap.memory_usage,
                "uptime": snap.uptime,
            },
            "sessions": {
                "total": snap.total,
                "max": snap.max_sessions,
                "byStatus": snap.counts(),
            },
            "resources": {
                "worker": {"cpuPercent": own.cpu_percent if own else None, "rss": own.rss if own else None},
                "sessions": {
                    "processes": children.processes,
                    "cpuPercent": children.cpu_percent,
                    "rss": children.rss,
                    "uss": children.uss,
                },
            },
            "messages": {"sent": figures.sent, "received": figures.received, "failed": figures.failed},
            # STORAGE_DIR's disk: lowSpace warns before writes are refused (507 STORAGE_FULL).
            "disk": None
            if snap.disk is None
            else {"freeBytes": snap.disk.free, "totalBytes": snap.disk.total, "lowSpace": snap.disk.low},
        }

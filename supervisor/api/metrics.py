"""``GET /metrics``: the seed's JSON figures, or the Prometheus text exposition.

Request latency is measured by a middleware into a prometheus-client histogram
(labelled by route template, never by the raw path, so ids do not explode the
label set) and into a short in-memory window for the JSON ``performance``
figures. Session figures are read from the registry at scrape time: the
registry's sampler already keeps each process's psutil figures.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.api import answers, bodies
from supervisor.api import validation as v
from supervisor.api.errors import Handler
from supervisor.api.keys import REGISTRY, SETTINGS, STORAGE, WORKER
from supervisor.api.operations import Reply, operation, template
from supervisor.api.storage_metrics import StorageCollector
from supervisor.database.store import ConsumerLag
from supervisor.messaging.figures import MessageFigures
from supervisor.sessions.snapshot import WorkerSnapshot
from supervisor.sessions.status import SessionStatus
from supervisor.timefmt import iso
from supervisor.version import worker_version

routes = web.RouteTableDef()

WINDOW = 300.0  # seconds of requests behind the JSON performance figures
WINDOW_MAX = 100_000  # requests kept at most in that window (memory bound under load)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class RequestStats:
    """Latency histogram (Prometheus) and a moving window of (time, seconds, status) for the JSON view."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    window: deque[tuple[float, float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW_MAX))
    histogram: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self.histogram = Histogram(
            "wa_worker_http_request_duration_seconds",
            "Time to answer an API request",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.histogram.labels(method, route, str(status)).observe(seconds)
        self.window.append((time.time(), seconds, status))

    def performance(self) -> dict[str, Any]:
        """Average response time (ms), share of 5xx answers (0-1) and requests per second, over the window."""
        cutoff = time.time() - WINDOW
        while self.window and self.window[0][0] < cutoff:
            self.window.popleft()
        count = len(self.window)
        if not count:
            return {"avgResponseTime": 0.0, "errorRate": 0.0, "throughput": 0.0, "requests": 0, "window": WINDOW}
        total = sum(seconds for _, seconds, _ in self.window)
        errors = sum(1 for _, _, status in self.window if status >= 500)
        span = max(time.time() - self.window[0][0], 1.0)
        return {
            "avgResponseTime": round(total / count * 1000, 3),
            "errorRate": round(errors / count, 4),
            "throughput": round(count / span, 3),
            "requests": count,
            "window": WINDOW,
        }


STATS = web.AppKey("request_stats", RequestStats)


def _route_of(request: web.Request) -> str:
    route = getattr(request.match_info, "route", None)
    resource = getattr(route, "resource", None)
    # Unmatched paths share one label: a scanner's random URLs must not create series.
    return template(resource.canonical) if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time every request (outermost, so errors and auth refusals count too)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[STATS].observe(request.method, _route_of(request), status, time.perf_counter() - started)


class SessionCollector(Collector):
    """Per-session process figures and worker totals at scrape time."""

    def __init__(self, snapshot: WorkerSnapshot, messages: MessageFigures) -> None:
        self.snapshot = snapshot
        self.messages = messages

    def collect(self) -> Iterator[Metric]:
        label = ["sessionId"]
        cpu = GaugeMetricFamily("wa_worker_session_cpu_percent", "CPU use of a session's process", labels=label)
        rss = GaugeMetricFamily(
            "wa_worker_session_memory_rss_bytes", "Resident memory of a session's process", labels=label
        )
        uss = GaugeMetricFamily(
            "wa_worker_session_memory_uss_bytes", "Unique memory of a session's process", labels=label
        )
        restarts = CounterMetricFamily(
            "wa_worker_session_restarts", "Restarts of a session's process after crashes", labels=label
        )
        up = GaugeMetricFamily("wa_worker_session_up", "1 while the session's process runs", labels=label)
        connected = GaugeMetricFamily("wa_worker_session_connected", "1 while the session is connected", labels=label)
        waiting = GaugeMetricFamily(
            "wa_worker_session_outbox_messages", "Messages waiting in a session's outbox (paced, unsent)", labels=label
        )
        oldest = GaugeMetricFamily(
            "wa_worker_session_outbox_oldest_seconds", "How long the oldest of them has waited; 0: none", labels=label
        )
        now = self.snapshot.at
        for s in self.snapshot.sessions:
            waiting.add_metric([s.session_id], s.outbox)
            oldest.add_metric([s.session_id], max(0.0, now - s.outbox_oldest) if s.outbox_oldest is not None else 0.0)
            restarts.add_metric([s.session_id], s.restarts)
            up.add_metric([s.session_id], 1 if s.up else 0)
            connected.add_metric([s.session_id], 1 if s.status == SessionStatus.CONNECTED else 0)
            if s.stats is not None:
                cpu.add_metric([s.session_id], s.stats.cpu_percent)
                rss.add_metric([s.session_id], s.stats.rss)
                uss.add_metric([s.session_id], s.stats.uss)
        by_status = GaugeMetricFamily("wa_worker_sessions", "Sessions by status", labels=["status"])
        for status, count in self.snapshot.counts().items():
            by_status.add_metric([status], count)
        messages = GaugeMetricFamily(
            "wa_worker_messages", "Messages in history by direction and status", labels=["direction", "status"]
        )
        for direction, status, count in self.messages.by_status:
            messages.add_metric([direction, status], count)
        yield from (cpu, rss, uss, restarts, up, connected, waiting, oldest, by_status, messages)
        disk = self.snapshot.disk
        if disk is not None:
            yield GaugeMetricFamily(
                "wa_worker_disk_free_bytes",
                "Free space on STORAGE_DIR's disk (writes fail with 507 at none)",
                value=disk.free,
            )
            yield GaugeMetricFamily(
                "wa_worker_disk_low", "1 while free space is under DISK_FREE_WARN_MB", value=1 if disk.low else 0
            )


class EventCollector(Collector):
    """How far behind each durable event consumer is, and what history retention removed."""

    def __init__(self, lag: list[ConsumerLag], now: float, purged: int) -> None:
        self.lag, self.now, self.purged = lag, now, purged

    def collect(self) -> Iterator[Metric]:
        behind = GaugeMetricFamily(
            "wa_worker_event_consumer_lag_seconds",
            "Age of the oldest event a consumer (backend, webhook:<sessionId>) has yet to receive; 0: up to date",
            labels=["consumer"],
        )
        for consumer in self.lag:
            behind.add_metric([consumer.name], _waited(consumer.oldest_pending_at, self.now) or 0.0)
        yield behind
        yield CounterMetricFamily(
            "wa_worker_messages_purged", "Messages removed by MESSAGE_RETENTION_DAYS since start", value=self.purged
        )


def _waited(since: float | None, now: float) -> float | None:
    """Seconds since ``since`` (the oldest of what waits: an event, a message); None: nothing waits."""
    return None if since is None else round(max(0.0, now - since), 3)


class DatabaseCollector(Collector):
    """How the database's writes are grouped into commits, and what waits in the outbox."""

    def __init__(self, commits: int, writes: int, outbox_waiting: int) -> None:
        self.commits, self.writes, self.outbox_waiting = commits, writes, outbox_waiting

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "wa_worker_db_commits", "SQLite commits (each carries one or more writes)", value=self.commits
        )
        yield CounterMetricFamily(
            "wa_worker_db_writes", "SQLite write transactions, grouped into commits", value=self.writes
        )
        yield GaugeMetricFamily(
            "wa_worker_outbox_waiting", "Outgoing messages accepted and not settled yet", value=self.outbox_waiting
        )


def _wants_prometheus(request: web.Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "prometheus"
    accept = request.headers.get("Accept", "")
    return "text/plain" in accept or "openmetrics" in accept


@operation(
    routes,
    "GET",
    "/metrics",
    id="metrics",
    tag="operations",
    summary="Worker figures: JSON, or Prometheus text with ?format=prometheus or Accept: text/plain",
    query=bodies.MetricsQuery,
    errors=(400,),
    ok=Reply("figures", {"application/json": answers.Metrics, "text/plain": {"type": "string"}}, enveloped=False),
)
async def metrics(request: web.Request) -> web.Response:
    fmt = v.query(request, bodies.MetricsQuery).format
    registry = request.app[REGISTRY]
    snap = registry.snapshot()
    figures = await registry.message_figures()
    lag = await registry.event_consumer_lag()
    now = time.time()
    commits, writes, outbox_waiting = registry.database_figures()
    if _wants_prometheus(request, fmt):
        scrape = CollectorRegistry()
        scrape.register(SessionCollector(snap, figures))
        scrape.register(DatabaseCollector(commits, writes, outbox_waiting))
        scrape.register(EventCollector(lag, now, figures.purged))
        if STORAGE in request.app:
            scrape.register(StorageCollector(request.app[STORAGE]))
        text = generate_latest(request.app[STATS].registry) + generate_latest(scrape)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})
    settings = request.app[SETTINGS]
    own = snap.supervisor
    body = {
        "worker": {
            "id": settings.worker_id,
            "endpoint": settings.worker_endpoint,
            "startTime": iso(snap.started_at),
            "version": worker_version(),
            "uptime": snap.uptime,
            "engine": request.app[WORKER].engine,
            "cpuPercent": own.cpu_percent if own else None,
            "memory": {"rss": own.rss if own else None, "uss": own.uss if own else None},
        },
        "sessions": {
            "total": snap.total,
            "active": snap.active,
            "max": snap.max_sessions,
            "byStatus": snap.counts(),
        },
        "messages": {
            "sent": figures.sent,
            "received": figures.received,
            "failed": figures.failed,
            "pending": figures.pending,
            "lastHour": figures.last_hour,
            "purged": figures.purged,
        },
        "eventConsumers": [
            {
                "name": c.name,
                "sessionId": c.session_id,
                "lastEventId": c.last_seq,
                "oldestUndeliveredAge": _waited(c.oldest_pending_at, now),
            }
            for c in lag
        ],
        "performance": request.app[STATS].performance(),
        "database": {"commits": commits, "writes": writes, "outboxWaiting": outbox_waiting},
        "outboxes": [
            {
                "sessionId": s.session_id,
                "pending": s.outbox,
                "oldestPendingAt": iso(s.outbox_oldest),
                "oldestPendingAge": _waited(s.outbox_oldest, snap.at),
            }
            for s in snap.sessions
        ],
        "storage": request.app[STORAGE].health() if STORAGE in request.app else None,
        "timestamp": iso(snap.at),
    }
    return web.json_response(body)

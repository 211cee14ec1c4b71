"""``/health``: the seed's shape with real figures, open to probes without a token.

``status`` is ``healthy``; ``degraded`` (still 200) when the backend cannot be
reached; ``unhealthy`` (503) when the database or the storage directory is
unusable; ``draining`` (503) while the worker shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from aiohttp import web

from supervisor.api import answers
from supervisor.api.keys import CREDENTIALS, REGISTRY, SETTINGS, STORAGE, WORKER
from supervisor.api.operations import json_reply, operation
from supervisor.sessions.proxy import masked
from supervisor.timefmt import iso

routes = web.RouteTableDef()

DB_TIMEOUT = 2.0
BACKEND_TIMEOUT = 1.0
BACKEND_CACHE = 10.0  # seconds a backend reachability answer is reused: probes must not hammer it


@dataclass(slots=True)
class BackendProbe:
    """The last answer to "can we open a connection to the backend?"."""

    checked_at: float = 0.0
    reachable: bool = False
    error: str | None = None


BACKEND = web.AppKey("backend_probe", BackendProbe)


def _storage_check(path: Path) -> dict[str, Any]:
    """Write and remove a probe file, and read the disk's free space (blocking: run in a thread)."""
    probe = path / f".health-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
        usage = psutil.disk_usage(str(path))
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        return {"status": "error", "writable": False, "error": exc.strerror or type(exc).__name__}
    return {"status": "ok", "writable": True, "freeBytes": usage.free, "totalBytes": usage.total}


def _system() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "cpuCount": os.cpu_count(),
        "cpuPercent": psutil.cpu_percent(interval=None),
        "loadAverage": [round(x, 2) for x in os.getloadavg()],
        "memory": {"total": memory.total, "available": memory.available, "percent": memory.percent},
    }


async def _database(request: web.Request) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(DB_TIMEOUT):
            await request.app[REGISTRY].ping_database()
    except Exception as exc:  # any failure means unusable; the kind is enough for an operator
        return {"status": "error", "error": type(exc).__name__}
    return {"status": "ok", "latencyMs": round((time.perf_counter() - started) * 1000, 3)}


async def _backend(app: web.Application, url: str | None) -> dict[str, Any]:
    if url is None:
        return {"status": "not_configured"}
    probe = app[BACKEND]
    if time.monotonic() - probe.checked_at > BACKEND_CACHE:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                _, writer = await asyncio.open_connection(parts.hostname, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            probe.reachable, probe.error = True, None
        except (OSError, TimeoutError, ValueError) as exc:
            probe.reachable, probe.error = False, type(exc).__name__
        probe.checked_at = time.monotonic()
    answer: dict[str, Any] = {"url": masked(url), "status": "reachable" if probe.reachable else "unreachable"}
    if probe.error:
        answer["error"] = probe.error
    return answer


@operation(
    routes,
    "GET",
    "/health",
    id="health",
    tag="operations",
    summary="Worker health (no credentials needed: without them, the seed's fields only)",
    open=True,
    ok={
        200: json_reply(answers.HealthAnswer, "healthy or degraded", enveloped=False),
        503: json_reply(answers.HealthAnswer, "unhealthy (database or storage unusable) or draining", enveloped=False),
    },
)
async def health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    settings = request.app[SETTINGS]
    snap = registry.snapshot()
    own, children = snap.supervisor, snap.session_processes
    database, storage, system, backend = await asyncio.gather(
        _database(request),
        asyncio.to_thread(_storage_check, settings.storage_dir),
        asyncio.to_thread(_system),
        _backend(request.app, settings.backend_url),
    )
    if registry.draining:
        status = "draining"
    elif database["status"] != "ok" or storage["status"] != "ok":
        status = "unhealthy"
    elif backend["status"] == "unreachable" or (snap.disk is not None and snap.disk.low):
        status = "degraded"
    else:
        status = "healthy"
    code = 503 if status in ("draining", "unhealthy") else 200
    by_status = snap.counts()
    credentials = request.app.get(CREDENTIALS)
    if credentials is None or not credentials.authenticated(request):
        # A probe needs no more; paths, pids, URLs and settings are for callers with credentials.
        public = {
            "status": status,
            "workerId": settings.worker_id,
            "uptime": snap.uptime,
            "timestamp": iso(snap.at),
            "sessions": {"total": snap.total, **{k: by_status[k] for k in ("connected", "disconnected")}},
            "resources": {
                "cpuUsage": snap.cpu_usage,
                "memoryUsage": snap.memory_usage,
                "memoryTotal": snap.memory_total_mb,
            },
            "storage": {
                "minioConnected": bool(
                    (request.app[STORAGE].health() if STORAGE in request.app else {}).get("minioConnected", False)
                ),
                "dbConnected": database["status"] == "ok",
            },
        }
        return web.json_response(public, status=code)
    body = {
        "status": status,
        "workerId": settings.worker_id,
        "uptime": snap.uptime,
        "timestamp": iso(snap.at),
        "engine": request.app[WORKER].engine,
        "sessions": {
            "total": snap.total,
            "max": snap.max_sessions,
            "active": snap.active,
            **by_status,
        },
        "resources": {
            # The seed's figures: the worker's share of what it may use (see supervisor/sessions/snapshot.py).
            "cpuUsage": snap.cpu_usage,
            "memoryUsage": snap.memory_usage,
            "memoryTotal": snap.memory_total_mb,
            "supervisor": {
                "pid": os.getpid(),
                "cpuPercent": own.cpu_percent if own else None,
                "memory": {"rss": own.rss if own else None, "uss": own.uss if own else None},
            },
            "sessions": {
                "processes": children.processes,
                "cpuPercent": children.cpu_percent,
                "memory": {"rss": children.rss, "uss": children.uss},
            },
            "system": system,
        },
        "storage": {
            "type": "local",
            "path": str(settings.storage_dir),
            **storage,
            # Object storage (MinIO or local): minioConnected, pendingBackups, pendingRemovals, leases.
            "minioConnected": False,
            **(request.app[STORAGE].health() if STORAGE in request.app else {}),
            "dbConnected": database["status"] == "ok",
            "lowSpace": snap.disk.low if snap.disk is not None else None,
        },
        "database": {"type": "sqlite", "path": str(settings.database_path), **database},
        "backend": backend,
    }
    return web.json_response(body, status=code)

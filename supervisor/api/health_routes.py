"""``/health``: the seed's shape, open to probes without a token."""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web

from supervisor.api.keys import REGISTRY, SETTINGS, WORKER
from supervisor.sessions import STATUSES

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    settings = request.app[SETTINGS]
    worker = request.app[WORKER]
    sessions = list(registry)
    by_status = Counter(s.status for s in sessions)
    own = registry.supervisor_stats
    children = [s.stats for s in sessions if s.stats is not None]
    status = "draining" if registry.draining else "healthy"
    body = {
        "status": status,
        "workerId": settings.worker_id,
        "uptime": round(time.time() - worker.started_at, 3),
        "engine": worker.engine,
        "sessions": {
            "total": len(sessions),
            "max": settings.max_sessions,
            **{name: by_status.get(name, 0) for name in STATUSES},
        },
        "resources": {
            "supervisor": {
                "cpuPercent": own.cpu_percent if own else None,
                "memory": {"rss": own.rss if own else None, "uss": own.uss if own else None},
            },
            "sessions": {
                "processes": len(children),
                "cpuPercent": round(sum(c.cpu_percent for c in children), 2),
                "memory": {"rss": sum(c.rss for c in children), "uss": sum(c.uss for c in children)},
            },
        },
        "storage": {"type": "local", "path": str(settings.storage_dir)},
    }
    return web.json_response(body, status=503 if registry.draining else 200)

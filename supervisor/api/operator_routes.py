"""What the operator's dashboard reads beside the seed's routes: a session process's last hour of
CPU and memory samples, its last lines of stderr, and its lease and last backup."""

from __future__ import annotations

from aiohttp import web

from supervisor.api import answers
from supervisor.api import validation as v
from supervisor.api.errors import ok
from supervisor.api.keys import REGISTRY, SETTINGS
from supervisor.api.operations import json_reply, session_operation
from supervisor.timefmt import iso

routes = web.RouteTableDef()


@session_operation(
    routes,
    "GET",
    "/session/{id}/samples",
    id="getProcessSamples",
    tag="operations",
    summary="The session process's CPU and memory over the last hour (kept in memory, SAMPLE_INTERVAL apart)",
    ok=json_reply(answers.ProcessSamples),
)
async def get_samples(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    points = request.app[REGISTRY].samples(session_id)
    samples = [{"at": iso(p.at), "cpuPercent": p.cpu_percent, "rss": p.rss, "uss": p.uss} for p in points]
    interval = request.app[SETTINGS].sample_interval
    return ok({"sessionId": session_id, "interval": interval, "samples": samples})


@session_operation(
    routes,
    "GET",
    "/session/{id}/stderr",
    id="getProcessStderr",
    tag="operations",
    summary="The session process's last lines of stderr (its log and, with neonize, a Go panic), across restarts",
    ok=json_reply(answers.ProcessStderr),
)
async def get_stderr(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    return ok({"sessionId": session_id, "lines": request.app[REGISTRY].stderr_lines(session_id)})


@session_operation(
    routes,
    "GET",
    "/session/{id}/storage",
    id="getSessionStorage",
    tag="operations",
    summary="The session's lease on this worker and when its last backup landed",
    ok=json_reply(answers.SessionStorageFigures),
)
async def get_storage(request: web.Request) -> web.Response:
    session_id = v.path_session_id(request)
    lease, last_backup = request.app[REGISTRY].storage_figures(session_id)
    return ok({"sessionId": session_id, "lease": lease, "lastBackupAt": iso(last_backup)})

"""Typed keys for what the app carries."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from supervisor.api.auth import Credentials
from supervisor.config import Settings
from supervisor.events.backend import BackendLink
from supervisor.events.log import EventLog
from supervisor.events.webhooks import Webhooks
from supervisor.sessions import SessionRegistry
from supervisor.storage.service import SessionStorage


@dataclass(slots=True)
class WorkerInfo:
    """Facts about this worker process that /health reports (its start time is the registry's)."""

    engine: str = ""
    sim_hub_http: str | None = None


SETTINGS = web.AppKey("settings", Settings)
# Who may call the API (the worker token, JWTs): open paths ask it whether to show more.
CREDENTIALS = web.AppKey("credentials", Credentials)
REGISTRY = web.AppKey("registry", SessionRegistry)
WORKER = web.AppKey("worker", WorkerInfo)
STORAGE = web.AppKey("storage", SessionStorage)  # object storage: leases, backups, media
EVENTS = web.AppKey("events", EventLog)  # the numbered event log: pull, stream, deliverers
WEBHOOKS = web.AppKey("webhooks", Webhooks)
BACKEND_LINK = web.AppKey("backend_link", BackendLink)  # only when BACKEND_URL is set

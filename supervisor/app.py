"""The worker as an aiohttp application: the supervisor lives inside the app's lifecycle.

Start-up opens the store, binds the ROUTER the session processes connect to,
starts the simulated network when asked, and starts the stored sessions; the
app's cleanup stops them all, so the app's start and stop are the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from session_proc.engines import START_ENV
from supervisor import drain, worker_token
from supervisor.api import event_routes, media_routes, message_routes
from supervisor.api.install import client_max_size, install_api
from supervisor.api.keys import BACKEND_LINK, EVENTS, REGISTRY, SETTINGS, STORAGE, WEBHOOKS, WORKER, WorkerInfo
from supervisor.config import Settings
from supervisor.database.store import Store
from supervisor.events.backend import BackendLink
from supervisor.events.log import EventLog
from supervisor.events.webhooks import Webhooks
from supervisor.heap import settle_heap
from supervisor.sessions import SessionRegistry
from supervisor.storage.service import SessionStorage, build_storage
from supervisor.supervision.hub_child import SimHubChild
from supervisor.supervision.session_child import ChildConfig
from supervisor.supervision.spawner import ZygoteSpawner
from transport.channel import RouterChannel

log = logging.getLogger("supervisor.app")

# ipc:// paths longer than this fail to bind (sun_path is 108 bytes with its NUL).
IPC_PATH_MAX = 100
HUB_READY_TIMEOUT = 30.0


class StartupError(RuntimeError):
    """The worker cannot start; the message says what to fix."""


def socket_dir(settings: Settings) -> Path:
    """Where ipc sockets go: the run dir, or a short private path in /tmp when it is too long."""
    run_dir = settings.run_dir.resolve()
    if len(str(run_dir / "supervisor.sock")) <= IPC_PATH_MAX:
        return run_dir
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"wa-worker-{digest}"


def _lock_storage(settings: Settings) -> Any:
    """Hold an exclusive lock on the storage dir: two workers on one directory would corrupt it."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # The sockets live here: only our own user may connect to them.
    settings.run_dir.chmod(0o700)
    handle = open(settings.run_dir / "worker.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(f"another worker is running on STORAGE_DIR={settings.storage_dir}") from None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def _start_hub(settings: Settings, sockets: Path) -> SimHubChild:
    hub = SimHubChild(
        zmq_endpoint=f"ipc://{sockets / 'hub.sock'}",
        http_port=settings.sim_port,
        data_dir=settings.storage_dir / "sim-hub",
        qr_ttl=settings.sim_qr_ttl,
        policy=settings.restart_policy,
        worker_id=settings.worker_id,
        log_format="text" if settings.log_format == "text" else "json",
        qr_max=settings.sim_qr_max,
    )
    hub.start()
    if not await hub.wait_ready(HUB_READY_TIMEOUT):
        hub.kill_now()
        await hub.close()
        raise StartupError(
            f"the simulated network did not start within {HUB_READY_TIMEOUT:.0f}s (SIM_PORT={settings.sim_port})"
        )
    return hub


def worker_context(settings: Settings, token: str) -> Any:
    """The cleanup_ctx that runs the supervisor for the app's lifetime."""

    async def run_worker(app: web.Application) -> AsyncIterator[None]:
        lock = _lock_storage(settings)
        sockets = socket_dir(settings)
        sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = await Store.open(settings.database_path)
        events = EventLog(store, retention=settings.event_retention)
        events.start()
        app[EVENTS] = events
        # One HTTP client for everything the worker calls: backend, webhooks.
        http = aiohttp.ClientSession()
        webhooks = Webhooks(events, http, worker_id=settings.worker_id)
        app[WEBHOOKS] = webhooks
        backend: BackendLink | None = None
        hub: SimHubChild | None = None
        router = RouterChannel(
            f"ipc://{sockets / 'supervisor.sock'}",
            heartbeat_interval=settings.session_heartbeat_interval,
            name="supervisor",
        )
        registry: SessionRegistry | None = None
        storage: SessionStorage | None = None
        zygote: ZygoteSpawner | None = None
        try:
            if settings.spawner == "zygote":
                # The zygote's own start environment is the one native code in its children reads.
                zygote = ZygoteSpawner(env={**os.environ, **START_ENV})
                await zygote.start()
            engine_options: dict[str, Any] = {}
            if settings.engine == "sim":
                if settings.sim_hub:
                    engine_options["hub"] = settings.sim_hub
                else:
                    hub = await _start_hub(settings, sockets)
                    engine_options["hub"] = hub.zmq_endpoint
                    app[WORKER].sim_hub_http = hub.http_url
            endpoint = router.bind()
            config = ChildConfig(
                endpoint=endpoint,
                engine=settings.engine,
                storage_dir=settings.storage_dir.resolve(),
                heartbeat_interval=settings.session_heartbeat_interval,
                heartbeat_liveness=settings.session_heartbeat_liveness,
                log_level=settings.log_level,
                log_format="text" if settings.log_format == "text" else "json",
                engine_options=engine_options,
                spawner=zygote,
            )
            storage = build_storage(settings, token)
            await storage.start()  # MinIO down: retried in the background, the worker starts anyway
            app[STORAGE] = storage
            if drain.DRAIN_PLAN in app:
                app[drain.DRAIN_PLAN].register("backup_auth", storage.backup_running)
            # Before the sessions: what they build is collected as usual when they are deleted.
            settle_heap()
            registry = SessionRegistry(settings, store, router, config, storage=storage)
            router.set_handlers(on_request=registry.on_child_request, on_event=registry.on_child_event)
            app[REGISTRY] = registry
            await registry.start()
            await webhooks.start()
            plan = app[drain.DRAIN_PLAN] if drain.DRAIN_PLAN in app else None
            if settings.backend_url:
                backend = BackendLink(settings, registry, events, http, token)
                backend.start()
                app[BACKEND_LINK] = backend
                if plan is not None:
                    plan.register("stop_accepting", backend.draining)
                    plan.register("flush_events", backend.feed.flush)
                    plan.register("deregister", backend.close)
            else:
                log.info(
                    "BACKEND_URL is not set: not registering with a backend", extra={"workerId": settings.worker_id}
                )
            log.info(
                "worker %s ready: engine %s, max %d sessions",
                settings.worker_id,
                settings.engine,
                settings.max_sessions,
                extra={"workerId": settings.worker_id},
            )
            yield
        finally:
            if registry is not None:
                await registry.shutdown()
            if zygote is not None:
                await zygote.close()
            if backend is not None:
                await backend.close()
            await webhooks.close()
            await events.close()
            await http.close()
            if storage is not None:
                await storage.close()  # final backups land (bounded), leases released
            if hub is not None:
                hub.stop()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await hub.wait_settled()
                hub.kill_now()
                await hub.close()
            await router.close()
            await store.close()
            lock.close()
            log.info("worker stopped", extra={"workerId": settings.worker_id})

    return run_worker


def build_app(settings: Settings, token: str) -> web.Application:
    """The worker's aiohttp application; starting it starts the worker."""
    app = web.Application(
        client_max_size=client_max_size(settings),
    )
    app[SETTINGS] = settings
    app[WORKER] = WorkerInfo(engine=settings.engine)
    install_api(app, settings, token)  # middlewares, session/health/metrics/docs routes
    app.add_routes(message_routes.routes)
    app.add_routes(event_routes.routes)
    app.add_routes(media_routes.routes)

    async def on_shutdown(app: web.Application) -> None:
        # From the first SIGTERM on, refuse new work with 503 while children stop.
        if REGISTRY in app:
            app[REGISTRY].draining = True

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(worker_context(settings, token))
    # The SIGTERM drain's ordered steps; parts of the worker register theirs on app[DRAIN_PLAN].
    drain.install(app, settings)
    return app


def resolve_token(settings: Settings) -> str:
    """The API token, generating and announcing one when none is configured."""
    token, generated = worker_token.resolve(settings.worker_auth_token, settings.storage_dir)
    if generated:
        # Printed once, to the terminal/console only, never into the structured log.
        print(
            f"wa-worker: generated API token (kept in {worker_token.token_path(settings.storage_dir)}):\n  {token}",
            flush=True,
        )
    return token

"""The worker as an aiohttp application: the supervisor lives inside the app's lifecycle.

Each resource is one cleanup context (:func:`worker_contexts`): start-up opens
them in order, from the store to the stored sessions, and the app's cleanup
closes them in reverse, every one even when another's close fails; so the app's
start and stop are the worker's (docs/architecture.md, Lifecycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from common.closing import Closing
from session_proc.engines import START_ENV
from supervisor import drain, worker_token
from supervisor.api import (
    account_routes,
    change_routes,
    contact_routes,
    event_routes,
    group_routes,
    media_routes,
    message_routes,
    outbox_routes,
    poll_routes,
)
from supervisor.api.install import client_max_size, install_api
from supervisor.api.keys import BACKEND_LINK, EVENTS, REGISTRY, SETTINGS, STORAGE, WEBHOOKS, WORKER, WorkerInfo
from supervisor.config import Settings
from supervisor.database.store import Store
from supervisor.events.backend import BackendLink
from supervisor.events.destinations import webhook_client
from supervisor.events.log import EventLog
from supervisor.events.webhooks import Webhooks
from supervisor.heap import settle_heap
from supervisor.sessions import SessionRegistry
from supervisor.storage.service import build_storage
from supervisor.supervision.child_env import child_env
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


def private_dir(path: Path) -> None:
    """Make ``path`` a directory only this user can enter (0700), refusing one someone else controls.

    A path in a shared place (/tmp) may have been made first by another local user, to read our
    sockets or to point us elsewhere through a link: such a directory is refused, never reused.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StartupError(f"{path} is not a plain directory (a link?): refusing to use it")
    if st.st_uid != os.geteuid():
        raise StartupError(f"{path} belongs to another user (uid {st.st_uid}): refusing to use it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)


def _lock_storage(settings: Settings) -> Any:
    """Hold an exclusive lock on the storage dir: two workers on one directory would corrupt it."""
    # worker.db holds webhook secrets and history, sessions/ the WhatsApp keys; the sockets live in run/.
    private_dir(settings.storage_dir)
    private_dir(settings.run_dir)
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


# What the lifecycle contexts hand each other; the routes read theirs from supervisor/api/keys.py.
CLOSING = web.AppKey("closing", Closing)  # every close's failure, raised once the last close ran
STORE = web.AppKey("store", Store)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
WEBHOOK_CLIENT = web.AppKey("webhook_client", aiohttp.ClientSession)
ZYGOTE = web.AppKey("zygote", ZygoteSpawner)  # only with SPAWNER=zygote
SIM_HUB = web.AppKey("sim_hub", SimHubChild)  # only when the worker runs its own simulated network
ROUTER = web.AppKey("router", RouterChannel)

WorkerContext = Callable[[web.Application], AsyncIterator[None]]


@contextlib.asynccontextmanager
async def _closed_after(app: web.Application, what: str, close: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run the body (the rest of a resource's start, then its lifetime); ``close`` it on the way out,
    as one step of app[CLOSING]: a failure is logged and the other resources still close."""
    try:
        yield
    finally:
        with app[CLOSING].step(what):
            await close()


async def _run_dir(app: web.Application) -> AsyncIterator[None]:
    """The storage dir's lock and the socket dir; last out, it reports what failed to close."""
    settings = app[SETTINGS]
    lock = _lock_storage(settings)
    closing = Closing(log, extra={"workerId": settings.worker_id})
    app[CLOSING] = closing
    try:
        private_dir(socket_dir(settings))
        yield
    finally:
        lock.close()
    log.info("worker stopped", extra={"workerId": settings.worker_id})
    closing.raise_if_failed()


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = await Store.open(app[SETTINGS].database_path)
    app[STORE] = store
    async with _closed_after(app, "store", store.close):
        yield


async def _event_log(app: web.Application) -> AsyncIterator[None]:
    events = EventLog(app[STORE], retention=app[SETTINGS].event_retention)
    app[EVENTS] = events
    async with _closed_after(app, "event log", events.close):
        events.start()
        yield


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    # The HTTP client for the calls the operator configured (the backend).
    http = aiohttp.ClientSession()
    app[HTTP_CLIENT] = http
    async with _closed_after(app, "http client", http.close):
        yield


async def _webhook_client(app: web.Application) -> AsyncIterator[None]:
    # Webhook URLs come from API clients: their own client, which connects to public addresses only.
    http = webhook_client(allow_private=app[SETTINGS].webhook_allow_private)
    app[WEBHOOK_CLIENT] = http
    async with _closed_after(app, "webhook http client", http.close):
        yield


async def _zygote(app: web.Application) -> AsyncIterator[None]:
    if app[SETTINGS].spawner != "zygote":
        yield
        return
    # The zygote's own start environment is the one native code in its children reads.
    zygote = ZygoteSpawner(env=child_env(**START_ENV))
    app[ZYGOTE] = zygote
    async with _closed_after(app, "zygote", zygote.close):
        await zygote.start()
        yield


async def _sim_hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.engine != "sim" or settings.sim_hub:
        yield
        return
    hub = await _start_hub(settings, socket_dir(settings))
    app[SIM_HUB] = hub
    app[WORKER].sim_hub_http = hub.http_url

    async def stop_hub() -> None:
        hub.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await hub.wait_settled()
        hub.kill_now()
        await hub.close()

    async with _closed_after(app, "simulated network", stop_hub):
        yield


async def _router(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    router = RouterChannel(
        f"ipc://{socket_dir(settings) / 'supervisor.sock'}",
        heartbeat_interval=settings.session_heartbeat_interval,
        name="supervisor",
    )
    app[ROUTER] = router
    async with _closed_after(app, "router", router.close):
        router.bind()
        yield


def _storage(token: str) -> WorkerContext:
    async def storage_context(app: web.Application) -> AsyncIterator[None]:
        storage = build_storage(app[SETTINGS], token)
        app[STORAGE] = storage
        # Closing lets the final backups land (bounded), then releases the leases.
        async with _closed_after(app, "object storage", storage.close):
            await storage.start()  # MinIO down: retried in the background, the worker starts anyway
            if drain.DRAIN_PLAN in app:
                app[drain.DRAIN_PLAN].register("backup_auth", storage.backup_running)
            yield

    return storage_context


def _child_config(app: web.Application) -> ChildConfig:
    """How session processes start and reach the ROUTER."""
    settings = app[SETTINGS]
    # Both engines refuse received media over the ceiling before fetching it.
    engine_options: dict[str, Any] = {"max_media_bytes": int(settings.max_incoming_media_mb * 1024 * 1024)}
    if settings.engine == "sim":
        engine_options["hub"] = settings.sim_hub or app[SIM_HUB].zmq_endpoint
    return ChildConfig(
        endpoint=app[ROUTER].endpoint,
        engine=settings.engine,
        storage_dir=settings.storage_dir.resolve(),
        heartbeat_interval=settings.session_heartbeat_interval,
        heartbeat_liveness=settings.session_heartbeat_liveness,
        log_level=settings.log_level,
        log_format="text" if settings.log_format == "text" else "json",
        engine_options=engine_options,
        spawner=app.get(ZYGOTE),
    )


async def _registry(app: web.Application) -> AsyncIterator[None]:
    # Before the sessions: what they build is collected as usual when they are deleted.
    settle_heap()
    router = app[ROUTER]
    registry = SessionRegistry(app[SETTINGS], app[STORE], router, _child_config(app), storage=app[STORAGE])
    router.set_handlers(on_request=registry.on_child_request, on_event=registry.on_child_event)
    app[REGISTRY] = registry
    # shutdown() returns at once when _sessions_first (or the drain) stopped the sessions already.
    async with _closed_after(app, "sessions", registry.shutdown):
        await registry.start()
        yield


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    webhooks = Webhooks(app[EVENTS], app[WEBHOOK_CLIENT], worker_id=app[SETTINGS].worker_id)
    app[WEBHOOKS] = webhooks
    async with _closed_after(app, "webhooks", webhooks.close):
        await webhooks.start()
        yield


def _backend_link(token: str) -> WorkerContext:
    async def backend_context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if not settings.backend_url:
            log.info("BACKEND_URL is not set: not registering with a backend", extra={"workerId": settings.worker_id})
            yield
            return
        backend = BackendLink(settings, app[REGISTRY], app[EVENTS], app[HTTP_CLIENT], token)
        app[BACKEND_LINK] = backend
        # close() returns at once when the drain deregistered already.
        async with _closed_after(app, "backend link", backend.close):
            backend.start()
            if drain.DRAIN_PLAN in app:
                plan = app[drain.DRAIN_PLAN]
                plan.register("stop_accepting", backend.draining)
                plan.register("flush_events", backend.feed.flush)
                plan.register("deregister", backend.close)
            yield

    return backend_context


async def _sessions_first(app: web.Application) -> AsyncIterator[None]:
    """Last in, first out: the sessions stop before the webhooks, the backend link and storage close.

    So their last events still go out, the backend hears the worker is gone only once its
    sessions stopped (the drain's order), and their final backups land before the leases go.
    """
    settings = app[SETTINGS]
    log.info(
        "worker %s ready: engine %s, max %d sessions",
        settings.worker_id,
        settings.engine,
        settings.max_sessions,
        extra={"workerId": settings.worker_id},
    )
    async with _closed_after(app, "sessions", app[REGISTRY].shutdown):
        yield


def worker_contexts(token: str) -> list[WorkerContext]:
    """The worker's resources in start-up order, one cleanup context each: they close in reverse.

    A context that fails to start leaves the ones before it to be closed; a close that
    fails is logged and the others still run (app[CLOSING]); the run dir's context, last
    to close, raises CloseFailed if any did fail.
    """
    return [
        _run_dir,
        _store,
        _event_log,
        _http_client,
        _webhook_client,
        _zygote,
        _sim_hub,
        _router,
        _storage(token),
        _registry,
        _webhooks,
        _backend_link(token),
        _sessions_first,
    ]


def build_app(settings: Settings, token: str) -> web.Application:
    """The worker's aiohttp application; starting it starts the worker."""
    app = web.Application(
        client_max_size=client_max_size(settings),
    )
    app[SETTINGS] = settings
    app[WORKER] = WorkerInfo(engine=settings.engine)
    install_api(app, settings, token)  # middlewares, session/health/metrics/docs routes
    app.add_routes(message_routes.routes)
    app.add_routes(outbox_routes.routes)
    app.add_routes(change_routes.routes)
    app.add_routes(event_routes.routes)
    app.add_routes(media_routes.routes)
    app.add_routes(account_routes.routes)
    app.add_routes(poll_routes.routes)
    app.add_routes(contact_routes.routes)
    app.add_routes(group_routes.routes)

    async def on_shutdown(app: web.Application) -> None:
        # From the first SIGTERM on, refuse new work with 503 while children stop.
        if REGISTRY in app:
            app[REGISTRY].draining = True

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.extend(worker_contexts(token))
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

"""Serving the worker's app until a signal, then draining it within a deadline.

The first SIGTERM (or SIGINT) starts the drain: the steps of :data:`DRAIN_STEPS`
run in that order, each cut off when its share of ``DRAIN_TIMEOUT`` is spent,
then the HTTP server closes and the app's cleanup runs. A second signal, or the
deadline, forces the exit: every process under the worker is killed and the
worker exits with :data:`EXIT_FORCED`. Nothing accepted is lost either way:
an outgoing message is in the outbox before it is answered, and what could not
be sent is sent by the next start.

Other parts of the worker hook in by name::

    app[DRAIN_PLAN].register("flush_events", backend.flush)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psutil
from aiohttp import web

from common.closing import CloseFailed
from supervisor.api.keys import REGISTRY
from supervisor.config import Settings

log = logging.getLogger("supervisor.drain")

# The drain, in order. Each name is a slot: the worker fills some itself (see install),
# other parts register theirs (backend events, auth-state backups, deregistration).
DRAIN_STEPS = (
    "stop_accepting",  # creates, restarts and sends answer 503 SHUTTING_DOWN from here on
    "finish_sends",  # POST /send calls under way get their answer
    "flush_events",  # the backend event queue, as far as the deadline allows (rest stays queued)
    "backup_auth",  # every session's auth state to object storage
    "stop_sessions",  # session processes: stop request, SIGTERM, SIGKILL
    "deregister",  # tell the backend this worker is gone, so it places the sessions elsewhere
)
# Steps before stop_sessions leave at least this share of the deadline for stopping the processes.
STOP_SHARE = 0.4
EXIT_FORCED = 3
HTTP_SHUTDOWN_TIMEOUT = 3.0  # what is still open after the drain gets this long to answer
# The app's cleanup after the steps (closing the hub, the router, the store) gets this share of the deadline.
CLEANUP_SHARE = 0.15

DrainStep = Callable[[], Awaitable[None]]


class ListenError(RuntimeError):
    """The API's address cannot be bound; the message names it."""


@dataclass(slots=True)
class DrainPlan:
    """The ordered, named drain steps of one worker."""

    steps: dict[str, list[DrainStep]] = field(default_factory=lambda: {name: [] for name in DRAIN_STEPS})
    ran: list[str] = field(default_factory=list)  # names of the steps that ran, in order (for tests and logs)

    def register(self, name: str, step: DrainStep) -> None:
        """Run ``step`` in the drain slot ``name`` (one of DRAIN_STEPS), after the ones registered before."""
        if name not in self.steps:
            raise ValueError(f"unknown drain step {name!r}: use one of {', '.join(DRAIN_STEPS)}")
        self.steps[name].append(step)

    async def run(self, deadline: float) -> None:
        """Run every registered step in order; a step that fails or overruns is logged and the drain goes on."""
        started = time.monotonic()
        stop_reserve = (deadline - started) * STOP_SHARE
        stopping_from = DRAIN_STEPS.index("stop_sessions")
        for index, name in enumerate(DRAIN_STEPS):
            cutoff = deadline if index >= stopping_from else deadline - stop_reserve
            for step in self.steps[name]:
                remaining = cutoff - time.monotonic()
                try:
                    async with asyncio.timeout(max(remaining, 0.01)):
                        await step()
                except TimeoutError:
                    log.warning("drain step %s cut off after %.1fs", name, time.monotonic() - started)
                except CloseFailed as exc:  # each of its failures was logged where it happened
                    log.warning("drain step %s: %s; draining on", name, exc)
                except Exception:
                    log.exception("drain step %s failed; draining on", name)
            if self.steps[name]:
                self.ran.append(name)
                log.info("drain: %s done (%.1fs)", name, time.monotonic() - started)


DRAIN_PLAN = web.AppKey("drain_plan", DrainPlan)


def install(app: web.Application, settings: Settings) -> DrainPlan:
    """Give ``app`` a drain plan with the worker's own steps; returns it for others to register theirs."""
    plan = DrainPlan()

    async def stop_accepting() -> None:
        if REGISTRY in app:
            app[REGISTRY].draining = True

    async def finish_sends() -> None:
        if REGISTRY not in app:
            return
        registry = app[REGISTRY]
        pending = registry.sends_in_flight.count
        if pending:
            log.info("drain: waiting for %d sends under way", pending)
        # A send answers within SEND_TIMEOUT (then 202 pending, the message kept in the outbox).
        if not await registry.sends_in_flight.wait_idle(settings.send_timeout + 1.0):
            log.warning("drain: %d sends still under way", registry.sends_in_flight.count)

    async def stop_sessions() -> None:
        if REGISTRY in app:
            await app[REGISTRY].shutdown()

    plan.register("stop_accepting", stop_accepting)
    plan.register("finish_sends", finish_sends)
    plan.register("stop_sessions", stop_sessions)
    app[DRAIN_PLAN] = plan
    return plan


def force_exit(reason: str) -> None:
    """Kill every process under the worker and exit at once (second signal, or the deadline passed)."""
    log.error("forced exit: %s", reason)
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass  # already gone
    psutil.wait_procs(children, timeout=2)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_FORCED)


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve ``app`` on HOST:PORT until SIGTERM/SIGINT, then drain it (see the module docstring)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0
    deadline = 0.0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen, deadline
        signals_seen += 1
        if signals_seen > 1:
            force_exit(f"second {sig.name} during the drain")
            return
        log.info("%s: draining (deadline %.0fs; another signal forces the exit)", sig.name, settings.drain_timeout)
        deadline = time.monotonic() + settings.drain_timeout * (1 - CLEANUP_SHARE)
        loop.call_later(settings.drain_timeout, force_exit, f"drain deadline of {settings.drain_timeout:.0f}s passed")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    plan = app.get(DRAIN_PLAN) or install(app, settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
    try:
        await runner.setup()
        if not stop.is_set():
            site = web.TCPSite(runner, settings.host, settings.port)
            try:
                await site.start()
            except OSError as exc:
                raise ListenError(f"HOST={settings.host} PORT={settings.port}: {exc.strerror}") from None
        await stop.wait()
        await plan.run(deadline)
    finally:
        # Closes the listening socket, lets open requests answer, then runs the app's cleanup.
        await runner.cleanup()
    log.info("drained")

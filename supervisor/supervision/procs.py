"""Spawning and watching child processes, driven by the pure restart policy.

A :class:`ChildProcess` owns one child slot: it feeds the policy with what
happens (spawned, ready, exited, hung, ticks of the clock) and carries out the
actions the policy returns (spawn, ask to stop, SIGTERM, SIGKILL). Waiting on
the child itself is the authority on its death; heartbeats only catch hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from common.tasks import cancel_and_wait
from supervisor.supervision.child_env import child_env
from supervisor.supervision.policy import (
    Event,
    Exited,
    ExitInfo,
    Hung,
    Kill,
    OverMemory,
    ProcRecord,
    Ready,
    RequestStop,
    Restart,
    RestartPolicy,
    Spawn,
    Spawned,
    Start,
    Stop,
    Terminate,
    Tick,
    next_deadline,
    transition,
)
from supervisor.supervision.spawner import ProcessHandle, Spawner, exec_spawn
from supervisor.supervision.states import ProcState

log = logging.getLogger("supervisor.supervision.procs")

# Exits kept per child for operators (GET /session/{id}/process, /sessions lastExit).
EXIT_HISTORY = 20
SETTLED = frozenset({ProcState.STOPPED, ProcState.EXITED, ProcState.FATAL})


@dataclass(frozen=True, slots=True)
class _Incarnated:
    """A process event tagged with the incarnation it is about, so stale ones are dropped."""

    incarnation: int
    event: Event


TransitionListener = Callable[["ChildProcess", ProcRecord, ProcRecord], None]


class ChildProcess:
    """One supervised child slot (a session process or the sim hub)."""

    def __init__(
        self,
        name: str,
        policy: RestartPolicy,
        *,
        log_extra: dict[str, str] | None = None,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.record = ProcRecord(state_since=time.time())
        self.incarnation = 0
        self.proc: ProcessHandle | None = None
        self.exits: deque[ExitInfo] = deque(maxlen=EXIT_HISTORY)
        self._log_extra = log_extra or {}
        self._on_transition = on_transition
        self._events: asyncio.Queue[_Incarnated | Event] = asyncio.Queue()
        self._settled = asyncio.Event()
        self._settled.set()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what subclasses provide ---------------------------------------------
    def argv(self, incarnation: int) -> list[str]:
        raise NotImplementedError

    def env(self, incarnation: int) -> dict[str, str]:
        return child_env()

    async def on_spawned(self, proc: ProcessHandle, incarnation: int) -> None:
        """Hook: the child exists (read its stdout, register its identity...)."""

    def on_exited(self, incarnation: int) -> None:
        """Hook: the child of ``incarnation`` is gone."""

    def request_stop(self) -> None:
        """Ask the child nicely to stop; default: SIGTERM."""
        self._signal(signal.SIGTERM)

    # -- commands ---------------------------------------------------------------
    def start(self) -> None:
        self._post(Start(now=time.time()))

    def restart(self) -> None:
        self._post(Restart(now=time.time()))

    def stop(self) -> None:
        self._post(Stop(now=time.time()))

    def ready(self, incarnation: int) -> None:
        """The child of ``incarnation`` said it is ready."""
        self._post(_Incarnated(incarnation, Ready(now=time.time())))

    def hung(self, incarnation: int, silence: float) -> None:
        """The child of ``incarnation`` missed its heartbeats."""
        self._post(_Incarnated(incarnation, Hung(now=time.time(), silence=silence)))

    def over_memory(self, incarnation: int, rss: int, limit: int) -> None:
        """The child of ``incarnation`` holds more resident memory than ``limit`` (bytes)."""
        self._post(_Incarnated(incarnation, OverMemory(now=time.time(), rss=rss, limit=limit)))

    async def wait_settled(self) -> None:
        """Until the child is STOPPED, EXITED or FATAL with no process left."""
        await self._settled.wait()

    @property
    def state(self) -> ProcState:
        return self.record.state

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def kill_now(self) -> None:
        """Last resort at shutdown: SIGKILL without asking the policy."""
        self._signal(signal.SIGKILL)

    async def close(self) -> None:
        """Stop the policy loop (the child must already be settled or killed)."""
        await cancel_and_wait(self._runner, *self._tasks)

    # -- the policy loop ----------------------------------------------------------
    def _post(self, item: _Incarnated | Event) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"child-{self.name}")
        self._events.put_nowait(item)

    async def _run(self) -> None:
        while True:
            deadline = next_deadline(self.record)
            try:
                if deadline is None:
                    item = await self._events.get()
                else:
                    async with asyncio.timeout(max(0.0, deadline - time.time())):
                        item = await self._events.get()
            except TimeoutError:
                item = Tick(now=time.time())
            if isinstance(item, _Incarnated):
                if item.incarnation != self.incarnation:
                    log.debug("%s: dropped %s of incarnation %d", self.name, item.event, item.incarnation)
                    continue
                item = item.event
            try:
                self._apply(item)
            except Exception:
                # A bug in one child's handling must not kill the loop that restarts it.
                log.exception("%s: failed to apply %s", self.name, type(item).__name__, extra=self._log_extra)

    def _apply(self, event: Event) -> None:
        before = self.record
        result = transition(before, event, self.policy)
        self.record = result.record
        for line in result.log:
            log.info("%s: %s", self.name, line, extra=self._log_extra)
        if isinstance(event, Exited) and result.record.last_exit is not before.last_exit:
            if result.record.last_exit is not None:
                self.exits.append(result.record.last_exit)
        for action in result.actions:
            self._act(action)
        if self.record.state in SETTLED and self.pid is None:
            self._settled.set()
        else:
            self._settled.clear()
        if self._on_transition is not None and before != self.record:
            try:
                self._on_transition(self, before, self.record)
            except Exception:
                log.exception("%s: transition listener failed", self.name, extra=self._log_extra)

    def _act(self, action: object) -> None:
        if isinstance(action, Spawn):
            self.incarnation += 1
            self._settled.clear()
            self._spawn_task(self._spawn(self.incarnation))
        elif isinstance(action, RequestStop):
            self.request_stop()
        elif isinstance(action, Terminate):
            self._signal(signal.SIGTERM)
        elif isinstance(action, Kill):
            log.warning("%s: killing pid %s: %s", self.name, self.pid, action.reason, extra=self._log_extra)
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, incarnation: int) -> None:
        try:
            proc: ProcessHandle
            if self.spawner is None:
                proc = await exec_spawn(self.argv(incarnation), self.env(incarnation), stdout=self.wants_stdout)
            else:
                proc = await self.spawner.spawn(self.argv(incarnation), self.env(incarnation))
        except OSError as exc:
            log.error("%s: cannot spawn: %s", self.name, exc, extra=self._log_extra)
            self._post(_Incarnated(incarnation, Exited(now=time.time(), code=127, signal=None, jitter=random.random())))
            return
        self.proc = proc
        self._post(_Incarnated(incarnation, Spawned(now=time.time(), pid=proc.pid)))
        try:
            await self.on_spawned(proc, incarnation)
        except Exception:
            log.exception("%s: on_spawned failed", self.name, extra=self._log_extra)
        rc = await proc.wait()
        self.on_exited(incarnation)
        code, sig = (None, -rc) if rc < 0 else (rc, None)
        self._post(_Incarnated(incarnation, Exited(now=time.time(), code=code, signal=sig, jitter=random.random())))

    wants_stdout = False
    # None: exec a new program per child (the default); else e.g. the zygote forks it
    # (supervisor/supervision/spawner.py).
    spawner: Spawner | None = None

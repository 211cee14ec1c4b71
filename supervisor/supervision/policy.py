"""The restart policy of one child process, as a pure transition function.

``transition(record, event, policy)`` returns the next record, the actions the
caller must carry out (spawn, ask to stop, SIGTERM, SIGKILL) and log lines. It
does no I/O and reads no clock or random source: every event carries ``now``,
and an exit carries the jitter sample for the backoff delay.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from supervisor.supervision.states import ProcState


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Tunables of the restart policy (OTP "transient" restarts, counted per child)."""

    # delay before the first restart after a crash, in seconds
    backoff_initial: float = 0.1
    # upper bound of the restart delay, jitter included, in seconds
    backoff_max: float = 30.0
    # growth of the delay per consecutive crash
    backoff_factor: float = 2.0
    # +/- fraction of the delay drawn at random, so crashed children do not restart in lockstep
    jitter: float = 0.2
    # READY plus this long up => RUNNING (supervisord startsecs)
    start_secs: float = 1.0
    # a run at least this long (since RUNNING) resets the backoff
    stable_secs: float = 10.0
    # more than `intensity` restarts within `period` => FATAL
    intensity: int = 5
    # the sliding window of the restart intensity, in seconds
    period: float = 60.0
    # no READY within this after spawn => killed ("start timeout"), counts as a crash
    start_timeout: float = 20.0
    # after a stop request, SIGTERM
    stop_timeout: float = 5.0
    # after SIGTERM, SIGKILL
    term_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """One exit of a child, as operators see it."""

    at: float
    reason: str  # "exit code 1", "killed by SIGKILL", "heartbeat timeout", ...
    code: int | None
    signal: int | None
    crashed: bool  # False for a clean exit and for any exit during a requested stop


@dataclass(frozen=True, slots=True)
class ProcRecord:
    """Everything the policy knows about one child slot."""

    state: ProcState = ProcState.STOPPED
    pid: int | None = None
    spawned_at: float | None = None
    ready_at: float | None = None
    running_since: float | None = None
    restarts: int = 0  # restarts after crashes, ever (shown to operators)
    attempt: int = 0  # consecutive crashes; drives the backoff delay
    recent: tuple[float, ...] = ()  # times of restarts within `period` (intensity window)
    next_start_at: float | None = None
    deadline: float | None = None  # start timeout or current stop phase's timeout
    stop_phase: str | None = None  # "request" | "term" | "kill"
    restart_after_stop: bool = False
    kill_reason: str | None = None  # why WE killed it ("heartbeat timeout", "start timeout"); the exit reason
    last_exit: ExitInfo | None = None
    fatal_reason: str | None = None
    state_since: float = 0.0


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Operator/API start."""

    now: float


@dataclass(frozen=True, slots=True)
class Restart:
    """API restart: stop the running child, then start it again (not a crash)."""

    now: float


@dataclass(frozen=True, slots=True)
class Spawned:
    """The child process exists."""

    now: float
    pid: int


@dataclass(frozen=True, slots=True)
class Ready:
    """The child said READY."""

    now: float


@dataclass(frozen=True, slots=True)
class Exited:
    """The child process is gone (the authority on its death)."""

    now: float
    code: int | None
    signal: int | None
    jitter: float  # in [0, 1), drawn by the caller for the backoff delay


@dataclass(frozen=True, slots=True)
class Hung:
    """The child missed its heartbeats for `silence` seconds."""

    now: float
    silence: float


@dataclass(frozen=True, slots=True)
class OverMemory:
    """The child's resident memory passed its limit (bytes, both)."""

    now: float
    rss: int
    limit: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Graceful stop: request, then SIGTERM, then SIGKILL."""

    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: fire whatever deadline is due."""

    now: float


Event: TypeAlias = Start | Restart | Spawned | Ready | Exited | Hung | OverMemory | Stop | Tick


# -- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start a new child process."""


@dataclass(frozen=True, slots=True)
class RequestStop:
    """Ask the child over the channel to stop."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """Send SIGTERM."""


@dataclass(frozen=True, slots=True)
class Kill:
    """Send SIGKILL."""

    reason: str


Action: TypeAlias = Spawn | RequestStop | Terminate | Kill


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one event: the new record, what to do, what to log."""

    record: ProcRecord
    actions: tuple[Action, ...] = ()
    log: tuple[str, ...] = ()


# -- the policy --------------------------------------------------------------------------------------

# Fields that describe one run of a child; cleared whenever that run is over.
_RUN_CLEARED: dict[str, Any] = {
    "pid": None,
    "spawned_at": None,
    "ready_at": None,
    "running_since": None,
    "deadline": None,
    "stop_phase": None,
    "kill_reason": None,
    "restart_after_stop": False,
}


def backoff_delay(attempt: int, policy: RestartPolicy, jitter: float) -> float:
    """Delay before restart number ``attempt`` (0-based) of a crash streak; ``jitter`` in [0, 1)."""
    try:
        base = min(policy.backoff_max, policy.backoff_initial * policy.backoff_factor ** max(attempt, 0))
    except OverflowError:  # a long streak: factor**attempt no longer fits a float
        base = policy.backoff_max
    delay = base * (1.0 + policy.jitter * (2.0 * jitter - 1.0))
    return min(policy.backoff_max, max(0.0, delay))


def next_deadline(rec: ProcRecord) -> float | None:
    """When the caller must deliver the next Tick (None: nothing pending)."""
    if rec.state is ProcState.BACKOFF:
        return rec.next_start_at
    if rec.state in (ProcState.STARTING, ProcState.STOPPING):
        return rec.deadline
    return None


def exit_reason(code: int | None, sig: int | None) -> str:
    """How a process ended, in words: "killed by SIGKILL", "exit code 1"."""
    if sig is not None:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    if code is not None:
        return f"exit code {code}"
    return "exited with unknown status"


def transition(rec: ProcRecord, event: Event, policy: RestartPolicy) -> Transition:
    """Apply ``event`` to ``rec``; an event that does not apply returns ``rec`` unchanged and says so."""
    if isinstance(event, Start):
        return _on_start(rec, event, policy, verb="start")
    if isinstance(event, Restart):
        return _on_restart(rec, event, policy)
    if isinstance(event, Spawned):
        return _on_spawned(rec, event, policy)
    if isinstance(event, Ready):
        return _on_ready(rec, event, policy)
    if isinstance(event, Exited):
        return _on_exited(rec, event, policy)
    if isinstance(event, Hung):
        return _on_hung(rec, event)
    if isinstance(event, OverMemory):
        return _on_over_memory(rec, event)
    if isinstance(event, Stop):
        return _on_stop(rec, event, policy)
    return _on_tick(rec, event, policy)


def _to(rec: ProcRecord, state: ProcState, now: float, **changes: Any) -> ProcRecord:
    """``rec`` moved to ``state`` at ``now``."""
    return replace(rec, state=state, state_since=now, **changes)


def _ignored(rec: ProcRecord, what: str) -> Transition:
    return Transition(rec, (), (f"{what} ignored in {rec.state}",))


def _pid(rec: ProcRecord) -> str:
    return f"pid {rec.pid}" if rec.pid is not None else "the child (no pid yet)"


def _window(rec: ProcRecord, now: float, policy: RestartPolicy) -> tuple[float, ...]:
    """Restart times still inside the intensity window at ``now``."""
    return tuple(t for t in rec.recent if now - t < policy.period)


def _spawn(rec: ProcRecord, now: float, **changes: Any) -> ProcRecord:
    """``rec`` moved to STARTING for a new run (the caller emits Spawn)."""
    fields = {**_RUN_CLEARED, "next_start_at": None, "fatal_reason": None, **changes}
    return _to(rec, ProcState.STARTING, now, **fields)


def _on_start(rec: ProcRecord, event: Start | Restart, policy: RestartPolicy, *, verb: str) -> Transition:
    leaving = rec.state
    if leaving not in (ProcState.STOPPED, ProcState.EXITED, ProcState.FATAL, ProcState.BACKOFF):
        return _ignored(rec, verb)
    if leaving is ProcState.FATAL:
        # A manual start after FATAL gets a fresh restart budget.
        new = _spawn(rec, event.now, attempt=0, recent=())
        budget = f"0/{policy.intensity} in {policy.period:g}s"
        line = f"{verb}: {leaving} -> starting (restart budget reset: {budget})"
    else:
        new = _spawn(rec, event.now)
        line = f"{verb}: {leaving} -> starting"
        if leaving is ProcState.BACKOFF:
            line += " (pending restart cancelled)"
    return Transition(new, (Spawn(),), (line,))


def _on_restart(rec: ProcRecord, event: Restart, policy: RestartPolicy) -> Transition:
    if rec.state in (ProcState.STARTING, ProcState.RUNNING):
        new = _to(
            rec,
            ProcState.STOPPING,
            event.now,
            stop_phase="request",
            deadline=event.now + policy.stop_timeout,
            restart_after_stop=True,
        )
        then = f"(SIGTERM in {policy.stop_timeout:g}s), then starting again"
        line = f"restart: asking {_pid(rec)} to stop {then}"
        return Transition(new, (RequestStop(),), (line,))
    return _on_start(rec, event, policy, verb="restart")


def _on_spawned(rec: ProcRecord, event: Spawned, policy: RestartPolicy) -> Transition:
    if rec.state is ProcState.STARTING and rec.pid is None:
        # The start timeout runs from the spawn; a READY that came first already set its own deadline.
        deadline = event.now + policy.start_timeout if rec.ready_at is None else rec.deadline
        new = replace(rec, pid=event.pid, spawned_at=event.now, deadline=deadline)
        line = f"spawned pid {event.pid} (READY expected within {policy.start_timeout:g}s)"
        return Transition(new, (), (line,))
    if rec.state is ProcState.STOPPING and rec.pid is None:
        # Stopped before the spawn finished: remember the pid; the stop phases will end it.
        new = replace(rec, pid=event.pid, spawned_at=event.now)
        return Transition(new, (), (f"spawned pid {event.pid} while stopping",))
    return _ignored(rec, f"spawned pid {event.pid}")


def _on_ready(rec: ProcRecord, event: Ready, policy: RestartPolicy) -> Transition:
    if rec.state is not ProcState.STARTING or rec.ready_at is not None or rec.kill_reason is not None:
        return _ignored(rec, "ready")
    since = f" {event.now - rec.spawned_at:.2f}s after spawn" if rec.spawned_at is not None else ""
    if policy.start_secs <= 0:
        now = event.now
        new = _to(rec, ProcState.RUNNING, now, ready_at=now, running_since=now, deadline=None)
        return Transition(new, (), (f"ready{since}: running ({_pid(rec)})",))
    new = replace(rec, ready_at=event.now, deadline=event.now + policy.start_secs)
    return Transition(new, (), (f"ready{since}: running if still up in {policy.start_secs:g}s",))


def _on_hung(rec: ProcRecord, event: Hung) -> Transition:
    watched = rec.state is ProcState.RUNNING or (rec.state is ProcState.STARTING and rec.ready_at is not None)
    if not watched or rec.kill_reason is not None:
        return _ignored(rec, f"hang ({event.silence:.1f}s without heartbeat)")
    reason = "heartbeat timeout"
    # No deadline while being killed: a hung child must not be promoted to RUNNING meanwhile.
    new = replace(rec, kill_reason=reason, deadline=None)
    line = f"{reason}: no heartbeat for {event.silence:.1f}s; killing {_pid(rec)}"
    return Transition(new, (Kill(reason),), (line,))


def _on_over_memory(rec: ProcRecord, event: OverMemory) -> Transition:
    mib = f"{event.rss / 2**20:.0f} MiB resident, over the limit of {event.limit / 2**20:.0f} MiB"
    if rec.state not in (ProcState.STARTING, ProcState.RUNNING) or rec.kill_reason is not None:
        return _ignored(rec, mib)
    reason = "memory limit"
    # Killed and restarted like a crash: one leaking session must not get the whole pod OOM-killed.
    new = replace(rec, kill_reason=reason, deadline=None)
    return Transition(new, (Kill(reason),), (f"{reason}: {mib}; killing {_pid(rec)}",))


def _on_stop(rec: ProcRecord, event: Stop, policy: RestartPolicy) -> Transition:
    if rec.state in (ProcState.STARTING, ProcState.RUNNING):
        new = _to(
            rec,
            ProcState.STOPPING,
            event.now,
            stop_phase="request",
            deadline=event.now + policy.stop_timeout,
            restart_after_stop=False,
        )
        line = f"stop: asking {_pid(rec)} to stop (SIGTERM in {policy.stop_timeout:g}s)"
        return Transition(new, (RequestStop(),), (line,))
    if rec.state is ProcState.BACKOFF:
        new = _to(rec, ProcState.STOPPED, event.now, next_start_at=None)
        line = f"stop: backoff -> stopped (pending restart cancelled, attempt {rec.attempt})"
        return Transition(new, (), (line,))
    if rec.state is ProcState.STOPPING and rec.restart_after_stop:
        # A stop after a restart request wins: the child stays down once it is gone.
        new = replace(rec, restart_after_stop=False)
        return Transition(new, (), ("stop: already stopping; the pending start again is cancelled",))
    return _ignored(rec, "stop")


def _on_tick(rec: ProcRecord, event: Tick, policy: RestartPolicy) -> Transition:
    # A Tick with nothing due is the normal case of a clock, not a misplaced event: it logs nothing.
    now = event.now
    due = next_deadline(rec)
    if due is None or now < due:
        return Transition(rec)
    if rec.state is ProcState.BACKOFF:
        recent = (*_window(rec, now, policy), now)
        restarts = rec.restarts + 1
        new = _spawn(rec, now, restarts=restarts, recent=recent)
        line = (
            f"restarting (restart {restarts}, attempt {rec.attempt}, "
            f"{len(recent)}/{policy.intensity} in {policy.period:g}s)"
        )
        return Transition(new, (Spawn(),), (line,))
    if rec.state is ProcState.STARTING:
        if rec.kill_reason is not None:  # being killed: wait for the exit
            return Transition(rec)
        if rec.ready_at is None:
            reason = "start timeout"
            new = replace(rec, kill_reason=reason, deadline=None)
            line = f"{reason}: no READY within {policy.start_timeout:g}s of spawn; killing {_pid(rec)}"
            return Transition(new, (Kill(reason),), (line,))
        new = _to(rec, ProcState.RUNNING, now, running_since=now, deadline=None)
        return Transition(new, (), (f"running ({_pid(rec)}, up {now - rec.ready_at:.2f}s since READY)",))
    # STOPPING: escalate one phase.
    if rec.stop_phase == "request":
        new = replace(rec, stop_phase="term", deadline=now + policy.term_timeout)
        line = f"stop timeout: SIGTERM to {_pid(rec)} (SIGKILL in {policy.term_timeout:g}s)"
        return Transition(new, (Terminate(),), (line,))
    reason = "stop timeout"
    new = replace(rec, stop_phase="kill", deadline=None, kill_reason=rec.kill_reason or reason)
    return Transition(new, (Kill(reason),), (f"{reason}: SIGKILL to {_pid(rec)}",))


def _on_exited(rec: ProcRecord, event: Exited, policy: RestartPolicy) -> Transition:
    now = event.now
    status = exit_reason(event.code, event.signal)
    if rec.state is ProcState.STOPPING:
        reason = rec.kill_reason or status
        info = ExitInfo(at=now, reason=reason, code=event.code, signal=event.signal, crashed=False)
        if rec.restart_after_stop:
            new = _spawn(rec, now, last_exit=info)
            return Transition(new, (Spawn(),), (f"stopped ({_pid(rec)}, {reason}); starting again",))
        new = _to(rec, ProcState.STOPPED, now, last_exit=info, **_RUN_CLEARED)
        return Transition(new, (), (f"stopped ({_pid(rec)}, {reason})",))
    if rec.state not in (ProcState.STARTING, ProcState.RUNNING):
        return _ignored(rec, f"exit ({status})")

    up = f", up {now - rec.spawned_at:.2f}s" if rec.spawned_at is not None else ""
    if event.code == 0 and event.signal is None and rec.kill_reason is None:
        # "transient": a clean exit (logout, replaced, deleted) is final.
        info = ExitInfo(at=now, reason=status, code=0, signal=None, crashed=False)
        new = _to(rec, ProcState.EXITED, now, last_exit=info, **_RUN_CLEARED)
        return Transition(new, (), (f"exited cleanly ({_pid(rec)}, {status}{up}): not restarted",))

    reason = rec.kill_reason or status
    info = ExitInfo(at=now, reason=reason, code=event.code, signal=event.signal, crashed=True)
    lines = [f"crashed: {reason} ({_pid(rec)}{up})"]
    attempt = rec.attempt
    if rec.running_since is not None and now - rec.running_since >= policy.stable_secs:
        lines.append(
            f"run was stable ({now - rec.running_since:.1f}s >= {policy.stable_secs:g}s): "
            f"backoff reset (attempt {attempt} -> 0)"
        )
        attempt = 0
    recent = _window(rec, now, policy)
    if len(recent) >= policy.intensity:
        fatal = f"crashed {len(recent) + 1} times in {policy.period:g}s; last: {reason}"
        new = _to(
            rec,
            ProcState.FATAL,
            now,
            last_exit=info,
            attempt=attempt,
            recent=recent,
            next_start_at=None,
            fatal_reason=fatal,
            **_RUN_CLEARED,
        )
        lines.append(f"giving up: {fatal} (restart intensity {policy.intensity} in {policy.period:g}s)")
        return Transition(new, (), tuple(lines))
    delay = backoff_delay(attempt, policy, event.jitter)
    new = _to(
        rec,
        ProcState.BACKOFF,
        now,
        last_exit=info,
        attempt=attempt + 1,
        recent=recent,
        next_start_at=now + delay,
        **_RUN_CLEARED,
    )
    lines.append(
        f"restarting in {delay:.2f}s (attempt {attempt + 1}, "
        f"{len(recent) + 1}/{policy.intensity} in {policy.period:g}s)"
    )
    return Transition(new, (), tuple(lines))

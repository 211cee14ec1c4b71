"""The restart policy driven by a fake clock: events in; states, counters, actions and log lines out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from supervisor.supervision.policy import (
    Action,
    Event,
    Exited,
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
    Transition,
    backoff_delay,
    exit_reason,
    next_deadline,
    transition,
)
from supervisor.supervision.states import ProcState

# The tests spell out the delays of a 0.25 s first backoff.
POLICY = RestartPolicy(backoff_initial=0.25)
NO_JITTER = 0.5  # the jitter sample that leaves the delay as it is
SIGKILL = 9
SIGTERM = 15
PID = 100


@dataclass
class Run:
    """What a sequence of events did: the final record, and every action and log line in order."""

    record: ProcRecord
    actions: list[Action] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def feed(rec: ProcRecord, events: Iterable[Event], policy: RestartPolicy = POLICY) -> Run:
    run = Run(rec)
    for event in events:
        result = transition(run.record, event, policy)
        run.record = result.record
        run.actions.extend(result.actions)
        run.log.extend(result.log)
    return run


def step(rec: ProcRecord, event: Event, policy: RestartPolicy = POLICY) -> Transition:
    return transition(rec, event, policy)


def crash(now: float, *, code: int | None = 1, sig: int | None = None, jitter: float = NO_JITTER) -> Exited:
    return Exited(now=now, code=code, signal=sig, jitter=jitter)


# -- records in each state, reached through events ------------------------------------------------


def stopped() -> ProcRecord:
    return ProcRecord()


def starting() -> ProcRecord:
    """Spawned at t=0, no READY yet."""
    return feed(ProcRecord(), [Start(0.0), Spawned(0.0, PID)]).record


def starting_ready() -> ProcRecord:
    """READY at t=0.5, not RUNNING before t=1.5."""
    return feed(starting(), [Ready(0.5)]).record


def running() -> ProcRecord:
    """RUNNING since t=1.5."""
    return feed(starting_ready(), [Tick(1.5)]).record


def backoff() -> ProcRecord:
    """Crashed at t=5, restart due at t=5.25."""
    return feed(running(), [crash(5.0)]).record


def stopping() -> ProcRecord:
    """Stop requested at t=5."""
    return feed(running(), [Stop(5.0)]).record


def exited() -> ProcRecord:
    return feed(running(), [crash(5.0, code=0)]).record


def fatal() -> ProcRecord:
    """Crashed every 0.1 s of runtime until the intensity (5 in 60 s) was spent."""
    return crash_loop(running(), crashes=6, start=5.0).record


def crash_loop(
    rec: ProcRecord,
    *,
    crashes: int,
    start: float,
    gap: float = 0.1,
    policy: RestartPolicy = POLICY,
) -> Run:
    """Crash ``crashes`` times: each crash at ``gap`` s after the restart before it (restarts on time)."""
    run = Run(rec)
    now = start
    for i in range(crashes):
        more = feed(run.record, [crash(now)], policy)
        run.record = more.record
        run.actions += more.actions
        run.log += more.log
        if run.record.state is not ProcState.BACKOFF or i == crashes - 1:
            break
        assert run.record.next_start_at is not None
        now = run.record.next_start_at
        more = feed(run.record, [Tick(now), Spawned(now, PID + i + 1)], policy)
        run.record = more.record
        run.actions += more.actions
        run.log += more.log
        now += gap
    return run


# -- happy start -------------------------------------------------------------------------------------


def test_happy_start_is_running_only_after_start_secs() -> None:
    t = step(ProcRecord(), Start(0.0))
    assert t.record.state is ProcState.STARTING
    assert t.actions == (Spawn(),)
    assert t.log == ("start: stopped -> starting",)
    assert next_deadline(t.record) is None  # nothing to time before the child exists

    t = step(t.record, Spawned(0.1, PID))
    assert (t.record.state, t.record.pid, t.record.spawned_at) == (ProcState.STARTING, PID, 0.1)
    assert next_deadline(t.record) == pytest.approx(20.1)
    assert t.log == ("spawned pid 100 (READY expected within 20s)",)

    t = step(t.record, Ready(0.6))
    assert t.record.state is ProcState.STARTING
    assert t.record.ready_at == 0.6
    assert next_deadline(t.record) == pytest.approx(1.6)
    assert t.log == ("ready 0.50s after spawn: running if still up in 1s",)

    early = step(t.record, Tick(1.5))
    assert early == Transition(t.record)  # nothing due: unchanged, silent

    t = step(t.record, Tick(1.6))
    assert t.record.state is ProcState.RUNNING
    assert t.record.running_since == 1.6
    assert t.record.state_since == 1.6
    assert t.actions == ()
    assert t.log == ("running (pid 100, up 1.00s since READY)",)
    assert next_deadline(t.record) is None
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (0, 0, ())


def test_start_secs_zero_means_running_at_ready() -> None:
    policy = RestartPolicy(backoff_initial=0.25, start_secs=0.0)
    run = feed(ProcRecord(), [Start(0.0), Spawned(0.0, PID), Ready(0.3)], policy)
    assert run.record.state is ProcState.RUNNING
    assert run.record.running_since == 0.3


def test_state_since_changes_only_with_the_state() -> None:
    rec = feed(ProcRecord(), [Start(2.0), Spawned(2.5, PID), Ready(3.0)]).record
    assert rec.state_since == 2.0


# -- start timeout ---------------------------------------------------------------------------------


def test_start_timeout_kills_and_counts_as_a_crash() -> None:
    rec = starting()
    assert step(rec, Tick(19.9)) == Transition(rec)

    t = step(rec, Tick(20.0))
    assert t.actions == (Kill("start timeout"),)
    assert t.log == ("start timeout: no READY within 20s of spawn; killing pid 100",)
    assert t.record.state is ProcState.STARTING  # the exit is the authority on death
    assert t.record.kill_reason == "start timeout"
    assert next_deadline(t.record) is None

    # A READY that arrives after the kill changes nothing.
    late = step(t.record, Ready(20.01))
    assert late.record == t.record

    t = step(t.record, crash(20.05, code=None, sig=SIGKILL))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.last_exit is not None
    assert t.record.last_exit.reason == "start timeout"
    assert (t.record.last_exit.code, t.record.last_exit.signal, t.record.last_exit.crashed) == (None, 9, True)
    assert t.record.next_start_at == pytest.approx(20.3)
    assert t.record.kill_reason is None and t.record.pid is None
    assert t.log == (
        "crashed: start timeout (pid 100, up 20.05s)",
        "restarting in 0.25s (attempt 1, 1/5 in 60s)",
    )


def test_spawn_failure_is_a_crash() -> None:
    rec = step(ProcRecord(), Start(0.0)).record
    t = step(rec, crash(0.01, code=127))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.last_exit is not None and t.record.last_exit.reason == "exit code 127"
    assert t.log[0] == "crashed: exit code 127 (the child (no pid yet))"


# -- backoff -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (0, 0.25),
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 8.0),
        (6, 16.0),
        (7, 30.0),
        (8, 30.0),
        (5000, 30.0),
    ],
)
def test_backoff_delay_doubles_up_to_the_cap(attempt: int, delay: float) -> None:
    assert backoff_delay(attempt, POLICY, NO_JITTER) == pytest.approx(delay)


def test_crash_loop_delays_grow_and_cap_at_backoff_max() -> None:
    policy = RestartPolicy(backoff_initial=0.25, intensity=1000)
    run = crash_loop(running(), crashes=10, start=5.0, policy=policy)
    delays = [float(line.split()[2].rstrip("s")) for line in run.log if line.startswith("restarting in")]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert run.record.state is ProcState.BACKOFF
    assert run.record.attempt == 10
    assert run.record.restarts == 9
    assert run.actions == [Spawn()] * 9


@pytest.mark.parametrize("attempt", [0, 1, 3, 6, 7, 20])
@pytest.mark.parametrize("sample", [0.0, 0.1, 0.5, 0.9, 0.999999])
def test_jitter_stays_within_its_fraction_and_the_cap(attempt: int, sample: float) -> None:
    base = min(POLICY.backoff_max, POLICY.backoff_initial * POLICY.backoff_factor**attempt)
    delay = backoff_delay(attempt, POLICY, sample)
    assert base * (1 - POLICY.jitter) - 1e-9 <= delay <= base * (1 + POLICY.jitter) + 1e-9
    assert 0.0 <= delay <= POLICY.backoff_max


@pytest.mark.parametrize(
    ("sample", "delay"),
    [(0.0, 0.2), (0.25, 0.225), (0.5, 0.25), (0.75, 0.275), (1.0, 0.3)],
)
def test_jitter_is_linear_in_the_sample(sample: float, delay: float) -> None:
    assert backoff_delay(0, POLICY, sample) == pytest.approx(delay)


@pytest.mark.parametrize(("jitter_fraction", "sample"), [(2.0, 0.0), (1.0, 0.0), (5.0, 0.999)])
def test_jitter_never_gives_a_negative_or_over_cap_delay(jitter_fraction: float, sample: float) -> None:
    policy = RestartPolicy(backoff_initial=0.25, jitter=jitter_fraction)
    for attempt in range(12):
        assert 0.0 <= backoff_delay(attempt, policy, sample) <= policy.backoff_max


def test_backoff_tick_restarts_and_counts() -> None:
    rec = backoff()
    assert next_deadline(rec) == pytest.approx(5.25)
    assert step(rec, Tick(5.2)) == Transition(rec)

    t = step(rec, Tick(5.25))
    assert t.record.state is ProcState.STARTING
    assert t.actions == (Spawn(),)
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (1, 1, (5.25,))
    assert t.record.next_start_at is None
    assert t.record.state_since == 5.25
    assert t.log == ("restarting (restart 1, attempt 1, 1/5 in 60s)",)


def test_log_lines_carry_the_counters() -> None:
    run = crash_loop(running(), crashes=3, start=5.0)
    assert [line for line in run.log if line.startswith("restart")] == [
        "restarting in 0.25s (attempt 1, 1/5 in 60s)",
        "restarting (restart 1, attempt 1, 1/5 in 60s)",
        "restarting in 0.50s (attempt 2, 2/5 in 60s)",
        "restarting (restart 2, attempt 2, 2/5 in 60s)",
        "restarting in 1.00s (attempt 3, 3/5 in 60s)",
    ]


@pytest.mark.parametrize(
    ("up", "attempt_after", "delay"),
    [
        (10.0, 1, 0.25),  # stable: the streak starts over
        (60.0, 1, 0.25),
        (9.9, 4, 2.0),  # not stable: the streak goes on
    ],
)
def test_stable_run_resets_the_backoff(up: float, attempt_after: int, delay: float) -> None:
    rec = crash_loop(running(), crashes=3, start=5.0).record  # attempt 3, restart due
    assert rec.attempt == 3
    assert rec.next_start_at is not None
    t0 = rec.next_start_at
    rec = feed(rec, [Tick(t0), Spawned(t0, PID), Ready(t0), Tick(t0 + 1.0)]).record
    assert rec.state is ProcState.RUNNING
    crashed_at = t0 + 1.0 + up
    t = step(rec, crash(crashed_at))
    assert t.record.attempt == attempt_after
    assert t.record.next_start_at == pytest.approx(crashed_at + delay)
    stable_line = [line for line in t.log if line.startswith("run was stable")]
    assert bool(stable_line) == (up >= POLICY.stable_secs)


def test_stable_run_counts_from_running_not_from_spawn() -> None:
    # Up 30 s, but READY came late: RUNNING for only 5 s, so the run was not stable.
    rec = crash_loop(running(), crashes=2, start=5.0).record
    assert rec.next_start_at is not None
    t0 = rec.next_start_at
    rec = feed(rec, [Tick(t0), Spawned(t0, PID), Ready(t0 + 19.0), Tick(t0 + 25.0)]).record
    t = step(rec, crash(t0 + 30.0))
    assert t.record.attempt == 3


# -- restart intensity ------------------------------------------------------------------------------------


def test_too_many_crashes_in_the_period_is_fatal() -> None:
    run = crash_loop(running(), crashes=6, start=5.0)
    rec = run.record
    assert rec.state is ProcState.FATAL
    assert rec.fatal_reason == "crashed 6 times in 60s; last: exit code 1"
    assert run.log[-1] == "giving up: crashed 6 times in 60s; last: exit code 1 (restart intensity 5 in 60s)"
    assert rec.restarts == 5
    assert len(rec.recent) == 5
    assert run.actions == [Spawn()] * 5  # no Spawn for the sixth crash
    assert rec.last_exit is not None and rec.last_exit.crashed
    assert rec.pid is None and rec.next_start_at is None
    assert next_deadline(rec) is None
    assert step(rec, Tick(10_000.0)) == Transition(rec)


@pytest.mark.parametrize(("intensity", "period"), [(1, 10.0), (2, 30.0), (3, 60.0)])
def test_intensity_is_per_window(intensity: int, period: float) -> None:
    policy = RestartPolicy(intensity=intensity, period=period, backoff_initial=0.01, backoff_max=0.01)
    run = crash_loop(running(), crashes=intensity + 1, start=5.0, policy=policy)
    assert run.record.state is ProcState.FATAL
    assert run.record.fatal_reason is not None
    assert run.record.fatal_reason.startswith(f"crashed {intensity + 1} times in {period:g}s")


@pytest.mark.parametrize(("intensity", "period", "gap"), [(1, 10.0, 10.0), (2, 30.0, 16.0), (5, 60.0, 12.5)])
def test_crashes_spread_wider_than_the_period_never_go_fatal(
    intensity: int,
    period: float,
    gap: float,
) -> None:
    policy = RestartPolicy(backoff_initial=0.25, intensity=intensity, period=period, stable_secs=1e9, backoff_max=0.01)
    run = crash_loop(running(), crashes=50, start=5.0, gap=gap, policy=policy)
    assert run.record.state is ProcState.BACKOFF
    assert run.record.restarts == 49
    assert len(run.record.recent) <= intensity


def test_window_prunes_old_restarts() -> None:
    rec = crash_loop(running(), crashes=5, start=5.0).record  # 4 restarts in the window, 5th pending
    assert rec.state is ProcState.BACKOFF and len(rec.recent) == 4
    assert rec.next_start_at is not None
    t0 = rec.next_start_at
    rec = feed(rec, [Tick(t0), Spawned(t0, PID)]).record
    assert len(rec.recent) == 5
    # A crash long after the window only sees itself.
    t = step(rec, crash(t0 + 61.0))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.recent == ()
    assert t.log[-1].endswith("1/5 in 60s)")


# -- clean exit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [starting, starting_ready, running], ids=["starting", "ready", "running"])
def test_clean_exit_is_final(make: Callable[[], ProcRecord]) -> None:
    rec = make()
    t = step(rec, crash(7.0, code=0))
    assert t.record.state is ProcState.EXITED
    assert t.actions == ()
    assert t.record.last_exit is not None
    assert (t.record.last_exit.reason, t.record.last_exit.crashed) == ("exit code 0", False)
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (0, 0, ())
    assert t.record.pid is None
    assert t.log == ("exited cleanly (pid 100, exit code 0, up 7.00s): not restarted",)
    assert next_deadline(t.record) is None
    assert feed(t.record, [Tick(100.0)]).actions == []


def test_exit_code_zero_after_we_killed_it_is_a_crash() -> None:
    rec = feed(running(), [Hung(4.0, 6.0)]).record
    t = step(rec, crash(4.1, code=0))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.last_exit is not None and t.record.last_exit.reason == "heartbeat timeout"


@pytest.mark.parametrize(
    ("code", "sig", "reason"),
    [
        (None, SIGKILL, "killed by SIGKILL"),
        (None, SIGTERM, "killed by SIGTERM"),
        (None, 11, "killed by SIGSEGV"),
        (None, 200, "killed by signal 200"),
        (1, None, "exit code 1"),
        (137, None, "exit code 137"),
        (None, None, "exited with unknown status"),
    ],
)
def test_crash_reasons(code: int | None, sig: int | None, reason: str) -> None:
    assert exit_reason(code, sig) == reason
    t = step(running(), crash(5.0, code=code, sig=sig))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.last_exit is not None
    last = t.record.last_exit
    assert (last.reason, last.code, last.signal) == (reason, code, sig)


# -- hang ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [starting_ready, running], ids=["ready", "running"])
def test_hang_kills_and_the_exit_says_heartbeat_timeout(make: Callable[[], ProcRecord]) -> None:
    rec = make()
    t = step(rec, Hung(4.0, 6.0))
    assert t.actions == (Kill("heartbeat timeout"),)
    assert t.log == ("heartbeat timeout: no heartbeat for 6.0s; killing pid 100",)
    assert t.record.state is rec.state  # until the exit arrives
    assert t.record.kill_reason == "heartbeat timeout"

    again = step(t.record, Hung(5.0, 7.0))
    assert again.record == t.record and again.actions == ()

    t = step(t.record, crash(4.2, code=None, sig=SIGKILL))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.last_exit is not None
    assert (t.record.last_exit.reason, t.record.last_exit.crashed) == ("heartbeat timeout", True)
    assert t.log[0] == "crashed: heartbeat timeout (pid 100, up 4.20s)"


def test_hung_and_killed_child_does_not_become_running() -> None:
    rec = feed(starting_ready(), [Hung(1.0, 6.0)]).record
    t = step(rec, Tick(1.5))
    assert t.record.state is ProcState.STARTING


# -- memory limit --------------------------------------------------------------------------------------

MiB = 2**20


@pytest.mark.parametrize("make", [starting_ready, running], ids=["ready", "running"])
def test_a_child_over_its_memory_limit_is_killed_and_restarted_like_a_crash(make: Callable[[], ProcRecord]) -> None:
    rec = make()
    t = step(rec, OverMemory(4.0, rss=600 * MiB, limit=512 * MiB))
    assert t.actions == (Kill("memory limit"),)
    assert t.log == ("memory limit: 600 MiB resident, over the limit of 512 MiB; killing pid 100",)
    assert t.record.kill_reason == "memory limit"
    again = step(t.record, OverMemory(4.5, rss=700 * MiB, limit=512 * MiB))  # the next sample: once is enough
    assert again.record == t.record and again.actions == ()
    t = step(t.record, crash(4.6, code=None, sig=SIGKILL))
    assert t.record.state is ProcState.BACKOFF and t.record.restarts == rec.restarts
    assert t.record.last_exit is not None
    assert (t.record.last_exit.reason, t.record.last_exit.crashed) == ("memory limit", True)


def test_a_memory_sample_of_a_child_that_is_not_running_changes_nothing() -> None:
    stopped = ProcRecord()
    t = step(stopped, OverMemory(1.0, rss=600 * MiB, limit=512 * MiB))
    assert t.record == stopped and t.actions == ()


# -- stop ------------------------------------------------------------------------------------------------


def test_stop_phases_request_term_kill() -> None:
    rec = running()
    t = step(rec, Stop(5.0))
    assert t.record.state is ProcState.STOPPING
    assert (t.record.stop_phase, t.record.deadline, t.record.state_since) == ("request", 10.0, 5.0)
    assert t.actions == (RequestStop(),)
    assert t.log == ("stop: asking pid 100 to stop (SIGTERM in 5s)",)

    assert step(t.record, Tick(9.99)) == Transition(t.record)

    t = step(t.record, Tick(10.0))
    assert (t.record.state, t.record.stop_phase, t.record.deadline) == (ProcState.STOPPING, "term", 15.0)
    assert t.actions == (Terminate(),)
    assert t.log == ("stop timeout: SIGTERM to pid 100 (SIGKILL in 5s)",)

    t = step(t.record, Tick(15.0))
    assert (t.record.state, t.record.stop_phase) == (ProcState.STOPPING, "kill")
    assert t.actions == (Kill("stop timeout"),)
    assert t.log == ("stop timeout: SIGKILL to pid 100",)
    assert next_deadline(t.record) is None

    t = step(t.record, crash(15.01, code=None, sig=SIGKILL))
    assert t.record.state is ProcState.STOPPED
    assert t.record.last_exit is not None
    assert (t.record.last_exit.reason, t.record.last_exit.crashed) == ("stop timeout", False)
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (0, 0, ())
    assert (t.record.pid, t.record.stop_phase, t.record.deadline) == (None, None, None)
    assert t.actions == ()


@pytest.mark.parametrize(
    ("ticks", "code", "sig", "reason"),
    [
        ([], 0, None, "exit code 0"),  # obeyed the request
        ([], 1, None, "exit code 1"),  # failed on the way out: still not a crash
        ([10.0], None, SIGTERM, "killed by SIGTERM"),
    ],
)
def test_exit_while_stopping_is_stopped_and_not_counted(
    ticks: list[float], code: int | None, sig: int | None, reason: str
) -> None:
    rec = crash_loop(running(), crashes=3, start=1.6).record  # some history to keep untouched
    assert rec.next_start_at is not None
    t0 = rec.next_start_at
    rec = feed(rec, [Tick(t0), Spawned(t0, PID), Ready(t0), Tick(t0 + 1.0), Stop(t0 + 2.0)]).record
    before = (rec.restarts, rec.attempt, rec.recent)
    rec = feed(rec, [Tick(t0 + 2.0 + x) for x in ticks]).record
    t = step(rec, crash(t0 + 3.0, code=code, sig=sig))
    assert t.record.state is ProcState.STOPPED
    assert (t.record.restarts, t.record.attempt, t.record.recent) == before
    assert t.record.last_exit is not None
    assert (t.record.last_exit.reason, t.record.last_exit.crashed) == (reason, False)
    assert t.actions == ()
    assert t.log == (f"stopped (pid 100, {reason})",)


def test_stop_while_starting() -> None:
    t = step(starting(), Stop(0.5))
    assert t.record.state is ProcState.STOPPING
    assert t.actions == (RequestStop(),)


def test_stop_before_the_spawn_finished_keeps_the_late_pid() -> None:
    rec = feed(ProcRecord(), [Start(0.0), Stop(0.01)]).record
    t = step(rec, Spawned(0.02, PID))
    assert (t.record.state, t.record.pid) == (ProcState.STOPPING, PID)
    assert next_deadline(t.record) == pytest.approx(5.01)


def test_stop_during_backoff_cancels_the_restart() -> None:
    rec = backoff()
    t = step(rec, Stop(5.1))
    assert t.record.state is ProcState.STOPPED
    assert t.record.next_start_at is None
    assert t.actions == ()
    assert t.log == ("stop: backoff -> stopped (pending restart cancelled, attempt 1)",)
    assert next_deadline(t.record) is None
    assert step(t.record, Tick(5.25)) == Transition(t.record)


def test_stop_after_restart_cancels_the_start_again() -> None:
    rec = feed(running(), [Restart(5.0)]).record
    t = step(rec, Stop(5.5))
    assert t.record.state is ProcState.STOPPING
    assert t.record.restart_after_stop is False
    assert t.record.deadline == 10.0  # the stop already in progress keeps its phases
    t = step(t.record, crash(6.0, code=0))
    assert t.record.state is ProcState.STOPPED
    assert t.actions == ()


# -- restart and start --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [starting, running], ids=["starting", "running"])
def test_restart_stops_then_respawns_without_counting(make: Callable[[], ProcRecord]) -> None:
    rec = make()
    t = step(rec, Restart(5.0))
    assert t.record.state is ProcState.STOPPING
    assert t.record.restart_after_stop is True
    assert (t.record.stop_phase, t.record.deadline) == ("request", 10.0)
    assert t.actions == (RequestStop(),)
    assert t.log == ("restart: asking pid 100 to stop (SIGTERM in 5s), then starting again",)

    t = step(t.record, crash(5.5, code=0))
    assert t.record.state is ProcState.STARTING
    assert t.actions == (Spawn(),)
    assert t.log == ("stopped (pid 100, exit code 0); starting again",)
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (0, 0, ())
    assert t.record.restart_after_stop is False
    assert (t.record.pid, t.record.ready_at, t.record.running_since, t.record.stop_phase) == (
        None,
        None,
        None,
        None,
    )
    assert t.record.last_exit is not None and not t.record.last_exit.crashed

    rec = feed(t.record, [Spawned(5.6, PID + 1), Ready(5.7), Tick(6.7)]).record
    assert (rec.state, rec.pid) == (ProcState.RUNNING, PID + 1)


def test_restart_escalates_like_a_stop() -> None:
    rec = feed(running(), [Restart(5.0), Tick(10.0), Tick(15.0)]).record
    run = feed(rec, [crash(15.1, code=None, sig=SIGKILL)])
    assert run.record.state is ProcState.STARTING
    assert run.actions == [Spawn()]
    assert run.record.last_exit is not None and run.record.last_exit.reason == "stop timeout"


@pytest.mark.parametrize("event", [Start(50.0), Restart(50.0)], ids=["start", "restart"])
@pytest.mark.parametrize("make", [stopped, exited, backoff], ids=["stopped", "exited", "backoff"])
def test_start_from_a_resting_state(event: Start | Restart, make: Callable[[], ProcRecord]) -> None:
    rec = make()
    t = step(rec, event)
    assert t.record.state is ProcState.STARTING
    assert t.actions == (Spawn(),)
    assert t.record.state_since == 50.0
    assert t.record.next_start_at is None
    assert (t.record.restarts, t.record.attempt, t.record.recent) == (rec.restarts, rec.attempt, rec.recent)
    verb = type(event).__name__.lower()
    suffix = " (pending restart cancelled)" if rec.state is ProcState.BACKOFF else ""
    assert t.log == (f"{verb}: {rec.state} -> starting{suffix}",)


@pytest.mark.parametrize("event", [Start(50.0), Restart(50.0)], ids=["start", "restart"])
def test_start_from_fatal_resets_the_budget(event: Start | Restart) -> None:
    rec = fatal()
    assert rec.state is ProcState.FATAL
    t = step(rec, event)
    assert t.record.state is ProcState.STARTING
    assert t.actions == (Spawn(),)
    assert (t.record.attempt, t.record.recent, t.record.fatal_reason) == (0, (), None)
    assert t.record.restarts == rec.restarts  # the history operators see stays
    verb = type(event).__name__.lower()
    assert t.log == (f"{verb}: fatal -> starting (restart budget reset: 0/5 in 60s)",)

    # A fresh budget: the next crash backs off from the start instead of going FATAL.
    rec = feed(t.record, [Spawned(50.0, PID), Ready(50.1), Tick(51.1)]).record
    t = step(rec, crash(52.0))
    assert t.record.state is ProcState.BACKOFF
    assert t.record.next_start_at == pytest.approx(52.25)


# -- ignored events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "event", "what"),
    [
        (starting, Start(9.0), "start"),
        (running, Start(9.0), "start"),
        (stopping, Start(9.0), "start"),
        (stopping, Restart(9.0), "restart"),
        (stopped, Stop(9.0), "stop"),
        (exited, Stop(9.0), "stop"),
        (fatal, Stop(9.0), "stop"),
        (stopping, Stop(9.0), "stop"),
        (running, Spawned(9.0, 7), "spawned pid 7"),
        (stopped, Spawned(9.0, 7), "spawned pid 7"),
        (stopped, Ready(9.0), "ready"),
        (running, Ready(9.0), "ready"),
        (starting_ready, Ready(9.0), "ready"),
        (backoff, Ready(9.0), "ready"),
        (stopped, crash(9.0), "exit (exit code 1)"),
        (backoff, crash(9.0), "exit (exit code 1)"),
        (exited, crash(9.0), "exit (exit code 1)"),
        (fatal, crash(9.0, code=None, sig=SIGKILL), "exit (killed by SIGKILL)"),
        (stopped, Hung(9.0, 6.0), "hang (6.0s without heartbeat)"),
        (starting, Hung(9.0, 6.0), "hang (6.0s without heartbeat)"),
        (stopping, Hung(9.0, 6.0), "hang (6.0s without heartbeat)"),
        (backoff, Hung(9.0, 6.0), "hang (6.0s without heartbeat)"),
    ],
)
def test_ignored_events_leave_the_record_unchanged(
    make: Callable[[], ProcRecord],
    event: Event,
    what: str,
) -> None:
    rec = make()
    t = step(rec, event)
    assert t.record == rec
    assert t.actions == ()
    assert t.log == (f"{what} ignored in {rec.state}",)


RESTING = [stopped, running, exited, fatal]


@pytest.mark.parametrize("make", RESTING, ids=["stopped", "running", "exited", "fatal"])
def test_ticks_with_nothing_due_are_silent(make: Callable[[], ProcRecord]) -> None:
    rec = make()
    assert step(rec, Tick(1e6)) == Transition(rec, (), ())


# -- next_deadline -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "deadline"),
    [
        (stopped, None),
        (lambda: step(ProcRecord(), Start(0.0)).record, None),  # STARTING, not spawned yet
        (starting, 20.0),  # start timeout
        (starting_ready, 1.5),  # READY + start_secs
        (running, None),
        (backoff, 5.25),  # next start
        (stopping, 10.0),  # request phase
        (lambda: feed(stopping(), [Tick(10.0)]).record, 15.0),  # term phase
        (lambda: feed(stopping(), [Tick(10.0), Tick(15.0)]).record, None),  # kill phase: wait for the exit
        (exited, None),
        (fatal, None),
    ],
    ids=[
        "stopped",
        "starting-unspawned",
        "starting",
        "starting-ready",
        "running",
        "backoff",
        "stopping-request",
        "stopping-term",
        "stopping-kill",
        "exited",
        "fatal",
    ],
)
def test_next_deadline(make: Callable[[], ProcRecord], deadline: float | None) -> None:
    rec = make()
    if deadline is None:
        assert next_deadline(rec) is None
    else:
        assert next_deadline(rec) == pytest.approx(deadline)


def test_states_are_supervisords_names() -> None:
    assert [s.value for s in ProcState] == [
        "stopped",
        "starting",
        "running",
        "backoff",
        "stopping",
        "exited",
        "fatal",
    ]
    assert f"{ProcState.FATAL}" == "fatal"

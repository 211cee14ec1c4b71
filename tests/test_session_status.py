"""The session status machine driven by a fake clock: events in; status, counters and effects out, no processes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pytest

from supervisor.sessions.status import (
    QR_TIMEOUT,
    ChildFailed,
    Connected,
    Disconnected,
    Effect,
    Emit,
    Event,
    FailQueued,
    KickOutbox,
    LeaseLost,
    Log,
    LoggedOut,
    MarkReady,
    Notify,
    Persist,
    ProcessChanged,
    QrRoundAsked,
    QrShown,
    Ready,
    RestartAsked,
    SessionStatus,
    StartAgain,
    StartRefused,
    StatusRecord,
    StatusRules,
    StopProcess,
    StorageLoggedOut,
    StorageStopped,
    Unlinked,
    apply,
    status_of,
)
from supervisor.supervision.states import ProcState

RULES = StatusRules(qr_cycles=2)
INFO = logging.INFO


@dataclass
class Run:
    """What a sequence of events did: the final record and every effect in order."""

    record: StatusRecord
    effects: list[Effect] = field(default_factory=list)


def feed(rec: StatusRecord, events: Iterable[Event], rules: StatusRules = RULES) -> Run:
    run = Run(rec)
    for event in events:
        run.record, effects = apply(run.record, event, rules)
        run.effects.extend(effects)
    return run


def proc(
    now: float,
    before: ProcState,
    after: ProcState,
    *,
    exit_reason: str | None = None,
    fatal_reason: str | None = None,
    draining: bool = False,
) -> ProcessChanged:
    """A process transition; no exit, no fatal reason, not draining unless given."""
    return ProcessChanged(now, before, after, exit_reason, fatal_reason, draining)


def started() -> StatusRecord:
    """A new session whose process was spawned at t=0."""
    return feed(StatusRecord(), [proc(0.0, ProcState.STOPPED, ProcState.STARTING)]).record


def showing_qr() -> StatusRecord:
    """Ready at t=1, first QR at t=2."""
    return feed(started(), [Ready(1.0), QrShown(2.0, qr="2@abc", expires_at=62.0)]).record


def connected() -> StatusRecord:
    """Scanned at t=10 from the QR above."""
    return feed(showing_qr(), [Connected(10.0, phone="628123", push_name="Ann")]).record


# -- what the session process reports -----------------------------------------------------------------


def test_ready_marks_the_process_ready_and_changes_no_status() -> None:
    rec = started()
    new, effects = apply(rec, Ready(1.0), RULES)
    assert new == rec
    assert effects == (MarkReady(), Notify(), Persist())


def test_a_qr_makes_the_session_qr_ready_and_is_emitted_with_its_png() -> None:
    rec, effects = apply(started(), QrShown(2.0, qr="2@abc", expires_at=62.0), RULES)
    assert (rec.status, rec.status_since, rec.qr, rec.qr_expires_at, rec.qr_count) == (
        SessionStatus.QR_READY,
        2.0,
        "2@abc",
        62.0,
        1,
    )
    data = {"qr": "2@abc", "expiresAt": "1970-01-01T00:01:02.000Z", "qrCount": 1}
    assert effects == (Log(INFO, "QR ready (1 so far)"), Emit("qr_ready", data, qr="2@abc"), Notify(), Persist())


def test_a_rotated_qr_counts_up_and_keeps_the_time_the_status_began() -> None:
    rec, effects = apply(showing_qr(), QrShown(22.0, qr="2@def", expires_at=82.0), RULES)
    assert (rec.qr, rec.qr_count, rec.status_since) == ("2@def", 2, 2.0)
    assert effects[0] == Log(INFO, "QR ready (2 so far)")


def test_an_empty_qr_is_counted_but_not_emitted() -> None:
    rec, effects = apply(started(), QrShown(2.0, qr=None, expires_at=None), RULES)
    assert (rec.status, rec.qr_count) == (SessionStatus.QR_READY, 1)
    assert effects == (Log(INFO, "QR ready (1 so far)"), Notify(), Persist())


def test_connecting_clears_the_qr_and_the_error_and_kicks_the_outbox() -> None:
    rec = feed(showing_qr(), [Disconnected(5.0, reason=QR_TIMEOUT, will_retry=True)]).record
    assert (rec.qr_rounds, rec.last_error) == (1, QR_TIMEOUT)
    rec, effects = apply(rec, Connected(10.0, phone="628123", push_name="Ann"), RULES)
    assert rec == StatusRecord(
        status=SessionStatus.CONNECTED, status_since=10.0, phone="628123", qr_count=1, qr_rounds=0
    )
    assert effects == (
        Log(INFO, "connected"),
        Emit("connected", {"phoneNumber": "628123", "pushName": "Ann"}),
        KickOutbox(),
        Notify(),
        Persist(),
    )


def test_a_disconnect_keeps_the_phone_and_says_whether_the_engine_retries() -> None:
    rec, effects = apply(connected(), Disconnected(20.0, reason="network lost", will_retry=True), RULES)
    assert (rec.status, rec.status_since, rec.phone, rec.last_error, rec.qr_rounds) == (
        SessionStatus.DISCONNECTED,
        20.0,
        "628123",
        "network lost",
        0,
    )
    assert effects == (
        Log(INFO, "disconnected: network lost"),
        Emit("disconnected", {"reason": "network lost", "willRetry": True}),
        Notify(),
        Persist(),
    )


def test_only_a_qr_timeout_counts_as_an_unscanned_round() -> None:
    run = feed(
        showing_qr(),
        [
            Disconnected(3.0, reason=QR_TIMEOUT, will_retry=False),
            Disconnected(4.0, reason="stream error", will_retry=True),
            Disconnected(5.0, reason=QR_TIMEOUT, will_retry=False),
        ],
    )
    assert (run.record.qr_rounds, run.record.qr, run.record.qr_expires_at) == (2, None, None)
    assert run.record.status_since == 3.0  # disconnected since the first of them


def test_logging_out_forgets_the_phone_fails_what_waits_and_tells_storage() -> None:
    rec, effects = apply(connected(), LoggedOut(30.0, reason="unlinked from the phone"), RULES)
    assert (rec.status, rec.phone, rec.qr, rec.last_error) == (
        SessionStatus.LOGGED_OUT,
        None,
        None,
        "unlinked from the phone",
    )
    assert effects == (
        Log(INFO, "logged out: unlinked from the phone"),
        Emit("logged_out", {"reason": "unlinked from the phone"}),
        FailQueued("logged_out"),  # never sent later from whichever account links next
        StorageLoggedOut(),
        Notify(),
        Persist(),
    )


def test_a_fatal_report_keeps_the_status_records_the_error_and_wakes_nobody() -> None:
    rec, effects = apply(connected(), ChildFailed(40.0, code="AUTH_STATE", error="database is corrupt"), RULES)
    assert (rec.status, rec.last_error) == (SessionStatus.CONNECTED, "AUTH_STATE: database is corrupt")
    assert effects == (Log(logging.ERROR, "session process failed: AUTH_STATE: database is corrupt"), Persist())


# -- what the process supervisor reports ------------------------------------------------------------


def test_a_transition_to_the_same_state_changes_nothing() -> None:
    rec = connected()
    assert apply(rec, proc(50.0, ProcState.RUNNING, ProcState.RUNNING), RULES) == (rec, ())


def test_a_state_without_a_status_of_its_own_still_wakes_and_persists() -> None:
    rec = connected()
    assert apply(rec, proc(11.0, ProcState.STARTING, ProcState.RUNNING), RULES) == (rec, (Notify(), Persist()))


def test_a_crash_disconnects_once_while_the_process_restarts() -> None:
    crash = proc(50.0, ProcState.RUNNING, ProcState.BACKOFF, exit_reason="exit code 1")
    rec, effects = apply(connected(), crash, RULES)
    reason = "process exit code 1; restarting"
    assert (rec.status, rec.status_since, rec.last_error) == (SessionStatus.DISCONNECTED, 50.0, reason)
    assert effects == (Emit("disconnected", {"reason": reason, "willRetry": True}), Notify(), Persist())
    # A session the engine already reported disconnected says it once: the crash changes only the reason.
    rec = feed(connected(), [Disconnected(20.0, reason="network lost", will_retry=True)]).record
    rec, effects = apply(rec, proc(21.0, ProcState.RUNNING, ProcState.BACKOFF), RULES)
    assert (rec.status_since, rec.last_error) == (20.0, "process exited; restarting")  # no exit recorded: said so
    assert effects == (Notify(), Persist())


def test_giving_up_fails_the_session_and_tells_storage_it_is_down() -> None:
    fatal = proc(60.0, ProcState.BACKOFF, ProcState.FATAL, fatal_reason="6 restarts in 60s")
    rec, effects = apply(connected(), fatal, RULES)
    assert (rec.status, rec.status_since, rec.last_error) == (SessionStatus.FAILED, 60.0, "6 restarts in 60s")
    assert effects == (Emit("failed", {"reason": "6 restarts in 60s"}), StorageStopped(), Notify(), Persist())


def test_a_new_process_forgets_the_old_qr_and_initializes() -> None:
    rec = feed(showing_qr(), [proc(5.0, ProcState.RUNNING, ProcState.BACKOFF)]).record
    rec, effects = apply(rec, proc(6.0, ProcState.BACKOFF, ProcState.STARTING), RULES)
    assert (rec.status, rec.status_since, rec.qr, rec.qr_expires_at) == (SessionStatus.INITIALIZING, 6.0, None, None)
    assert effects == (Notify(), Persist())


def test_a_restart_of_a_connected_session_stays_connected_until_the_new_process_reports() -> None:
    run = feed(connected(), [proc(70.0, ProcState.RUNNING, ProcState.STOPPING)])
    assert run.record.status == SessionStatus.CONNECTED
    rec, _ = apply(run.record, proc(71.0, ProcState.STOPPING, ProcState.STARTING), RULES)
    assert (rec.status, rec.status_since) == (SessionStatus.CONNECTED, 10.0)
    # Any other way into STARTING means nothing is connected yet.
    crashed = feed(connected(), [proc(72.0, ProcState.RUNNING, ProcState.BACKOFF)]).record
    rec, _ = apply(crashed, proc(73.0, ProcState.BACKOFF, ProcState.STARTING), RULES)
    assert rec.status == SessionStatus.INITIALIZING


@pytest.mark.parametrize("down", [ProcState.STOPPED, ProcState.EXITED])
def test_a_process_gone_for_good_disconnects_a_live_session(down: ProcState) -> None:
    rec, effects = apply(showing_qr(), proc(80.0, ProcState.STOPPING, down), RULES)
    assert (rec.status, rec.status_since, rec.qr) == (SessionStatus.DISCONNECTED, 80.0, None)
    assert effects == (StorageStopped(), Notify(), Persist())


def test_a_logged_out_session_stays_logged_out_when_its_process_exits() -> None:
    rec = feed(connected(), [LoggedOut(30.0, reason="unlinked")]).record
    new, effects = apply(rec, proc(31.0, ProcState.RUNNING, ProcState.EXITED), RULES)
    assert (new.status, new.status_since) == (SessionStatus.LOGGED_OUT, 30.0)
    assert effects == (StorageStopped(), Notify(), Persist())


# -- unscanned QR codes ---------------------------------------------------------------------------------


def unscanned_round(rec: StatusRecord, at: float) -> list[Event]:
    """A process start at ``at`` that shows a QR, gives up on it and exits cleanly."""
    before = ProcState.EXITED if rec.qr_count else ProcState.STOPPED
    return [
        proc(at, before, ProcState.STARTING),
        Ready(at + 1),
        QrShown(at + 2, qr=f"2@{at}", expires_at=at + 60),
        Disconnected(at + 60, reason=QR_TIMEOUT, will_retry=False),
        proc(at + 61, ProcState.STARTING, ProcState.EXITED),
    ]


def test_unscanned_rounds_start_again_up_to_the_limit_then_rest() -> None:
    rec = StatusRecord()
    run = feed(rec, unscanned_round(rec, 0.0))
    assert (run.record.status, run.record.qr_rounds, run.record.qr_count) == (SessionStatus.DISCONNECTED, 1, 1)
    assert run.effects[-5:] == [
        Log(INFO, "no scan: showing QR codes again (round 2/2)"),
        StartAgain(),
        StorageStopped(),
        Notify(),
        Persist(),
    ]
    run = feed(run.record, unscanned_round(run.record, 100.0))
    assert (run.record.qr_rounds, run.record.qr_count) == (2, 2)
    assert StartAgain() not in run.effects
    assert run.effects[-4:] == [
        Log(INFO, "no scan after 2 rounds of QR codes: resting until GET /qr or restart"),
        StorageStopped(),
        Notify(),
        Persist(),
    ]
    # GET /qr asks for a new round: the count starts over and the next timeout starts again.
    asked, effects = apply(run.record, QrRoundAsked(300.0), RULES)
    assert (asked.qr_rounds, asked.qr, effects) == (0, None, ())
    run = feed(asked, unscanned_round(asked, 301.0))
    assert StartAgain() in run.effects and run.record.qr_rounds == 1


def test_a_draining_worker_does_not_start_again_after_unscanned_codes() -> None:
    rec = feed(showing_qr(), [Disconnected(60.0, reason=QR_TIMEOUT, will_retry=False)]).record
    _, effects = apply(rec, proc(61.0, ProcState.RUNNING, ProcState.EXITED, draining=True), RULES)
    assert effects == (StorageStopped(), Notify(), Persist())


def test_more_qr_cycles_allow_more_rounds() -> None:
    rec = feed(showing_qr(), [Disconnected(60.0, reason=QR_TIMEOUT, will_retry=False)]).record
    rec = replace(rec, qr_rounds=2)
    _, effects = apply(rec, proc(61.0, ProcState.RUNNING, ProcState.EXITED), StatusRules(qr_cycles=3))
    assert Log(INFO, "no scan: showing QR codes again (round 3/3)") in effects and StartAgain() in effects


# -- what operators' commands change ----------------------------------------------------------------


def test_a_restart_forgets_the_error_and_the_unscanned_rounds() -> None:
    rec = feed(showing_qr(), [Disconnected(60.0, reason=QR_TIMEOUT, will_retry=False)]).record
    new, effects = apply(rec, RestartAsked(90.0), RULES)
    assert (new.last_error, new.qr_rounds, new.status, new.status_since) == (None, 0, rec.status, rec.status_since)
    assert effects == ()


def test_unlinking_forgets_the_phone_and_the_error_and_fails_what_waits() -> None:
    rec = feed(connected(), [Disconnected(20.0, reason="network lost", will_retry=True)]).record
    new, effects = apply(rec, Unlinked(25.0), RULES)
    assert (new.phone, new.last_error, new.status) == (None, None, SessionStatus.DISCONNECTED)
    assert effects == (FailQueued("logged_out"),)


def test_a_lost_lease_stops_the_process_and_says_who_took_it() -> None:
    rec, effects = apply(connected(), LeaseLost(40.0, holder="w2"), RULES)
    assert (rec.status, rec.last_error) == (SessionStatus.CONNECTED, "stopped: worker w2 took over the session's lease")
    assert effects == (
        Log(logging.WARNING, "lease lost to worker w2; stopping the session"),
        StopProcess(),
        Notify(),
        Persist(),
    )


def test_a_stored_session_that_cannot_start_stays_down_disconnected() -> None:
    rec = StatusRecord(status=SessionStatus.CONNECTED, status_since=0.0, phone="628123")
    new, effects = apply(rec, StartRefused(5.0, reason="the lease is held by w2"), RULES)
    assert (new.status, new.status_since, new.last_error, new.phone) == (
        SessionStatus.DISCONNECTED,
        5.0,
        "the lease is held by w2",
        "628123",
    )
    assert effects == (Log(logging.WARNING, "session stays down: the lease is held by w2"),)


# -- the statuses themselves -----------------------------------------------------------------------------


def test_the_status_names_are_the_apis() -> None:
    assert [s.value for s in SessionStatus] == [
        "initializing",
        "qr_ready",
        "connected",
        "disconnected",
        "logged_out",
        "failed",
    ]


def test_a_stored_status_reads_back_and_an_unknown_one_reads_as_initializing() -> None:
    assert status_of("logged_out") is SessionStatus.LOGGED_OUT
    assert status_of("paused") is SessionStatus.INITIALIZING

"""A session's API status as a pure transition function.

``apply(record, event, rules)`` returns the session's next status record and the
effects the registry must carry out (emit an event, persist the row, wake
waiters, kick the outbox, start again after unscanned QR codes, storage hooks,
log lines). It does no I/O and reads no clock: every event carries ``now``. The
events are what a session process reports (qr, connected, disconnected,
logged_out, ready, fatal), what the process supervisor reports (a child's
``ProcState`` changed) and what an operator's command changes (restart, logout,
a new round of QR codes, a lost lease). See docs/architecture.md, "Session states".
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from supervisor.supervision.states import ProcState
from supervisor.timefmt import iso


class SessionStatus(enum.StrEnum):
    """Where a session is, as the API shows it."""

    INITIALIZING = "initializing"  # its process is starting
    QR_READY = "qr_ready"  # a QR code waits to be scanned
    CONNECTED = "connected"  # linked and online: messages flow
    DISCONNECTED = "disconnected"  # not online; the process may be reconnecting or restarting
    LOGGED_OUT = "logged_out"  # the device was unlinked: needs a new QR scan
    FAILED = "failed"  # the process crashed too often (FATAL); stays down until restarted


# Statuses that only hold while a process runs.
LIVE_STATUSES = frozenset({SessionStatus.INITIALIZING, SessionStatus.QR_READY, SessionStatus.CONNECTED})
# Statuses after which nobody should wait for a QR code.
QR_WAIT_OVER = frozenset({SessionStatus.CONNECTED, SessionStatus.FAILED, SessionStatus.LOGGED_OUT})
# The engines' reason when a round of QR codes ended without a scan.
QR_TIMEOUT = "qr_timeout"
# The error of messages that were still waiting when their session was unlinked.
LOGGED_OUT_ERROR = "logged_out"


def status_of(stored: str) -> SessionStatus:
    """The status a stored row names; an unknown name (an older schema) reads as initializing."""
    try:
        return SessionStatus(stored)
    except ValueError:
        return SessionStatus.INITIALIZING


@dataclass(frozen=True, slots=True)
class StatusRules:
    """Tunables of the status machine."""

    # rounds of QR codes shown in a row without a scan before the session rests until GET /qr
    qr_cycles: int = 2


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """Everything about a session's status the API shows."""

    status: SessionStatus = SessionStatus.INITIALIZING
    status_since: float = 0.0
    phone: str | None = None
    qr: str | None = None
    qr_expires_at: float | None = None
    qr_count: int = 0
    qr_rounds: int = 0  # login attempts in a row that ended without a scan (qr_timeout)
    last_error: str | None = None


# -- events: what the session process reports -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The process is up and answers requests."""

    now: float


@dataclass(frozen=True, slots=True)
class QrShown:
    """A new QR code to scan (None: the engine sent an empty one)."""

    now: float
    qr: str | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Connected:
    """The device is linked and online."""

    now: float
    phone: str | None
    push_name: str | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The device went offline (``reason`` QR_TIMEOUT: a round of QR codes ended without a scan)."""

    now: float
    reason: str
    will_retry: bool


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """The device was unlinked (from the phone, or by the network)."""

    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """The process reports an error it cannot recover from, just before it exits."""

    now: float
    code: str | None
    error: str | None


# -- events: what the process supervisor reports --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessChanged:
    """The session's child process moved from ``before`` to ``after``."""

    now: float
    before: ProcState
    after: ProcState
    exit_reason: str | None  # how the last run ended ("exit code 1"), if it ended
    fatal_reason: str | None  # why the policy gave up, in FATAL
    draining: bool  # the worker is shutting down: nothing starts again


# -- events: what an operator's command changes ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestartAsked:
    """POST /restart: a fresh start, earlier errors and unscanned rounds forgotten."""

    now: float


@dataclass(frozen=True, slots=True)
class QrRoundAsked:
    """GET /qr on a session resting after unscanned QR codes: a new round starts."""

    now: float


@dataclass(frozen=True, slots=True)
class Unlinked:
    """POST /logout: the device was unlinked and its credentials removed."""

    now: float


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """Another worker holds the session's lease now."""

    now: float
    holder: str


@dataclass(frozen=True, slots=True)
class StartRefused:
    """A stored session could not start at worker start (lease, backup): it stays down."""

    now: float
    reason: str


ChildEvent: TypeAlias = Ready | QrShown | Connected | Disconnected | LoggedOut | ChildFailed
Event: TypeAlias = ChildEvent | ProcessChanged | RestartAsked | QrRoundAsked | Unlinked | LeaseLost | StartRefused


# -- effects ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Queue session event ``event`` durably; with ``qr``, its data also gets the QR as a PNG data URL."""

    event: str
    data: Mapping[str, Any]
    qr: str | None = None


@dataclass(frozen=True, slots=True)
class Persist:
    """Write status, phone and last error to the session's row."""


@dataclass(frozen=True, slots=True)
class Notify:
    """Wake whoever waits for this session to change (create waiting for a QR)."""


@dataclass(frozen=True, slots=True)
class KickOutbox:
    """Messages waiting for this session can go now."""


@dataclass(frozen=True, slots=True)
class FailQueued:
    """Messages still waiting for this session fail with ``error``: never sent later from whichever
    account links next."""

    error: str


@dataclass(frozen=True, slots=True)
class StartAgain:
    """Start the process again (a new round of QR codes)."""


@dataclass(frozen=True, slots=True)
class MarkReady:
    """The process supervisor learns that the current incarnation is ready."""


@dataclass(frozen=True, slots=True)
class StopProcess:
    """Stop the session's process for good."""


@dataclass(frozen=True, slots=True)
class StorageLoggedOut:
    """Storage hook: the device was unlinked, its backups are worthless."""


@dataclass(frozen=True, slots=True)
class StorageStopped:
    """Storage hook: the process is down for good: final backup, then the lease goes."""


@dataclass(frozen=True, slots=True)
class Log:
    """A log line about this session."""

    level: int
    message: str


Effect: TypeAlias = (
    Emit
    | Persist
    | Notify
    | KickOutbox
    | FailQueued
    | StartAgain
    | MarkReady
    | StopProcess
    | StorageLoggedOut
    | StorageStopped
    | Log
)


# -- the machine --------------------------------------------------------------------------------------


def apply(
    rec: StatusRecord, event: Event, rules: StatusRules = StatusRules()
) -> tuple[StatusRecord, tuple[Effect, ...]]:
    """Apply ``event`` to ``rec``: the next record and the effects, in the order to carry them out."""
    if isinstance(event, ProcessChanged):
        return _process_changed(rec, event, rules)
    if isinstance(event, Ready):
        return rec, (MarkReady(), Notify(), Persist())
    if isinstance(event, QrShown):
        return _qr_shown(rec, event)
    if isinstance(event, Connected):
        return _connected(rec, event)
    if isinstance(event, Disconnected):
        return _disconnected(rec, event)
    if isinstance(event, LoggedOut):
        return _logged_out(rec, event)
    if isinstance(event, ChildFailed):
        failed = replace(rec, last_error=f"{event.code}: {event.error}")
        return failed, (Log(logging.ERROR, f"session process failed: {failed.last_error}"), Persist())
    if isinstance(event, RestartAsked):
        return replace(rec, last_error=None, qr_rounds=0), ()
    if isinstance(event, QrRoundAsked):
        return replace(rec, qr_rounds=0, qr=None, qr_expires_at=None), ()
    if isinstance(event, Unlinked):
        return replace(rec, phone=None, last_error=None), (FailQueued(LOGGED_OUT_ERROR),)
    if isinstance(event, LeaseLost):
        lost = replace(rec, last_error=f"stopped: worker {event.holder} took over the session's lease")
        line = Log(logging.WARNING, f"lease lost to worker {event.holder}; stopping the session")
        return lost, (line, StopProcess(), Notify(), Persist())
    refused = _set_status(rec, SessionStatus.DISCONNECTED, event.now, last_error=event.reason)
    return refused, (Log(logging.WARNING, f"session stays down: {event.reason}"),)


def _set_status(rec: StatusRecord, status: SessionStatus, now: float, **changes: Any) -> StatusRecord:
    """``rec`` in ``status``; ``status_since`` moves only when the status changes."""
    if status != rec.status:
        changes.update(status=status, status_since=now)
    return replace(rec, **changes)


def _qr_shown(rec: StatusRecord, event: QrShown) -> tuple[StatusRecord, tuple[Effect, ...]]:
    new = _set_status(
        rec, SessionStatus.QR_READY, event.now, qr=event.qr, qr_expires_at=event.expires_at, qr_count=rec.qr_count + 1
    )
    effects: list[Effect] = [Log(logging.INFO, f"QR ready ({new.qr_count} so far)")]
    if new.qr is not None:
        data = {"qr": new.qr, "expiresAt": iso(new.qr_expires_at), "qrCount": new.qr_count}
        effects.append(Emit("qr_ready", data, qr=new.qr))
    return new, (*effects, Notify(), Persist())


def _connected(rec: StatusRecord, event: Connected) -> tuple[StatusRecord, tuple[Effect, ...]]:
    new = _set_status(
        rec,
        SessionStatus.CONNECTED,
        event.now,
        phone=event.phone,
        qr=None,
        qr_expires_at=None,
        last_error=None,
        qr_rounds=0,
    )
    data = {"phoneNumber": new.phone, "pushName": event.push_name}
    return new, (Log(logging.INFO, "connected"), Emit("connected", data), KickOutbox(), Notify(), Persist())


def _disconnected(rec: StatusRecord, event: Disconnected) -> tuple[StatusRecord, tuple[Effect, ...]]:
    rounds = rec.qr_rounds + 1 if event.reason == QR_TIMEOUT else rec.qr_rounds
    new = _set_status(
        rec,
        SessionStatus.DISCONNECTED,
        event.now,
        qr=None,
        qr_expires_at=None,
        last_error=event.reason,
        qr_rounds=rounds,
    )
    data = {"reason": event.reason, "willRetry": event.will_retry}
    return new, (Log(logging.INFO, f"disconnected: {event.reason}"), Emit("disconnected", data), Notify(), Persist())


def _logged_out(rec: StatusRecord, event: LoggedOut) -> tuple[StatusRecord, tuple[Effect, ...]]:
    new = _set_status(
        rec, SessionStatus.LOGGED_OUT, event.now, phone=None, qr=None, qr_expires_at=None, last_error=event.reason
    )
    effects = (
        Log(logging.INFO, f"logged out: {event.reason}"),
        Emit("logged_out", {"reason": event.reason}),
        FailQueued(LOGGED_OUT_ERROR),
        StorageLoggedOut(),
        Notify(),
        Persist(),
    )
    return new, effects


def _process_changed(
    rec: StatusRecord, event: ProcessChanged, rules: StatusRules
) -> tuple[StatusRecord, tuple[Effect, ...]]:
    state, now = event.after, event.now
    if state == event.before:
        return rec, ()
    new = rec
    effects: list[Effect] = []
    if state == ProcState.FATAL:
        new = _set_status(rec, SessionStatus.FAILED, now, last_error=event.fatal_reason)
        effects.append(Emit("failed", {"reason": event.fatal_reason}))
    elif state == ProcState.BACKOFF:
        reason = f"process {event.exit_reason or 'exited'}; restarting"
        new = _set_status(rec, SessionStatus.DISCONNECTED, now, last_error=reason)
        if rec.status != SessionStatus.DISCONNECTED:
            effects.append(Emit("disconnected", {"reason": reason, "willRetry": True}))
    elif state == ProcState.STARTING:
        new = replace(rec, qr=None, qr_expires_at=None)
        if rec.status != SessionStatus.CONNECTED or event.before != ProcState.STOPPING:
            new = _set_status(new, SessionStatus.INITIALIZING, now)
    elif state in (ProcState.STOPPED, ProcState.EXITED):
        new = replace(rec, qr=None, qr_expires_at=None)  # nobody can scan a code of a process that is gone
        if rec.status in LIVE_STATUSES:
            new = _set_status(new, SessionStatus.DISCONNECTED, now)
    if state == ProcState.EXITED and new.last_error == QR_TIMEOUT and not event.draining:
        if new.qr_rounds < rules.qr_cycles:
            line = f"no scan: showing QR codes again (round {new.qr_rounds + 1}/{rules.qr_cycles})"
            effects += [Log(logging.INFO, line), StartAgain()]
        else:
            # Churning QR codes nobody scans only burns a process: rest until someone asks.
            line = f"no scan after {new.qr_rounds} rounds of QR codes: resting until GET /qr or restart"
            effects.append(Log(logging.INFO, line))
    if state in (ProcState.STOPPED, ProcState.EXITED, ProcState.FATAL):
        effects.append(StorageStopped())
    return new, (*effects, Notify(), Persist())

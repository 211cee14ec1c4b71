"""One hosted session as the worker knows it: its status record, its child process and its counters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from supervisor.sessions.status import SessionStatus, StatusRecord
from supervisor.supervision.policy import ExitInfo
from supervisor.supervision.sampler import ProcStats
from supervisor.supervision.session_child import SessionChild
from supervisor.supervision.states import ProcState


class SessionError(Exception):
    """A session command that cannot be carried out; ``code`` is the API's machine code.

    ``retry_after``: the same call is expected to work after this many seconds (the session is
    starting or reconnecting), said to the client as ``Retry-After``.
    """

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A session's child process as operators see it, read at one moment."""

    state: ProcState
    pid: int | None
    spawned_at: float | None
    restarts: int
    last_exit: ExitInfo | None
    exits: Sequence[ExitInfo]  # oldest first


@dataclass(slots=True)
class Session:
    """One hosted session. Its status fields change only through ``supervisor.sessions.status.apply``."""

    id: str
    user_id: str | None
    session_name: str | None
    created_at: float
    child: SessionChild
    state: StatusRecord
    last_seen: float | None = None
    message_count: int = 0  # messages in history, in and out (kept equal to the store's count)
    messages_in: int = 0  # received since the worker started
    messages_out: int = 0  # accepted for sending since the worker started
    stats: ProcStats | None = None
    # Why its stored proxy cannot be used; set, the session is never started (it would dial directly).
    proxy_error: str | None = None
    # The phone number last linked to it, and when (pacing's warm-up counts from then; kept after a logout).
    linked_phone: str | None = None
    linked_at: float | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def proxy(self) -> str | None:
        """The proxy URL its process dials through (with its password: never log it, see ``proxy.masked``)."""
        return self.child.proxy

    @property
    def status(self) -> SessionStatus:
        return self.state.status

    @property
    def status_since(self) -> float:
        return self.state.status_since

    @property
    def phone(self) -> str | None:
        return self.state.phone

    @property
    def qr(self) -> str | None:
        return self.state.qr

    @property
    def qr_expires_at(self) -> float | None:
        return self.state.qr_expires_at

    @property
    def qr_count(self) -> int:
        return self.state.qr_count

    @property
    def last_error(self) -> str | None:
        return self.state.last_error

    def process(self) -> ProcessInfo:
        """The child process's figures now."""
        record = self.child.record
        return ProcessInfo(
            state=record.state,
            pid=self.child.pid,
            spawned_at=record.spawned_at,
            restarts=record.restarts,
            last_exit=record.last_exit,
            exits=tuple(self.child.exits),
        )

    def notify(self) -> None:
        """Wake whoever waits for this session to change (e.g. create waiting for a QR)."""
        self.changed.set()
        self.changed = asyncio.Event()

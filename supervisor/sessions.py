"""The sessions this worker hosts: their records, their child processes, and the
translation of child events and process transitions into the API's statuses.

Every command an API route gives about a session comes through here; routes do
not talk to children or the store directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from supervisor.config import Settings
from supervisor.message_id import new_message_id
from supervisor.policy import ExitInfo, ProcRecord
from supervisor.procs import ChildProcess
from supervisor.sampler import ProcessSampler, ProcStats
from supervisor.session_child import ChildConfig, SessionChild, parse_identity
from supervisor.states import ProcState
from supervisor.store import SessionRow, Store
from transport.channel import ChannelError, PeerGone, RemoteError, RequestTimeout, RouterChannel

log = logging.getLogger("supervisor.sessions")

# Statuses that only hold while a process runs.
LIVE_STATUSES = ("initializing", "qr_ready", "connected")
STATUSES = ("initializing", "qr_ready", "connected", "disconnected", "logged_out", "failed")


class SessionError(Exception):
    """A session command that cannot be carried out; ``code`` is the API's machine code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Session:
    """One hosted session, as the worker knows it."""

    id: str
    user_id: str | None
    session_name: str | None
    created_at: float
    child: SessionChild
    status: str = "initializing"
    status_since: float = field(default_factory=time.time)
    phone: str | None = None
    qr: str | None = None
    qr_expires_at: float | None = None
    qr_count: int = 0
    last_error: str | None = None
    last_seen: float | None = None
    messages_in: int = 0
    messages_out: int = 0
    stats: ProcStats | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def message_count(self) -> int:
        return self.messages_in + self.messages_out

    @property
    def last_exit(self) -> ExitInfo | None:
        return self.child.record.last_exit

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.status_since = time.time()

    def notify(self) -> None:
        """Wake whoever waits for this session to change (e.g. create waiting for a QR)."""
        self.changed.set()
        self.changed = asyncio.Event()


class SessionRegistry:
    """All sessions of this worker and their children."""

    def __init__(self, settings: Settings, store: Store, router: RouterChannel, child_config: ChildConfig) -> None:
        self.settings = settings
        self.store = store
        self.router = router
        self.child_config = child_config
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.sampler = ProcessSampler()
        self.supervisor_stats: ProcStats | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._log_extra = {"workerId": settings.worker_id}

    # -- lookup ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.sessions.values()))

    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SessionError("SESSION_NOT_FOUND", f"session {session_id!r} does not exist") from None

    def _extra(self, session_id: str) -> dict[str, str]:
        return {"sessionId": session_id, **self._log_extra}

    # -- lifecycle of the registry -----------------------------------------------------
    async def start(self) -> None:
        """Start the timers, then the sessions known from an earlier run, staggered."""
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat-monitor"),
            asyncio.create_task(self._sample_loop(), name="process-sampler"),
        ]
        rows = await self.store.sessions()
        if rows:
            self._spawn(self._restore(rows))

    async def _restore(self, rows: list[SessionRow]) -> None:
        started = 0
        for row in rows:
            if self.draining:
                return
            session = self._add(row)
            if row.status == "logged_out":
                # Needs a person with a phone: a process would only show QR codes to nobody.
                log.info("session stays down: logged out", extra=self._extra(row.id))
                continue
            if started:
                # Staggered: 50 sessions reconnecting in the same second look like abuse to WhatsApp.
                await asyncio.sleep(self.settings.start_stagger)
            session.child.start()
            started += 1
        log.info("started %d of %d stored sessions", started, len(rows), extra=self._log_extra)

    async def shutdown(self) -> None:
        """Stop every child (ask, SIGTERM, SIGKILL) and the timers; nothing is left running."""
        self.draining = True
        for session in self:
            session.child.stop()
        children = [s.child for s in self]
        if children:
            waits = asyncio.gather(*(c.wait_settled() for c in children))
            try:
                await asyncio.wait_for(waits, self.settings.shutdown_timeout)
            except TimeoutError:
                for child in children:
                    if child.pid is not None:
                        log.warning("killing pid %s at shutdown", child.pid, extra=self._extra(child.name))
                        child.kill_now()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*(c.wait_settled() for c in children)), 5)
        for child in children:
            await child.close()
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(BaseException):
                await task

    # -- commands -----------------------------------------------------------------------
    async def create(
        self, session_id: str, *, user_id: str | None, session_name: str | None, proxy: str | None = None
    ) -> Session:
        """Start a new session, or return the existing one (creating is idempotent)."""
        self._check_open()
        existing = self.sessions.get(session_id)
        if existing is not None:
            if existing.child.state in (ProcState.EXITED, ProcState.STOPPED, ProcState.FATAL):
                existing.child.start()
            return existing
        if len(self.sessions) >= self.settings.max_sessions:
            raise SessionError(
                "CAPACITY", f"this worker hosts its maximum of {self.settings.max_sessions} sessions"
            )
        row = SessionRow(
            id=session_id,
            user_id=user_id,
            session_name=session_name,
            created_at=time.time(),
            status="initializing",
            phone=None,
            last_error=None,
        )
        await self.store.add_session(row)
        session = self._add(row, proxy=proxy)
        session.child.start()
        log.info("session created", extra=self._extra(session_id))
        return session

    async def wait_for_qr(self, session: Session, timeout: float) -> None:
        """Return once the session has a QR, is connected, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while session.qr is None and session.status not in ("connected", "failed", "logged_out"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), remaining)

    async def restart(self, session_id: str) -> Session:
        """Restart a session's process (also revives a failed or logged-out session)."""
        self._check_open()
        session = self.get(session_id)
        session.last_error = None
        session.child.restart()
        return session

    async def delete(self, session_id: str) -> None:
        """Log out, stop the process, remove auth state and the record."""
        session = self.get(session_id)
        child = session.child
        if session.status == "connected" and child.pid is not None:
            try:
                await self.router.request(child.identity, "logout", timeout=10)
            except ChannelError as exc:
                # Deleting must work for a broken session too; the credentials go with the files.
                log.warning("logout before delete failed: %s", exc, extra=self._extra(session_id))
        child.stop()
        try:
            await asyncio.wait_for(child.wait_settled(), self.settings.shutdown_timeout)
        except TimeoutError:
            child.kill_now()
            await child.wait_settled()
        await child.close()
        self.sessions.pop(session_id, None)
        session_dir = self.settings.storage_dir / "sessions" / session_id
        await asyncio.to_thread(shutil.rmtree, session_dir, True)
        await self.store.delete_session(session_id)
        log.info("session deleted", extra=self._extra(session_id))

    async def send_text(self, session_id: str, to: str, text: str) -> dict[str, Any]:
        """Send a text message; returns ``{messageId, status, timestamp}`` once the network took it."""
        self._check_open()
        session = self.get(session_id)
        if session.status != "connected" or session.child.pid is None:
            raise SessionError("SESSION_NOT_CONNECTED", f"session {session_id!r} is {session.status}, not connected")
        message_id = new_message_id()
        body = {"id": message_id, "to": to, "type": "text", "text": text}
        try:
            result = await self.router.request(
                session.child.identity, "send", body, timeout=self.settings.send_timeout
            )
        except RemoteError as exc:
            code = "SESSION_NOT_CONNECTED" if exc.code == "NOT_CONNECTED" else "SEND_FAILED"
            raise SessionError(code, f"send failed: {exc.message}") from None
        except RequestTimeout:
            raise SessionError("SEND_TIMEOUT", "the session did not confirm the send in time") from None
        except PeerGone:
            raise SessionError("SESSION_NOT_CONNECTED", "the session's process is not reachable") from None
        session.messages_out += 1
        return {"messageId": message_id, "status": "sent", "timestamp": result.get("timestamp")}

    def _check_open(self) -> None:
        if self.draining:
            raise SessionError("SHUTTING_DOWN", "the worker is shutting down")

    # -- building sessions ----------------------------------------------------------------
    def _add(self, row: SessionRow, *, proxy: str | None = None) -> Session:
        child = SessionChild(
            row.id,
            self.child_config,
            self.router,
            self.settings.restart_policy,
            proxy=proxy,
            worker_id=self.settings.worker_id,
            on_transition=self._on_transition,
        )
        session = Session(
            id=row.id,
            user_id=row.user_id,
            session_name=row.session_name,
            created_at=row.created_at,
            child=child,
            status=row.status if row.status in STATUSES else "initializing",
            phone=row.phone,
            last_error=row.last_error,
        )
        self.sessions[row.id] = session
        return session

    def _persist(self, session: Session) -> None:
        async def write() -> None:
            try:
                await self.store.update_session(
                    session.id, status=session.status, phone=session.phone, last_error=session.last_error
                )
            except Exception:
                log.exception("cannot persist session state", extra=self._extra(session.id))

        if session.id in self.sessions:
            self._spawn(write())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what children and the policy report ---------------------------------------------------
    def _on_transition(self, child: ChildProcess, before: ProcRecord, after: ProcRecord) -> None:
        session = self.sessions.get(child.name)
        if session is None or before.state == after.state:
            return
        state = after.state
        if state == ProcState.FATAL:
            session.set_status("failed")
            session.last_error = after.fatal_reason
        elif state == ProcState.BACKOFF:
            session.set_status("disconnected")
            reason = after.last_exit.reason if after.last_exit else "exited"
            session.last_error = f"process {reason}; restarting"
        elif state == ProcState.STARTING:
            session.qr = session.qr_expires_at = None
            if session.status != "connected" or before.state != ProcState.STOPPING:
                session.set_status("initializing")
        elif state in (ProcState.STOPPED, ProcState.EXITED) and session.status in LIVE_STATUSES:
            session.set_status("disconnected")
            session.qr = session.qr_expires_at = None
        session.notify()
        self._persist(session)

    def _session_of(self, identity: bytes) -> Session | None:
        parsed = parse_identity(identity)
        if parsed is None:
            log.warning("frame from unknown identity %r dropped", identity[:80], extra=self._log_extra)
            return None
        session_id, incarnation = parsed
        session = self.sessions.get(session_id)
        if session is None or session.child.incarnation != incarnation:
            log.info("frame from stale incarnation %d dropped", incarnation, extra=self._extra(session_id))
            return None
        return session

    async def on_child_event(self, identity: bytes, op: str, body: dict[str, Any]) -> None:
        """An event from a session process."""
        session = self._session_of(identity)
        if session is None:
            return
        session.last_seen = time.time()
        extra = self._extra(session.id)
        if op == "ready":
            session.child.mark_ready(session.child.incarnation)
        elif op == "qr":
            session.qr = str(body.get("qr") or "") or None
            session.qr_expires_at = _float_or_none(body.get("expiresAt"))
            session.qr_count += 1
            session.set_status("qr_ready")
            log.info("QR ready (%d so far)", session.qr_count, extra=extra)
        elif op == "connected":
            session.phone = str(body.get("phone") or "") or None
            session.qr = session.qr_expires_at = None
            session.last_error = None
            session.set_status("connected")
            log.info("connected", extra=extra)
        elif op == "disconnected":
            session.set_status("disconnected")
            session.last_error = str(body.get("reason") or "disconnected")
            log.info("disconnected: %s", session.last_error, extra=extra)
        elif op == "logged_out":
            session.set_status("logged_out")
            session.phone = session.qr = session.qr_expires_at = None
            session.last_error = str(body.get("reason") or "logged out")
            log.info("logged out: %s", session.last_error, extra=extra)
        elif op == "receipt":
            log.debug("receipt %s for %s", body.get("status"), body.get("id"), extra=extra)
            return
        elif op == "creds":
            log.info("credentials changed", extra=extra)
            return
        else:
            log.warning("unknown event %r from session process", op, extra=extra)
            return
        session.notify()
        self._persist(session)

    async def on_child_request(self, identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A request from a session process (it waits for our answer)."""
        session = self._session_of(identity)
        if session is None:
            raise RemoteError("STALE", "this incarnation is no longer current")
        session.last_seen = time.time()
        extra = self._extra(session.id)
        if op == "message":
            session.messages_in += 1
            # Never the text: logs are read by people who must not read customers' messages.
            log.info("message received: id %s type %s", body.get("id"), body.get("type"), extra=extra)
            return {}
        if op == "fatal":
            session.last_error = f"{body.get('code')}: {body.get('error')}"
            log.error("session process failed: %s", session.last_error, extra=extra)
            self._persist(session)
            return {}
        raise RemoteError("UNKNOWN_OP", f"unknown request {op!r}")

    # -- timers ------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        period = self.settings.session_heartbeat_interval / 2
        while True:
            await asyncio.sleep(period)
            for session in self:
                session.child.check_heartbeat()

    async def _sample_loop(self) -> None:
        while True:
            pids = {s.child.pid: s for s in self if s.child.pid is not None}
            own = os.getpid()
            try:
                stats = await asyncio.to_thread(self.sampler.sample, [own, *pids])
            except Exception:
                log.exception("process sampling failed", extra=self._log_extra)
                stats = {}
            self.supervisor_stats = stats.get(own)
            for session in self:
                pid = session.child.pid
                session.stats = stats.get(pid) if pid is not None else None
            await asyncio.sleep(self.settings.sample_interval)


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None

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
from pathlib import Path
from typing import Any

import msgspec

from common.tasks import cancel_and_wait
from supervisor.config import Settings
from supervisor.database.store import MessageRow, SessionRow, Store
from supervisor.messaging.inflight import InFlight, counted_send
from supervisor.messaging.message_id import new_message_id
from supervisor.messaging.outbox import Outbox, OutboxSettings, SendAnswer
from supervisor.qr_image import png_data_url
from supervisor.storage.service import BackupRefused, LeaseHeld, SessionStorage, StorageError
from supervisor.supervision.policy import ExitInfo, ProcRecord
from supervisor.supervision.procs import ChildProcess
from supervisor.supervision.sampler import ProcessSampler, ProcStats
from supervisor.supervision.session_child import ChildConfig, SessionChild, parse_identity
from supervisor.supervision.states import ProcState
from supervisor.timefmt import iso
from transport import wire
from transport.channel import Body, ChannelError, RemoteError, RouterChannel

log = logging.getLogger("supervisor.sessions")

# The engines' reason when a round of QR codes ended without a scan.
QR_TIMEOUT = "qr_timeout"
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
    qr_rounds: int = 0  # login attempts in a row that ended without a scan (qr_timeout)
    last_error: str | None = None
    last_seen: float | None = None
    message_count: int = 0  # messages in history, in and out (kept equal to the store's count)
    messages_in: int = 0  # received since the worker started
    messages_out: int = 0  # accepted for sending since the worker started
    stats: ProcStats | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

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

    def __init__(
        self,
        settings: Settings,
        store: Store,
        router: RouterChannel,
        child_config: ChildConfig,
        *,
        storage: SessionStorage | None = None,
    ) -> None:
        self.settings = settings
        # Leases, backups and media in object storage; None: no storage hooks (unit tests).
        self.storage = storage
        if storage is not None:
            storage.set_lease_lost_handler(self._lease_lost)
        self.store = store
        self.router = router
        self.child_config = child_config
        self.sessions: dict[str, Session] = {}
        self.draining = False
        # POST /send calls under way: the drain lets them answer before it stops the session processes.
        self.sends_in_flight = InFlight()
        self._shutdown: asyncio.Future[None] | None = None
        self.sampler = ProcessSampler()
        self.supervisor_stats: ProcStats | None = None
        self.outbox = Outbox(
            store,
            router,
            self._connected_identity,
            OutboxSettings(
                attempt_timeout=settings.send_attempt_timeout,
                send_timeout=settings.send_timeout,
                message_ttl=settings.message_ttl,
            ),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._event_order: dict[str, asyncio.Lock] = {}
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
        await self.outbox.start()
        rows = await self.store.sessions()
        counts = await self.store.message_counts()
        if rows:
            self._spawn(self._restore(rows, counts))

    async def _restore(self, rows: list[SessionRow], counts: dict[str, int]) -> None:
        started = 0
        for row in rows:
            if self.draining:
                return
            session = self._add(row)
            session.message_count = counts.get(row.id, 0)
            if row.status == "logged_out":
                # Needs a person with a phone: a process would only show QR codes to nobody.
                log.info("session stays down: logged out", extra=self._extra(row.id))
                continue
            if started:
                # Staggered: 50 sessions reconnecting in the same second look like abuse to WhatsApp.
                await asyncio.sleep(self.settings.start_stagger)
            try:
                await self._before_start(row.id)
            except SessionError as exc:
                session.set_status("disconnected")
                session.last_error = exc.message
                log.warning("session stays down: %s", exc.message, extra=self._extra(row.id))
                continue
            session.child.start()
            started += 1
        log.info("started %d of %d stored sessions", started, len(rows), extra=self._log_extra)

    async def shutdown(self) -> None:
        """Stop every child (ask, SIGTERM, SIGKILL) and the timers; nothing is left running.

        Idempotent: the drain calls it, and the app's cleanup again; the second call waits for the first.
        """
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shutdown_once())
        await asyncio.shield(self._shutdown)

    async def _shutdown_once(self) -> None:
        self.draining = True
        for session in self:
            session.child.stop()
        children = [s.child for s in self]
        if children:
            waits = asyncio.gather(*(c.wait_settled() for c in children))
            try:
                async with asyncio.timeout(self.settings.shutdown_timeout):
                    await waits
            except TimeoutError:
                for child in children:
                    if child.pid is not None:
                        log.warning("killing pid %s at shutdown", child.pid, extra=self._extra(child.name))
                        child.kill_now()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*(c.wait_settled() for c in children))
        for child in children:
            await child.close()
        await self.outbox.close()
        await cancel_and_wait(*self._loops, *self._tasks)

    # -- commands -----------------------------------------------------------------------
    async def create(
        self,
        session_id: str,
        *,
        user_id: str | None,
        session_name: str | None,
        proxy: str | None = None,
        takeover: bool = False,
    ) -> Session:
        """Start a new session, or return the existing one (creating is idempotent).

        With ``takeover``, another worker's lease is waited for instead of answered with
        SESSION_LEASED at once: until that worker's liveness record lapses (a few seconds), or
        up to one lease TTL and a margin for a worker that keeps none (storage/leases.py). The
        failover path of a backend that knows the other worker is gone.
        """
        self._check_open()
        existing = self.sessions.get(session_id)
        if existing is not None:
            if existing.child.state in (ProcState.EXITED, ProcState.STOPPED, ProcState.FATAL):
                await self._before_start(session_id)
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
        await self._before_start(session_id, takeover=takeover)
        await self.store.add_session(row)
        session = self._add(row, proxy=proxy)
        session.child.start()
        log.info("session created", extra=self._extra(session_id))
        return session

    async def current_qr(self, session_id: str) -> Session:
        """The session for GET /qr; a session resting after unscanned QR codes starts a new round first."""
        session = self.get(session_id)
        if session.child.state == ProcState.EXITED and session.last_error == QR_TIMEOUT:
            self._check_open()
            session.qr_rounds = 0
            session.qr = session.qr_expires_at = None
            await self._before_start(session_id)
            session.child.start()
            await self.wait_for_qr(session, self.settings.create_qr_wait)
        return session

    async def _start_again(self, session_id: str) -> None:
        try:
            await self._before_start(session_id)
        except SessionError as exc:
            log.warning("not starting again: %s", exc.message, extra=self._extra(session_id))
            return
        session = self.sessions.get(session_id)
        if session is not None:
            session.child.start()

    async def wait_for_qr(self, session: Session, timeout: float) -> None:
        """Return once the session has a QR, is connected, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while session.qr is None and session.status not in ("connected", "failed", "logged_out"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await session.changed.wait()

    async def restart(self, session_id: str) -> Session:
        """Restart a session's process (also revives a failed or logged-out session)."""
        self._check_open()
        session = self.get(session_id)
        session.last_error = None
        session.qr_rounds = 0
        await self._before_start(session_id)
        session.child.restart()
        return session

    async def logout(self, session_id: str) -> Session:
        """Unlink the device but keep the session: the process logs out and exits, then starts for a new QR."""
        self._check_open()
        session = self.get(session_id)
        child = session.child
        await self._log_out_and_stop(session)
        # No credentials may survive an unlink, whatever the engine managed to delete itself.
        await asyncio.to_thread(shutil.rmtree, self.settings.storage_dir / "sessions" / session_id, True)
        session.phone = session.last_error = None
        await self._before_start(session_id, restore=False)
        child.restart()
        log.info("session logged out; starting for a new QR", extra=self._extra(session_id))
        return session

    async def _log_out_and_stop(self, session: Session) -> None:
        """Ask a running process to log out, then stop it for good (SIGKILL past the shutdown timeout)."""
        child = session.child
        if child.pid is not None and session.status not in ("logged_out", "failed"):
            try:
                await wire.ask_child(self.router, child.identity, wire.Logout(), timeout=10)
            except ChannelError as exc:
                # Unlinking must work for a broken session too: its credentials go with its files.
                log.warning("logout request failed: %s", exc, extra=self._extra(session.id))
        child.stop()
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout):
                await child.wait_settled()
        except TimeoutError:
            child.kill_now()
            await child.wait_settled()

    async def pair_code(self, session_id: str, phone: str) -> str:
        """A pairing code for linking ``phone`` (digits) by code instead of a QR scan."""
        self._check_open()
        session = self.get(session_id)
        if session.status == "connected":
            raise SessionError("ALREADY_LINKED", f"session {session_id!r} is already linked")
        child = session.child
        if child.pid is None or child.ready_incarnation != child.incarnation:
            raise SessionError("SESSION_NOT_READY", f"session {session_id!r} is {session.status}; try again shortly")
        try:
            reply = await wire.ask_child(self.router, child.identity, wire.PairCode(phone=phone), timeout=15)
        except RemoteError as exc:
            code = exc.code if exc.code in ("ALREADY_LINKED", "NOT_SUPPORTED", "INVALID_PHONE") else "SESSION_NOT_READY"
            raise SessionError(code, f"no pairing code: {exc.message}") from None
        except ChannelError as exc:
            raise SessionError("SESSION_NOT_READY", f"no pairing code: {exc}") from None
        return reply.code

    async def delete(self, session_id: str) -> None:
        """Log out, stop the process, remove auth state and the record."""
        session = self.get(session_id)
        child = session.child
        await self._log_out_and_stop(session)
        await child.close()
        self.sessions.pop(session_id, None)
        if self.storage is not None:
            await self.storage.forget(session_id)  # backups, lease, media
        for kept in ("sessions", "outgoing"):  # auth state, and uploads staged for sending
            await asyncio.to_thread(shutil.rmtree, self.settings.storage_dir / kept / session_id, True)
        # session.deleted is the session's last event: let the ones queued before it commit first.
        async with self._event_order.pop(session_id, asyncio.Lock()):
            await self.store.delete_session(session_id)
        self.outbox.forget_session(session_id)
        log.info("session deleted", extra=self._extra(session_id))

    @counted_send
    async def send(
        self,
        session_id: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> SendAnswer:
        """Accept a message for sending (durably, under a new id) and answer within the send timeout.

        ``payload`` is the engine's OutgoingMessage without ``id`` (type, to, text, ...).
        """
        self._check_open()
        session = self.get(session_id)
        if session.status != "connected" or self._connected_identity(session_id) is None:
            raise SessionError("SESSION_NOT_CONNECTED", f"session {session_id!r} is {session.status}, not connected")
        message_id = new_message_id()
        payload = {**payload, "id": message_id}
        row = MessageRow(
            session_id=session_id,
            id=message_id,
            direction="out",
            chat=str(payload["to"]),
            sender=f"{session.phone}@s.whatsapp.net" if session.phone else None,
            recipient=str(payload["to"]),
            type=str(payload.get("type", "text")),
            timestamp=time.time(),
            status="pending",
            text=payload.get("text"),
            caption=payload.get("caption"),
            media_ref=payload.get("media_ref"),
            mimetype=payload.get("mimetype"),
            media_size=payload.get("media_size"),
            filename=payload.get("filename"),
            extra=_message_extra(payload),
        )
        for bookkeeping in ("media_ref", "media_size", "media_sha256"):
            payload.pop(bookkeeping, None)
        # Checked against the wire contract here, before it is stored: a key the session process would
        # refuse is a bug of ours, answered now instead of retried until the TTL.
        message = wire.parse(wire.OutgoingMessage, payload, what="message to send")
        answer = await self.outbox.submit(row, message, idempotency_key=idempotency_key, fingerprint=fingerprint)
        if answer.data.get("messageId") == message_id:
            session.messages_out += 1
            session.message_count += 1
        elif payload.get("media_path"):
            # A replay of an earlier answer: this upload's copy of the media is not needed.
            await asyncio.to_thread(Path(payload["media_path"]).unlink, True)
        return answer

    def _connected_identity(self, session_id: str) -> bytes | None:
        """The routing identity of the session's process while it is connected and ready, else None."""
        session = self.sessions.get(session_id)
        if session is None or session.status != "connected":
            return None
        child = session.child
        if child.pid is None or child.ready_incarnation != child.incarnation:
            return None
        return child.identity

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

    async def _before_start(self, session_id: str, *, restore: bool = True, takeover: bool = False) -> None:
        """Take the session's lease (with ``takeover``, waiting while another worker's is in force) and
        restore its auth state from a backup when it is missing here."""
        if self.storage is None:
            return
        try:
            if await self.storage.before_start(session_id, restore=restore, takeover=takeover):
                log.info("auth state restored from object storage", extra=self._extra(session_id))
        except LeaseHeld as exc:
            raise SessionError("SESSION_LEASED", str(exc)) from None
        except BackupRefused as exc:
            raise SessionError("BACKUP_REFUSED", f"the session's backup was refused: {exc}") from None
        except StorageError as exc:
            raise SessionError("STORAGE_UNAVAILABLE", f"cannot check for a backup of this session: {exc}") from None

    def _lease_lost(self, session_id: str, holder: str) -> None:
        """Another worker runs this session now: stop ours, or both would fight over one device."""
        session = self.sessions.get(session_id)
        if session is None:
            return
        session.last_error = f"stopped: worker {holder} took over the session's lease"
        log.warning("lease lost to worker %s; stopping the session", holder, extra=self._extra(session_id))
        session.child.stop()
        session.notify()
        self._persist(session)

    def _emit(self, session_id: str, event: str, data: dict[str, Any], *, qr: str | None = None) -> None:
        """Queue a session event durably, in the order they happen (one lock per session, FIFO)."""
        lock = self._event_order.setdefault(session_id, asyncio.Lock())

        async def write() -> None:
            async with lock:
                try:
                    if qr is not None:
                        data["qrCode"] = await asyncio.to_thread(png_data_url, qr)
                    await self.store.add_event(session_id, event, data)
                except Exception:
                    log.exception("cannot queue the %s event", event, extra=self._extra(session_id))

        self._spawn(write())

    def _emit_qr(self, session_id: str, qr: str, expires_at: float | None, count: int) -> None:
        self._emit(session_id, "qr_ready", {"qr": qr, "expiresAt": iso(expires_at), "qrCount": count}, qr=qr)

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
            self._emit(session.id, "failed", {"reason": after.fatal_reason})
        elif state == ProcState.BACKOFF:
            was = session.status
            session.set_status("disconnected")
            reason = after.last_exit.reason if after.last_exit else "exited"
            session.last_error = f"process {reason}; restarting"
            if was != "disconnected":
                self._emit(session.id, "disconnected", {"reason": session.last_error, "willRetry": True})
        elif state == ProcState.STARTING:
            session.qr = session.qr_expires_at = None
            if session.status != "connected" or before.state != ProcState.STOPPING:
                session.set_status("initializing")
        elif state in (ProcState.STOPPED, ProcState.EXITED):
            session.qr = session.qr_expires_at = None  # nobody can scan a code of a process that is gone
            if session.status in LIVE_STATUSES:
                session.set_status("disconnected")
        if state == ProcState.EXITED and session.last_error == QR_TIMEOUT and not self.draining:
            if session.qr_rounds < self.settings.qr_cycles:
                log.info(
                    "no scan: showing QR codes again (round %d/%d)",
                    session.qr_rounds + 1,
                    self.settings.qr_cycles,
                    extra=self._extra(session.id),
                )
                self._spawn(self._start_again(session.id))
            else:
                # Churning QR codes nobody scans only burns a process: rest until someone asks.
                log.info(
                    "no scan after %d rounds of QR codes: resting until GET /qr or restart",
                    session.qr_rounds,
                    extra=self._extra(session.id),
                )
        if state in (ProcState.STOPPED, ProcState.EXITED, ProcState.FATAL) and self.storage is not None:
            self.storage.on_stopped(session.id)  # down for good: final backup, then the lease goes
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

    async def on_child_event(self, identity: bytes, op: str, body: Body) -> None:
        """An event from a session process."""
        session = self._session_of(identity)
        if session is None:
            return
        session.last_seen = time.time()
        extra = self._extra(session.id)
        try:
            event = wire.decode_event(op, body)
        except wire.WireError as exc:
            wire.refuse(log, exc, extra)  # an event has nobody to answer: dropped
            return
        match event:
            case wire.Ready():
                session.child.mark_ready(session.child.incarnation)
            case wire.Qr(qr=qr, expires_at=expires_at):
                session.qr = qr or None
                session.qr_expires_at = expires_at
                session.qr_count += 1
                session.set_status("qr_ready")
                log.info("QR ready (%d so far)", session.qr_count, extra=extra)
                if session.qr is not None:
                    self._emit_qr(session.id, session.qr, session.qr_expires_at, session.qr_count)
            case wire.Connected(phone=phone, push_name=push_name):
                session.phone = phone or None
                session.qr = session.qr_expires_at = None
                session.last_error = None
                session.set_status("connected")
                session.qr_rounds = 0
                log.info("connected", extra=extra)
                self._emit(session.id, "connected", {"phoneNumber": session.phone, "pushName": push_name})
                self.outbox.kick(session.id)
            case wire.Disconnected(reason=reason, will_retry=will_retry):
                session.set_status("disconnected")
                session.qr = session.qr_expires_at = None
                session.last_error = reason or "disconnected"
                if session.last_error == QR_TIMEOUT:
                    session.qr_rounds += 1
                log.info("disconnected: %s", session.last_error, extra=extra)
                self._emit(session.id, "disconnected", {"reason": session.last_error, "willRetry": will_retry})
            case wire.LoggedOut(reason=reason):
                session.set_status("logged_out")
                session.phone = session.qr = session.qr_expires_at = None
                session.last_error = reason or "logged out"
                log.info("logged out: %s", session.last_error, extra=extra)
                self._emit(session.id, "logged_out", {"reason": session.last_error})
                if self.storage is not None:
                    self.storage.on_logged_out(session.id)
            case wire.Receipt(id=message_id, status=status):
                await self.store.apply_receipt(session.id, message_id, status)
                return
            case wire.Creds():
                log.info("credentials changed", extra=extra)
                if self.storage is not None:
                    self.storage.on_creds(session.id)
                return
        session.notify()
        self._persist(session)

    async def on_child_request(self, identity: bytes, op: str, body: Body) -> wire.Reply:
        """A request from a session process (it waits for our answer)."""
        session = self._session_of(identity)
        if session is None:
            raise RemoteError("STALE", "this incarnation is no longer current")
        session.last_seen = time.time()
        extra = self._extra(session.id)
        try:
            request = wire.decode_supervisor_request(op, body)
        except wire.WireError as exc:
            raise wire.refuse(log, exc, extra) from None
        match request:
            case wire.IncomingMessage():
                row = incoming_row(session.id, request)
                view = message_view(row)
                if row.media_ref is not None:
                    row.media_ref, view["mediaUrl"] = await self._store_incoming_media(session.id, row)
                # Committed before we answer: only then does the process acknowledge it to the network.
                if await self.store.add_incoming(row, {"message": view}):
                    session.messages_in += 1
                    session.message_count += 1
                    # Never the text: logs are read by people who must not read customers' messages.
                    log.info("message received: id %s type %s", row.id, row.type, extra=extra)
                else:
                    log.info("duplicate message %s ignored", row.id, extra=extra)
            case wire.Fatal(code=code, error=error):
                session.last_error = f"{code}: {error}"
                log.error("session process failed: %s", session.last_error, extra=extra)
                self._persist(session)
        return wire.Done()

    async def _store_incoming_media(self, session_id: str, row: MessageRow) -> tuple[str | None, str | None]:
        """Move a received message's media (a file the session process wrote) into object storage.

        Returns the object key and a URL for it; (None, None) when storage refused it: the message
        is still committed (a message is never lost for its attachment), without a mediaUrl.
        """
        local = Path(row.media_ref or "")
        if self.storage is None:
            return None, None
        try:
            key = await self.storage.put_media(
                session_id, local, content_type=row.mimetype, name=f"in-{row.id}{local.suffix}"
            )
            return key, await self.storage.media_url(key)
        except (StorageError, OSError) as exc:
            log.warning("media of message %s not stored: %s", row.id, exc, extra=self._extra(session_id))
            return None, None

    async def media_url(self, key: str | None) -> str | None:
        """A fresh URL for a stored media object (None without one, or while storage refuses)."""
        if key is None or self.storage is None:
            return None
        try:
            return await self.storage.media_url(key)
        except StorageError:
            return None

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


# Fields of an outgoing/incoming message kept in history's `extra` column.
_EXTRA_KEYS = ("latitude", "longitude", "name", "address", "vcard", "reaction_to", "reply_to", "mentions")


def _message_extra(wire_fields: dict[str, Any]) -> dict[str, Any]:
    return {k: wire_fields[k] for k in _EXTRA_KEYS if wire_fields.get(k) not in (None, [], "")}


def incoming_row(session_id: str, message: wire.IncomingMessage) -> MessageRow:
    """A history row from a session process's ``message`` request."""
    return MessageRow(
        session_id=session_id,
        id=message.id,
        direction="in",
        chat=message.chat or message.sender,
        sender=message.sender,
        recipient=message.to,
        type=message.type or "text",
        timestamp=message.timestamp if message.timestamp > 0 else time.time(),
        status="received",
        text=message.text,
        caption=message.caption,
        media_ref=message.media_path,
        mimetype=message.mimetype,
        media_size=message.media_size,
        extra=_message_extra(msgspec.structs.asdict(message)),
    )


def message_view(row: MessageRow) -> dict[str, Any]:
    """A message as history and events show it (mediaUrl is filled in where media is stored)."""
    return {
        "id": row.id,
        "direction": row.direction,
        "chat": row.chat,
        "from": row.sender,
        "to": row.recipient,
        "type": row.type,
        "text": row.text,
        "caption": row.caption,
        "mimetype": row.mimetype,
        "mediaSize": row.media_size,
        "mediaUrl": None,
        "timestamp": iso(row.timestamp),
        "status": row.status,
        "error": row.error,
        **{_camel(k): v for k, v in row.extra.items()},
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)

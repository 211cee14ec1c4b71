"""The sessions this worker hosts: lookup, the commands API routes give, and the
facade routes read through.

Routes never touch the store, the outbox or the children directly: every command
and every figure about sessions comes through the registry. A session's status
changes only in ``supervisor.sessions.status``; the registry carries out the
effects that machine returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from common.closing import Closing
from common.message_id import new_message_id
from common.tasks import BackgroundTasks, cancel_and_wait
from supervisor.config import Settings
from supervisor.database.account_store import AccountStore
from supervisor.database.store import ConsumerLag, MessageRow, OutboxRow, SessionRow, Store
from supervisor.messaging import changes
from supervisor.messaging.figures import MessageFigures
from supervisor.messaging.history import message_view, outgoing_row
from supervisor.messaging.inflight import InFlight
from supervisor.messaging.media_removal import MediaRemovals
from supervisor.messaging.outbox import Outbox, OutboxSettings, SendAnswer
from supervisor.messaging.outbox_figures import OutboxFigures
from supervisor.messaging.pacer import Pacer
from supervisor.messaging.pacing import PacingPolicy, overridden
from supervisor.messaging.retention import HistoryRetention
from supervisor.sessions import status as st
from supervisor.sessions.account import AccountOperations
from supervisor.sessions.child_events import ChildListener
from supervisor.sessions.emitter import SessionEvents
from supervisor.sessions.incoming import IncomingMessages
from supervisor.sessions.poll_votes import PollVotes
from supervisor.sessions.proxy import ProxySeal, ProxyUnreadable, masked
from supervisor.sessions.session import Session, SessionError
from supervisor.sessions.settings import SessionSettings
from supervisor.sessions.snapshot import WorkerSnapshot, session_figures, take_snapshot
from supervisor.sessions.status import QR_TIMEOUT, QR_WAIT_OVER, SessionStatus, StatusRecord, StatusRules
from supervisor.sessions.timers import ResourceSampler, check_heartbeats
from supervisor.storage.service import BackupRefused, LeaseHeld, SessionStorage, StorageError
from supervisor.supervision.policy import ProcRecord
from supervisor.supervision.procs import ChildProcess
from supervisor.supervision.sample_history import Sample
from supervisor.supervision.session_child import ChildConfig, SessionChild
from supervisor.supervision.states import ProcState
from supervisor.timefmt import iso
from transport import wire
from transport.channel import Body, ChannelError, RemoteError, RequestTimeout, RouterChannel

log = logging.getLogger("supervisor.sessions")

# Process states from which a session's process can be started again by a command.
_DOWN = (ProcState.EXITED, ProcState.STOPPED, ProcState.FATAL)
# Seconds a client is told to wait before sending again to a session that is starting or reconnecting.
START_RETRY_AFTER = 2.0
# Seconds an account operation (read receipts, presence, contacts, groups...) may take in the session process.
ASK_TIMEOUT = 15.0
R = TypeVar("R", bound=wire.Reply)


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
        self.started_at = time.time()  # the worker's start: uptime and startTime count from here
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
        self.rules = StatusRules(qr_cycles=settings.qr_cycles)
        self.log_extra = {"workerId": settings.worker_id}
        self.resources = ResourceSampler(
            settings.sample_interval,
            worker_id=settings.worker_id,
            memory_limit=int(settings.session_memory_limit_mb * 1024 * 1024),
            storage_dir=settings.storage_dir,
            disk_warn_bytes=int(settings.disk_free_warn_mb * 1024 * 1024),
        )
        self.events = SessionEvents(store, worker_id=settings.worker_id)
        self.incoming = IncomingMessages(
            store, storage, worker_id=settings.worker_id, sessions_dir=settings.storage_dir.resolve() / "sessions"
        )
        self.poll_votes = PollVotes(store, worker_id=settings.worker_id)
        self.children = ChildListener(self)
        self.account = AccountOperations(self, AccountStore(store))  # read, presence, settings, chats, calls
        self.proxies = ProxySeal(settings.encryption_key)
        self.outbox = Outbox(
            store,
            router,
            self._connected_identity,
            OutboxSettings(
                attempt_timeout=settings.send_attempt_timeout,
                send_timeout=settings.send_timeout,
                message_ttl=settings.message_ttl,
                staging_dir=settings.storage_dir / "outgoing",
            ),
            Pacer(store, self.pacing_policy, self._linked_at),
        )
        self._tasks = BackgroundTasks()
        self.media_removals = MediaRemovals(store, storage, settings.storage_dir / "sessions")
        store.on_media_revoked = self._media_revoked
        # Stored sessions waiting for their staggered start after a worker start.
        self._queued: set[str] = set()
        # Sessions' own pacing settings (the rest of their settings is read where it is used).
        self._pacing_own: dict[str, dict[str, Any]] = {}
        self._loops: list[asyncio.Task[None]] = []

    # -- lookup ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Session]:
        return iter(list(self.sessions.values()))

    def get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise SessionError("SESSION_NOT_FOUND", f"session {session_id!r} does not exist") from None

    # -- the operator's dashboard --------------------------------------------------------

    def samples(self, session_id: str) -> list[Sample]:
        """The session process's CPU and memory over the last hour, oldest first."""
        self.get(session_id)
        return self.resources.history.points(session_id)

    def stderr_lines(self, session_id: str) -> list[str]:
        """The last lines the session's process wrote to its stderr (a Go panic lands there), oldest first."""
        return list(self.get(session_id).child.stderr.lines)

    def storage_figures(self, session_id: str) -> tuple[str | None, float | None]:
        """The session's lease on this worker and its last backup's time (None, None without storage)."""
        self.get(session_id)
        if self.storage is None:
            return None, None
        return self.storage.session_figures(session_id)

    async def outbox_figures(self, session_id: str) -> OutboxFigures:
        """What waits in the session's outbox, and how many of its messages ended unknown or failed."""
        self.get(session_id)
        pending, oldest = self.outbox.waiting_of(session_id)
        ended = await self.store.status_counts(session_id, ("unknown", "failed"))
        return OutboxFigures(pending, oldest, ended.get("unknown", 0), ended.get("failed", 0))

    def extra(self, session_id: str) -> dict[str, str]:
        """Log fields naming the session and this worker."""
        return {"sessionId": session_id, **self.log_extra}

    # -- lifecycle of the registry -----------------------------------------------------
    async def start(self) -> None:
        """Start the timers, then the sessions known from an earlier run, staggered."""
        self._loops = [
            asyncio.create_task(
                check_heartbeats(self.__iter__, self.settings.session_heartbeat_interval), name="heartbeat-monitor"
            ),
            asyncio.create_task(self.resources.run(self.__iter__), name="process-sampler"),
        ]
        # Also without MESSAGE_RETENTION_DAYS: its sweep (now, then hourly) retries queued media removals.
        retention = HistoryRetention(
            self.store,
            self.media_removals,
            days=self.settings.message_retention_days,
            on_removed=self._history_removed,
        )
        self._loops.append(asyncio.create_task(retention.run(), name="history-retention"))
        # Each session's own pace, before the first send is accepted.
        for session_id, data in (await self.account.store.all_settings()).items():
            self._pacing_own[session_id] = SessionSettings.from_stored(data).pacing
        await self.outbox.start()
        rows = await self.store.sessions()
        counts = await self.store.message_counts()
        proxies, resealed = await asyncio.to_thread(self._open_proxies, rows)
        # Together: one group commit.
        await asyncio.gather(*(self.store.update_session(sid, proxy=blob) for sid, blob in resealed.items()))
        # Every stored session is known before the API answers its first call: listed, and a send to it
        # answered "not connected, retry", never "does not exist" (a backend would create it elsewhere).
        waiting: list[Session] = []
        for row in rows:
            logged_out = row.status == SessionStatus.LOGGED_OUT
            if not logged_out:
                row = dataclasses.replace(row, status=SessionStatus.INITIALIZING.value)  # until its process runs
            proxy = proxies.get(row.id)
            session = self._add(row, proxy=proxy if isinstance(proxy, str) else None)
            session.message_count = counts.get(row.id, 0)
            if isinstance(proxy, ProxyUnreadable):
                # Never started without it: it would connect from this worker's own address.
                session.proxy_error = f"{proxy}; not started without its proxy: create the session again with its proxy"
                self.apply_status(session, st.StartRefused(time.time(), session.proxy_error))
            elif logged_out:
                # Needs a person with a phone: a process would only show QR codes to nobody.
                log.info("session stays down: logged out", extra=self.extra(row.id))
                # A crash may have come between the unlink and failing what still waited.
                self._tasks.spawn(self._fail_queued(row.id, st.LOGGED_OUT_ERROR))
            else:
                waiting.append(session)
        if waiting:
            self._queued = {s.id for s in waiting}
            self._tasks.spawn(self._start_stored(waiting, len(rows)))

    def _open_proxies(self, rows: list[SessionRow]) -> tuple[dict[str, str | ProxyUnreadable], dict[str, bytes]]:
        """The stored proxies by session, and what to store instead (blocking: a thread).

        With ENCRYPTION_KEY each readable one is sealed again under this run's salt (a plain one for the
        first time): the next start then derives one key by scrypt, not one per run that stored a proxy.
        """
        opened: dict[str, str | ProxyUnreadable] = {}
        resealed: dict[str, bytes] = {}
        for row in rows:
            if row.proxy is None:
                continue
            try:
                opened[row.id] = url = self.proxies.open(row.proxy, row.id)
            except ProxyUnreadable as exc:
                opened[row.id] = exc
                continue
            if self.proxies.encrypting:
                resealed[row.id] = self.proxies.seal(url, row.id)
        return opened, resealed

    async def _start_stored(self, sessions: list[Session], stored: int) -> None:
        started = 0
        for session in sessions:
            if self.draining:
                return
            if session.id not in self.sessions:  # deleted meanwhile
                continue
            if started:
                # Staggered: 50 sessions reconnecting in the same second look like abuse to WhatsApp.
                await asyncio.sleep(self.settings.start_stagger)
            try:
                await self._before_start(session.id)
            except SessionError as exc:
                self.apply_status(session, st.StartRefused(time.time(), exc.message))
                continue
            finally:
                self._queued.discard(session.id)
            if session.child.state in _DOWN and session.child.pid is None:  # not started by a command meanwhile
                session.child.start()
            started += 1
        log.info("started %d of %d stored sessions", started, stored, extra=self.log_extra)

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
                        log.warning("killing pid %s at shutdown", child.pid, extra=self.extra(child.name))
                        child.kill_now()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*(c.wait_settled() for c in children))
        closing = Closing(log, extra=self.log_extra)
        for child in children:
            with closing.step(f"session {child.name}", extra={"sessionId": child.name}):
                await child.close()
        with closing.step("outbox"):
            await self.outbox.close()
        await cancel_and_wait(*self._loops)
        await self._tasks.close()
        await self.events.close()
        closing.raise_if_failed()

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

        ``proxy`` is stored with a new session and used on every start. For an existing session it must
        be the one stored or None (PROXY_MISMATCH otherwise); given for a session whose stored proxy
        cannot be read, it replaces that one, and the session starts again.

        With ``takeover``, another worker's lease is waited for instead of answered with
        SESSION_LEASED at once: until that worker's liveness record lapses (a few seconds), or
        up to one lease TTL and a margin for a worker that keeps none (storage/leases.py). The
        failover path of a backend that knows the other worker is gone.
        """
        self._check_open()
        existing = self.sessions.get(session_id)
        if existing is not None:
            if proxy is not None and existing.proxy_error is not None:
                stored = await asyncio.to_thread(self.proxies.seal, proxy, session_id)
                await self.store.update_session(session_id, proxy=stored)
                existing.child.proxy, existing.proxy_error = proxy, None
                log.info("proxy stored again (%s)", masked(proxy), extra=self.extra(session_id))
            elif proxy is not None and proxy != existing.proxy:
                raise SessionError(
                    "PROXY_MISMATCH",
                    f"session {session_id!r} exists with {masked(existing.proxy) or 'no proxy'} as its proxy, not "
                    f"{masked(proxy)}; leave proxy out to get the session, or delete it to change its proxy",
                )
            if existing.child.state in _DOWN:
                await self._before_start(session_id)
                existing.child.start()
            return existing
        if len(self.sessions) >= self.settings.max_sessions:
            raise SessionError("CAPACITY", f"this worker hosts its maximum of {self.settings.max_sessions} sessions")
        row = SessionRow(
            id=session_id,
            user_id=user_id,
            session_name=session_name,
            created_at=time.time(),
            status=SessionStatus.INITIALIZING,
            phone=None,
            last_error=None,
            proxy=None if proxy is None else await asyncio.to_thread(self.proxies.seal, proxy, session_id),
        )
        await self._before_start(session_id, takeover=takeover)
        try:
            await self.store.add_session(row)
        except BaseException:
            # Nothing half-made: a create the database refused (a full disk) holds no lease either.
            if self.storage is not None:
                await self.storage.abandon(session_id)
            raise
        session = self._add(row, proxy=proxy)
        session.child.start()
        log.info("session created (proxy: %s)", masked(proxy) or "none", extra=self.extra(session_id))
        return session

    async def current_qr(self, session_id: str) -> Session:
        """The session for GET /qr; a session resting after unscanned QR codes starts a new round first."""
        session = self.get(session_id)
        if session.child.state == ProcState.EXITED and session.last_error == QR_TIMEOUT:
            self._check_open()
            self.apply_status(session, st.QrRoundAsked(time.time()))
            await self._before_start(session_id)
            session.child.start()
            await self.wait_for_qr(session, self.settings.create_qr_wait)
        return session

    async def _start_again(self, session_id: str) -> None:
        try:
            await self._before_start(session_id)
        except SessionError as exc:
            log.warning("not starting again: %s", exc.message, extra=self.extra(session_id))
            return
        session = self.sessions.get(session_id)
        if session is not None:
            session.child.start()

    async def wait_for_qr(self, session: Session, timeout: float) -> None:
        """Return once the session has a QR, is connected, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while session.qr is None and session.status not in QR_WAIT_OVER:
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
        self.apply_status(session, st.RestartAsked(time.time()))
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
        self.apply_status(session, st.Unlinked(time.time()))
        await self._before_start(session_id, restore=False)
        child.restart()
        log.info("session logged out; starting for a new QR", extra=self.extra(session_id))
        return session

    async def _log_out_and_stop(self, session: Session) -> None:
        """Ask a running process to log out, then stop it for good (SIGKILL past the shutdown timeout)."""
        child = session.child
        if child.pid is not None and session.status not in (SessionStatus.LOGGED_OUT, SessionStatus.FAILED):
            try:
                await wire.ask_child(self.router, child.identity, wire.Logout(), timeout=10)
            except ChannelError as exc:
                # Unlinking must work for a broken session too: its credentials go with its files.
                log.warning("logout request failed: %s", exc, extra=self.extra(session.id))
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
        if session.status == SessionStatus.CONNECTED:
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
        async with self.events.last(session_id):
            await self.store.delete_session(session_id)
        self.outbox.forget_session(session_id)
        self._pacing_own.pop(session_id, None)
        log.info("session deleted", extra=self.extra(session_id))

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
        with self.sends_in_flight.track():
            self._check_open()
            session = self.get(session_id)
            if idempotency_key is not None:
                # A known key is answered as the first time, whatever the session is doing now.
                replayed = await self.outbox.replay(session_id, idempotency_key, fingerprint)
                if replayed is not None:
                    if payload.get("media_path"):  # this upload's copy of the media is not needed
                        await asyncio.to_thread(Path(payload["media_path"]).unlink, True)
                    return replayed
            self._check_sendable(session)
            message_id = new_message_id()
            payload = {**payload, "id": message_id}
            sender = f"{session.phone}@s.whatsapp.net" if session.phone else None
            row = outgoing_row(session_id, payload, sender=sender)
            for bookkeeping in ("media_ref", "media_size", "media_sha256"):
                payload.pop(bookkeeping, None)
            # Checked against the wire contract here, before it is stored: a key the session process would
            # refuse is a bug of ours, answered now instead of retried until the TTL.
            message = wire.parse(wire.OutgoingMessage, payload, what="message to send")
            answer = await self.outbox.submit(
                session_id, message, row=row, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if answer.data.get("messageId") == message_id:
                session.messages_out += 1
                session.message_count += 1
            elif payload.get("media_path"):
                # A replay of an earlier answer: this upload's copy of the media is not needed.
                await asyncio.to_thread(Path(payload["media_path"]).unlink, True)
            return answer

    def _check_sendable(self, session: Session) -> None:
        """SessionError unless the session is connected (sends are refused, not queued, while it is not)."""
        session_id = session.id
        if session.status != SessionStatus.CONNECTED or self._connected_identity(session_id) is None:
            # Starting or reconnecting by itself: the client may try again shortly. Otherwise
            # (QR shown, logged out, failed) it takes a person, and no Retry-After is promised.
            coming = session.status in (SessionStatus.INITIALIZING, SessionStatus.DISCONNECTED) and (
                session.child.state not in _DOWN or session_id in self._queued
            )
            raise SessionError(
                "SESSION_NOT_CONNECTED",
                f"session {session_id!r} is {session.status}, not connected",
                retry_after=START_RETRY_AFTER if coming else None,
            )

    async def change_message(
        self,
        session_id: str,
        message_id: str,
        *,
        text: str | None,
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> SendAnswer:
        """Edit our own message's text (``text``), or delete it for everyone (``text`` None), through the
        outbox like a send (messaging/changes.py); SessionError when the message cannot be changed."""
        with self.sends_in_flight.track():
            self._check_open()
            session = self.get(session_id)
            known = idempotency_key is not None and await self.outbox.replay(session_id, idempotency_key, fingerprint)
            if known:  # answered as the first time, whatever the session or the message is now
                return known
            target = await self.store.message(session_id, message_id)
            if text is None:
                fields = changes.revoke_payload(target, message_id)
            else:
                fields = changes.edit_payload(
                    target, message_id, text, now=time.time(), window=self.settings.edit_window
                )
            self._check_sendable(session)
            payload = wire.parse(wire.OutgoingMessage, {**fields, "id": new_message_id()}, what="message change")
            return await self.outbox.submit(
                session_id, payload, row=None, idempotency_key=idempotency_key, fingerprint=fingerprint
            )

    async def ask(
        self,
        session_id: str,
        request: wire.ChildRequest[R],
        *,
        passthrough: frozenset[str] = frozenset(),
        timeout: float = ASK_TIMEOUT,
    ) -> R:
        """Carry out an account operation in the session's process (connected) and return its reply.

        The engine's error codes in ``passthrough`` reach the client as they are (each must be an
        ``ErrorCode`` with its HTTP status); any other engine error is ``ENGINE_ERROR``, a process that
        does not answer in ``timeout`` is ``ENGINE_TIMEOUT``, and one that went away or lost WhatsApp
        meanwhile is ``SESSION_NOT_CONNECTED`` with a Retry-After.
        """
        self._check_open()
        session = self.get(session_id)
        identity = self._connected_identity(session_id)
        if identity is None:
            raise SessionError("SESSION_NOT_CONNECTED", f"session {session_id!r} is {session.status}, not connected")
        try:
            return await wire.ask_child(self.router, identity, request, timeout=timeout)
        except RemoteError as exc:
            if exc.code == wire.ERR_NOT_CONNECTED:
                # Its connection dropped between our status check and the call: a race, not a failure.
                raise SessionError(
                    "SESSION_NOT_CONNECTED",
                    f"session {session_id!r} lost its connection: {exc.message}",
                    retry_after=START_RETRY_AFTER,
                ) from None
            code = exc.code if exc.code in passthrough else "ENGINE_ERROR"
            if code == "ENGINE_ERROR":
                log.warning(
                    "%s failed in the engine: %s %s", request.OP, exc.code, exc.message, extra=self.extra(session_id)
                )
            raise SessionError(code, exc.message) from None
        except RequestTimeout:
            log.warning("%s: no answer in %.0fs", request.OP, timeout, extra=self.extra(session_id))
            raise SessionError("ENGINE_TIMEOUT", f"the session did not answer in {timeout:g}s") from None
        except ChannelError as exc:
            # The process restarted or crashed meanwhile (a Go panic ends it): the client may try again.
            raise SessionError(
                "SESSION_NOT_CONNECTED", f"the session's process went away: {exc}", retry_after=START_RETRY_AFTER
            ) from None

    def pacing_policy(self, session_id: str) -> PacingPolicy:
        """The pace of the session's sends: its own settings over the worker's defaults (PACING_*)."""
        return overridden(self.settings.pacing, self._pacing_own.get(session_id, {}))

    def settings_changed(self, session_id: str, settings: SessionSettings) -> None:
        """A session's settings were changed (and committed): in force from its next send."""
        self._pacing_own[session_id] = settings.pacing

    def _linked_at(self, session_id: str) -> float | None:
        # Warm-up counts from when the session's number was linked (None: no number yet).
        session = self.sessions.get(session_id)
        return session.linked_at if session is not None else None

    def _linked(self, session: Session, phone: str, at: float) -> None:
        """A number other than the last one linked to the session connected: its warm-up starts now."""
        session.linked_phone, session.linked_at = phone, at
        if self.outbox.pacer is not None:
            self.outbox.pacer.linked(session.id, at)
        log.info("number %s linked: pacing's warm-up counts from now", phone, extra=self.extra(session.id))

        async def write() -> None:
            try:
                await self.store.update_session(session.id, linked_phone=phone, linked_at=at)
            except Exception:
                log.exception("cannot persist when the number was linked", extra=self.extra(session.id))

        self._tasks.spawn(write())

    def _connected_identity(self, session_id: str) -> bytes | None:
        """The routing identity of the session's process while it is connected and ready, else None."""
        session = self.sessions.get(session_id)
        if session is None or session.status != SessionStatus.CONNECTED:
            return None
        child = session.child
        if child.pid is None or child.ready_incarnation != child.incarnation:
            return None
        return child.identity

    def _check_open(self) -> None:
        if self.draining:
            raise SessionError("SHUTTING_DOWN", "the worker is shutting down")

    # -- what routes read ----------------------------------------------------------------
    def snapshot(self) -> WorkerSnapshot:
        """Sessions by status and the processes' resource use, now (for /health, /metrics, heartbeats)."""
        figures = (session_figures(s, self.outbox.waiting_of(s.id)) for s in self)
        return take_snapshot(
            figures,
            self.resources.supervisor,
            max_sessions=self.settings.max_sessions,
            capacity=self.resources.capacity,
            started_at=self.started_at,
            at=time.time(),
            disk=self.resources.disk,
        )

    def _media_revoked(self, message: MessageRow) -> None:
        """A message deleted for everyone takes its media along, as retention would (in the background:
        the revoke's commit and its answer never wait for storage; what this misses, the queue keeps)."""
        self._tasks.spawn(self.media_removals.remove_revoked(message))

    def _history_removed(self, session_id: str, count: int) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.message_count = max(0, session.message_count - count)

    async def message_figures(self) -> MessageFigures:
        """Message totals of the durable history, kept running by the store (no query)."""
        return self.store.tally.figures(time.time())

    async def event_consumer_lag(self) -> list[ConsumerLag]:
        """Where each durable event consumer (backend feed, webhooks) stands, with its oldest undelivered event."""
        return await self.store.consumer_lag()

    def database_figures(self) -> tuple[int, int, int]:
        """``(commits, writes, outbox waiting)``: how writes are grouped, and what is not sent yet."""
        commits, writes = self.store.commits
        return commits, writes, self.outbox.waiting

    async def ping_database(self) -> None:
        """Raise when the database cannot answer a read."""
        await self.store.ping()

    def outbox_view(self, session_id: str) -> list[dict[str, Any]]:
        """The session's waiting messages, in the order they go out, with when and why each waits."""
        self.get(session_id)
        now = time.time()
        connected = self._connected_identity(session_id) is not None
        rows = sorted(self.outbox.waiting_in(session_id), key=lambda r: (r.next_attempt_at, r.created_at))
        return [
            {
                "messageId": row.message_id,
                "to": str(row.payload.get("to", "")),
                "type": str(row.payload.get("type", "text")),
                "acceptedAt": iso(row.created_at),
                "scheduledAt": iso(max(row.next_attempt_at, row.created_at)),
                "reason": _waits_for(row, now, connected, self.outbox.sending(session_id, row.message_id)),
                "attempts": row.attempts,
                "expiresAt": iso(row.expires_at),
            }
            for row in rows
        ]

    async def cancel_queued(self, session_id: str, message_id: str) -> bool | None:
        """Cancel a waiting message: True; False: it is being sent right now; None: nothing waits by that id."""
        self.get(session_id)
        if not any(r.message_id == message_id for r in self.outbox.waiting_in(session_id)):
            return None
        return await self.outbox.cancel(session_id, message_id)

    async def history(
        self,
        session_id: str,
        *,
        limit: int,
        offset: int,
        chat: str | None,
        direction: str | None,
        since: float | None,
        until: float | None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the session's message history as views (newest first), and the total that matched."""
        rows, total = await self.store.messages(
            session_id, limit=limit, offset=offset, chat=chat, direction=direction, since=since, until=until
        )
        views = []
        for row in rows:
            view = message_view(row)
            view["mediaUrl"] = await self.media_url(row.media_ref)
            views.append(view)
        return views, total

    async def poll_results(self, session_id: str, poll_id: str) -> dict[str, Any] | None:
        """A poll's tally from history (each voter's latest vote); None for no such poll, SessionError
        MESSAGE_REVOKED for one deleted for everyone."""
        return await self.poll_votes.results(session_id, poll_id)

    async def sent_media_url(self, session_id: str, message_id: str) -> str | None:
        """A fresh URL for the media of a message this worker accepted (None without stored media)."""
        row = await self.store.message(session_id, message_id)
        return await self.media_url(row.media_ref if row else None)

    async def media_url(self, key: str | None) -> str | None:
        """A fresh URL for a stored media object (None without one, or while storage refuses)."""
        if key is None or self.storage is None:
            return None
        try:
            return await self.storage.media_url(key)
        except StorageError:
            return None

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
        state = StatusRecord(
            status=st.status_of(row.status), status_since=time.time(), phone=row.phone, last_error=row.last_error
        )
        session = Session(
            id=row.id,
            user_id=row.user_id,
            session_name=row.session_name,
            created_at=row.created_at,
            child=child,
            state=state,
            linked_phone=row.linked_phone,
            linked_at=row.linked_at,
        )
        self.sessions[row.id] = session
        return session

    async def _before_start(self, session_id: str, *, restore: bool = True, takeover: bool = False) -> None:
        """Take the session's lease (with ``takeover``, waiting while another worker's is in force) and
        restore its auth state from a backup when it is missing here. Refused for a session whose stored
        proxy cannot be read: it would connect from this worker's own address."""
        session = self.sessions.get(session_id)
        if session is not None and session.proxy_error is not None:
            raise SessionError("PROXY_UNREADABLE", session.proxy_error)
        if self.storage is None:
            return
        try:
            if await self.storage.before_start(session_id, restore=restore, takeover=takeover):
                log.info("auth state restored from object storage", extra=self.extra(session_id))
        except LeaseHeld as exc:
            raise SessionError("SESSION_LEASED", str(exc)) from None
        except BackupRefused as exc:
            raise SessionError("BACKUP_REFUSED", f"the session's backup was refused: {exc}") from None
        except StorageError as exc:
            raise SessionError("STORAGE_UNAVAILABLE", f"cannot check for a backup of this session: {exc}") from None

    # -- status changes and their effects -------------------------------------------------
    def _lease_lost(self, session_id: str, holder: str) -> None:
        """Another worker runs this session now: stop ours, or both would fight over one device."""
        session = self.sessions.get(session_id)
        if session is not None:
            self.apply_status(session, st.LeaseLost(time.time(), holder))

    def _on_transition(self, child: ChildProcess, before: ProcRecord, after: ProcRecord) -> None:
        session = self.sessions.get(child.name)
        if session is None:
            return
        changed = st.ProcessChanged(
            time.time(),
            before=before.state,
            after=after.state,
            exit_reason=after.last_exit.reason if after.last_exit else None,
            fatal_reason=after.fatal_reason,
            draining=self.draining,
        )
        self.apply_status(session, changed)

    async def on_child_event(self, identity: bytes, op: str, body: Body) -> None:
        """An event from a session process (see ``supervisor.sessions.child_events``)."""
        await self.children.on_event(identity, op, body)

    async def on_child_request(self, identity: bytes, op: str, body: Body) -> wire.Reply:
        """A request from a session process (see ``supervisor.sessions.child_events``)."""
        return await self.children.on_request(identity, op, body)

    def apply_status(self, session: Session, event: st.Event) -> None:
        """Move the session's status by ``event`` and carry out the effects, in order."""
        session.state, effects = st.apply(session.state, event, self.rules)
        if isinstance(event, st.Connected) and event.phone and event.phone != session.linked_phone:
            self._linked(session, event.phone, event.now)
        for effect in effects:
            self._carry_out(session, effect)

    def _carry_out(self, session: Session, effect: st.Effect) -> None:
        if isinstance(effect, st.Log):
            log.log(effect.level, "%s", effect.message, extra=self.extra(session.id))
        elif isinstance(effect, st.Emit):
            self.events.emit(session.id, effect.event, effect.data, qr=effect.qr)
        elif isinstance(effect, st.Notify):
            session.notify()
        elif isinstance(effect, st.Persist):
            self._persist(session)
        elif isinstance(effect, st.KickOutbox):
            self.outbox.kick(session.id)
        elif isinstance(effect, st.FailQueued):
            self._tasks.spawn(self._fail_queued(session.id, effect.error))
        elif isinstance(effect, st.MarkReady):
            session.child.mark_ready(session.child.incarnation)
        elif isinstance(effect, st.StopProcess):
            session.child.stop()
        elif isinstance(effect, st.StartAgain):
            self._tasks.spawn(self._start_again(session.id))
        elif isinstance(effect, st.StorageLoggedOut):
            if self.storage is not None:
                self.storage.on_logged_out(session.id)
        elif self.storage is not None:  # StorageStopped
            self.storage.on_stopped(session.id)

    async def _fail_queued(self, session_id: str, error: str) -> None:
        try:
            failed = await self.outbox.fail_queued(session_id, error)
        except Exception:
            log.exception("cannot fail the messages still waiting", extra=self.extra(session_id))
            return
        if failed:
            log.info("%d waiting messages failed: %s", failed, error, extra=self.extra(session_id))

    def _persist(self, session: Session) -> None:
        async def write() -> None:
            state = session.state
            try:
                await self.store.update_session(
                    session.id, status=state.status.value, phone=state.phone, last_error=state.last_error
                )
            except Exception:
                log.exception("cannot persist session state", extra=self.extra(session.id))

        if session.id in self.sessions:
            self._tasks.spawn(write())


def _waits_for(row: OutboxRow, now: float, connected: bool, sending: bool) -> str:
    """Why a waiting message has not gone out yet (GET /session/{id}/outbox)."""
    if sending:
        return "sending"
    if row.next_attempt_at > now:
        return "retry" if row.attempts else (row.wait or "gap")
    return "due" if connected else "not_connected"

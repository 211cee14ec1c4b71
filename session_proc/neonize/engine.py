"""The ``neonize`` engine: one real WhatsApp linked device (whatsmeow, through neonize).

Threads: neonize's ``connect()`` blocks until ``stop()``, so it runs on its own
thread, which also owns the retry with backoff of a failed dial (whatsmeow
retries only once it was connected). whatsmeow calls back on that thread, one
event at a time; every callback hops onto the asyncio loop with
``call_soon_threadsafe`` before touching the sink, and blocking neonize calls
(send, upload, download, logout) run in worker threads, so the loop (and with
it the heartbeats) never waits on Go. neonize is imported in ``start()``, after
the process has set itself up, never at module import.

Message ids: neonize 0.5.2 sends under ids whatsmeow picks, so the worker's id
cannot travel with the message; the send journal (``session_proc.neonize.journal``)
makes retries safe and reports ``OUTCOME_UNKNOWN`` where a crash left a send undecided.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from session_proc.engine import (
    ContactCard,
    Engine,
    EngineContext,
    EngineError,
    IncomingMessage,
    OutgoingMessage,
    PhoneCheck,
    SendResult,
)
from session_proc.media_files import MEDIA_DIR, write_media
from session_proc.neonize import loader, send_errors
from session_proc.neonize.account_engine import NeonizeAccount
from session_proc.neonize.group_calls import NeonizeGroups
from session_proc.neonize.journal import FAILED, SENDING, SENT, UNKNOWN, SendJournal
from transport.wire import MessageChange

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from session_proc.neonize.incoming import MappedMessage
    from session_proc.neonize.outgoing import QuotedRef

log = logging.getLogger("neonize.engine")

K = TypeVar("K")
V = TypeVar("V")

DB_FILE = "neonize.db"  # whatsmeow's auth state (SQLite), in the session's directory
# whatsmeow shows 6 QR codes: the first for 60 s, the next five for 20 s each (~160 s in all).
FIRST_QR_TTL = 60.0
NEXT_QR_TTL = 20.0
# After whatsmeow's last code expires, connect() never returns (a FetchMe loop that ignores
# stop()): the engine gives up at this deadline and the process ends hard.
QR_LOGIN_TIMEOUT = 170.0
RETRY_INITIAL = 1.0  # first wait after a failed dial, seconds; doubles per failure
RETRY_MAX = 60.0
STOP_GRACE = 3.0  # how long stop() waits for the Go side to return
EXIT_GRACE = 3.0  # after stop(): if the process still exists then, something in Go holds it: exit hard
DELIVER_WAIT = 30.0  # a callback keeps trying the supervisor's commit of a message this long
DELIVER_RETRY = 0.5  # first pause between two commit attempts, seconds; doubles up to 5 s
# A message could not be committed: the process ends without returning to whatsmeow, which
# would acknowledge it, so WhatsApp delivers it again to the next incarnation (EX_TEMPFAIL).
EXIT_UNACKNOWLEDGED = 75
RECENT_MESSAGES = 2000  # messages kept for quoting in replies and targeting reactions
_MEDIA_KINDS = {
    "image": "MediaImage",
    "video": "MediaVideo",
    "audio": "MediaAudio",
    "document": "MediaDocument",
    "sticker": "MediaImage",  # whatsmeow uploads stickers as images
}


class _Bounded(OrderedDict[K, V]):
    """A dict that forgets its oldest entries past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class NeonizeEngine(NeonizeAccount, NeonizeGroups, Engine):
    """One WhatsApp linked device driven by neonize; auth state in ``<session_dir>/neonize.db``."""

    name = "neonize"

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(ctx)
        options = ctx.options
        self.qr_login_timeout = float(options.get("qr_login_timeout", QR_LOGIN_TIMEOUT))
        self.retry_initial = float(options.get("retry_initial", RETRY_INITIAL))
        self.retry_max = float(options.get("retry_max", RETRY_MAX))
        self.deliver_wait = float(options.get("deliver_wait", DELIVER_WAIT))
        ceiling = options.get("max_media_bytes")
        # Received media over this many bytes is never downloaded (MAX_INCOMING_MEDIA_MB): None, no ceiling.
        self.max_media_bytes = int(ceiling) if isinstance(ceiling, int | float) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None  # neonize.client.NewClient; a reference must be kept or GC stops it
        self._nz: ModuleType | None = None  # neonize.client
        self._gocode: Any = None  # neonize's Go library (ctypes), for the exports neonize wraps wrongly
        self._incoming: ModuleType | None = None
        self._outgoing: ModuleType | None = None
        self._media_types: Any = None  # neonize.utils.enum.MediaType
        self._journal: SendJournal | None = None
        self._runner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._connected = False
        self._dial_attempt = 0
        self._qr_count = 0
        self._qr_seen: asyncio.Event | None = None
        self._login_deadline: asyncio.TimerHandle | None = None
        self._me: str | None = None  # our JID, once connected
        self._inflight: set[str] = set()
        self._go_calls = 0  # blocking neonize calls running in worker threads
        self._recent: _Bounded[str, QuotedRef] = _Bounded(RECENT_MESSAGES)
        self._wa_by_worker: _Bounded[str, str] = _Bounded(5000)
        self._worker_by_wa: _Bounded[str, str] = _Bounded(5000)
        self._account: ModuleType | None = None  # session_proc.neonize.account (imports neonize)
        self._subscribed: set[str] = set()  # contacts whose presence this process asked for

    @property
    def db_path(self) -> Path:
        return self.ctx.session_dir / DB_FILE

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is not None:
            raise EngineError("ALREADY_STARTED", "start() was already called on this engine")
        self._loop = asyncio.get_running_loop()
        self._qr_seen = asyncio.Event()
        # The import loads the Go runtime (~0.5 s): keep the loop beating meanwhile.
        self._nz = await asyncio.to_thread(loader.load)
        self._gocode = self._nz.gocode
        from neonize.utils.enum import MediaType

        from session_proc.neonize import account, incoming, outgoing  # these import neonize: only after load()

        self.ctx.session_dir.mkdir(parents=True, exist_ok=True)
        journal = await asyncio.to_thread(SendJournal.open, self.ctx.session_dir)
        client = self._nz.NewClient(str(self.db_path), uuid=self.ctx.session_id)
        self._subscribe(client)
        self._account = account
        await self.attach(client, journal=journal, incoming=incoming, outgoing=outgoing, media_types=MediaType)
        self._runner = threading.Thread(target=self._run, name=f"neonize-{self.ctx.session_id}", daemon=True)
        self._runner.start()
        log.info("neonize engine started (auth state %s, proxy: %s)", DB_FILE, "yes" if self.ctx.proxy else "no")

    async def attach(
        self, client: Any, *, journal: SendJournal, incoming: ModuleType, outgoing: ModuleType, media_types: Any
    ) -> None:
        """Wire a neonize client (or a stand-in in tests) and the mapping modules; ``start()`` calls it."""
        self._loop = asyncio.get_running_loop()
        if self._qr_seen is None:
            self._qr_seen = asyncio.Event()
        self._client, self._journal = client, journal
        self._incoming, self._outgoing, self._media_types = incoming, outgoing, media_types
        for worker_id, wa_id in reversed(await asyncio.to_thread(journal.recent_ids)):
            self._remember_ids(worker_id, wa_id)

    def _subscribe(self, client: Any) -> None:
        from neonize import events as ev

        client.event.qr(self._cb_qr)
        handlers: dict[Any, Callable[[Any, Any], None]] = {
            ev.ConnectedEv: self._cb_connected,
            ev.DisconnectedEv: self._cb_disconnected,
            ev.LoggedOutEv: self._cb_logged_out,
            ev.StreamReplacedEv: self._cb_stream_replaced,
            ev.ConnectFailureEv: self._cb_connect_failure,
            ev.ClientOutdatedEv: self._cb_client_outdated,
            ev.TemporaryBanEv: self._cb_temporary_ban,
            ev.StreamErrorEv: self._cb_stream_error,
            ev.KeepAliveTimeoutEv: self._cb_keepalive_timeout,
            ev.PairStatusEv: self._cb_pair_status,
            ev.MessageEv: self._cb_message,
            ev.ReceiptEv: self._cb_receipt,
            ev.ChatPresenceEv: self._cb_chat_presence,
            ev.PresenceEv: self._cb_presence,
            ev.CallOfferEv: self._cb_call_offer,
            ev.JoinedGroupEv: self._cb_joined_group,  # issue 17
            ev.GroupInfoEv: self._cb_group_info,
        }
        for event_type, handler in handlers.items():
            client.event(event_type)(handler)

    def _run(self) -> None:
        """The connect thread: dial, and dial again with backoff while the dial fails."""
        from neonize._binder import ProxySettings

        proxy = ProxySettings(proxy_address=self.ctx.proxy) if self.ctx.proxy else None
        while not self._stopping.is_set():
            try:
                self._client.connect(proxy)  # returns when stopped, raises when the dial fails
                reason = "connection ended"
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
            if self._stopping.is_set():
                break
            delay = min(self.retry_max, self.retry_initial * 2 ** min(self._dial_attempt, 16))
            delay *= random.uniform(0.8, 1.2)  # spread the retries of many sessions after an outage
            self._dial_attempt += 1
            log.warning("dial %d failed: %s; next try in %.2fs", self._dial_attempt, reason, delay)
            self._post(self._dial_failed, reason)
            self._stopping.wait(delay)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._cancel_login_deadline()
        await self._halt()
        if self._journal is not None:
            await asyncio.to_thread(self._journal.close)
        runner_alive = self._runner is not None and self._runner.is_alive()
        if runner_alive or self._go_calls:
            # Threads stuck in Go keep the interpreter from exiting (neonize's own connect
            # thread is not a daemon): give the process a moment to leave, then end it.
            log.warning("neonize did not return (%d calls open); exiting hard in %.0fs", self._go_calls, EXIT_GRACE)
            threading.Thread(target=_exit_hard, args=(EXIT_GRACE,), name="neonize-exit", daemon=True).start()

    async def _halt(self) -> None:
        """Stop the Go client and wait (bounded) for the connect thread to end."""
        self._stopping.set()
        client, runner = self._client, self._runner
        if client is None or runner is None:
            return
        if runner.is_alive():
            from neonize import events as ev

            ev.event.set()  # neonize's connect() polls this and cancels the Go side itself
            await self._call_go(client.stop)
            await asyncio.to_thread(runner.join, STOP_GRACE)

    # -- commands --------------------------------------------------------------------------
    async def send(self, message: OutgoingMessage) -> SendResult:
        if self._client is None or self._outgoing is None:
            raise EngineError("NOT_CONNECTED", "the engine has not started")
        if message.id in self._inflight:
            raise EngineError("SEND_IN_PROGRESS", f"message {message.id} is being sent")
        quoted = self._quoted(message.reply_to, message.to) if message.reply_to else None
        changed = message.reaction_to or message.edit_of or message.revoke_of  # by the worker's id
        target = self._quoted(changed, message.to) if changed else None
        self._inflight.add(message.id)
        try:
            self._go_calls += 1
            try:
                result, wa_id, built = await asyncio.to_thread(self._send_blocking, message, quoted, target)
            finally:
                self._go_calls -= 1
        finally:
            self._inflight.discard(message.id)
        if wa_id is not None:
            self._remember_ids(message.id, wa_id)
            if built is not None:
                from session_proc.neonize.outgoing import QuotedRef

                self._recent.put(wa_id, QuotedRef(id=wa_id, sender=self._me or "", from_me=True, message=built))
        return result

    def _send_blocking(
        self, message: OutgoingMessage, quoted: QuotedRef | None, target: QuotedRef | None
    ) -> tuple[SendResult, str | None, Any]:
        """Runs in a worker thread: journal, upload, send, journal."""
        assert self._journal is not None and self._outgoing is not None and self._incoming is not None
        journal = self._journal
        entry = journal.get(message.id)
        if entry is not None:
            if entry.state == SENT:
                # Sent before; the answer was lost (a crash, a timeout): answer again, send nothing.
                return SendResult(id=message.id, timestamp=entry.timestamp or time.time()), entry.wa_id, None
            if entry.state in (SENDING, UNKNOWN):
                raise EngineError(
                    "OUTCOME_UNKNOWN",
                    "an earlier attempt was interrupted and WhatsApp takes no chosen id: not resent",
                )
            assert entry.state == FAILED  # refused before it went out: send again
        if not self._connected:
            raise EngineError("NOT_CONNECTED", "the session is not connected to WhatsApp")
        try:
            to = self._incoming.parse_jid(message.to)
        except ValueError as exc:
            raise EngineError("INVALID_RECIPIENT", str(exc)) from None
        upload = self._upload(message) if message.type in self._outgoing.MEDIA_TYPES else None
        built = self._outgoing.build_message(
            message, upload=upload, quoted=quoted, target=target, poll_builder=self._build_poll
        )
        journal.begin(message.id)
        try:
            response = self._client.send_message(to, built)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            verdict = send_errors.classify(error)
            if verdict == send_errors.UNKNOWN:
                journal.unknown(message.id, error)
                raise EngineError(verdict, f"WhatsApp did not confirm the send: {error}") from None
            journal.failed(message.id, error)  # nothing was written: a later attempt may send it
            raise EngineError(verdict, error) from None
        timestamp = float(response.Timestamp or time.time())
        if timestamp > 1e11:  # milliseconds (message events use them): normalise to seconds
            timestamp /= 1000.0
        journal.sent(message.id, response.ID, timestamp)
        return SendResult(id=message.id, timestamp=timestamp), response.ID, built

    def _upload(self, message: OutgoingMessage) -> Any:
        if not message.media_path:
            raise EngineError("MEDIA_MISSING", f"a {message.type} message needs media_path")
        try:
            if message.voice:
                from session_proc.neonize.voice_notes import as_opus

                data = as_opus(Path(message.media_path), message.mimetype)
            else:
                data = Path(message.media_path).read_bytes()  # bytes, never a path: neonize would fetch URLs
        except OSError as exc:
            raise EngineError("MEDIA_MISSING", f"cannot read the media file: {exc.strerror}") from None
        try:
            return self._client.upload(data, self._media_types[_MEDIA_KINDS[message.type]])
        except Exception as exc:
            raise EngineError("UPLOAD_FAILED", f"media upload failed: {exc}") from None

    def _build_poll(self, name: str, options: list[str], multiple: bool) -> Any:
        """neonize's poll builder: it adds the secret the votes are encrypted with (kept by whatsmeow)."""
        from neonize.utils.enum import VoteType

        kind = VoteType.MULTIPLE if multiple else VoteType.SINGLE
        return self._client.build_poll_vote_creation(name, options, kind)

    async def logout(self) -> None:
        client = self._client
        if client is None:
            raise EngineError("NOT_CONNECTED", "the engine has not started")
        if self._connected:
            try:
                await self._call_go(client.logout)
            except Exception as exc:
                raise EngineError("LOGOUT_FAILED", f"WhatsApp refused the logout: {exc}") from None
            # logout() neither ends connect() nor emits an event: stop and report it ourselves.
            await self._halt()
        else:
            # Not online: WhatsApp cannot be told; forget the credentials here.
            await self._halt()
            await asyncio.to_thread(_remove_auth_state, self.db_path)
        self._connected = False
        self.ctx.sink.on_logged_out("logged out by request")

    async def pair_code(self, phone: str) -> str:
        digits = re.sub(r"[\s+()-]", "", phone)
        if not digits.isdigit() or not 7 <= len(digits) <= 15:
            raise EngineError("INVALID_PHONE", "the phone number must be 7 to 15 digits with country code")
        if self._connected:
            raise EngineError("ALREADY_LINKED", "this session is already linked")
        if self._client is None or self._qr_seen is None:
            raise EngineError("NOT_CONNECTED", "the engine has not started")
        try:
            # whatsmeow accepts a pairing request only after it showed the first QR.
            async with asyncio.timeout(20):
                await self._qr_seen.wait()
        except TimeoutError:
            raise EngineError("NOT_CONNECTED", "WhatsApp has not offered a login yet; try again") from None
        try:
            code: str = await self._call_go(self._client.PairPhone, digits, True)
        except Exception as exc:
            raise EngineError("PAIR_FAILED", f"WhatsApp refused the pairing code: {exc}") from None
        return code

    # -- contacts, blocking, disappearing messages (session_proc/neonize/contacts.py) -------
    def _live_client(self) -> Any:
        """The client for an account operation: only while connected (Go panics before Connected or after stop())."""
        if self._client is None or not self._connected or self._stopping.is_set():
            raise EngineError("NOT_CONNECTED", "the session is not connected to WhatsApp")
        return self._client

    async def check_phones(self, phones: list[str]) -> list[PhoneCheck]:
        from session_proc.neonize import contacts

        checks: list[PhoneCheck] = await self._call_go(contacts.check, self._live_client(), phones)
        return checks

    async def contact_info(self, jid: str) -> ContactCard:
        from session_proc.neonize import contacts

        card: ContactCard = await self._call_go(contacts.lookup, self._live_client(), jid)
        return card

    async def set_blocked(self, jid: str, blocked: bool) -> None:
        from session_proc.neonize import contacts

        await self._call_go(contacts.set_blocked, self._live_client(), jid, blocked)

    async def blocklist(self) -> list[str]:
        from session_proc.neonize import contacts

        jids: list[str] = await self._call_go(contacts.blocklist, self._live_client())
        return jids

    async def set_disappearing(self, chat: str, seconds: int) -> None:
        from session_proc.neonize import contacts

        client = self._live_client()
        await self._call_go(contacts.set_disappearing, self._gocode, client.uuid, chat, seconds)

    async def _call_go(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._go_calls += 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._go_calls -= 1

    # -- neonize callbacks (Go's thread) ------------------------------------------------
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop; from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._guarded, fn, *args)
        except RuntimeError:
            pass  # the loop closed meanwhile: the process is leaving

    @staticmethod
    def _guarded(fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("handling a neonize event failed")

    def _cb_qr(self, _client: Any, data: bytes) -> None:
        self._post(self._qr_ready, data.decode(errors="replace"))

    def _cb_connected(self, client: Any, _event: Any) -> None:
        try:
            device = client.me
            if device is None or not device.JID.User:
                device = client.get_me()  # safe here: the Go client exists while it reports
            phone, push_name = device.JID.User, device.PushName or None
        except Exception:
            log.exception("connected, but the account's number is unknown")
            phone, push_name = "", None
        self._dial_attempt = 0
        self._post(self._online, phone, push_name)

    def _cb_disconnected(self, _client: Any, _event: Any) -> None:
        self._post(self._offline, "connection lost", True)

    def _cb_logged_out(self, _client: Any, event: Any) -> None:
        assert self._incoming is not None
        self._post(self._unlinked, self._incoming.logged_out_reason(event))

    def _cb_stream_replaced(self, _client: Any, _event: Any) -> None:
        # Another connection with these credentials took over: reconnecting would fight it.
        self._post(self._offline, "replaced by another connection", False)

    def _cb_connect_failure(self, _client: Any, event: Any) -> None:
        assert self._incoming is not None
        reason, retry = self._incoming.connect_failure(event)
        self._post(self._offline, reason, retry)

    def _cb_client_outdated(self, _client: Any, _event: Any) -> None:
        self._post(self._offline, "client outdated: WhatsApp refuses this neonize version", False)

    def _cb_temporary_ban(self, _client: Any, event: Any) -> None:
        from neonize.proto.Neonize_pb2 import TemporaryBan

        why = TemporaryBan.TempBanReason.Name(event.Code).lower() if event.Code else "unspecified"
        self._post(self._offline, f"temporary ban ({why}), expires in {event.Expire}s", False)

    def _cb_stream_error(self, _client: Any, event: Any) -> None:
        self._post(self._offline, f"stream error {event.Code}".strip(), True)

    def _cb_keepalive_timeout(self, _client: Any, event: Any) -> None:
        log.warning("WhatsApp keepalive timed out (%d errors)", event.ErrorCount)

    def _cb_pair_status(self, _client: Any, event: Any) -> None:
        from neonize.proto.Neonize_pb2 import PairStatus

        if event.Status == PairStatus.PStatus.SUCCESS:
            self._post(self._paired)
        else:
            log.warning("pairing failed: %s", event.Error)

    def _cb_message(self, _client: Any, event: Any) -> None:
        assert self._incoming is not None and self._loop is not None
        if self._cb_poll_vote(event):
            return
        from session_proc.neonize.changes import map_change  # imports neonize's builder: after load()

        mapped: MappedMessage | MessageChange | None
        try:
            # An edit or a revoke is a protocol message, which map_message leaves out.
            mapped = map_change(event) or self._incoming.map_message(event, me=self._me)
        except Exception:
            log.exception("an incoming message could not be read")
            return
        if mapped is None:
            return
        # whatsmeow acknowledges the message to WhatsApp when this callback returns: it returns
        # only after the supervisor committed the message.
        if not self._commit(mapped):
            log.error(
                "message %s not committed within %.0fs: exiting unacknowledged, WhatsApp delivers it again",
                mapped.id if isinstance(mapped, MessageChange) else mapped.message.id,
                self.deliver_wait,
            )
            logging.shutdown()
            os._exit(EXIT_UNACKNOWLEDGED)

    def _cb_poll_vote(self, event: Any) -> bool:
        """A vote on a poll: decrypted to option digests and committed like a message; False: no vote."""
        from session_proc.neonize import polls

        ref = polls.vote_ref(event)
        if ref is None:
            return False
        assert self._journal is not None
        # The API names polls by the worker's ids; the journal keeps the mapping for a week.
        poll_id = self._worker_by_wa.get(ref.poll_wa_id) or self._journal.worker_id(ref.poll_wa_id) or ref.poll_wa_id
        vote = polls.read_vote(event, ref, self._client.decrypt_poll_vote, poll_id=poll_id)
        if not self._hand_over(vote.id, lambda: self.ctx.sink.on_poll_vote(vote), time.monotonic() + self.deliver_wait):
            log.error("vote %s not committed: exiting unacknowledged, WhatsApp delivers it again", vote.id)
            logging.shutdown()
            os._exit(EXIT_UNACKNOWLEDGED)
        return True

    def _commit(self, mapped: MappedMessage | MessageChange) -> bool:
        """On whatsmeow's thread: hand one message (or an edit or revoke) to the supervisor, retrying until
        it is committed or ``deliver_wait`` has passed; False if it was not committed."""
        assert self._loop is not None
        deadline = time.monotonic() + self.deliver_wait
        if isinstance(mapped, MessageChange):
            # The API names our own messages by the worker's ids (our edit from another device).
            mapped.target = self._worker_by_wa.get(mapped.target, mapped.target)
            change = mapped
            return self._hand_over(change.id, lambda: self.ctx.sink.on_message_change(change), deadline)
        try:
            message = asyncio.run_coroutine_threadsafe(self._prepare(mapped), self._loop).result(self.deliver_wait)
        except Exception:
            log.exception("message %s could not be prepared for the supervisor", mapped.message.id)
            return False
        return self._hand_over(message.id, lambda: self.ctx.sink.on_message(message), deadline)

    def _hand_over(self, item_id: str, commit: Callable[[], Coroutine[Any, Any, None]], deadline: float) -> bool:
        """On whatsmeow's thread: run ``commit`` on the loop until it succeeds or ``deadline`` (monotonic)
        has passed; False if it never did."""
        assert self._loop is not None
        pause = DELIVER_RETRY
        while True:
            try:
                future = asyncio.run_coroutine_threadsafe(commit(), self._loop)
            except RuntimeError:  # the loop is closed: the process is ending
                return False
            try:
                future.result(max(0.0, deadline - time.monotonic()))
                return True
            except TimeoutError:
                future.cancel()
                return False
            except Exception as exc:
                log.warning("message %s not committed yet: %s", item_id, exc)
            if time.monotonic() + pause >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _cb_receipt(self, _client: Any, event: Any) -> None:
        assert self._incoming is not None
        update = self._incoming.map_receipt(event)
        if update is not None:
            self._post(self._receipts, update)

    # -- on the loop --------------------------------------------------------------------------
    def _qr_ready(self, code: str) -> None:
        if self._stopping.is_set():
            return
        self._qr_count += 1
        ttl = FIRST_QR_TTL if self._qr_count == 1 else NEXT_QR_TTL
        self.ctx.sink.on_qr(code, time.time() + ttl)
        if self._qr_seen is not None:
            self._qr_seen.set()
        if self._login_deadline is None and self._loop is not None:
            self._login_deadline = self._loop.call_later(self.qr_login_timeout, self._login_timed_out)
        _show_qr(code)

    def _login_timed_out(self) -> None:
        if self._connected or self._stopping.is_set():
            return
        log.warning("no scan after %d QR codes in %.0fs: giving up (qr_timeout)", self._qr_count, self.qr_login_timeout)
        # The process ends (clean exit, not restarted) and rests until the session is asked again.
        self.ctx.sink.on_disconnected("qr_timeout", will_retry=False)

    def _cancel_login_deadline(self) -> None:
        if self._login_deadline is not None:
            self._login_deadline.cancel()

    def _paired(self) -> None:
        self._cancel_login_deadline()
        self.ctx.sink.on_credentials_changed()

    def _online(self, phone: str, push_name: str | None) -> None:
        if self._stopping.is_set():
            return
        self._cancel_login_deadline()
        self._connected = True
        self._me = f"{phone}@s.whatsapp.net" if phone else None
        self.ctx.sink.on_connected(phone, push_name)

    def _offline(self, reason: str, will_retry: bool) -> None:
        if self._stopping.is_set():
            return
        self._connected = False
        log.info("disconnected: %s (%s)", reason, "retrying" if will_retry else "giving up")
        self.ctx.sink.on_disconnected(reason, will_retry=will_retry)

    def _dial_failed(self, reason: str) -> None:
        if self._stopping.is_set():
            return
        self._connected = False  # already logged by the connect thread
        self.ctx.sink.on_disconnected(reason, will_retry=True)

    def _unlinked(self, reason: str) -> None:
        if self._stopping.is_set():
            return
        self._connected = False
        self.ctx.sink.on_logged_out(reason)

    def _receipts(self, update: Any) -> None:
        for wa_id in update.ids:
            worker_id = self._worker_by_wa.get(wa_id, wa_id)
            self.ctx.sink.on_receipt(worker_id, update.status, update.chat, update.timestamp, by=update.by)

    async def _prepare(self, mapped: MappedMessage) -> IncomingMessage:
        """The message as the supervisor takes it: our ids for quoted messages, media on disk."""
        from session_proc.neonize.outgoing import QuotedRef

        message = mapped.message
        self._recent.put(
            message.id, QuotedRef(id=message.id, sender=message.sender, from_me=message.from_me, message=mapped.content)
        )
        # The API names our own messages by the worker's ids.
        if message.reply_to:
            message.reply_to = self._worker_by_wa.get(message.reply_to, message.reply_to)
        if message.reaction_to:
            message.reaction_to = self._worker_by_wa.get(message.reaction_to, message.reaction_to)
        if mapped.media is None:
            return message
        ceiling = self.max_media_bytes
        if ceiling is not None and (message.media_size is None or message.media_size > ceiling):
            # neonize 0.5.2's download_any holds the whole file in memory (Go's buffer, then Python's
            # bytes) even when given a path, so a file over the ceiling must not be fetched at all: the
            # message is committed, and so acknowledged, without it. The size is the one the sender
            # declared (fileLength); one that declares none is not trusted with a download either.
            log.warning(
                "media of message %s not downloaded: %s bytes, ceiling %d", message.id, message.media_size, ceiling
            )
            message.media_error = "too_large"
            return message
        message.media_path = await self._download(message.id, message.mimetype, mapped.media)
        if message.media_path is None:
            message.media_error = "download_failed"
        return message

    async def _download(self, message_id: str, mimetype: str | None, media: Any) -> str | None:
        """The media written to the session's media folder; None when the download failed."""
        try:
            data: bytes = await self._call_go(self._client.download_any, media)
        except Exception as exc:
            log.warning("media of message %s could not be downloaded: %s", message_id, exc)
            return None
        try:
            path = await asyncio.to_thread(write_media, self.ctx.session_dir / MEDIA_DIR, message_id, mimetype, data)
        except OSError as exc:
            log.warning("media of message %s could not be written: %s", message_id, exc.strerror)
            return None
        return str(path)

    # -- ids ----------------------------------------------------------------------------------
    def _remember_ids(self, worker_id: str, wa_id: str) -> None:
        self._wa_by_worker.put(worker_id, wa_id)
        self._worker_by_wa.put(wa_id, worker_id)

    def _quoted(self, ref_id: str, chat: str) -> QuotedRef:
        """The message a reply or reaction points at, by the worker's or WhatsApp's id."""
        from session_proc.neonize.outgoing import QuotedRef

        wa_id = self._wa_by_worker.get(ref_id, ref_id)
        known = self._recent.get(wa_id)
        if known is not None:
            return known
        ours = wa_id != ref_id
        # Not cached (e.g. before a restart): WhatsApp shows the reply without the quoted text.
        return QuotedRef(id=wa_id, sender=(self._me or "") if ours else chat, from_me=ours)


def _remove_auth_state(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def _show_qr(code: str) -> None:
    """Draw the QR on the terminal when a person is watching (``make run``); logs stay machine-readable."""
    if not sys.stderr.isatty():
        return
    try:
        import segno  # a neonize dependency

        segno.make_qr(code).terminal(out=sys.stderr, compact=True)
    except Exception:
        log.debug("QR not drawn", exc_info=True)


def _exit_hard(after: float) -> None:
    """End the process if it is still here ``after`` seconds from now (daemon thread)."""
    time.sleep(after)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(0)

"""The ``sim`` engine: one linked device on the simulated WhatsApp network.

It talks to the hub (``python -m session_proc.sim``) over a :class:`DealerChannel`
the way neonize talks to WhatsApp: QR codes until a phone scans one, then the
stored credentials (``sim-device.db`` in the session directory); reconnection
with backoff when the connection drops; each incoming message acked to the hub
only after the sink took it over, so a crash never loses one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import mimetypes
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import zmq

from common.tasks import cancel_and_wait
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
from session_proc.sim import ops, poll_votes
from session_proc.sim.account import SimAccount
from session_proc.sim.device_store import DeviceCreds, DeviceStore
from session_proc.sim.groups import SimGroups, group_event
from session_proc.sim.jids import is_group, jid, phone_of
from transport.channel import ChannelError, DealerChannel, PeerGone, RemoteError, RequestTimeout
from transport.wire import MessageChange

T = TypeVar("T")
log = logging.getLogger("sim.engine")

BACKOFF_MIN = 0.2  # seconds before the first reconnect; doubles up to BACKOFF_MAX
BACKOFF_MAX = 5.0
HEARTBEAT_INTERVAL = 3.0  # default of options["heartbeat_interval"] (the hub's own: session_proc/sim/hub.py)
REQUEST_TIMEOUT = 10.0  # default of options["request_timeout"]
HELLO_TIMEOUT = 5.0  # a hello waits at most this long (or until the hub is found silent)
BYE_TIMEOUT = 0.5  # stop() tells the hub it leaves, but never waits long for that
MEDIA_INLINE_MAX = 8 * 1024 * 1024  # media up to this size travel to the hub, so linked recipients get the file


@dataclass(eq=False)
class _Link:
    """One connection to the hub (one DEALER identity) and what came in on it."""

    identity: bytes
    chan: DealerChannel | None = None
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=asyncio.Queue)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # hello answered: events may be handled
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_reason: str = ""
    online: bool = False  # linked and connected on this link
    consumer: asyncio.Task[None] | None = None

    def lose(self, reason: str) -> None:
        """Mark the link dead (first reason wins); the engine's loop closes it."""
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()

    @property
    def channel(self) -> DealerChannel:
        assert self.chan is not None, "the link's channel is created with the link"
        return self.chan

    def refused(self, exc: RemoteError) -> EngineError:
        """The hub's refusal of a request as an EngineError; a hub that forgot this connection loses the link."""
        if exc.code == ops.ERR_NOT_CONNECTED:
            self.lose("the hub forgot the connection")
            return EngineError("NOT_CONNECTED", "the connection to WhatsApp was lost")
        return EngineError(exc.code, exc.message)


class SimEngine(SimAccount, SimGroups, Engine):
    """A linked device on the simulated network; ``ctx.options["hub"]`` is the hub's ZeroMQ endpoint.

    Other options: ``heartbeat_interval`` (seconds, default 3.0), ``request_timeout``
    (seconds, default 10.0), ``max_media_bytes`` (received media larger than this is not taken:
    the hub is told in the hello and leaves the bytes out; default: no ceiling).
    """

    name = "sim"

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(ctx)
        hub = ctx.options.get("hub")
        if not isinstance(hub, str) or not hub:
            raise EngineError("BAD_CONFIG", "the sim engine needs options['hub'], the hub's ZeroMQ endpoint")
        self._hub = hub
        self._heartbeat = float(ctx.options.get("heartbeat_interval", HEARTBEAT_INTERVAL))
        self._request_timeout = float(ctx.options.get("request_timeout", REQUEST_TIMEOUT))
        ceiling = ctx.options.get("max_media_bytes")
        self._max_media = int(ceiling) if isinstance(ceiling, int | float) else None
        self._store: DeviceStore | None = None
        self._creds: DeviceCreds | None = None
        self._link: _Link | None = None
        self._runner: asyncio.Task[None] | None = None
        self._final: str | None = None  # why the engine stopped connecting for good
        self._done = asyncio.Event()
        # Receipts for a message whose send is still waiting for its answer are held back,
        # so the caller always learns "sent" before "delivered".
        self._sending: dict[str, int] = {}
        self._held: dict[str, list[tuple[str, str, float, str | None]]] = {}

    # -- what the session process sees ----------------------------------------
    @property
    def state(self) -> str:
        """``connecting``, ``qr`` or ``connected``; once ended, why: ``replaced``, ``logged_out``,
        ``logout`` or ``stopped``."""
        if self._final is not None:
            return self._final
        link = self._link
        if link is None or link.lost.is_set() or not link.ready.is_set():
            return "connecting"
        return "connected" if link.online else "qr"

    @property
    def credentials(self) -> DeviceCreds | None:
        """The linked device's credentials, if any."""
        return self._creds

    async def wait_closed(self) -> None:
        """Wait until the engine stopped connecting for good (replaced, logged out or stopped)."""
        await self._done.wait()

    # -- Engine ----------------------------------------------------------------
    async def start(self) -> None:
        """Load the credentials and start connecting in the background."""
        if self._runner is not None:
            raise EngineError("ALREADY_STARTED", "start() was already called on this engine")
        self._creds = self._open_store().load()
        self._runner = asyncio.create_task(self._run(), name=f"sim-engine-{self.ctx.session_id}")

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send under the worker's message id; the hub counts a resend of the same id as one message."""
        link = self._link
        if link is None or not link.online or link.lost.is_set():
            raise EngineError("NOT_CONNECTED", "the session is not connected to WhatsApp")
        to = message.to if is_group(message.to) else phone_of(message.to)
        if to is None:
            raise EngineError("INVALID_RECIPIENT", f"{message.to!r} is not a user JID like 628123@s.whatsapp.net")
        body: dict[str, Any] = {
            "id": message.id,
            "to": to,
            "type": message.type,
            "text": message.text,
            "caption": message.caption,
            "mimetype": message.mimetype,
            "latitude": message.latitude,
            "longitude": message.longitude,
            "name": message.name,
            "address": message.address,
            "vcard": message.vcard,
            "reactionTo": message.reaction_to,
            "quotedId": message.reply_to,
            "mentions": message.mentions or None,
            "poll": poll_votes.outgoing_poll(message.poll),
            "viewOnce": message.view_once or None,
            "voice": message.voice or None,
            "editOf": message.edit_of,
            "revokeOf": message.revoke_of,
        }
        if message.type in ops.MEDIA_TYPES:
            if not message.media_path:
                raise EngineError("MEDIA_MISSING", f"a {message.type} message needs media_path")
            path = Path(message.media_path)
            try:
                size, data = await asyncio.to_thread(_read_media, path)
            except OSError as exc:
                raise EngineError("MEDIA_MISSING", f"cannot read the media file: {exc.strerror}") from None
            body["mediaSize"] = size
            body["mimetype"] = message.mimetype or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if data is not None:
                body["media"] = data
        self._sending[message.id] = self._sending.get(message.id, 0) + 1
        try:
            reply = await link.channel.request(ops.SEND, body, timeout=self._request_timeout)
        except RemoteError as exc:
            raise link.refused(exc) from None
        except RequestTimeout:
            # The outcome is unknown: a retry with the same id is safe, the recipient sees it once.
            raise EngineError("SEND_TIMEOUT", "WhatsApp did not answer; the message may have been sent") from None
        except PeerGone as exc:
            raise EngineError("NOT_CONNECTED", f"the connection to WhatsApp was lost: {exc}") from None
        finally:
            self._send_finished(message.id)
        timestamp = reply.get("timestamp")
        return SendResult(
            id=str(reply.get("id") or message.id),
            timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
        )

    async def pair_code(self, phone: str) -> str:
        """Ask the hub for an ``ABCD-EFGH`` code that ``POST /phones/{phone}/pair`` accepts."""
        if phone_of(phone) != phone:
            raise EngineError("INVALID_PHONE", "the phone number must be digits only")
        link = self._link
        if link is None or not link.ready.is_set() or link.lost.is_set():
            raise EngineError("NOT_CONNECTED", "not connected to WhatsApp yet; wait for the first QR")
        if link.online:
            raise EngineError(ops.ERR_ALREADY_LINKED, "this session is already linked")
        try:
            reply = await link.channel.request(ops.PAIR_CODE, {"phone": phone}, timeout=self._request_timeout)
        except RemoteError as exc:
            raise EngineError(exc.code, exc.message) from None
        except ChannelError as exc:
            raise EngineError("NOT_CONNECTED", f"no answer from WhatsApp: {exc}") from None
        return str(reply.get("code", ""))

    # -- account operations (read, presence, contacts, groups...) ---------------------
    async def hub_request(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """An account operation answered by the hub while linked and online; the hub's codes as EngineError."""
        link = self._link
        if link is None or not link.online or link.lost.is_set():
            raise EngineError("NOT_CONNECTED", "the session is not connected to WhatsApp")
        try:
            return await link.channel.request(op, body, timeout=self._request_timeout)
        except RemoteError as exc:
            raise link.refused(exc) from None
        except RequestTimeout:
            raise EngineError("ENGINE_TIMEOUT", "WhatsApp did not answer in time") from None
        except ChannelError as exc:
            raise EngineError("NOT_CONNECTED", f"no answer from WhatsApp: {exc}") from None

    async def check_phones(self, phones: list[str]) -> list[PhoneCheck]:
        """Asks the hub's phone registry."""
        reply = await self.hub_request(ops.CHECK_PHONES, {"phones": phones})
        found = {r["phone"]: bool(r["exists"]) for r in reply.get("results", [])}
        return [PhoneCheck(phone=p, exists=found.get(p, False), jid=jid(p) if found.get(p) else None) for p in phones]

    async def contact_info(self, address: str) -> ContactCard:
        """The profile the hub's phone registry keeps for the number."""
        reply = await self.hub_request(ops.CONTACT_INFO, {"phone": _user(address)})
        return ContactCard(
            jid=jid(str(reply["phone"])),
            push_name=_opt(reply, "pushName", str),
            about=_opt(reply, "about", str),
            picture_url=_opt(reply, "pictureUrl", str),
        )

    async def set_blocked(self, address: str, blocked: bool) -> None:
        """The hub keeps the account's blocklist and applies it to messages both ways."""
        await self.hub_request(ops.SET_BLOCKED, {"phone": _user(address), "blocked": blocked})

    async def blocklist(self) -> list[str]:
        """The account's blocklist as the hub keeps it."""
        reply = await self.hub_request(ops.BLOCKLIST, {})
        return [jid(p) for p in reply.get("phones", []) if isinstance(p, str)]

    async def set_disappearing(self, chat: str, seconds: int) -> None:
        """The hub keeps the chat's timer and stamps the chat's messages with it."""
        await self.hub_request(ops.SET_DISAPPEARING, {"phone": _user(chat), "seconds": seconds})

    async def logout(self) -> None:
        """Unlink the device at the hub, delete the credentials, report ``logged_out``."""
        link = self._link
        if link is not None and link.online and not link.lost.is_set():
            try:
                await link.channel.request(ops.LOGOUT, {}, timeout=self._request_timeout)
            except ChannelError as exc:
                log.warning("session %s: the hub did not confirm the logout (%s)", self.ctx.session_id, exc)
        elif self._creds is not None:
            log.warning("session %s: logging out offline; the phone still lists the device", self.ctx.session_id)
        self._final = "logout"
        await self._stop_runner()
        self._forget_creds()
        self._call(self.ctx.sink.on_logged_out, "logout")

    async def stop(self) -> None:
        """Disconnect and close everything; the credentials stay for the next start."""
        if self._final is None:
            self._final = "stopped"
        link = self._link
        if link is not None and link.ready.is_set() and not link.lost.is_set():
            # Tell the hub now instead of letting it wait out the heartbeats; never wait long.
            with contextlib.suppress(ChannelError):
                await link.channel.request(ops.BYE, {}, timeout=BYE_TIMEOUT)
        await self._stop_runner()
        if self._store is not None:
            self._store.close()
            self._store = None
        self._done.set()

    # -- connection loop -------------------------------------------------------
    async def _run(self) -> None:
        delay = BACKOFF_MIN
        try:
            while self._final is None:
                link = self._open_link()
                try:
                    status = await self._hello(link)
                except (ChannelError, zmq.ZMQError) as exc:
                    log.info("session %s: hub unreachable (%s); retrying in %.1fs", self.ctx.session_id, exc, delay)
                    await self._close_link(link)
                    await _sleep_jittered(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if status == ops.STATUS_UNLINKED:
                    await self._close_link(link)
                    self._end_unlinked()
                    return
                delay = BACKOFF_MIN
                await link.lost.wait()
                await self._close_link(link)
                final = self._ended()  # set meanwhile by an event, logout() or stop()
                if final == "replaced":
                    log.info("session %s: replaced by another connection; not reconnecting", self.ctx.session_id)
                    self._call(self.ctx.sink.on_disconnected, "replaced", will_retry=False)
                    return
                if final == "logged_out":
                    self._end_unlinked()
                    return
                if final == ops.REASON_QR_TIMEOUT:
                    # Nobody scanned: the supervisor decides whether to try another round of codes.
                    self._call(self.ctx.sink.on_disconnected, ops.REASON_QR_TIMEOUT, will_retry=False)
                    return
                if final is not None:
                    return
                log.info("session %s: disconnected (%s); reconnecting", self.ctx.session_id, link.lost_reason)
                self._call(self.ctx.sink.on_disconnected, link.lost_reason, will_retry=True)
                await _sleep_jittered(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            if self._link is not None:
                await self._close_link(self._link)
            if self._final is not None:
                self._done.set()

    def _open_link(self) -> _Link:
        link = _Link(identity=f"{self.ctx.session_id}:{secrets.token_hex(4)}".encode())

        def on_event(_peer: bytes, op: str, body: dict[str, Any]) -> None:
            self._on_event(link, op, body)

        async def on_peer_lost() -> None:
            link.lose("hub silent")

        self._link = link
        link.chan = DealerChannel(
            self._hub,
            link.identity,
            on_event=on_event,
            on_peer_lost=on_peer_lost,
            heartbeat_interval=self._heartbeat,
            name=f"sim-{self.ctx.session_id}",
        )
        link.chan.connect()
        link.consumer = asyncio.create_task(self._consume(link), name=f"sim-events-{self.ctx.session_id}")
        return link

    async def _hello(self, link: _Link) -> str:
        body: dict[str, Any] = {
            "sessionId": self.ctx.session_id,
            "proxy": self.ctx.proxy,
            "heartbeat": self._heartbeat,
        }
        if self._max_media is not None:
            body["maxMediaBytes"] = self._max_media
        creds = self._creds
        if creds is not None:
            body["deviceId"] = creds.device_id
            body["secret"] = creds.secret
        hello = asyncio.ensure_future(
            link.channel.request(ops.HELLO, body, timeout=min(self._request_timeout, HELLO_TIMEOUT))
        )
        lost = asyncio.ensure_future(link.lost.wait())
        try:
            # Stop waiting as soon as the hub is found silent, not only at the timeout.
            await asyncio.wait({hello, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not hello.done():
                hello.cancel()
        if hello.cancelled():
            raise PeerGone(link.lost_reason or "hello abandoned")
        reply = hello.result()
        agreed = reply.get("heartbeat")
        if isinstance(agreed, int | float) and agreed > 0:
            link.channel.heartbeat_interval = max(self._heartbeat, float(agreed))
        status = reply.get("status")
        if status == ops.STATUS_LINKED and creds is not None:
            link.online = True
            push_name = reply.get("pushName") if isinstance(reply.get("pushName"), str) else creds.push_name
            log.info("session %s: connected as %s", self.ctx.session_id, creds.phone)
            self._call(self.ctx.sink.on_connected, creds.phone, push_name)
        elif status == ops.STATUS_QR:
            log.info("session %s: not linked; waiting for a QR scan", self.ctx.session_id)
        elif status != ops.STATUS_UNLINKED:
            raise RemoteError("BAD_REPLY", f"the hub answered hello with status {status!r}")
        # Only now may queued events reach the sink: on_connected comes before any message.
        link.ready.set()
        return str(status)

    async def _close_link(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
        link.online = False
        link.lose("closed")
        if link.consumer is not None and link.consumer is not asyncio.current_task():
            await cancel_and_wait(link.consumer)
        if link.chan is not None:
            await link.chan.close()

    async def _stop_runner(self) -> None:
        runner = self._runner
        if runner is not None and not runner.done():
            await cancel_and_wait(runner)
        if self._link is not None:
            await self._close_link(self._link)

    def _ended(self) -> str | None:
        return self._final

    def _end_unlinked(self) -> None:
        log.info("session %s: the device was unlinked; credentials deleted", self.ctx.session_id)
        self._final = "logged_out"
        self._forget_creds()
        self._call(self.ctx.sink.on_logged_out, "unlinked")

    # -- events from the hub ---------------------------------------------------
    def _on_event(self, link: _Link, op: str, body: dict[str, Any]) -> None:
        """Called in arrival order. Ends and receipts act at once; the rest queue for the sink."""
        if link.lost.is_set():
            return  # a closed link's leftovers
        if op == ops.REPLACED:
            self._final = "replaced"
            link.lose("replaced")
        elif op == ops.LOGGED_OUT:
            self._final = "logged_out"
            link.lose("unlinked")
        elif op == ops.DISCONNECT:
            if body.get("reason") == ops.REASON_QR_TIMEOUT:
                self._final = ops.REASON_QR_TIMEOUT
            link.lose(str(body.get("reason") or "dropped"))
        elif op == ops.RECEIPT:
            self._on_receipt(body)
        else:
            link.events.put_nowait((op, body))

    async def _consume(self, link: _Link) -> None:
        await link.ready.wait()
        while True:
            op, body = await link.events.get()
            try:
                if op == ops.QR:
                    self._on_qr(body)
                elif op == ops.LINKED:
                    self._on_linked(link, body)
                elif op == ops.MESSAGE:
                    await self._on_message(link, body)
                elif op in ops.ACCOUNT_EVENTS:
                    await self._on_account_event(link.channel, op, body)
                elif op == ops.GROUP_EVENT:
                    await self._on_group_event(link, body)
                else:
                    log.warning("session %s: unknown event %r from the hub", self.ctx.session_id, op)
            except Exception:
                log.exception("session %s: handling %s from the hub failed", self.ctx.session_id, op)

    def _on_qr(self, body: dict[str, Any]) -> None:
        code, expires_at = body.get("code"), body.get("expiresAt")
        if isinstance(code, str) and isinstance(expires_at, int | float):
            self._call(self.ctx.sink.on_qr, code, float(expires_at))

    def _on_linked(self, link: _Link, body: dict[str, Any]) -> None:
        push_name = body.get("pushName")
        creds = DeviceCreds(
            device_id=str(body["deviceId"]),
            secret=str(body["secret"]),
            phone=str(body["phone"]),
            push_name=push_name if isinstance(push_name, str) else None,
        )
        # Committed before anyone hears of it: a crash after this reconnects without a scan.
        self._open_store().save(creds)
        self._creds = creds
        link.online = True
        log.info("session %s: linked to %s", self.ctx.session_id, creds.phone)
        self._call(self.ctx.sink.on_credentials_changed)
        self._call(self.ctx.sink.on_connected, creds.phone, creds.push_name)

    async def _on_message(self, link: _Link, body: dict[str, Any]) -> None:
        change = _change(body)
        if body.get("type") == ops.POLL_VOTE_TYPE:
            voter = jid(str(body.get("from", "")))
            vote = poll_votes.poll_vote(body, voter=voter, chat=voter)
            msg_id, committed = vote.id, self.ctx.sink.on_poll_vote(vote)
        elif change is not None:
            msg_id, committed = change.id, self.ctx.sink.on_message_change(change)
        else:
            message = await self._incoming(body)
            msg_id, committed = message.id, self.ctx.sink.on_message(message)
        try:
            await committed
        except Exception:
            # Not acked: the hub redelivers it on the next connection.
            log.exception("session %s: message %s was not taken over", self.ctx.session_id, msg_id)
            return
        try:
            link.channel.emit(ops.ACK, {"id": msg_id})
        except PeerGone:
            log.info("session %s: ack of %s not sent; it will be redelivered", self.ctx.session_id, msg_id)

    async def _on_group_event(self, link: _Link, body: dict[str, Any]) -> None:
        event = group_event(body)
        try:
            await self.ctx.sink.on_group_event(event)
        except Exception:
            log.exception("session %s: group event %s was not taken over", self.ctx.session_id, event.id)
            return  # not acked: the hub pushes it again on the next connection
        with contextlib.suppress(PeerGone):
            link.channel.emit(ops.ACK, {"id": event.id})

    async def _incoming(self, body: dict[str, Any]) -> IncomingMessage:
        msg_id = str(body["id"])
        sender = jid(str(body.get("from", "")))
        group = _opt(body, "group", str)  # a group message: the chat is the group, the sender its participant
        mimetype = body.get("mimetype") if isinstance(body.get("mimetype"), str) else None
        media_path = media_error = None
        media_size = body.get("mediaSize")
        encoded = body.get("mediaBase64")
        if isinstance(media_size, int) and self._max_media is not None and media_size > self._max_media:
            # Decided from the declared size, before any byte is decoded (a hub that sent them anyway
            # is ignored): the message is kept and acknowledged without its media.
            media_error = "too_large"
            log.warning(
                "session %s: media of message %s is over the ceiling (%d bytes): not taken",
                self.ctx.session_id,
                msg_id,
                media_size,
            )
        elif isinstance(encoded, str):
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                log.warning("session %s: message %s carries undecodable media", self.ctx.session_id, msg_id)
                media_error = "download_failed"
            else:
                path = await asyncio.to_thread(write_media, self.ctx.session_dir / MEDIA_DIR, msg_id, mimetype, data)
                media_path = str(path)
        timestamp = body.get("timestamp")
        return IncomingMessage(
            id=msg_id,
            chat=group or sender,
            sender=sender,
            to=group or jid(str(body.get("to", ""))),
            participant=sender if group else None,
            type=str(body.get("type") or "text"),
            timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
            text=body.get("text") if isinstance(body.get("text"), str) else None,
            caption=body.get("caption") if isinstance(body.get("caption"), str) else None,
            mimetype=mimetype,
            media_size=media_size if isinstance(media_size, int) else None,
            media_path=media_path,
            media_error=media_error,
            reply_to=_opt(body, "quotedId", str),
            latitude=_opt(body, "latitude", float),
            longitude=_opt(body, "longitude", float),
            name=_opt(body, "name", str),
            address=_opt(body, "address", str),
            vcard=_opt(body, "vcard", str),
            reaction_to=_opt(body, "reactionTo", str),
            mentions=[m for m in body.get("mentions") or [] if isinstance(m, str)],
            poll=poll_votes.poll_spec(body.get("poll")),
            view_once=body.get("viewOnce") is True,
            voice=body.get("voice") is True,
        )

    def _on_receipt(self, body: dict[str, Any]) -> None:
        msg_id, status, chat, ts = body.get("id"), body.get("status"), body.get("chat"), body.get("timestamp")
        if not (isinstance(msg_id, str) and isinstance(status, str) and isinstance(chat, str)):
            return
        by = body.get("by")
        receipt = (
            status,
            chat if "@" in chat else jid(chat),
            float(ts) if isinstance(ts, int | float) else 0.0,
            jid(by) if isinstance(by, str) else None,  # a group member's receipt
        )
        if msg_id in self._sending:
            self._held.setdefault(msg_id, []).append(receipt)
        else:
            self._call(self.ctx.sink.on_receipt, msg_id, *receipt[:3], by=receipt[3])

    def _send_finished(self, msg_id: str) -> None:
        left = self._sending.get(msg_id, 1) - 1
        if left > 0:
            self._sending[msg_id] = left
            return
        self._sending.pop(msg_id, None)
        held = self._held.pop(msg_id, [])
        if held:
            # call_soon: the sender gets its SendResult before it hears of the receipts.
            loop = asyncio.get_running_loop()
            for status, chat, ts, by in held:
                loop.call_soon(functools.partial(self._call, self.ctx.sink.on_receipt, msg_id, status, chat, ts, by=by))

    # -- helpers ---------------------------------------------------------------
    def _open_store(self) -> DeviceStore:
        if self._store is None:
            self._store = DeviceStore(self.ctx.session_dir)
        return self._store

    def _forget_creds(self) -> None:
        self._creds = None
        self._open_store().clear()

    def _call(self, callback: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Call a sink method; a failing one is logged with its traceback and the engine carries on."""
        try:
            callback(*args, **kwargs)
        except Exception:
            log.exception("session %s: sink %s failed", self.ctx.session_id, getattr(callback, "__name__", callback))


async def _sleep_jittered(delay: float) -> None:
    # Jitter keeps fifty sessions dropped by one fault from hammering the hub in lockstep.
    await asyncio.sleep(delay * random.uniform(0.75, 1.25))


def _user(address: str) -> str:
    """The number of a user JID; NOT_SUPPORTED for anything else: contacts and blocking concern people,
    and the simulated network keeps disappearing timers for 1:1 chats only, not for groups."""
    phone = phone_of(address)
    if phone is None:
        raise EngineError(
            "NOT_SUPPORTED",
            f"{address!r} is not a user JID: on the simulated network this works for a person's chat only"
            " (a group's disappearing timer is not simulated)",
        )
    return phone


def _read_media(path: Path) -> tuple[int, bytes | None]:
    """The size of a media file, and its bytes when small enough to travel inline."""
    size = path.stat().st_size
    if size > MEDIA_INLINE_MAX:
        return size, None
    return size, path.read_bytes()


def _change(body: dict[str, Any]) -> MessageChange | None:
    """A pushed edit or revoke of an earlier message (session_proc/sim/hub_changes.py), else None."""
    kind = body.get("type")
    target = body.get("editOf") if kind == "edit" else body.get("revokeOf") if kind == "revoke" else None
    if not isinstance(target, str):
        return None
    sender = jid(str(body.get("from", "")))
    timestamp = body.get("timestamp")
    to = body.get("to")
    return MessageChange(
        id=str(body["id"]),
        chat=str(to) if is_group(to) else sender,  # in a group, the change is the group's
        sender=sender,
        target=target,
        kind=str(kind),
        timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
        text=_opt(body, "text", str) if kind == "edit" else None,
    )


def _opt(body: dict[str, Any], key: str, kind: type[T]) -> T | None:
    """``body[key]`` if it has the expected type (ints count as floats), else None."""
    value = body.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value if isinstance(value, kind) else None

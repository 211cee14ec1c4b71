"""The hub: WhatsApp's servers and people's phones, simulated.

Engines connect over ZeroMQ (one :class:`RouterChannel`) and speak the ops of
:mod:`session_proc.sim.ops`; the HTTP control API (:mod:`session_proc.sim.hub_http`)
calls the public methods here to act as a phone. What must survive a restart
(linked devices, inboxes, undelivered pushes) lives in :class:`HubStore`;
connections, QR and pairing codes and faults live in memory, like a server's
sockets.

A phone's inbox holds what linked devices (the worker's sessions) sent to that
number; messages a phone sends go to the devices linked to the recipient number.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from common.message_id import new_message_id
from common.tasks import cancel_and_wait
from session_proc.sim import hub_account, hub_changes, hub_polls, ops
from session_proc.sim.hub_contacts import OPS as CONTACT_OPS
from session_proc.sim.hub_contacts import ContactBook, ContactError
from session_proc.sim.hub_phones import PhoneRegistry
from session_proc.sim.hub_store import Device, HubStore, InboxEntry, Pending
from session_proc.sim.jids import is_group
from transport.channel import PeerGone, RemoteError, RouterChannel

log = logging.getLogger("sim.hub")

QR_TTL = 20.0  # seconds a QR string stays scannable before the next one replaces it
PAIR_CODE_TTL = 180.0  # WhatsApp's pairing codes stay valid for about three minutes
# Seconds between the hub's heartbeats to each connection (and theirs to it): a lost link is noticed
# after three. WhatsApp's own keepalive (whatsmeow) is 20-30 s; 3 s keeps the simulated network's idle
# wake-ups at 500 sessions low while a crashed hub is still noticed within 10 s.
HEARTBEAT_INTERVAL = 3.0
HEARTBEAT_LIVENESS = 3  # missed periods before a silent connection is closed
EXPIRED_CODES_KEPT = 10_000  # remembered to tell "expired" (410) from "unknown" (404); bounded memory
MAX_ID_LENGTH = 128

_PHONE = re.compile(r"[0-9]{1,20}")
_PAIR_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # no 0/O or I: people type these codes


class HubError(Exception):
    """A request the hub refuses: an HTTP status, a machine code and a human message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class Faults:
    """Misbehaviour injected through ``POST /faults``."""

    latency_ms: int = 0
    refuse_until: float = 0.0  # monotonic clock

    @property
    def latency(self) -> float:
        """Seconds added before every answer and push."""
        return self.latency_ms / 1000.0

    @property
    def refusing_for(self) -> float:
        """Seconds sends stay refused (0 when they are accepted)."""
        return max(0.0, self.refuse_until - time.monotonic())

    def to_json(self) -> dict[str, Any]:
        """The faults as ``GET /faults`` shows them."""
        remaining = self.refusing_for
        return {"latencyMs": self.latency_ms, "refuseSendsSeconds": round(remaining, 3), "refusingSends": remaining > 0}


@dataclass(slots=True)
class _Push:
    """An event queued for one connection."""

    op: str
    body: dict[str, Any]
    due: float  # monotonic time before which it must not leave (latency fault)
    on_sent: Callable[[], None] | None = None


@dataclass(eq=False)
class Connection:
    """One engine connection (one DEALER identity): waiting for a QR scan, or a linked device online."""

    identity: bytes
    session_id: str
    proxy: str | None
    heartbeat: float  # the period both sides agreed on; silence is judged against it
    # Media larger than this never travels to this connection (the engine's MAX_INCOMING_MEDIA_MB):
    # the message goes without its bytes, as WhatsApp's servers leave a file the phone never fetches.
    max_media_bytes: int | None = None
    device_id: str | None = None
    outbox: asyncio.Queue[_Push] = field(default_factory=asyncio.Queue)
    pushed: set[int] = field(default_factory=set)  # pending rows already pushed on this connection
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    qr_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The identity as text, for logs."""
        return self.identity.decode("utf-8", "replace")


@dataclass(slots=True)
class _Code:
    """A QR string or pairing code shown by a waiting connection."""

    conn: Connection
    expires_at: float  # epoch seconds
    phone: str | None = None  # pairing codes only: the number that asked for it


def _b64(nbytes: int) -> str:
    return base64.b64encode(os.urandom(nbytes)).decode()


def _qr_string() -> str:
    # The shape of WhatsApp's: a ref, then the noise key, identity key and adv secret.
    return f"2@{secrets.token_urlsafe(24)},{_b64(32)},{_b64(32)},{_b64(32)}"


def _pair_code_string() -> str:
    return "".join(secrets.choice(_PAIR_ALPHABET) for _ in range(8))


def check_phone(value: object, what: str = "phone") -> str:
    """A phone number: digits only, or HubError 400."""
    if not isinstance(value, str) or not _PHONE.fullmatch(value):
        raise HubError(400, "INVALID_PHONE", f"{what} must be a phone number of digits only, e.g. 628123456789")
    return value


def opt_str(body: dict[str, Any], key: str, *, max_len: int = 1 << 20) -> str | None:
    """An optional string field, or HubError 400."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise HubError(400, "BAD_REQUEST", f"{key} must be a string of at most {max_len} characters")
    return value


def req_str(body: dict[str, Any], key: str, *, max_len: int = 1 << 20) -> str:
    """A required non-empty string field, or HubError 400."""
    value = opt_str(body, key, max_len=max_len)
    if not value:
        raise HubError(400, "BAD_REQUEST", f"{key} is required")
    return value


def message_extra(body: dict[str, Any], media: bytes | None = None) -> dict[str, Any]:
    """The optional message fields of ``body`` (see ops.EXTRA_FIELDS), type-checked, plus the media's digest."""
    extra: dict[str, Any] = {}
    for key, types in ops.EXTRA_FIELDS.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise HubError(400, "BAD_REQUEST", f"{key} has the wrong type")
        extra[key] = hub_polls.check_poll(value) if key == "poll" else value
    if media is not None:
        extra["mediaSha256"] = hashlib.sha256(media).hexdigest()
    return extra


def _opt_size(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HubError(400, "BAD_REQUEST", f"{key} must be a non-negative integer")
    return value


class Hub:
    """The simulated servers and phones. ``start()`` binds the ROUTER; ``close()`` ends everything."""

    def __init__(
        self,
        store: HubStore,
        *,
        zmq_endpoint: str,
        qr_ttl: float = QR_TTL,
        qr_max: int = 0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        pair_code_ttl: float = PAIR_CODE_TTL,
        edit_window: float = ops.EDIT_WINDOW,
    ) -> None:
        self._store = store
        self.phones = PhoneRegistry(store.db, self._linked_push_name)
        self.contacts = ContactBook(store.db, self.phones)
        self._edit_window = edit_window
        self._qr_ttl = qr_ttl
        self._qr_max = qr_max  # QR codes per login attempt; 0: rotate until scanned
        self._pair_code_ttl = pair_code_ttl
        self._router = RouterChannel(
            zmq_endpoint,
            on_request=self._on_request,
            on_event=self._on_event,
            heartbeat_interval=heartbeat_interval,
            name="hub",
        )
        self._conns: dict[bytes, Connection] = {}
        self._by_device: dict[str, Connection] = {}
        self._qr: dict[str, _Code] = {}
        self._pair: dict[str, _Code] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self._last_proxy: dict[str, str | None] = {}  # device id → proxy of its latest connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self.faults = Faults()
        self.account = hub_account.HubAccount(self, store.path)  # read receipts, presence, calls
        # Imported here: the group registry uses this module's errors and field checks.
        from session_proc.sim.hub_groups import HubGroups

        self.groups = HubGroups(
            store.db,
            queue=self._queue,
            devices_of=lambda phone: [d.device_id for d in self._store.devices(phone)],
            exists=self.phones.exists,
        )

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> str:
        """Bind the ROUTER and start watching connections; returns the bound endpoint."""
        endpoint = self._router.bind()
        self._watcher = asyncio.create_task(self._watch_liveness(), name="hub-liveness")
        return endpoint

    async def close(self) -> None:
        """Close every connection and the ROUTER."""
        for conn in list(self._conns.values()):
            self._drop(conn, "hub stopping")
        await cancel_and_wait(self._watcher, *self._tasks)
        await self._router.close()
        self.account.close()

    async def _watch_liveness(self) -> None:
        interval = self._router.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            for conn in list(self._conns.values()):
                silence = self._router.silence(conn.identity)
                if silence is not None and silence > conn.heartbeat * HEARTBEAT_LIVENESS:
                    self._drop(conn, f"silent for {silence:.1f}s")

    # -- ZeroMQ side -----------------------------------------------------------
    async def _on_request(self, identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency)
        try:
            if op == ops.HELLO:
                return self._hello(identity, body)
            conn = self._conns.get(identity)
            if conn is None:
                raise HubError(409, ops.ERR_NOT_CONNECTED, "unknown connection: say hello first")
            if op == ops.SEND:
                return self._device_send(conn, body)
            if op == ops.PAIR_CODE:
                return self._pair_code(conn, body)
            if op == ops.LOGOUT:
                return self._logout(conn)
            if op == ops.GROUP:
                return self._group_request(conn, body)
            if op == ops.BYE:
                self._drop(conn, "closed by the engine")
                return {}
            if op in hub_account.REQUESTS:
                return self.account.on_request(conn, op, body)
            if op in CONTACT_OPS:
                return self.contacts.answer(self._linked_device(conn).phone, op, body)
            raise HubError(400, "UNKNOWN_OP", f"the hub has no op {op!r}")
        except (HubError, ContactError) as exc:
            raise RemoteError(exc.code, exc.message) from None

    async def _on_event(self, identity: bytes, op: str, body: dict[str, Any]) -> None:
        conn = self._conns.get(identity)
        if conn is None:
            return  # a stale connection's last words
        if op == ops.ACK:
            msg_id = body.get("id")
            if conn.device_id is not None and isinstance(msg_id, str):
                self._store.ack(conn.device_id, msg_id)
        elif op == ops.CALL_ACK:
            self.account.ack_call(conn, body)
        else:
            log.warning("connection %s sent an unknown event %r", conn.name, op)

    def _hello(self, identity: bytes, body: dict[str, Any]) -> dict[str, Any]:
        session_id = req_str(body, "sessionId", max_len=256)
        proxy = opt_str(body, "proxy", max_len=2048)
        device_id = opt_str(body, "deviceId", max_len=256)
        # Both sides beat at the slower of the two periods, so neither judges the other too soon.
        asked = body.get("heartbeat")
        heartbeat = self._router.heartbeat_interval
        if isinstance(asked, int | float) and 0 < asked <= 60:
            heartbeat = max(heartbeat, float(asked))
        old = self._conns.get(identity)
        if old is not None:
            self._drop(old, "said hello again")
        conn = Connection(
            identity=identity,
            session_id=session_id,
            proxy=proxy,
            heartbeat=heartbeat,
            max_media_bytes=_opt_size(body, "maxMediaBytes"),
        )
        if device_id is not None:
            secret = opt_str(body, "secret", max_len=256) or ""
            device = self._store.device(device_id)
            if device is None or not hmac.compare_digest(device.secret.encode(), secret.encode()):
                log.info("session %s: credentials of device %s are not linked", session_id, device_id)
                return {"status": ops.STATUS_UNLINKED, "heartbeat": heartbeat}
            previous = self._by_device.get(device_id)
            if previous is not None:
                log.info("device %s: connection %s replaces %s", device_id, conn.name, previous.name)
                self._drop(previous, "replaced", notify=(ops.REPLACED, {}))
            if device.session_id != session_id:
                self._store.set_session(device_id, session_id)
            self._open(conn)
            self._bind_device(conn, device)
            log.info("session %s online as %s (device %s)", session_id, device.phone, device_id)
            return {
                "status": ops.STATUS_LINKED,
                "heartbeat": heartbeat,
                "deviceId": device.device_id,
                "phone": device.phone,
                "pushName": device.push_name,
            }
        self._open(conn)
        conn.qr_task = self._spawn(conn, self._rotate_qr(conn))
        log.info("session %s waiting for a QR scan on %s", session_id, conn.name)
        return {"status": ops.STATUS_QR, "heartbeat": heartbeat}

    def _linked_device(self, conn: Connection) -> Device:
        device = self._store.device(conn.device_id) if conn.device_id else None
        if device is None:
            raise HubError(409, "NOT_LINKED", "this connection has no linked device: scan a QR first")
        return device

    def _device_send(self, conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
        device = self._linked_device(conn)
        remaining = self.faults.refusing_for
        if remaining > 0:
            raise HubError(503, ops.ERR_SEND_REFUSED, f"the server refuses sends for {remaining:.1f}s more")
        msg_id = req_str(body, "id", max_len=MAX_ID_LENGTH)
        # A group message goes to every other member, each with its own receipt (issue 17).
        group = str(body["to"]) if is_group(body.get("to")) else None
        members = self.groups.recipients(device.phone, group) if group else [check_phone(body.get("to"), "to")]
        msg_type = opt_str(body, "type", max_len=32) or "text"
        if msg_type in hub_changes.CHANGE_TYPES:
            return self._device_change(device, msg_id, group, members, body)
        media = body.get("media")
        if media is not None and not isinstance(media, bytes):
            raise HubError(400, "BAD_REQUEST", "media must be bytes")
        media_size = _opt_size(body, "mediaSize")
        if media_size is None and media is not None:
            media_size = len(media)
        if group is None and self.contacts.blocks(device.phone, members[0]):
            raise HubError(409, ops.ERR_RECIPIENT_BLOCKED, f"{members[0]} is blocked: unblock it to send")
        ts = time.time()
        extra = message_extra(body, media) | ({"group": group} if group else {})
        deliveries = 0
        for to in members:
            if group is None and self.contacts.blocks(to, device.phone):
                # Blocked by the recipient: the server takes it and never delivers it (one tick).
                log.info("device %s sent %s to %s, which blocked it: dropped", device.device_id, msg_id, to)
                continue
            timer = self.contacts.timer(device.phone, to) if group is None else None
            entry = InboxEntry(
                id=msg_id,
                phone=to,
                from_phone=device.phone,
                from_device=device.device_id,
                type=msg_type,
                text=opt_str(body, "text"),
                caption=opt_str(body, "caption"),
                media_size=media_size,
                mimetype=opt_str(body, "mimetype", max_len=255),
                timestamp=ts,
                deliveries=1,
                extra=extra | ({"disappearing": timer} if timer else {}),
            )
            deliveries = self._store.record_delivery(entry)
            # Session to session: the recipient's linked devices receive it like any incoming message.
            incoming = self._incoming_body(entry, media)
            for target in self._store.devices(to):
                if target.device_id != device.device_id:
                    self._queue(target.device_id, ops.MESSAGE, msg_id, incoming)
            # The recipient's phone is always online: delivered at once. The receipt is queued
            # behind this reply on the connection, so the engine sees the send answered first.
            receipt = {"id": msg_id, "status": "delivered", "chat": group or to, "timestamp": ts}
            self._queue(device.device_id, ops.RECEIPT, msg_id, receipt | ({"by": to} if group else {}))
        log.info("device %s sent %s to %s (delivery %d)", device.device_id, msg_id, group or members[0], deliveries)
        return {"id": msg_id, "timestamp": ts}

    def _device_change(
        self, device: Device, msg_id: str, group: str | None, members: list[str], body: dict[str, Any]
    ) -> dict[str, Any]:
        """A device edits or revokes a message it sent (hub_changes.py); the recipients' linked devices
        (every member's, in a group) hear of it like a message, but not an account that blocked the sender."""
        change = hub_changes.device_change(self._store, device.phone, members, body, window=self._edit_window)
        ts = time.time()
        chat = group or members[0]
        push = {
            "id": msg_id,
            "from": device.phone,
            "to": chat,
            "type": change.kind,
            hub_changes.TARGET_KEYS[change.kind]: change.target,
            "text": change.caption if change.caption is not None else change.text,
            "timestamp": ts,
        }
        for member in members:
            # In a group, blocking does not hide a member's messages (as WhatsApp does), so nor their changes.
            if group:
                hearing = [target.device_id for target in self._store.devices(member)]
            else:
                hearing = self.devices_hearing(device.phone, member, change.kind)
            for device_id in hearing:
                if device_id != device.device_id:
                    self._queue(device_id, ops.MESSAGE, msg_id, push)
        log.info("device %s: %s of %s sent to %s", device.device_id, change.kind, change.target, chat)
        return {"id": msg_id, "timestamp": ts}

    def _group_request(self, conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
        """A linked device's group operation, carried out for its phone (issue 17)."""
        return self.groups.device_request(self._linked_device(conn).phone, body)

    def _pair_code(self, conn: Connection, body: dict[str, Any]) -> dict[str, Any]:
        phone = check_phone(body.get("phone"))
        if conn.device_id is not None:
            raise HubError(409, ops.ERR_ALREADY_LINKED, "this connection is already linked")
        code = _pair_code_string()
        self._pair[code] = _Code(conn, time.time() + self._pair_code_ttl, phone)
        log.info("session %s asked for a pairing code for %s", conn.session_id, phone)
        return {"code": f"{code[:4]}-{code[4:]}"}

    def _logout(self, conn: Connection) -> dict[str, Any]:
        if conn.device_id is not None:
            log.info("device %s logged out by its session %s", conn.device_id, conn.session_id)
            self._store.remove_device(conn.device_id)
        self._drop(conn, "logged out")
        return {}

    # -- phones (HTTP side) ----------------------------------------------------
    def scan(self, phone: str, qr: str, push_name: str | None = None) -> dict[str, Any]:
        """The phone scans a QR string: the session showing it links to ``phone``."""
        check_phone(phone)
        entry = self._qr.get(qr)
        if entry is None or entry.expires_at <= time.time():
            if entry is not None or qr in self._expired:
                self._expire(self._qr, qr)
                raise HubError(410, "QR_EXPIRED", "this QR code expired: scan the one the session shows now")
            raise HubError(404, "QR_UNKNOWN", "no session shows this QR code")
        return self._link(entry.conn, phone, push_name)

    def pair(self, phone: str, code: str, push_name: str | None = None) -> dict[str, Any]:
        """The phone enters a pairing code: the session that asked for it links to ``phone``."""
        check_phone(phone)
        key = code.replace("-", "").strip().upper()
        entry = self._pair.get(key)
        if entry is None or entry.expires_at <= time.time():
            if entry is not None or key in self._expired:
                self._expire(self._pair, key)
                raise HubError(410, "CODE_EXPIRED", "this pairing code expired: ask the session for a new one")
            raise HubError(404, "CODE_UNKNOWN", "no session asked for this pairing code")
        if entry.phone != phone:
            raise HubError(409, "PHONE_MISMATCH", f"this code was requested for {entry.phone}, not {phone}")
        return self._link(entry.conn, phone, push_name)

    def phone_send(self, phone: str, body: dict[str, Any]) -> dict[str, Any]:
        """The phone sends a message to the linked number (or the group) ``body["to"]``."""
        check_phone(phone)
        if is_group(body.get("to")):
            return self._phone_group_send(phone, body)
        to = check_phone(body.get("to"), "to")
        if not self._store.devices(to):
            raise HubError(404, "NOT_LINKED", f"no device is linked to {to}")
        entry, media = self._phone_entry(phone, to, body)
        self.account.record_sent(entry)
        self.phones.seen(phone)  # a number that sends is on WhatsApp
        hearing = self.devices_hearing(phone, to, f"message {entry.id}")
        if not hearing:  # a device is linked (checked above): the account blocked this number
            return {"id": entry.id, "queued": True}
        self._store.remember_sent(phone, entry.id, to, entry.timestamp)
        incoming = self._incoming_body(entry, media)
        pushed = False
        for device_id in hearing:
            pushed |= self._queue(device_id, ops.MESSAGE, entry.id, incoming)
        log.info("phone %s sent %s to %s (%s)", phone, entry.id, to, "pushed" if pushed else "queued")
        return {"id": entry.id, "queued": not pushed}

    def _phone_entry(
        self, phone: str, to: str, body: dict[str, Any], group: str | None = None
    ) -> tuple[InboxEntry, bytes | None]:
        """A message the phone sends, as the recipient's inbox keeps it, and its media."""
        media_b64 = opt_str(body, "mediaBase64", max_len=1 << 27)
        media: bytes | None = None
        if media_b64 is not None:
            try:
                media = base64.b64decode(media_b64, validate=True)
            except (binascii.Error, ValueError):
                raise HubError(400, "BAD_REQUEST", "mediaBase64 is not valid base64") from None
        msg_type = opt_str(body, "type", max_len=32) or ("document" if media is not None else "text")
        if msg_type == "reaction":
            body = hub_changes.reaction_fields(body)
            hub_changes.react_in_inbox(self._store, phone, body["reactionTo"], body["text"])
        entry = InboxEntry(
            id=new_message_id(),
            phone=to,
            from_phone=phone,
            from_device=None,
            type=msg_type,
            text=opt_str(body, "text"),
            caption=opt_str(body, "caption"),
            media_size=len(media) if media is not None else None,
            mimetype=opt_str(body, "mimetype", max_len=255),
            timestamp=time.time(),
            deliveries=1,
            extra=message_extra(body, media) | ({"group": group} if group else {}),
        )
        return entry, media

    def _phone_group_send(self, phone: str, body: dict[str, Any]) -> dict[str, Any]:
        """The phone writes in a group: every other member's inbox and linked devices get it (issue 17)."""
        group = str(body["to"])
        pushed = False
        members = self.groups.recipients(phone, group)
        self.phones.seen(phone)
        # Kept once as sent to the group (read receipts name the group), delivered to each member.
        sent, media = self._phone_entry(phone, group, body, group)
        self.account.record_sent(sent)
        self._store.remember_sent(phone, sent.id, group, sent.timestamp)  # so the phone may edit or revoke it
        msg_id = sent.id
        for member in members:
            entry = replace(sent, phone=member)
            self._store.record_delivery(entry)
            incoming = self._incoming_body(entry, media)
            for target in self._store.devices(member):
                pushed |= self._queue(target.device_id, ops.MESSAGE, msg_id, incoming)
        log.info("phone %s sent %s to group %s", phone, msg_id, group)
        return {"id": msg_id, "queued": not pushed}

    def phone_vote(self, phone: str, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The phone votes on a poll it received: the poll's sender devices get the vote as option hashes."""
        check_phone(phone)
        entries = self._store.inbox(phone, [message_id])
        vote = hub_polls.vote_body(entries[0] if entries else None, body, vote_id=new_message_id(), at=time.time())
        if not self._store.devices(vote["to"]):
            raise HubError(404, "NOT_LINKED", f"no device is linked to {vote['to']}, who sent the poll")
        pushed = False
        for device_id in self.devices_hearing(phone, vote["to"], f"vote {vote['id']}"):
            pushed |= self._queue(device_id, ops.MESSAGE, vote["id"], vote)
        log.info("phone %s voted on poll %s (%s)", phone, message_id, "pushed" if pushed else "queued")
        return {"id": vote["id"], "queued": not pushed}

    def phone_change(self, phone: str, msg_id: str, kind: str, text: str | None = None) -> dict[str, Any]:
        """The phone edits (``kind`` "edit", new ``text``) or revokes a message it sent; the devices
        linked to its recipient receive the change (hub_changes.py)."""
        check_phone(phone)
        to, push = hub_changes.phone_change(self._store, phone, msg_id, kind, text, window=self._edit_window)
        if is_group(to):
            # Every other member sees it, in their inbox and on their linked devices; blocking hides nothing.
            members = self.groups.others(phone, to)
            hub_changes.apply_to_inboxes(self._store, members, hub_changes.Change(kind, msg_id, text))
            hearing = [device.device_id for member in members for device in self._store.devices(member)]
        else:
            hearing = self.devices_hearing(phone, to, f"{kind} {push['id']}")
        pushed = False
        for device_id in hearing:
            pushed |= self._queue(device_id, ops.MESSAGE, push["id"], push)
        log.info("phone %s: %s of %s (%s)", phone, kind, msg_id, "pushed" if pushed else "queued")
        return {"id": push["id"], "queued": not pushed}

    def phone_messages(self, phone: str) -> list[dict[str, Any]]:
        """What the phone received, oldest first, one entry per message id."""
        check_phone(phone)
        return [entry.to_json() for entry in self._store.inbox(phone)]

    def phone_read(self, phone: str, ids: list[str]) -> int:
        """The phone reads messages: their sender devices get ``read`` receipts. Returns how many."""
        check_phone(phone)
        count = 0
        ts = time.time()
        for entry in self._store.inbox(phone, ids):
            if entry.from_device is None or self._store.device(entry.from_device) is None:
                continue  # sent by a device that is no longer linked: nobody to tell
            group = entry.extra.get("group")  # a group message: the receipt names the group and its reader
            body = {"id": entry.id, "status": "read", "chat": group or phone, "timestamp": ts}
            self._queue(entry.from_device, ops.RECEIPT, entry.id, body | ({"by": phone} if group else {}))
            count += 1
        return count

    def unlink(self, phone: str) -> int:
        """Remove every device linked to ``phone``; connected ones are logged out. Returns how many."""
        check_phone(phone)
        devices = self._store.devices(phone)
        if not devices:
            raise HubError(404, "NOT_LINKED", f"no device is linked to {phone}")
        for device in devices:
            self._store.remove_device(device.device_id)
            conn = self._by_device.get(device.device_id)
            if conn is not None:
                self._drop(conn, "unlinked from the phone", notify=(ops.LOGGED_OUT, {"reason": "unlinked"}))
            log.info("phone %s unlinked device %s", phone, device.device_id)
        return len(devices)

    # -- for hub_account -----------------------------------------------------------
    def device_of(self, conn: Connection) -> Device:
        """The device linked on ``conn``, or HubError 409."""
        device = self._store.device(conn.device_id) if conn.device_id else None
        if device is None:
            raise HubError(409, "NOT_LINKED", "this connection has no linked device: scan a QR first")
        return device

    def devices_hearing(self, sender: str, account: str, what: str) -> list[str]:
        """The ids of the devices linked to ``account`` that get what ``sender`` does (``what``, for the log).

        No device when the account blocked ``sender``: WhatsApp's server drops everything a blocked number sends
        it (messages, reactions, edits and revokes, poll votes, presence, calls), and the sender never
        learns why, so this is no error. The one place that rule lives for what phones do.
        """
        if self.contacts.blocks(account, sender):
            log.info("%s from %s to %s, which blocked it: dropped", what, sender, account)
            return []
        return [device.device_id for device in self._store.devices(account)]

    def linked(self, phone: str) -> list[str]:
        """The ids of the devices linked to ``phone``, or HubError 404."""
        check_phone(phone, "to")
        devices = self._store.devices(phone)
        if not devices:
            raise HubError(404, "NOT_LINKED", f"no device is linked to {phone}")
        return [d.device_id for d in devices]

    def push_now(self, device_id: str, op: str, body: dict[str, Any]) -> bool:
        """Push an ephemeral event to a device if it is online (nothing is kept). True if pushed."""
        conn = self._by_device.get(device_id)
        if conn is None:
            return False
        self._send(conn, op, body)
        return True

    def queue_for(self, device_id: str, kind: str, msg_id: str, body: dict[str, Any]) -> bool:
        """Keep something for a device until it acknowledges it; pushed now if it is online."""
        return self._queue(device_id, kind, msg_id, body)

    # -- faults and debug ------------------------------------------------------
    def set_faults(
        self,
        *,
        clear: bool = False,
        drop_connections: bool = False,
        latency_ms: int | None = None,
        refuse_sends_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Change the injected faults; returns them as ``GET /faults`` shows them."""
        if clear:
            self.faults = Faults()
        if latency_ms is not None:
            self.faults.latency_ms = latency_ms
        if refuse_sends_seconds is not None:
            self.faults.refuse_until = time.monotonic() + refuse_sends_seconds
        if drop_connections:
            conns = list(self._conns.values())
            for conn in conns:
                self._drop(conn, "dropped by a fault", notify=(ops.DISCONNECT, {"reason": "dropped"}))
            log.info("fault: dropped %d connections", len(conns))
        return self.faults.to_json()

    def devices_json(self) -> dict[str, Any]:
        """Linked devices and connections waiting for a scan, for ``GET /devices``."""
        devices = []
        for device in self._store.devices():
            conn = self._by_device.get(device.device_id)
            devices.append(
                {
                    "deviceId": device.device_id,
                    "phone": device.phone,
                    "sessionId": device.session_id,
                    "pushName": device.push_name,
                    "linkedAt": device.linked_at,
                    "connected": conn is not None,
                    "connection": conn.name if conn is not None else None,
                    "proxy": conn.proxy if conn is not None else self._last_proxy.get(device.device_id),
                    "pending": self._store.pending_count(device.device_id),
                }
            )
        waiting = [
            {"sessionId": c.session_id, "connection": c.name, "proxy": c.proxy}
            for c in self._conns.values()
            if c.device_id is None
        ]
        return {"devices": devices, "waiting": waiting}

    # -- internals -------------------------------------------------------------
    def _open(self, conn: Connection) -> None:
        self._conns[conn.identity] = conn
        self._router.track(conn.identity)
        self._spawn(conn, self._pump(conn))

    def _bind_device(self, conn: Connection, device: Device) -> None:
        conn.device_id = device.device_id
        self._by_device[device.device_id] = conn
        self._last_proxy[device.device_id] = conn.proxy
        # Whatever waited while the device was offline, and messages pushed before but never acked.
        for pending in self._store.pending(device.device_id):
            self._push(conn, pending)

    def _link(self, conn: Connection, phone: str, push_name: str | None) -> dict[str, Any]:
        if self._conns.get(conn.identity) is not conn or conn.device_id is not None:
            raise HubError(410, "QR_EXPIRED", "the session that showed this code is gone")
        self._stop_codes(conn)
        device = Device(
            device_id=f"{phone}.{secrets.token_hex(6)}",
            secret=secrets.token_hex(32),
            phone=phone,
            session_id=conn.session_id,
            push_name=push_name,
            linked_at=time.time(),
        )
        self._store.add_device(device)
        self.phones.seen(phone, push_name)  # a number that scanned or paired is on WhatsApp
        self._send(
            conn,
            ops.LINKED,
            {"deviceId": device.device_id, "secret": device.secret, "phone": phone, "pushName": push_name},
        )
        self._bind_device(conn, device)
        log.info("session %s linked to %s as device %s", conn.session_id, phone, device.device_id)
        return {"linked": True, "sessionId": conn.session_id, "deviceId": device.device_id}

    def _linked_push_name(self, phone: str) -> tuple[bool, str | None]:
        devices = self._store.devices(phone)
        return bool(devices), next((d.push_name for d in reversed(devices) if d.push_name), None)

    @staticmethod
    def _incoming_body(entry: InboxEntry, media: bytes | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": entry.id,
            "from": entry.from_phone,
            "to": entry.phone,
            "type": entry.type,
            "text": entry.text,
            "caption": entry.caption,
            "mimetype": entry.mimetype,
            "mediaSize": entry.media_size,
            "timestamp": entry.timestamp,
            **entry.extra,
        }
        if media is not None:
            body["mediaBase64"] = base64.b64encode(media).decode()
        return body

    def _queue(self, device_id: str, kind: str, msg_id: str, body: dict[str, Any]) -> bool:
        """Store something for a device and push it now if it is online. True if pushed."""
        pending = self._store.add_pending(device_id, kind, msg_id, body)
        conn = self._by_device.get(device_id)
        if conn is None:
            return False
        if pending is not None:
            self._push(conn, pending)
        return True

    def _push(self, conn: Connection, pending: Pending) -> None:
        if pending.seq in conn.pushed:
            return
        conn.pushed.add(pending.seq)
        on_sent: Callable[[], None] | None = None
        body = pending.body
        size, limit = body.get("mediaSize"), conn.max_media_bytes
        if "mediaBase64" in body and limit is not None and isinstance(size, int) and size > limit:
            body = {k: v for k, v in body.items() if k != "mediaBase64"}  # the engine would refuse the bytes
        if pending.kind == ops.RECEIPT:
            # Receipts need no ack: once on the wire they are done. Messages wait for the ack.
            seq = pending.seq
            on_sent = lambda: self._store.remove_pending(seq)  # noqa: E731
        self._send(conn, pending.kind, body, on_sent)

    def _send(self, conn: Connection, op: str, body: dict[str, Any], on_sent: Callable[[], None] | None = None) -> None:
        conn.outbox.put_nowait(_Push(op, body, time.monotonic() + self.faults.latency, on_sent))

    async def _pump(self, conn: Connection) -> None:
        # One pump per connection keeps pushes in order, latency fault or not.
        while True:
            item = await conn.outbox.get()
            delay = item.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self._router.emit(conn.identity, item.op, item.body)
            except PeerGone as exc:
                self._drop(conn, f"unreachable: {exc}")
                return
            if item.on_sent is not None:
                item.on_sent()

    async def _rotate_qr(self, conn: Connection) -> None:
        shown = 0
        while self._qr_max == 0 or shown < self._qr_max:
            code = _qr_string()
            expires_at = time.time() + self._qr_ttl
            self._qr[code] = _Code(conn, expires_at)
            self._send(conn, ops.QR, {"code": code, "expiresAt": expires_at})
            shown += 1
            await asyncio.sleep(self._qr_ttl)
            self._expire(self._qr, code)
        # Like WhatsApp: after the last code nobody scanned, the login attempt is over.
        log.info("session %s: no scan after %d QR codes", conn.session_id, shown)
        self._drop(conn, ops.REASON_QR_TIMEOUT, notify=(ops.DISCONNECT, {"reason": ops.REASON_QR_TIMEOUT}))

    def _expire(self, table: dict[str, _Code], code: str) -> None:
        table.pop(code, None)
        self._expired[code] = None
        while len(self._expired) > EXPIRED_CODES_KEPT:
            self._expired.popitem(last=False)

    def _stop_codes(self, conn: Connection) -> None:
        if conn.qr_task is not None:
            conn.qr_task.cancel()
            conn.qr_task = None
        for table in (self._qr, self._pair):
            for code in [code for code, entry in table.items() if entry.conn is conn]:
                self._expire(table, code)

    def _spawn(self, conn: Connection, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        conn.tasks.append(task)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    def _drop(self, conn: Connection, why: str, *, notify: tuple[str, dict[str, Any]] | None = None) -> None:
        """Close a connection: tell the engine why (if ``notify``), stop its tasks, forget it."""
        if self._conns.get(conn.identity) is not conn:
            return
        if notify is not None:
            with contextlib.suppress(PeerGone):
                self._router.emit(conn.identity, *notify)
        del self._conns[conn.identity]
        if conn.device_id is not None and self._by_device.get(conn.device_id) is conn:
            del self._by_device[conn.device_id]
        self._stop_codes(conn)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        self._router.forget(conn.identity)
        log.info("connection %s (session %s) closed: %s", conn.name, conn.session_id, why)

"""Async ZeroMQ channels speaking the wire protocol: requests with correlation ids
and timeouts, fire-and-forget events, and heartbeats both ways: the binder beats
every tracked peer each period, and a connecting peer answers each beat with its
own (so each side hears the other every period, with one timer between them).

The supervisor (and the sim hub) bind a :class:`RouterChannel`; each session
process connects a :class:`DealerChannel`. Malformed frames are logged and
dropped. A send never blocks the event loop: when a peer's queue is full or the
peer is gone, the send fails at once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import zmq

from common.tasks import cancel_and_wait
from transport.protocol import EVENT, HB, REP, REQ, Frame, IdSource, Payload, ProtocolError, decode, encode, fail, ok

log = logging.getLogger("transport")

# Defaults; both sides get the real values from their configuration.
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_LIVENESS = 3  # missed periods before a peer counts as dead (Paranoid Pirate)
SEND_HWM = 10_000
RECV_HWM = 10_000
# Frames read per wake-up before other work gets a turn.
READ_BATCH = 256
# The largest frame either side takes, checked by ZeroMQ before it allocates: a message's text (WhatsApp
# allows about 65,000 characters) with its fields fits many times over; media travels as a file path.
# A peer that sends a larger frame is disconnected (it reconnects; the frame is lost to it alone).
MAX_FRAME_BYTES = 1 << 20
# Requests and events of one peer being handled at once. Beyond that its requests are answered BUSY and
# its events dropped: a session process flooding the supervisor costs itself, never the supervisor's
# memory or another session's turn. Far above what an engine does (whatsmeow hands over one message at
# a time; a reconnect's burst of receipts is a few hundred events, handled in milliseconds each).
MAX_IN_PROGRESS_PER_PEER = 1024
# How a connecting side names its one peer (the binder) where a routing identity would stand.
_BINDER = b"peer"
# The heartbeat frame (it carries nothing).
_BEAT = Frame(kind=HB)
# A binder beats its peers in this many slices over a period.
BEAT_SLICES = 10
# Plain ints: pyzmq's enum members cost an enum construction per operator use, several per frame.
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


class ChannelError(Exception):
    """Base of the errors a channel raises to its caller."""


class RemoteError(ChannelError):
    """The peer answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestTimeout(ChannelError):
    """No reply arrived within the request's timeout."""


class PeerGone(ChannelError):
    """The peer is not connected, or its queue is full: the frame was not sent."""


# A body as received: always a plain map (transport/wire.py turns it into a typed body).
Body = dict[str, Any]
# Request handlers return the reply's result, or raise RemoteError to answer with an error.
RequestHandler = Callable[[bytes, str, Body], Awaitable[Payload | None]]
# An event handler may be a plain function: it runs inline, without a task of its own per event.
EventHandler = Callable[[bytes, str, Body], Awaitable[None] | None]


def _expire(fut: asyncio.Future[Body], op: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(RequestTimeout(f"{op} got no reply within {timeout:.1f}s"))


def _worth_logging(count: int) -> bool:
    """The 1st, 10th, 100th, ... occurrence: a repeated warning stays visible without flooding the log."""
    return count > 0 and 10 ** len(str(count)) // 10 == count


def _identity_text(identity: bytes) -> str:
    return identity.decode("utf-8", "replace")


class _Endpoint:
    """What both ends share: the socket, the reader loop, request correlation."""

    def __init__(
        self,
        socket_type: int,
        *,
        on_request: RequestHandler | None,
        on_event: EventHandler | None,
        name: str,
    ) -> None:
        # Each process creates its own context: a context must never cross a fork.
        # A plain socket, read from the event loop's own reader callback: zmq.asyncio wraps every send
        # and receive in a future and a reschedule, which cost more CPU than the work per frame.
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(socket_type)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._sock.setsockopt(zmq.RCVHWM, RECV_HWM)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._on_request = on_request
        self._on_event = on_event
        self._ids = IdSource()
        self._pending: dict[int, asyncio.Future[Body]] = {}
        self._pending_peer: dict[int, bytes | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_progress: dict[bytes, int] = {}  # peer -> its requests and events being handled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._read_scheduled = False
        self._beater: asyncio.Task[None] | None = None  # the subclass's heartbeat loop
        self._closed = False
        self.name = name
        self.dropped_frames = 0

    def set_handlers(self, *, on_request: RequestHandler | None, on_event: EventHandler | None) -> None:
        """Install the handlers (for owners built after their channel)."""
        self._on_request = on_request
        self._on_event = on_event

    # -- sending -------------------------------------------------------------
    def _send(self, identity: bytes | None, frame: Frame) -> None:
        raise NotImplementedError

    def _send_checked(self, identity: bytes | None, frame: Frame) -> None:
        if self._closed:
            raise PeerGone("channel closed")
        try:
            self._send(identity, frame)  # NOBLOCK: fails at once instead of waiting
        except zmq.Again:
            raise PeerGone("peer's queue is full") from None
        except zmq.ZMQError as exc:
            raise PeerGone(f"peer unreachable: {exc.strerror}") from None
        finally:
            self._rearm()

    async def _request(self, identity: bytes | None, op: str, body: Payload, timeout: float) -> Body:
        rid = self._ids.next()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Body] = loop.create_future()
        self._pending[rid] = fut
        self._pending_peer[rid] = identity
        # A timer on the future itself: asyncio.wait_for would wrap it in another future per request.
        timer = loop.call_later(timeout, _expire, fut, op, timeout)
        try:
            self._send_checked(identity, Frame(kind=REQ, op=op, body=body, id=rid))
            reply = await fut
        finally:
            timer.cancel()
            self._pending.pop(rid, None)
            self._pending_peer.pop(rid, None)
        if reply.get("ok"):
            result = reply.get("result")
            return result if isinstance(result, dict) else {}
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {}
        raise RemoteError(str(error.get("code", "REMOTE_ERROR")), str(error.get("message", "")))

    # -- receiving -----------------------------------------------------------
    def _split(self, parts: list[bytes]) -> tuple[bytes, bytes] | None:
        raise NotImplementedError

    def _seen(self, identity: bytes) -> None:
        """Called for every valid frame: any frame counts as a heartbeat."""

    def _rearm(self) -> None:
        """After any use of the socket: read what waits, since its FD signals only changes (edge-triggered)."""
        if self._loop is None or self._read_scheduled or self._closed:
            return
        if self._sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
            self._read_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        """The event loop's reader callback: take the frames that wait, a batch at a time."""
        self._read_scheduled = False
        if self._closed:
            return
        sock = self._sock
        for _ in range(READ_BATCH):
            # Asking first is cheaper than the exception an empty NOBLOCK receive raises.
            if not sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]
                return  # drained: the FD signals again on the next frame
            try:
                parts = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if not self._closed:
                    log.warning("%s: receive failed: %s", self.name, exc)
                return
            try:
                self._receive(parts)
            except Exception:  # a bug in a handler must not stop the reading
                log.exception("%s: frame handling failed", self.name)
        self._rearm()  # more than a batch: the rest after other work had its turn

    def _receive(self, parts: list[bytes]) -> None:
        split = self._split(parts)
        if split is None:
            self._drop(b"?", f"unexpected frame layout ({len(parts)} parts)")
            return
        identity, payload = split
        try:
            frame = decode(payload)
        except ProtocolError as exc:
            self._drop(identity, str(exc))
            return
        self._seen(identity)
        self._dispatch(identity, frame)

    def _drop(self, identity: bytes, why: str) -> None:
        self.dropped_frames += 1
        if _worth_logging(self.dropped_frames):  # a flood must not become a flood of log lines
            log.warning(
                "%s: dropped a frame from %s: %s (%d dropped so far)",
                self.name,
                _identity_text(identity),
                why,
                self.dropped_frames,
            )

    def _dispatch(self, identity: bytes, frame: Frame) -> None:
        if frame.kind == HB:
            return
        body = cast(Body, frame.body)  # a decoded frame's body is always a plain map (protocol.decode)
        if frame.kind == REP:
            fut = self._pending.get(frame.id)
            if fut is not None and not fut.done():
                fut.set_result(body)
            return
        busy = self._in_progress.get(identity, 0) >= MAX_IN_PROGRESS_PER_PEER
        if frame.kind == REQ:
            if busy:
                self._drop(identity, f"request {frame.op!r} over {MAX_IN_PROGRESS_PER_PEER} in progress")
                self._reply(identity, frame.op, frame.id, fail("BUSY", "too many requests in progress"))
                return
            self._spawn(self._answer(identity, frame.op, body, frame.id), identity)
        elif frame.kind == EVENT and self._on_event is not None:
            if busy:
                self._drop(identity, f"event {frame.op!r} over {MAX_IN_PROGRESS_PER_PEER} in progress")
                return
            handled = self._on_event(identity, frame.op, body)
            if handled is not None:
                self._spawn(handled, identity)

    async def _answer(self, identity: bytes, op: str, request: Body, rid: int) -> None:
        if self._on_request is None:
            body = fail("NO_HANDLER", f"{self.name} takes no requests")
        else:
            try:
                body = ok(await self._on_request(identity, op, request))
            except RemoteError as exc:
                body = fail(exc.code, exc.message)
            except Exception as exc:
                log.exception("%s: handler for %s failed", self.name, op)
                body = fail("INTERNAL", type(exc).__name__)
        self._reply(identity, op, rid, body)

    def _reply(self, identity: bytes, op: str, rid: int, body: Payload) -> None:
        try:
            self._send_checked(identity, Frame(kind=REP, op=op, body=body, id=rid))
        except PeerGone as exc:
            log.info("%s: reply to %s not sent: %s", self.name, _identity_text(identity), exc)

    def _spawn(self, coro: Awaitable[Any], peer: bytes) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        self._in_progress[peer] = self._in_progress.get(peer, 0) + 1
        task.add_done_callback(lambda done: self._task_done(done, peer))

    def _task_done(self, task: asyncio.Task[Any], peer: bytes) -> None:
        self._tasks.discard(task)
        left = self._in_progress.get(peer, 1) - 1
        if left > 0:
            self._in_progress[peer] = left
        else:
            self._in_progress.pop(peer, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: handler failed", self.name, exc_info=task.exception())

    # -- lifecycle -----------------------------------------------------------
    def _start_reader(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = int(self._sock.getsockopt(zmq.FD))  # type: ignore[arg-type]
        self._loop.add_reader(self._fd, self._on_readable)
        self._read_scheduled = True
        self._loop.call_soon(self._on_readable)  # frames may be waiting already; the FD tells only of new ones

    async def close(self) -> None:
        """Stop reading, fail pending requests, close the socket and the context."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        await cancel_and_wait(self._beater, *self._tasks)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(PeerGone("channel closed"))
        self._sock.close(linger=0)
        self._ctx.term()


class RouterChannel(_Endpoint):
    """The binding side: many peers, each known by its routing identity.

    The owner decides which identities it heartbeats (``track``) and when a peer
    is dead (``silence`` tells how long a peer has said nothing).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        on_request: RequestHandler | None = None,
        on_event: EventHandler | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        name: str = "router",
    ) -> None:
        super().__init__(zmq.ROUTER, on_request=on_request, on_event=on_event, name=name)
        # A send to a vanished peer fails loudly instead of disappearing.
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # No ROUTER_HANDOVER: a second connection claiming a live identity is refused,
        # so nobody can take over a session's routing by guessing its identity.
        self.endpoint = endpoint
        self.heartbeat_interval = heartbeat_interval
        self._last_seen: dict[bytes, float] = {}
        self._tracked: set[bytes] = set()
        self._bound = False

    def bind(self) -> str:
        """Bind and start reading; returns the bound endpoint (with the real port for tcp://*:0)."""
        self._sock.bind(self.endpoint)
        self._bound = True
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._start_reader()
        self._beater = asyncio.create_task(self._beat_loop(), name=f"{self.name}-heartbeat")
        return self.endpoint

    def _send(self, identity: bytes | None, frame: Frame) -> None:
        assert identity is not None
        self._sock.send_multipart([identity, encode(frame)], flags=_NOBLOCK)

    def _split(self, parts: list[bytes]) -> tuple[bytes, bytes] | None:
        if len(parts) != 2:
            return None
        return parts[0], parts[1]

    def _seen(self, identity: bytes) -> None:
        # Only tracked peers: a forgotten peer that still speaks must not grow the map forever.
        if identity in self._tracked:
            self._last_seen[identity] = time.monotonic()

    def track(self, identity: bytes) -> None:
        """Heartbeat this peer from now on; its silence counts from now."""
        self._tracked.add(identity)
        self._last_seen.setdefault(identity, time.monotonic())

    def forget(self, identity: bytes) -> None:
        """Stop heartbeating a peer and forget when it was last heard."""
        self._tracked.discard(identity)
        self._last_seen.pop(identity, None)

    def fail_pending(self, identity: bytes, why: str) -> int:
        """Fail every request waiting on ``identity`` with PeerGone (it exited: no answer will come)."""
        failed = 0
        for rid, peer in list(self._pending_peer.items()):
            fut = self._pending.get(rid)
            if peer == identity and fut is not None and not fut.done():
                fut.set_exception(PeerGone(why))
                failed += 1
        return failed

    def silence(self, identity: bytes) -> float | None:
        """Seconds since the peer's last frame (or since tracked), None for an untracked peer."""
        seen = self._last_seen.get(identity)
        return None if seen is None else time.monotonic() - seen

    async def request(self, identity: bytes, op: str, body: Payload | None = None, *, timeout: float) -> Body:
        """Send a request to one peer and wait for its result (or RemoteError/RequestTimeout/PeerGone)."""
        return await self._request(identity, op, {} if body is None else body, timeout)

    def emit(self, identity: bytes, op: str, body: Payload | None = None) -> None:
        """Send an event to one peer; raises PeerGone if it cannot be sent now."""
        self._send_checked(identity, Frame(kind=EVENT, op=op, body={} if body is None else body))

    async def _beat_loop(self) -> None:
        # Each peer is beaten once a period, a slice of them at a time: 500 peers beaten (and answering)
        # in one burst stall the loop for milliseconds, which every request then waiting pays.
        turn = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval / BEAT_SLICES)
            # A peer's slice follows from its identity, so peers coming and going never move another's.
            for identity in [i for i in self._tracked if hash(i) % BEAT_SLICES == turn]:
                try:
                    self._send_checked(identity, _BEAT)
                except PeerGone:
                    pass  # not connected yet, or gone: the owner's liveness check decides
            turn = (turn + 1) % BEAT_SLICES


class DealerChannel(_Endpoint):
    """The connecting side: one peer (the binder), beaten and watched.

    ``on_peer_lost`` runs once when nothing was heard from the binder for
    ``heartbeat_interval * liveness`` seconds.
    """

    def __init__(
        self,
        endpoint: str,
        identity: bytes,
        *,
        on_request: RequestHandler | None = None,
        on_event: EventHandler | None = None,
        on_peer_lost: Callable[[], Awaitable[None]] | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        liveness: int = HEARTBEAT_LIVENESS,
        name: str = "dealer",
    ) -> None:
        super().__init__(zmq.DEALER, on_request=on_request, on_event=on_event, name=name)
        # The identity must be set before connecting: it names this incarnation.
        self._sock.setsockopt(zmq.IDENTITY, identity)
        self.identity = identity
        self.endpoint = endpoint
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self._on_peer_lost = on_peer_lost
        self._last_heard = time.monotonic()

    def connect(self) -> None:
        """Connect and start reading and heartbeating."""
        self._sock.connect(self.endpoint)
        self._last_heard = time.monotonic()
        self._start_reader()
        with contextlib.suppress(PeerGone):
            self._send_checked(None, _BEAT)  # heard from at once, before the binder's first beat
        self._beater = asyncio.create_task(self._beat_loop(), name=f"{self.name}-heartbeat")

    def _send(self, identity: bytes | None, frame: Frame) -> None:
        self._sock.send(encode(frame), flags=_NOBLOCK)

    def _split(self, parts: list[bytes]) -> tuple[bytes, bytes] | None:
        if len(parts) != 1:
            return None
        return _BINDER, parts[0]

    def _seen(self, identity: bytes) -> None:
        self._last_heard = time.monotonic()

    @property
    def silence(self) -> float:
        """Seconds since the last frame from the peer."""
        return time.monotonic() - self._last_heard

    async def request(self, op: str, body: Payload | None = None, *, timeout: float) -> Body:
        """Send a request to the peer and wait for its result."""
        return await self._request(None, op, {} if body is None else body, timeout)

    def emit(self, op: str, body: Payload | None = None) -> None:
        """Send an event; raises PeerGone if it cannot be queued now."""
        self._send_checked(None, Frame(kind=EVENT, op=op, body={} if body is None else body))

    def _dispatch(self, identity: bytes, frame: Frame) -> None:
        if frame.kind == HB:
            # The binder's heartbeat, answered at once: the binder hears us every period without a timer
            # of our own, so an idle dealer wakes once per period instead of twice (and a binder's answers
            # arrive together, read in batches).
            with contextlib.suppress(PeerGone):
                self._send_checked(None, _BEAT)
            return
        super()._dispatch(identity, frame)

    async def _beat_loop(self) -> None:
        """Watch the binder's heartbeats: silence past ``liveness`` periods is a lost peer."""
        lost = False
        while True:
            limit = self.heartbeat_interval * self.liveness
            # Wake when the silence would pass the limit, not every period: heard from since, sleep on.
            await asyncio.sleep(max(self.heartbeat_interval, limit - self.silence))
            if self.silence > limit:
                if not lost and self._on_peer_lost is not None:
                    lost = True
                    log.warning("%s: peer silent for %.1fs", self.name, self.silence)
                    self._spawn(self._on_peer_lost(), _BINDER)
            else:
                lost = False

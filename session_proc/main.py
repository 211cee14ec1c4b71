"""The session process's main loop: one engine, one DEALER to the supervisor.

Contract with the supervisor (transport/wire.py declares every operation): the
process connects a DEALER with identity ``<sessionId>:<incarnation>``, announces
itself with a ``ready`` event, reports engine events, answers the supervisor's
requests (send, logout, pair_code, stop), and asks the supervisor to commit every
incoming message (``message`` request) before acknowledging it to the network. It
exits by itself when the supervisor goes silent or dies.

Exit codes: 0 done on purpose (stop, logout, replaced), 3 supervisor lost,
1 crashed (the reason was sent in a ``fatal`` request first, when possible).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from common import event_loop, logfmt
from session_proc.engine import Engine, EngineContext, EngineError, IncomingMessage
from session_proc.engines import engine_class
from session_proc.group_requests import group_request
from session_proc.proctitle import die_with_parent, set_title
from transport import wire
from transport.channel import Body, ChannelError, DealerChannel, PeerGone, RemoteError
from transport.identity import routing_identity
from transport.protocol import Payload

log = logging.getLogger("session_proc")

EXIT_CLEAN = 0
EXIT_CRASH = 1
EXIT_SUPERVISOR_LOST = 3

# How long the supervisor may take to commit an incoming message before the
# engine leaves it unacknowledged (the network redelivers it later).
COMMIT_TIMEOUT = 15.0
# Final notices (fatal, bye) get this long to reach the supervisor.
FAREWELL_TIMEOUT = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m session_proc", description="One WhatsApp session's process.")
    p.add_argument("--session-id", required=True)
    p.add_argument("--incarnation", required=True, type=int)
    p.add_argument("--endpoint", required=True, help="the supervisor's ROUTER endpoint")
    p.add_argument("--engine", default="sim")
    p.add_argument("--storage-dir", required=True, type=Path)
    p.add_argument("--hb-interval", type=float, default=1.0, help="heartbeat period, seconds")
    p.add_argument("--hb-liveness", type=int, default=3, help="missed periods before the supervisor counts as gone")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class SessionProcess:
    """Glues the engine to the channel; also the engine's sink."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session_id: str = args.session_id
        # Secrets (a proxy's password) come by environment, never on the command line that ps shows.
        extra: dict[str, Any] = json.loads(os.environ.get("WA_SESSION_OPTIONS") or "{}")
        self.proxy: str | None = extra.pop("proxy", None)
        self.engine_options: dict[str, Any] = extra
        self.channel = DealerChannel(
            args.endpoint,
            routing_identity(self.session_id, args.incarnation),
            on_request=self._on_request,
            on_peer_lost=self._supervisor_lost,
            heartbeat_interval=args.hb_interval,
            liveness=args.hb_liveness,
            name=f"session {self.session_id}",
        )
        self.engine: Engine | None = None
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    # -- lifecycle -------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.finish, EXIT_CLEAN, f"signal {signal.Signals(sig).name}")
        self.channel.connect()
        try:
            session_dir = self.args.storage_dir / "sessions" / self.session_id
            session_dir.mkdir(parents=True, exist_ok=True)
            cls = engine_class(self.args.engine)
            self.engine = cls(
                EngineContext(
                    session_id=self.session_id,
                    session_dir=session_dir,
                    sink=self,
                    incarnation=self.args.incarnation,
                    proxy=self.proxy,
                    options=self.engine_options,
                )
            )
            self._emit(wire.Ready(pid=os.getpid(), engine=self.args.engine))
            await self.engine.start()
        except Exception as exc:
            await self._report_fatal(exc)
            await self._shutdown()
            return EXIT_CRASH
        code = await self.done
        await self._shutdown()
        return code

    def finish(self, code: int, why: str) -> None:
        """Leave the main loop with ``code`` (first caller wins)."""
        if not self.done.done():
            log.info("session process finishing: %s", why)
            self.done.set_result(code)

    async def _shutdown(self) -> None:
        if self.engine is not None:
            try:
                async with asyncio.timeout(10):
                    await self.engine.stop()
            except Exception:
                log.exception("engine did not stop cleanly")
        await self.channel.close()

    async def _supervisor_lost(self) -> None:
        # No orphans: without a supervisor nobody commits our messages.
        self.finish(EXIT_SUPERVISOR_LOST, f"supervisor silent for {self.channel.silence:.1f}s")

    async def _report_fatal(self, exc: BaseException) -> None:
        log.error("session process failed: %s", exc, exc_info=not isinstance(exc, EngineError))
        code = exc.code if isinstance(exc, EngineError) else "CRASH"
        message = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        try:
            await wire.ask_supervisor(self.channel, wire.Fatal(code=code, error=message), timeout=FAREWELL_TIMEOUT)
        except ChannelError:
            pass  # the exit code still tells the supervisor we crashed

    # -- requests from the supervisor -----------------------------------------
    async def _on_request(self, _identity: bytes, op: str, body: Body) -> Payload:
        try:
            request = wire.decode_child_request(op, body)
        except wire.WireError as exc:
            raise wire.refuse(log, exc, {"sessionId": self.session_id}) from None
        if isinstance(request, wire.Stop):
            self.finish(EXIT_CLEAN, "stop requested")
            return wire.Done()
        engine = self.engine
        if engine is None:
            raise RemoteError("NOT_READY", "engine not started yet")
        try:
            match request:
                case wire.OutgoingMessage():
                    if request.typing > 0:
                        await self._show_typing(engine, request)
                    return await engine.send(request)
                case wire.Logout():
                    await engine.logout()
                    return wire.Done()
                case wire.PairCode(phone=phone):
                    return wire.PairCodeReply(code=await engine.pair_code(phone))
                case wire.MarkRead(chat=chat, messages=messages):
                    await engine.mark_read(chat, messages)
                    return wire.Done()
                case wire.SendPresence(state=state, chat=chat):
                    await engine.send_presence(state, chat)
                    return wire.Done()
                # contacts, blocking, disappearing messages
                case wire.CheckPhones(phones=phones):
                    return wire.PhoneChecks(results=await engine.check_phones(phones))
                case wire.ContactInfo(jid=jid):
                    return await engine.contact_info(jid)
                case wire.SetBlocked(jid=jid, blocked=blocked):
                    await engine.set_blocked(jid, blocked)
                    return wire.Done()
                case wire.Blocklist():
                    return wire.Blocked(jids=await engine.blocklist())
                case wire.SetDisappearing(chat=chat, seconds=seconds):
                    await engine.set_disappearing(chat, seconds)
                    return wire.Done()
                case _ if isinstance(request, wire.GROUP_REQUESTS):
                    return await group_request(engine, request)
        except EngineError as exc:
            raise RemoteError(exc.code, exc.message) from None
        raise RemoteError(wire.PROTOCOL_ERROR, f"request {op!r} has no handler")  # a ToChild op left out above

    async def _show_typing(self, engine: Engine, message: wire.OutgoingMessage) -> None:
        """ "typing" in the chat for ``message.typing`` seconds before it goes (paced sending's typing);
        a chat state the engine cannot show delays nothing and stops nothing."""
        try:
            await engine.send_presence("typing", message.to)
        except EngineError as exc:
            log.info("typing not shown before %s: %s", message.id, exc.code)
            return
        await asyncio.sleep(message.typing)
        try:
            await engine.send_presence("paused", message.to)
        except EngineError as exc:
            log.info("typing not cleared after %s: %s", message.id, exc.code)

    # -- EngineSink -------------------------------------------------------------
    def _emit(self, event: wire.Event) -> None:
        try:
            wire.emit(self.channel, event)
        except PeerGone as exc:
            # The supervisor learns our state again from the events that follow (or from our exit).
            log.warning("event %s not sent: %s", event.OP, exc)

    def on_qr(self, code: str, expires_at: float) -> None:
        self._emit(wire.Qr(qr=code, expires_at=expires_at))

    def on_connected(self, phone: str, push_name: str | None) -> None:
        self._emit(wire.Connected(phone=phone, push_name=push_name))

    def on_disconnected(self, reason: str, *, will_retry: bool) -> None:
        self._emit(wire.Disconnected(reason=reason, will_retry=will_retry))
        if not will_retry:
            # e.g. replaced by another connection: restarting would only fight it.
            self.finish(EXIT_CLEAN, f"disconnected for good: {reason}")

    def on_logged_out(self, reason: str) -> None:
        self._emit(wire.LoggedOut(reason=reason))
        self.finish(EXIT_CLEAN, f"logged out: {reason}")

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float, *, by: str | None = None) -> None:
        self._emit(wire.Receipt(id=message_id, status=status, chat=chat, timestamp=timestamp, by=by))

    def on_credentials_changed(self) -> None:
        self._emit(wire.Creds(at=time.time()))

    async def on_message(self, message: IncomingMessage) -> None:
        await wire.ask_supervisor(self.channel, message, timeout=COMMIT_TIMEOUT)

    def on_chat_presence(self, chat: str, sender: str, state: str) -> None:
        self._emit(wire.ChatPresence(chat=chat, sender=sender, state=state))

    def on_presence(self, jid: str, online: bool, last_seen: float | None) -> None:
        self._emit(wire.PresenceUpdate(jid=jid, online=online, last_seen=last_seen))

    async def on_call(self, call: wire.IncomingCall) -> bool:
        decision = await wire.ask_supervisor(self.channel, call, timeout=COMMIT_TIMEOUT)
        return decision.reject

    async def on_call_rejected(self, call_id: str, sender: str) -> None:
        await wire.ask_supervisor(self.channel, wire.CallRejected(id=call_id, sender=sender), timeout=COMMIT_TIMEOUT)

    async def on_poll_vote(self, vote: wire.PollVote) -> None:
        await wire.ask_supervisor(self.channel, vote, timeout=COMMIT_TIMEOUT)

    async def on_message_change(self, change: wire.MessageChange) -> None:
        await wire.ask_supervisor(self.channel, change, timeout=COMMIT_TIMEOUT)

    async def on_group_event(self, event: wire.GroupEvent) -> None:
        await wire.ask_supervisor(self.channel, event, timeout=COMMIT_TIMEOUT)


def stderr_to_supervisor() -> None:
    """Write stderr (our log, and a Go panic) into the FIFO the supervisor reads (WA_STDERR_FIFO), which
    keeps its last lines for the operator and passes every line on to the worker's stderr."""
    path = os.environ.get("WA_STDERR_FIFO")
    if not path:
        return
    try:
        # Non-blocking open: fails at once (ENXIO) instead of hanging when nobody reads it.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        print(f"stderr stays as it is: cannot open {path}: {exc}", file=sys.stderr, flush=True)
        return
    os.set_blocking(fd, True)  # a full pipe waits for the supervisor rather than losing lines
    sys.stderr.flush()
    os.dup2(fd, 2)  # dup2 clears close-on-exec on fd 2
    os.close(fd)


async def _amain(args: argparse.Namespace) -> int:
    proc = SessionProcess(args)
    return await proc.run()


def main(argv: list[str] | None = None) -> int:
    """Run one session process until it is told to stop or loses its supervisor."""
    args = parse_args(argv)
    die_with_parent(signal.SIGTERM)
    stderr_to_supervisor()
    set_title(f"wa-session {args.session_id}")
    logfmt.set_context(sessionId=args.session_id, incarnation=args.incarnation)
    logfmt.configure(args.log_level, json_lines=os.environ.get("WA_LOG_FORMAT", "json") == "json")
    try:
        return event_loop.run(_amain(args))
    except KeyboardInterrupt:
        return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())

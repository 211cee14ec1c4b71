"""The fault engine: the sim engine with failures injected on demand, for tests only.

Like jupyter_client's test kernels, it lets a test make a real session process
misbehave (fail at start, hang, crash, answer slowly) so that the supervisor's
restart, hang detection and no-loss rules are tested against real misbehaviour
instead of a broken filesystem or patched internals.

Never selectable by accident: session_proc/engines.py hands it out only while
the test-only variable ``WA_TEST_FAULTS`` is set and not empty in the session
process's environment (a worker's session processes inherit the worker's), and
then in place of the sim engine only; with the variable unset, asking for the
engine ``fault`` is refused like an unknown engine. Nothing in production sets
it, and the process logs a warning naming the switches whenever it is active.

``WA_TEST_FAULTS`` is a comma-separated list of switches, ``name`` or ``name=value``:

- ``fail_start``: ``start()`` raises; the process reports ``fatal`` and exits with code 1;
- ``exit=N``: the process exits with code ``N`` at start, reporting nothing (like a native crash);
- ``panic``: at start the process writes a panic to its stderr as the Go runtime does, and exits with 2;
- ``hang=S``: ``S`` seconds after the device connects, the event loop blocks for good: no heartbeat,
  no request answered, SIGTERM not handled (only SIGKILL ends it);
- ``crash_on_send``: a send exits the process with code 1 before the message reaches the network;
- ``slow_send=S``: every send waits ``S`` seconds first;
- ``send_unknown``: every send fails with ``OUTCOME_UNKNOWN`` (sent or not, the engine cannot tell);
- ``grow=MB``: once the device connects, the process takes ``MB`` MiB more of resident memory every
  second (a leak), until something ends it;
- ``sessions=a|b``: only these session ids misbehave (default: every session);
- ``incarnations=1|2``: only these incarnations misbehave (default: every incarnation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

from session_proc.engine import (
    EngineContext,
    EngineError,
    EngineSink,
    IncomingCall,
    IncomingMessage,
    MessageChange,
    OutgoingMessage,
    PollVote,
    SendResult,
)
from session_proc.engines import FAULTS_ENV, faults_enabled
from session_proc.sim.engine import SimEngine
from transport import wire

log = logging.getLogger("session_proc.fault")

SWITCHES = frozenset(
    {
        "fail_start",
        "exit",
        "panic",
        "hang",
        "crash_on_send",
        "slow_send",
        "send_unknown",
        "grow",
        "sessions",
        "incarnations",
    }
)
# What whatsmeow's Go runtime leaves on stderr when it panics (exit code 2).
GO_PANIC = (
    b"panic: runtime error: invalid memory address or nil pointer dereference [fault injected]\n\n"
    b"goroutine 1 [running]:\nmain.main()\n"
)
# The exit code of a crash, as session_proc/main.py's EXIT_CRASH.
CRASH_CODE = 1


def parse_switches(text: str) -> dict[str, str]:
    """``"hang=1.5,crash_on_send"`` -> ``{"hang": "1.5", "crash_on_send": ""}``; an unknown switch is an error."""
    switches: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in SWITCHES:
            raise ValueError(f"{FAULTS_ENV}: unknown switch {name!r}; known: {', '.join(sorted(SWITCHES))}")
        switches[name] = value
    return switches


@dataclasses.dataclass(slots=True)
class _Sink:
    """The process's sink, with the device's connection observed on the way."""

    inner: EngineSink
    connected: asyncio.Event

    def on_qr(self, code: str, expires_at: float) -> None:
        self.inner.on_qr(code, expires_at)

    def on_connected(self, phone: str, push_name: str | None) -> None:
        self.inner.on_connected(phone, push_name)
        self.connected.set()

    def on_disconnected(self, reason: str, *, will_retry: bool) -> None:
        self.inner.on_disconnected(reason, will_retry=will_retry)

    def on_logged_out(self, reason: str) -> None:
        self.inner.on_logged_out(reason)

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float, *, by: str | None = None) -> None:
        self.inner.on_receipt(message_id, status, chat, timestamp, by=by)

    def on_credentials_changed(self) -> None:
        self.inner.on_credentials_changed()

    async def on_message(self, message: IncomingMessage) -> None:
        await self.inner.on_message(message)

    def on_chat_presence(self, chat: str, sender: str, state: str) -> None:
        self.inner.on_chat_presence(chat, sender, state)

    def on_presence(self, jid: str, online: bool, last_seen: float | None) -> None:
        self.inner.on_presence(jid, online, last_seen)

    async def on_call(self, call: IncomingCall) -> bool:
        return await self.inner.on_call(call)

    async def on_call_rejected(self, call_id: str, sender: str) -> None:
        await self.inner.on_call_rejected(call_id, sender)

    async def on_poll_vote(self, vote: PollVote) -> None:
        await self.inner.on_poll_vote(vote)

    async def on_message_change(self, change: MessageChange) -> None:
        await self.inner.on_message_change(change)

    async def on_group_event(self, event: wire.GroupEvent) -> None:
        await self.inner.on_group_event(event)


def _block_forever() -> None:
    while True:
        time.sleep(3600)  # on the event loop, on purpose: a hung loop is the fault


class FaultEngine(SimEngine):
    """The sim engine, misbehaving as ``WA_TEST_FAULTS`` says."""

    name = "fault"

    def __init__(self, ctx: EngineContext) -> None:
        if not faults_enabled():
            raise EngineError("UNKNOWN_ENGINE", f"the fault engine is for tests only: {FAULTS_ENV} is not set")
        self._connected = asyncio.Event()
        super().__init__(dataclasses.replace(ctx, sink=_Sink(ctx.sink, self._connected)))
        switches = parse_switches(os.environ[FAULTS_ENV])
        self._switches = switches if self._applies(switches, ctx) else {}
        self._hang: asyncio.Task[None] | None = None
        if self._switches:
            log.warning("fault engine active for session %s: %s", ctx.session_id, os.environ[FAULTS_ENV])

    @staticmethod
    def _applies(switches: dict[str, str], ctx: EngineContext) -> bool:
        sessions = switches.get("sessions")
        if sessions and ctx.session_id not in sessions.split("|"):
            return False
        incarnations = switches.get("incarnations")
        return not incarnations or str(ctx.incarnation) in incarnations.split("|")

    def _seconds(self, name: str) -> float:
        return float(self._switches.get(name) or 0)

    async def start(self) -> None:
        if "panic" in self._switches:
            os.write(2, GO_PANIC)
            os._exit(2)
        if "exit" in self._switches:
            os._exit(int(self._switches["exit"] or CRASH_CODE))
        if "fail_start" in self._switches:
            raise EngineError("FAULT_INJECTED", "fail_start: the engine refused to start")
        if "hang" in self._switches:
            self._hang = asyncio.create_task(self._hang_once_connected(self._seconds("hang")), name="fault-hang")
        if "grow" in self._switches:
            self._hang = asyncio.create_task(self._leak_once_connected(self._seconds("grow")), name="fault-grow")
        await super().start()

    async def _leak_once_connected(self, mib_per_second: float) -> None:
        await self._connected.wait()
        log.warning("fault engine: leaking %.0f MiB a second", mib_per_second)
        leaked = []
        while True:
            leaked.append(b"\x01" * int(mib_per_second * 2**20))  # touched, so resident
            await asyncio.sleep(1.0)

    async def _hang_once_connected(self, delay: float) -> None:
        await self._connected.wait()
        await asyncio.sleep(delay)
        log.warning("fault engine: blocking the event loop for good")
        asyncio.get_running_loop().call_soon(_block_forever)

    async def send(self, message: OutgoingMessage) -> SendResult:
        if "slow_send" in self._switches:
            await asyncio.sleep(self._seconds("slow_send"))
        if "crash_on_send" in self._switches:
            log.warning("fault engine: crashing during the send of %s", message.id)
            os._exit(CRASH_CODE)
        if "send_unknown" in self._switches:
            raise EngineError("OUTCOME_UNKNOWN", "send_unknown: the engine cannot tell whether it was sent")
        return await super().send(message)

    async def stop(self) -> None:
        if self._hang is not None:
            self._hang.cancel()
        await super().stop()

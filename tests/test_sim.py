"""The simulated WhatsApp network end to end: a real hub process, real sockets,
``SimEngine`` instances in this process reporting to a recording sink.

Tests wait for events (queues, with timeouts only as upper bounds), never for time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import psutil
import pytest
import zmq
import zmq.asyncio

from session_proc.engine import (
    EngineContext,
    EngineError,
    IncomingCall,
    IncomingMessage,
    MessageChange,
    OutgoingMessage,
    PollVote,
)
from session_proc.sim.device_store import DeviceStore
from session_proc.sim.engine import SimEngine
from transport import wire
from transport.protocol import REQ, Frame, decode, encode
from transport.wire import PollSpec

HEARTBEAT = 0.2  # hub and engines beat fast so that a dead peer is noticed within a second
WAIT = 10.0  # upper bound of every wait; a healthy run needs a fraction of it
REPO = Path(__file__).resolve().parent.parent


# -- the hub process ----------------------------------------------------------------
@dataclass
class HubProcess:
    proc: asyncio.subprocess.Process
    zmq: str
    http: str
    data_dir: Path


async def spawn_hub(data_dir: Path, zmq_endpoint: str = "tcp://127.0.0.1:0", *extra: str) -> HubProcess:
    """Start a hub and wait for its ready line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "session_proc.sim",
        "--zmq",
        zmq_endpoint,
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--data-dir",
        str(data_dir),
        "--qr-ttl",
        "1",
        "--heartbeat",
        str(HEARTBEAT),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        ready = json.loads(line)
        assert ready["ready"] is True
    except BaseException:
        await stop_process(proc)
        raise
    return HubProcess(proc=proc, zmq=ready["zmq"], http=ready["http"], data_dir=data_dir)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubProcess]:
    started = await spawn_hub(tmp_path / "hub")
    try:
        yield started
    finally:
        await stop_process(started.proc)


# -- talking to the hub as people with phones ----------------------------------------
class HubApi:
    """The hub's HTTP control API."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self._http = http
        self.base = base

    async def post(self, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self._http.post(self.base + path, json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self._http.get(self.base + path) as resp:
            return resp.status, await resp.json()

    async def inbox(self, phone: str) -> list[dict[str, Any]]:
        status, body = await self.get(f"/phones/{phone}/messages")
        assert status == 200, body
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    async def device(self, phone: str) -> dict[str, Any]:
        _, body = await self.get("/devices")
        [device] = [d for d in body["devices"] if d["phone"] == phone]
        return dict(device)


@pytest.fixture
async def api(hub: HubProcess) -> AsyncIterator[HubApi]:
    async with aiohttp.ClientSession() as http:
        yield HubApi(http, hub.http)


# -- engines and what they report -----------------------------------------------------
class RecordingSink:
    """Records every engine callback in order; tests await the ones they need."""

    def __init__(self) -> None:
        self.history: list[tuple[str, tuple[Any, ...]]] = []
        self._queues: dict[str, asyncio.Queue[tuple[Any, ...]]] = defaultdict(asyncio.Queue)
        self.refuse_messages = 0  # on_message raises this many times (the supervisor failed to commit)
        self.block_messages = False  # on_message never returns (the process dies before the ack)

    def _record(self, kind: str, *args: Any) -> None:
        self.history.append((kind, args))
        self._queues[kind].put_nowait(args)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.history]

    async def next(self, kind: str) -> tuple[Any, ...]:
        """The next ``kind`` callback not yet taken, waiting for it if need be."""
        return await asyncio.wait_for(self._queues[kind].get(), WAIT)

    def on_qr(self, code: str, expires_at: float) -> None:
        self._record("qr", code, expires_at)

    def on_connected(self, phone: str, push_name: str | None) -> None:
        self._record("connected", phone, push_name)

    def on_disconnected(self, reason: str, *, will_retry: bool) -> None:
        self._record("disconnected", reason, will_retry)

    def on_logged_out(self, reason: str) -> None:
        self._record("logged_out", reason)

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float, *, by: str | None = None) -> None:
        self._record("receipt", message_id, status, chat, timestamp, *([by] if by else []))

    def on_credentials_changed(self) -> None:
        self._record("credentials_changed")

    async def on_group_event(self, event: wire.GroupEvent) -> None:
        self._record("group", event)

    async def on_message(self, message: IncomingMessage) -> None:
        self._record("message", message)
        if self.refuse_messages > 0:
            self.refuse_messages -= 1
            raise RuntimeError("the supervisor could not commit the message")
        if self.block_messages:
            await asyncio.Event().wait()

    # presence and calls
    reject_calls = False  # what the supervisor answers to a call (rejectCalls)
    refuse_calls = 0  # on_call raises this many times (the supervisor failed to commit)

    def on_chat_presence(self, chat: str, sender: str, state: str) -> None:
        self._record("chat_presence", chat, sender, state)

    def on_presence(self, jid: str, online: bool, last_seen: float | None) -> None:
        self._record("presence", jid, online, last_seen)

    async def on_call(self, call: IncomingCall) -> bool:
        self._record("call", call)
        if self.refuse_calls > 0:
            self.refuse_calls -= 1
            raise RuntimeError("the supervisor could not commit the call")
        return self.reject_calls

    async def on_call_rejected(self, call_id: str, sender: str) -> None:
        self._record("call_rejected", call_id, sender)

    async def on_poll_vote(self, vote: PollVote) -> None:
        self._record("poll_vote", vote)
        if self.refuse_messages > 0:
            self.refuse_messages -= 1
            raise RuntimeError("the supervisor could not commit the vote")

    async def on_message_change(self, change: MessageChange) -> None:
        self._record("change", change)


@dataclass
class Engines:
    """Makes engines for a test and stops them all afterwards."""

    hub: HubProcess
    root: Path
    made: list[SimEngine] = field(default_factory=list)

    def session_dir(self, name: str) -> Path:
        return self.root / "sessions" / name

    async def start(
        self,
        session: str = "s1",
        *,
        session_dir: Path | None = None,
        proxy: str | None = None,
        hub_endpoint: str | None = None,
    ) -> tuple[SimEngine, RecordingSink]:
        sink = RecordingSink()
        ctx = EngineContext(
            session_id=session,
            session_dir=session_dir or self.session_dir(session),
            sink=sink,
            proxy=proxy,
            options={"hub": hub_endpoint or self.hub.zmq, "heartbeat_interval": HEARTBEAT, "request_timeout": 5.0},
        )
        engine = SimEngine(ctx)
        self.made.append(engine)
        await engine.start()
        return engine, sink


@pytest.fixture
async def engines(hub: HubProcess, tmp_path: Path) -> AsyncIterator[Engines]:
    made = Engines(hub=hub, root=tmp_path)
    try:
        yield made
    finally:
        for engine in made.made:
            await asyncio.wait_for(engine.stop(), WAIT)


async def link(engines: Engines, api: HubApi, phone: str, session: str = "s1") -> tuple[SimEngine, RecordingSink]:
    """A session linked to ``phone`` by a QR scan, connected."""
    engine, sink = await engines.start(session)
    code, _ = await sink.next("qr")
    status, body = await api.post(f"/phones/{phone}/scan", {"qr": code})
    assert status == 200, body
    assert await sink.next("connected") == (phone, None)
    return engine, sink


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll a condition that has no event to wait on (the hub's state), up to WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while not await check():
            await asyncio.sleep(0.05)


def text(msg_id: str, to: str, body: str = "hello") -> OutgoingMessage:
    return OutgoingMessage(id=msg_id, to=f"{to}@s.whatsapp.net", text=body)


# -- linking ---------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_scan_links_and_a_restarted_engine_reconnects_without_qr(
    tmp_path: Path, transport: str, engines: Engines, api: HubApi
) -> None:
    if transport == "ipc":
        # Same behaviour over ipc: a hub of its own on a socket file.
        ipc_hub = await spawn_hub(tmp_path / "ipc-hub", f"ipc://{tmp_path}/hub.sock")
        endpoint: str | None = ipc_hub.zmq
        base = ipc_hub.http
    else:
        endpoint, base = None, api.base
    try:
        async with aiohttp.ClientSession() as http:
            phones = HubApi(http, base)
            engine, sink = await engines.start(hub_endpoint=endpoint)
            code, expires_at = await sink.next("qr")
            assert code.startswith("2@") and expires_at > 0
            status, body = await phones.post("/phones/628111/scan", {"qr": code})
            assert status == 200 and body["linked"] is True and body["sessionId"] == "s1"
            assert await sink.next("connected") == ("628111", None)
            # The credentials are on disk before anyone hears of the link.
            assert sink.kinds()[-2:] == ["credentials_changed", "connected"]
            assert (engines.session_dir("s1") / "sim-device.db").exists()
            await engine.stop()

            again, sink2 = await engines.start(hub_endpoint=endpoint)
            assert await sink2.next("connected") == ("628111", None)
            assert "qr" not in sink2.kinds()
            assert again.state == "connected"
    finally:
        if transport == "ipc":
            await stop_process(ipc_hub.proc)


async def test_qr_rotates_and_an_expired_qr_is_refused(engines: Engines, api: HubApi) -> None:
    _, sink = await engines.start()
    first, first_expiry = await sink.next("qr")
    second, second_expiry = await sink.next("qr")  # the hub runs with --qr-ttl 1
    assert second != first and second_expiry > first_expiry

    status, body = await api.post("/phones/628222/scan", {"qr": first})
    assert (status, body["code"]) == (410, "QR_EXPIRED")
    status, body = await api.post("/phones/628222/scan", {"qr": "2@never-shown"})
    assert (status, body["code"]) == (404, "QR_UNKNOWN")

    # Scan whichever QR is current (one may have rotated meanwhile).
    current = second
    while not sink._queues["qr"].empty():
        current, _ = sink._queues["qr"].get_nowait()
    status, body = await api.post("/phones/628222/scan", {"qr": current})
    assert status == 200, body
    assert await sink.next("connected") == ("628222", None)


async def test_pairing_code_links_only_the_phone_it_was_asked_for(engines: Engines, api: HubApi) -> None:
    engine, sink = await engines.start()
    await sink.next("qr")  # connected to the hub, waiting for a scan
    code = await engine.pair_code("628333")
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code)

    status, body = await api.post("/phones/628999/pair", {"code": code})
    assert (status, body["code"]) == (409, "PHONE_MISMATCH")
    status, body = await api.post("/phones/628333/pair", {"code": "ZZZZ-ZZZZ"})
    assert (status, body["code"]) == (404, "CODE_UNKNOWN")
    status, body = await api.post("/phones/628333/pair", {"code": code})
    assert status == 200 and body["linked"] is True
    assert await sink.next("connected") == ("628333", None)
    with pytest.raises(EngineError) as err:
        await engine.pair_code("628333")
    assert err.value.code == "ALREADY_LINKED"


async def test_second_connection_replaces_the_first_which_does_not_reconnect(
    engines: Engines, api: HubApi, tmp_path: Path
) -> None:
    first, sink1 = await link(engines, api, "628444")
    # Another worker restored the same credentials (failover) and connects with them.
    copy = tmp_path / "restored"
    copy.mkdir()
    shutil.copy(engines.session_dir("s1") / "sim-device.db", copy / "sim-device.db")
    _, sink2 = await engines.start(session_dir=copy)
    assert await sink2.next("connected") == ("628444", None)

    assert await sink1.next("disconnected") == ("replaced", False)
    await asyncio.wait_for(first.wait_closed(), WAIT)
    assert first.state == "replaced"
    assert sink1.kinds().count("connected") == 1
    device = await api.device("628444")
    assert device["connected"] is True
    assert "disconnected" not in sink2.kinds()


async def test_unlink_from_phone_logs_out_and_deletes_credentials(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628555")
    status, body = await api.post("/phones/628555/unlink")
    assert status == 200 and body == {"unlinked": 1}
    assert await sink.next("logged_out") == ("unlinked",)
    await asyncio.wait_for(engine.wait_closed(), WAIT)
    assert engine.credentials is None
    assert DeviceStore(engines.session_dir("s1")).load() is None
    _, devices = await api.get("/devices")
    assert devices["devices"] == []

    # The next start needs a new QR.
    _, sink2 = await engines.start()
    await sink2.next("qr")


async def test_unlinked_while_offline_logs_out_on_the_next_connect(engines: Engines, api: HubApi) -> None:
    engine, _ = await link(engines, api, "628556")
    await engine.stop()
    status, _ = await api.post("/phones/628556/unlink")
    assert status == 200

    again, sink = await engines.start()
    assert await sink.next("logged_out") == ("unlinked",)
    assert "connected" not in sink.kinds()
    assert DeviceStore(engines.session_dir("s1")).load() is None
    assert again.state == "logged_out"


async def test_logout_unlinks_at_the_hub(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628557")
    await engine.logout()
    assert await sink.next("logged_out") == ("logout",)
    assert DeviceStore(engines.session_dir("s1")).load() is None
    _, devices = await api.get("/devices")
    assert devices["devices"] == []


async def test_declared_proxy_is_visible(engines: Engines, api: HubApi) -> None:
    proxy = "socks5://user:secret@10.0.0.7:1080"
    _, sink = await engines.start(proxy=proxy)
    code, _ = await sink.next("qr")
    _, devices = await api.get("/devices")
    assert [w["proxy"] for w in devices["waiting"]] == [proxy]
    await api.post("/phones/628558/scan", {"qr": code})
    await sink.next("connected")
    assert (await api.device("628558"))["proxy"] == proxy


# -- sending -----------------------------------------------------------------------------
async def test_send_then_resend_of_the_same_id_is_one_message_delivered_twice(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628600")
    msg = text("3EB0AAAAAAAAAAAAAAAAAA", "628601", "hi there")
    result = await engine.send(msg)
    assert result.id == msg.id and result.timestamp > 0
    receipt = await sink.next("receipt")
    assert receipt[:3] == (msg.id, "delivered", "628601@s.whatsapp.net")

    [entry] = await api.inbox("628601")
    assert entry["id"] == msg.id and entry["from"] == "628600" and entry["to"] == "628601"
    assert (entry["type"], entry["text"], entry["deliveries"]) == ("text", "hi there", 1)

    await engine.send(msg)  # a retry after a crash: same worker-chosen id
    [entry] = await api.inbox("628601")
    assert entry["deliveries"] == 2

    status, body = await api.post("/phones/628601/read", {"ids": [msg.id]})
    assert status == 200 and body == {"read": 1}
    await sink.next("receipt")  # the resend's "delivered"
    assert (await sink.next("receipt"))[:2] == (msg.id, "read")


async def test_receipt_comes_after_the_send_returned(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628602")
    await engine.send(text("3EB0BBBBBBBBBBBBBBBBBB", "628603"))
    # The caller learns "sent" before any receipt reaches the sink.
    assert "receipt" not in sink.kinds()
    assert (await sink.next("receipt"))[:2] == ("3EB0BBBBBBBBBBBBBBBBBB", "delivered")


async def test_media_send_records_size_and_mimetype(engines: Engines, api: HubApi, tmp_path: Path) -> None:
    engine, _ = await link(engines, api, "628604")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8" + os.urandom(3000))
    msg = OutgoingMessage(
        id="3EB0CCCCCCCCCCCCCCCCCC", to="628605@s.whatsapp.net", type="image", caption="look", media_path=str(photo)
    )
    await engine.send(msg)
    [entry] = await api.inbox("628605")
    assert (entry["type"], entry["caption"], entry["mediaSize"], entry["mimetype"]) == (
        "image",
        "look",
        3002,
        "image/jpeg",
    )


async def test_send_errors(engines: Engines, api: HubApi) -> None:
    waiting, sink = await engines.start("waiting")
    await sink.next("qr")
    with pytest.raises(EngineError) as err:
        await waiting.send(text("3EB0DDDDDDDDDDDDDDDDDD", "628606"))
    assert err.value.code == "NOT_CONNECTED"

    engine, _ = await link(engines, api, "628607")
    with pytest.raises(EngineError) as err:
        await engine.send(OutgoingMessage(id="x1", to="status@broadcast", text="status"))
    assert err.value.code == "INVALID_RECIPIENT"
    with pytest.raises(EngineError) as err:  # groups are sent to (issue 17), but only by their members
        await engine.send(OutgoingMessage(id="x1", to="1203630@g.us", text="group"))
    assert err.value.code == "GROUP_NOT_FOUND"
    with pytest.raises(EngineError) as err:
        await engine.send(OutgoingMessage(id="x2", to="628608@s.whatsapp.net", type="image", media_path="/nope"))
    assert err.value.code == "MEDIA_MISSING"


async def test_refused_sends_raise_until_cleared(engines: Engines, api: HubApi) -> None:
    engine, _ = await link(engines, api, "628609")
    status, faults = await api.post("/faults", {"refuseSendsSeconds": 30, "latencyMs": 20})
    assert status == 200 and faults["refusingSends"] is True and faults["latencyMs"] == 20
    with pytest.raises(EngineError) as err:
        await engine.send(text("3EB0EEEEEEEEEEEEEEEEEE", "628610"))
    assert err.value.code == "SEND_REFUSED"
    assert await api.inbox("628610") == []

    status, faults = await api.post("/faults", {"clear": True})
    assert faults == {"latencyMs": 0, "refuseSendsSeconds": 0, "refusingSends": False}
    await engine.send(text("3EB0EEEEEEEEEEEEEEEEEE", "628610"))
    assert [m["deliveries"] for m in await api.inbox("628610")] == [1]


async def test_session_to_session_delivers_to_the_other_device(engines: Engines, api: HubApi) -> None:
    alice, _ = await link(engines, api, "628701", "alice")
    _, bob_sink = await link(engines, api, "628702", "bob")
    await alice.send(text("3EB0FFFFFFFFFFFFFFFFFF", "628702", "hi bob"))
    [message] = await bob_sink.next("message")
    assert (message.id, message.sender, message.chat, message.to, message.text) == (
        "3EB0FFFFFFFFFFFFFFFFFF",
        "628701@s.whatsapp.net",
        "628701@s.whatsapp.net",
        "628702@s.whatsapp.net",
        "hi bob",
    )
    assert [m["id"] for m in await api.inbox("628702")] == ["3EB0FFFFFFFFFFFFFFFFFF"]


# -- receiving -------------------------------------------------------------------------
async def test_phone_message_is_pushed_and_acked(engines: Engines, api: HubApi) -> None:
    _, sink = await link(engines, api, "628800")
    status, sent = await api.post("/phones/628801/messages", {"to": "628800", "text": "ping"})
    assert status == 200 and sent["queued"] is False
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", sent["id"])
    [message] = await sink.next("message")
    assert (message.id, message.chat, message.to, message.text) == (
        sent["id"],
        "628801@s.whatsapp.net",
        "628800@s.whatsapp.net",
        "ping",
    )

    async def acked() -> bool:
        return bool((await api.device("628800"))["pending"] == 0)

    await wait_until(acked)


async def test_incoming_media_is_written_to_the_session_dir(engines: Engines, api: HubApi) -> None:
    _, sink = await link(engines, api, "628802")
    data = os.urandom(2048)
    body = {"to": "628802", "type": "image", "mimetype": "image/png", "mediaBase64": base64.b64encode(data).decode()}
    status, _ = await api.post("/phones/628803/messages", body)
    assert status == 200
    [message] = await sink.next("message")
    assert message.type == "image" and message.media_size == 2048
    assert message.media_path is not None
    path = Path(message.media_path)
    assert path.parent == engines.session_dir("s1") / "media"
    assert await asyncio.to_thread(path.read_bytes) == data


async def test_messages_sent_while_offline_arrive_in_order_on_connect(engines: Engines, api: HubApi) -> None:
    engine, _ = await link(engines, api, "628804")
    await engine.stop()
    ids = []
    for n in range(3):
        status, sent = await api.post("/phones/628805/messages", {"to": "628804", "text": f"m{n}"})
        assert status == 200 and sent["queued"] is True
        ids.append(sent["id"])

    _, sink = await engines.start()
    await sink.next("connected")
    got = [(await sink.next("message"))[0].id for _ in ids]
    assert got == ids
    assert sink.kinds().index("connected") < sink.kinds().index("message")


async def test_message_unacked_when_the_engine_stops_is_redelivered(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628806")
    sink.block_messages = True  # the process "dies" while the supervisor commits
    _, sent = await api.post("/phones/628807/messages", {"to": "628806", "text": "keep me"})
    await sink.next("message")
    await asyncio.wait_for(engine.stop(), WAIT)
    assert (await api.device("628806"))["pending"] == 1

    _, sink2 = await engines.start()
    [message] = await sink2.next("message")
    assert message.id == sent["id"]

    async def acked() -> bool:
        return bool((await api.device("628806"))["pending"] == 0)

    await wait_until(acked)


async def test_message_refused_by_the_sink_is_redelivered_on_reconnect(engines: Engines, api: HubApi) -> None:
    _, sink = await link(engines, api, "628808")
    sink.refuse_messages = 1
    _, sent = await api.post("/phones/628809/messages", {"to": "628808", "text": "again"})
    assert (await sink.next("message"))[0].id == sent["id"]

    await api.post("/faults", {"dropConnections": True})
    assert await sink.next("disconnected") == ("dropped", True)
    await sink.next("connected")
    assert (await sink.next("message"))[0].id == sent["id"]

    async def acked() -> bool:
        return bool((await api.device("628808"))["pending"] == 0)

    await wait_until(acked)


async def test_a_call_not_taken_over_is_offered_again_then_rejected(engines: Engines, api: HubApi) -> None:
    _, sink = await link(engines, api, "628818")
    sink.refuse_calls = 1
    sink.reject_calls = True
    _, call = await api.post("/phones/628819/call", {"to": "628818", "video": True})
    first = (await sink.next("call"))[0]
    assert (first.id, first.sender, first.video) == (call["id"], "628819@s.whatsapp.net", True)
    _, calls = await api.get("/phones/628819/calls")
    assert calls["calls"][0]["status"] == "ringing"  # not rejected: the supervisor never committed it

    await api.post("/faults", {"dropConnections": True})
    await sink.next("connected")
    assert (await sink.next("call"))[0].id == call["id"]
    assert await sink.next("call_rejected") == (call["id"], "628819@s.whatsapp.net")
    _, calls = await api.get("/phones/628819/calls")
    assert calls["calls"][0]["status"] == "rejected"

    async def acked() -> bool:
        return bool((await api.device("628818"))["pending"] == 0)

    await wait_until(acked)


# -- polls -----------------------------------------------------------------------------
async def test_a_vote_reaches_the_engine_as_option_hashes_and_is_redelivered_until_taken(
    engines: Engines, api: HubApi
) -> None:
    import hashlib

    engine, sink = await link(engines, api, "628860")
    poll = PollSpec(name="Colour?", options=["Red", "Blue"], multiple=False)
    await engine.send(OutgoingMessage(id="poll-1", to="628861@s.whatsapp.net", type="poll", poll=poll))
    _, inbox = await api.get("/phones/628861/messages")
    assert inbox["messages"][0]["poll"] == {"name": "Colour?", "options": ["Red", "Blue"], "multiple": False}

    sink.refuse_messages = 1  # the supervisor failed to commit it: not acked, so delivered again
    status, body = await api.post("/phones/628861/polls/poll-1/vote", {"options": ["Blue"]})
    assert status == 200, body
    (first,) = await sink.next("poll_vote")
    await api.post("/faults", {"dropConnections": True})
    await sink.next("connected")
    (vote,) = await sink.next("poll_vote")
    assert vote == first and (vote.id, vote.poll_id, vote.voter) == (body["id"], "poll-1", "628861@s.whatsapp.net")
    assert vote.option_hashes == [hashlib.sha256(b"Blue").hexdigest()]  # never the names
    assert "message" not in sink.kinds()

    async def acked() -> bool:
        return bool((await api.device("628860"))["pending"] == 0)

    await wait_until(acked)


# -- faults and robustness -------------------------------------------------------------
async def test_dropped_connections_reconnect_by_themselves(engines: Engines, api: HubApi) -> None:
    engine, sink = await link(engines, api, "628900")
    _, waiting_sink = await engines.start("waiting")
    await waiting_sink.next("qr")

    status, _ = await api.post("/faults", {"dropConnections": True})
    assert status == 200
    assert await sink.next("disconnected") == ("dropped", True)
    assert await sink.next("connected") == ("628900", None)
    assert engine.state == "connected"
    await waiting_sink.next("qr")  # the waiting session reconnected and shows a new QR
    await engine.send(text("3EB0123456789ABCDEF012", "628901"))


async def test_engine_reconnects_after_the_hub_crashes_and_restarts(tmp_path: Path, engines: Engines) -> None:
    endpoint = f"ipc://{tmp_path}/restart.sock"
    data = tmp_path / "restart-hub"
    first = await spawn_hub(data, endpoint)
    second: HubProcess | None = None
    try:
        async with aiohttp.ClientSession() as http:
            phones = HubApi(http, first.http)
            _, sink = await engines.start(hub_endpoint=endpoint)
            code, _ = await sink.next("qr")
            await phones.post("/phones/628910/scan", {"qr": code})
            await sink.next("connected")

            first.proc.kill()  # a crash: no goodbye to anyone
            await first.proc.wait()
            assert await sink.next("disconnected") == ("hub silent", True)

            second = await spawn_hub(data, endpoint)  # same data: the link survives
            assert await sink.next("connected") == ("628910", None)
            assert "logged_out" not in sink.kinds()
    finally:
        await stop_process(first.proc)
        if second is not None:
            await stop_process(second.proc)


async def test_garbage_on_the_router_does_not_kill_the_hub(hub: HubProcess, engines: Engines, api: HubApi) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"vandal")
    sock.connect(hub.zmq)
    try:
        await sock.send(b"\xc1\xff\x00 not msgpack")
        await sock.send(msgpack.packb([1, 2, 3]))
        await sock.send(msgpack.packb({"v": 99, "kind": "req", "id": 1, "op": "hello", "body": {}}))
        await sock.send_multipart([b"two", b"parts"])
        await sock.send(encode(Frame(kind=REQ, op="send", body={"id": "x"}, id=5)))  # no hello first
        await sock.send(encode(Frame(kind=REQ, op="hello", body={"sessionId": 42}, id=6)))  # wrong types
        replies: dict[int, Any] = {}
        for _ in range(2):
            frame = decode(await asyncio.wait_for(sock.recv(), WAIT))
            replies[frame.id] = frame.body
        assert replies[5]["error"]["code"] == "NOT_CONNECTED"
        assert replies[6]["error"]["code"] == "BAD_REQUEST"
    finally:
        sock.close(linger=0)
        ctx.term()

    assert hub.proc.returncode is None
    _, sink = await engines.start()
    code, _ = await sink.next("qr")
    status, _ = await api.post("/phones/628920/scan", {"qr": code})
    assert status == 200


PARENT = """
import os, subprocess, sys, time
hub = subprocess.Popen(
    [sys.executable, "-m", "session_proc.sim", "--zmq", "tcp://127.0.0.1:0", "--http-port", "0",
     "--data-dir", sys.argv[1], "--parent-pid", str(os.getpid())],
    stdout=subprocess.PIPE,
)
line = hub.stdout.readline().decode()
print(hub.pid, line.strip(), flush=True)
time.sleep(600)
"""


async def test_hub_exits_when_its_parent_dies(tmp_path: Path) -> None:
    hub_pid: int | None = None
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path / "orphan"), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        line = (await asyncio.wait_for(parent.stdout.readline(), WAIT)).decode()
        pid_text, ready = line.split(" ", 1)
        assert json.loads(ready)["ready"] is True
        hub_pid = int(pid_text)
        hub = psutil.Process(hub_pid)
        assert hub.name() == "wa-sim-hub" or "wa-sim-hub" in " ".join(hub.cmdline())

        parent.send_signal(signal.SIGKILL)
        await parent.wait()

        async def hub_gone() -> bool:
            try:
                return bool(hub.status() == psutil.STATUS_ZOMBIE)
            except psutil.NoSuchProcess:
                return True

        await wait_until(hub_gone)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if hub_pid is not None:
            with contextlib.suppress(psutil.Error):
                psutil.Process(hub_pid).kill()


async def test_http_validation(api: HubApi, engines: Engines) -> None:
    status, body = await api.post("/phones/62abc/scan", {"qr": "x"})
    assert (status, body["code"]) == (400, "INVALID_PHONE")
    status, body = await api.get("/phones/+62123/messages")
    assert (status, body["code"]) == (400, "INVALID_PHONE")
    status, body = await api.post("/phones/62123/messages", {"to": "62999", "text": "nobody"})
    assert (status, body["code"]) == (404, "NOT_LINKED")
    status, body = await api.post("/phones/62123/messages", {"to": "6-2", "text": "x"})
    assert (status, body["code"]) == (400, "INVALID_PHONE")
    status, body = await api.post("/phones/62123/read", {"ids": "nope"})
    assert (status, body["code"]) == (400, "BAD_REQUEST")
    status, body = await api.post("/faults", {"latencyMs": -1})
    assert (status, body["code"]) == (400, "BAD_REQUEST")
    status, body = await api.post("/phones/62123/unlink")
    assert (status, body["code"]) == (404, "NOT_LINKED")
    status, body = await api.get("/nowhere")
    assert (status, body["code"]) == (404, "NOT_FOUND")


# -- edits and revokes (session_proc/sim/hub_changes.py) --------------------------------------
async def test_a_session_edits_and_revokes_only_its_own_messages_and_the_other_device_hears_of_it(
    engines: Engines, api: HubApi
) -> None:
    alice, _ = await link(engines, api, "628711", "alice")
    _, bob_sink = await link(engines, api, "628712", "bob")
    await alice.send(text("3EB0E1E1E1E1E1E1E1E1E1", "628712", "hi bbo"))
    await bob_sink.next("message")
    await alice.send(
        OutgoingMessage(
            id="3EB0E2E2E2E2E2E2E2E2E2",
            to="628712@s.whatsapp.net",
            type="edit",
            edit_of="3EB0E1E1E1E1E1E1E1E1E1",
            text="hi bob",
        )
    )
    [change] = await bob_sink.next("change")
    assert (change.kind, change.target, change.text, change.sender) == (
        "edit",
        "3EB0E1E1E1E1E1E1E1E1E1",
        "hi bob",
        "628711@s.whatsapp.net",
    )
    [entry] = await api.inbox("628712")
    assert (entry["text"], entry["edited"]) == ("hi bob", True)
    # bob cannot edit or revoke what alice sent him; nobody can change a message the recipient never got.
    bob = engines.made[1]
    for to, code in (("628712", "NOT_OWN_MESSAGE"), ("628711", "UNKNOWN_MESSAGE")):
        for kind, target_field in (("edit", "edit_of"), ("revoke", "revoke_of")):
            with pytest.raises(EngineError) as err:
                change_id = f"3EB0B0B{kind}{to}"
                fields: dict[str, Any] = {target_field: "3EB0E1E1E1E1E1E1E1E1E1"}
                await bob.send(OutgoingMessage(id=change_id, to=f"{to}@s.whatsapp.net", type=kind, text="x", **fields))
            assert err.value.code == code
    await alice.send(
        OutgoingMessage(
            id="3EB0E3E3E3E3E3E3E3E3E3", to="628712@s.whatsapp.net", type="revoke", revoke_of="3EB0E1E1E1E1E1E1E1E1E1"
        )
    )
    [change] = await bob_sink.next("change")
    assert (change.kind, change.target, change.text) == ("revoke", "3EB0E1E1E1E1E1E1E1E1E1", None)
    [entry] = await api.inbox("628712")
    assert (entry["text"], entry["revoked"]) == (None, True)
    # A resent revoke (the outbox retries under the same id) is no error.
    await alice.send(
        OutgoingMessage(
            id="3EB0E3E3E3E3E3E3E3E3E3", to="628712@s.whatsapp.net", type="revoke", revoke_of="3EB0E1E1E1E1E1E1E1E1E1"
        )
    )
    # The phone cannot edit a message it received.
    status, body = await api.post("/phones/628712/messages/3EB0E1E1E1E1E1E1E1E1E1/edit", {"text": "mine now"})
    assert status == 409 and body["code"] == "NOT_OWN_MESSAGE"


async def test_the_hub_refuses_edits_past_its_window(tmp_path: Path) -> None:
    hub = await spawn_hub(tmp_path / "hub", "tcp://127.0.0.1:0", "--edit-window", "0")
    made = Engines(hub=hub, root=tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            api = HubApi(http, hub.http)
            engine, sink = await link(made, api, "628721")
            await engine.send(text("3EB0F1F1F1F1F1F1F1F1F1", "628722", "first"))
            with pytest.raises(EngineError) as err:
                await engine.send(
                    OutgoingMessage(
                        id="3EB0F2F2F2F2F2F2F2F2F2",
                        to="628722@s.whatsapp.net",
                        type="edit",
                        edit_of="3EB0F1F1F1F1F1F1F1F1F1",
                        text="second",
                    )
                )
            assert err.value.code == "EDIT_WINDOW_EXPIRED"
            status, sent = await api.post("/phones/628722/messages", {"to": "628721", "text": "from the phone"})
            assert status == 200
            await sink.next("message")
            status, body = await api.post(f"/phones/628722/messages/{sent['id']}/edit", {"text": "edited"})
            assert status == 409 and body["code"] == "EDIT_WINDOW_EXPIRED"
            assert [m["text"] for m in await api.inbox("628722")] == ["first"]
    finally:
        for engine in made.made:
            await asyncio.wait_for(engine.stop(), WAIT)
        await stop_process(hub.proc)

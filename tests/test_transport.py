"""The wire protocol and the channels, over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgpack
import pytest
import zmq
import zmq.asyncio

from transport.channel import (
    MAX_FRAME_BYTES,
    MAX_IN_PROGRESS_PER_PEER,
    DealerChannel,
    PeerGone,
    RemoteError,
    RequestTimeout,
    RouterChannel,
)
from transport.protocol import EVENT, PROTOCOL_VERSION, REP, REQ, Frame, ProtocolError, decode, encode


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb({"v": 2, "kind": "req", "id": 1}), "version"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "kind": "shout"}), "kind"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "kind": "req", "op": "x", "body": {}}), "correlation id"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "kind": "event", "op": 5, "body": {}}), "wrong types"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "kind": "event", "op": "x", "body": []}), "wrong types"),
    ],
)
def test_decode_refuses_bad_frames(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(raw)


def test_frames_round_trip() -> None:
    frame = Frame(kind=REQ, op="send", body={"id": "3EB0AA", "to": "1@s.whatsapp.net", "data": b"\x00\x01"}, id=7)
    assert decode(encode(frame)) == frame


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "ipc":
        return f"ipc://{tmp_path_factory.mktemp('s')}/r.sock"
    return "tcp://127.0.0.1:0"


async def test_request_reply_events_and_errors(endpoint: str) -> None:
    events: asyncio.Queue[tuple[bytes, str, dict[str, Any]]] = asyncio.Queue()

    async def on_router_event(identity: bytes, op: str, body: dict[str, Any]) -> None:
        await events.put((identity, op, body))

    async def on_router_request(identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op == "boom":
            raise RemoteError("BOOM", "asked for it")
        if op == "crash":
            raise ValueError("handler bug")
        return {"echo": body, "from": identity.decode()}

    async def on_dealer_request(identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op == "slow":
            await asyncio.sleep(5)
        return {"child": True}

    router = RouterChannel(endpoint, on_request=on_router_request, on_event=on_router_event, heartbeat_interval=0.1)
    bound = router.bind()
    dealer = DealerChannel(bound, b"s1:1", on_request=on_dealer_request, heartbeat_interval=0.1)
    router.track(b"s1:1")
    dealer.connect()
    try:
        assert await dealer.request("ping", {"n": 1}, timeout=5) == {"echo": {"n": 1}, "from": "s1:1"}
        dealer.emit("qr", {"qr": "abc"})
        assert await asyncio.wait_for(events.get(), 5) == (b"s1:1", "qr", {"qr": "abc"})
        assert await router.request(b"s1:1", "hello", timeout=5) == {"child": True}
        with pytest.raises(RemoteError) as err:
            await dealer.request("boom", timeout=5)
        assert err.value.code == "BOOM"
        with pytest.raises(RemoteError) as err:
            await dealer.request("crash", timeout=5)
        assert err.value.code == "INTERNAL"
        with pytest.raises(RequestTimeout):
            await router.request(b"s1:1", "slow", timeout=0.2)
        # ROUTER_MANDATORY: a send to an identity that is not connected fails at once.
        with pytest.raises(PeerGone):
            await router.request(b"nobody:1", "hello", timeout=5)
        assert (router.silence(b"s1:1") or 99) < 1
        assert router.silence(b"never:1") is None
    finally:
        await dealer.close()
        await router.close()


async def test_dealer_notices_a_silent_peer_once() -> None:
    router = RouterChannel("tcp://127.0.0.1:0", heartbeat_interval=0.05)
    bound = router.bind()
    lost = asyncio.Event()
    calls = 0

    async def on_lost() -> None:
        nonlocal calls
        calls += 1
        lost.set()

    dealer = DealerChannel(bound, b"s:1", on_peer_lost=on_lost, heartbeat_interval=0.05, liveness=3)
    router.track(b"s:1")
    dealer.connect()
    try:
        with pytest.raises(RemoteError, match="NO_HANDLER"):
            await dealer.request("ping", timeout=5)  # answered, with an error: both ends are up
        assert not lost.is_set()
        await router.close()  # the supervisor goes away
        await asyncio.wait_for(lost.wait(), 5)
        await asyncio.sleep(0.3)
        assert calls == 1
    finally:
        await dealer.close()
        await router.close()


async def test_garbage_reaches_both_sides_and_is_dropped() -> None:
    got: asyncio.Queue[str] = asyncio.Queue()

    async def on_event(identity: bytes, op: str, body: dict[str, Any]) -> None:
        await got.put(op)

    router = RouterChannel("tcp://127.0.0.1:0", on_event=on_event, heartbeat_interval=0.05)
    bound = router.bind()
    # A raw ROUTER facing a real DealerChannel, to throw garbage at the child side.
    ctx = zmq.asyncio.Context()
    raw_router = ctx.socket(zmq.ROUTER)
    raw_router.setsockopt(zmq.LINGER, 0)
    port = raw_router.bind_to_random_port("tcp://127.0.0.1")
    child_events: asyncio.Queue[str] = asyncio.Queue()

    async def on_child_event(identity: bytes, op: str, body: dict[str, Any]) -> None:
        await child_events.put(op)

    dealer = DealerChannel(f"tcp://127.0.0.1:{port}", b"c:1", on_event=on_child_event, heartbeat_interval=0.05)
    dealer.connect()
    raw_dealer = ctx.socket(zmq.DEALER)
    raw_dealer.setsockopt(zmq.LINGER, 0)
    raw_dealer.connect(bound)
    try:
        identity, _ = await asyncio.wait_for(raw_router.recv_multipart(), 5)  # the child's first heartbeat
        for junk in (b"\xc1", b"", msgpack.packb({"v": 9}), msgpack.packb("text")):
            await raw_dealer.send(junk)
            await raw_router.send_multipart([identity, junk])
        await raw_router.send_multipart([identity, b"x", b"y"])
        ok_frame = encode(Frame(kind=EVENT, op="still-alive"))
        await raw_dealer.send(ok_frame)
        await raw_router.send_multipart([identity, ok_frame])
        assert await asyncio.wait_for(got.get(), 5) == "still-alive"
        assert await asyncio.wait_for(child_events.get(), 5) == "still-alive"
        assert router.dropped_frames >= 4 and dealer.dropped_frames >= 5
    finally:
        raw_dealer.close()
        raw_router.close()
        ctx.term()
        await dealer.close()
        await router.close()


async def test_a_flooding_or_oversized_peer_costs_itself_not_the_router() -> None:
    release = asyncio.Event()

    async def on_request(identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if identity == b"flood:1":
            await release.wait()  # a handler that does not finish: requests pile up
        return {"op": op}

    router = RouterChannel("tcp://127.0.0.1:0", on_request=on_request, heartbeat_interval=0.05)
    bound = router.bind()
    ctx = zmq.asyncio.Context()
    sockets = []
    for identity in (b"flood:1", b"huge:1"):
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.IDENTITY, identity)
        raw.connect(bound)
        sockets.append(raw)
    flood, huge = sockets
    neighbour = DealerChannel(bound, b"calm:1", heartbeat_interval=0.05)
    neighbour.connect()
    try:
        over = 200
        for n in range(MAX_IN_PROGRESS_PER_PEER + over):
            await flood.send(encode(Frame(kind=REQ, op="commit", body={}, id=n + 1)))
        busy = 0
        while busy < over:  # the ones past the bound are answered at once, without a handler
            reply = decode(await asyncio.wait_for(flood.recv(), 10))
            body = cast(dict[str, Any], reply.body)
            assert reply.kind == REP and not body["ok"], reply
            assert body["error"]["code"] == "BUSY"
            busy += 1
        assert len(router._tasks) <= MAX_IN_PROGRESS_PER_PEER  # the rest cost the router nothing
        # A frame past the ceiling is refused by ZeroMQ before it is read (its sender is disconnected).
        await huge.send(encode(Frame(kind=REQ, op="commit", body={"text": "x" * MAX_FRAME_BYTES}, id=1)))
        # The neighbour is served meanwhile, and so is the flooder once its handlers finish.
        assert await neighbour.request("ping", {}, timeout=5) == {"op": "ping"}
        release.set()
        answered = cast(dict[str, Any], decode(await asyncio.wait_for(flood.recv(), 10)).body)
        assert answered["ok"] and answered["result"] == {"op": "commit"}
        assert router.dropped_frames == over
    finally:
        for raw in sockets:
            raw.close()
        ctx.term()
        await neighbour.close()
        await router.close()

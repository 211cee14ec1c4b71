"""The neonize engine's read receipts, presence and calls, without WhatsApp: the mapping of neonize's
own ChatPresence, Presence and CallOffer events, and the engine's calls into a stand-in Go client
(which arguments, which enums, nothing before Connected or after stop)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import test_neonize_engine as nz
from neonize.proto.Neonize_pb2 import JID, BasicCallMeta, MessageSource, Node
from neonize.proto.Neonize_pb2 import CallOffer as CallOfferEv
from neonize.proto.Neonize_pb2 import ChatPresence as ChatPresenceEv
from neonize.proto.Neonize_pb2 import Presence as PresenceEv
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, Presence, ReceiptType

from session_proc.engine import EngineContext, EngineError, IncomingCall, ReadMessage
from session_proc.neonize import account, incoming, outgoing
from session_proc.neonize.engine import NeonizeEngine
from session_proc.neonize.journal import SendJournal

PEER = "628222333@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


def _jid(value: str) -> JID:
    return incoming.parse_jid(value)


def test_chat_presence_events_become_chat_states() -> None:
    source = MessageSource(Chat=_jid(PEER), Sender=_jid(PEER))
    typing = ChatPresenceEv(MessageSource=source, State=ChatPresenceEv.COMPOSING, Media=ChatPresenceEv.TEXT)
    recording = ChatPresenceEv(MessageSource=source, State=ChatPresenceEv.COMPOSING, Media=ChatPresenceEv.AUDIO)
    paused = ChatPresenceEv(MessageSource=source, State=ChatPresenceEv.PAUSED)
    assert account.chat_presence(typing) == (PEER, PEER, "typing")
    assert account.chat_presence(recording) == (PEER, PEER, "recording")
    assert account.chat_presence(paused) == (PEER, PEER, "paused")
    # In a group: the group is the chat; a LID sender is named by its phone number.
    lid = MessageSource(Chat=_jid(GROUP), Sender=JID(User="99887766", Server="lid"), SenderAlt=_jid(PEER), IsGroup=True)
    assert account.chat_presence(ChatPresenceEv(MessageSource=lid, State=ChatPresenceEv.PAUSED)) == (
        GROUP,
        PEER,
        "paused",
    )


def test_presence_events_say_online_and_last_seen() -> None:
    assert account.presence(PresenceEv(From=_jid(PEER))) == (PEER, True, None)
    assert account.presence(PresenceEv(From=_jid(PEER), Unavailable=True, LastSeen=1_760_000_000)) == (
        PEER,
        False,
        1_760_000_000.0,
    )
    assert account.presence(PresenceEv(From=_jid(PEER), Unavailable=True, LastSeen=1_760_000_000_500))[2] == (
        1_760_000_000.5
    )


def _offer(*media: str, call_id: str = "CALL1") -> CallOfferEv:
    meta = BasicCallMeta(callCreator=_jid(PEER), callID=call_id, timestamp=1_760_000_000)
    getattr(meta, "from").CopyFrom(_jid(PEER))
    return CallOfferEv(basicCallMeta=meta, data=Node(Tag="offer", Nodes=[Node(Tag=m) for m in media]))


def test_call_offers_become_calls_with_the_caller_as_delivered() -> None:
    mapped = account.call_offer(_offer("audio"))
    assert mapped is not None
    call, caller = mapped
    assert call == IncomingCall(id="CALL1", sender=PEER, video=False, timestamp=1_760_000_000.0)
    assert incoming.jid_str(caller) == PEER
    video = account.call_offer(_offer("audio", "video"))
    assert video is not None and video[0].video is True
    assert account.call_offer(_offer("audio", call_id="")) is None


def test_presence_arguments_are_only_neonizes_enums() -> None:
    assert account.CHAT_PRESENCE["typing"] == (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT,
    )
    assert account.CHAT_PRESENCE["recording"][1] is ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO
    assert account.CHAT_PRESENCE["paused"][0] is ChatPresence.CHAT_PRESENCE_PAUSED
    for chat_state, media in account.CHAT_PRESENCE.values():
        assert isinstance(chat_state, ChatPresence) and isinstance(media, ChatPresenceMedia)
    assert account.ACCOUNT_PRESENCE == {"available": Presence.AVAILABLE, "unavailable": Presence.UNAVAILABLE}
    assert account.READ_RECEIPT is ReceiptType.READ


class _Client:
    """Records the calls the engine makes into neonize, with their keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def _sink(reject: bool = False) -> nz._Sink:
    sink = nz._Sink()
    sink.reject_calls = reject
    return sink


async def _engine(tmp_path: Path, sink: nz._Sink) -> tuple[NeonizeEngine, _Client]:
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    engine = NeonizeEngine(EngineContext(session_id="s1", session_dir=tmp_path, sink=sink))
    client = _Client()
    journal = await asyncio.to_thread(SendJournal.open, tmp_path)
    await engine.attach(client, journal=journal, incoming=incoming, outgoing=outgoing, media_types={})
    engine._account = account
    return engine, client


async def test_nothing_is_called_before_connected_or_after_stop(tmp_path: Path) -> None:
    engine, client = await _engine(tmp_path, _sink())
    for attempt in (
        engine.mark_read(PEER, [ReadMessage(id="A", sender=PEER)]),
        engine.send_presence("available", None),
    ):
        with pytest.raises(EngineError) as info:
            await attempt
        assert info.value.code == "NOT_CONNECTED"
    engine._connected = True
    engine._stopping.set()  # what stop() sets first
    with pytest.raises(EngineError):
        await engine.send_presence("typing", PEER)
    assert client.calls == []


async def test_read_receipts_go_per_sender_with_keywords(tmp_path: Path) -> None:
    engine, client = await _engine(tmp_path, _sink())
    engine._connected = True
    other = "628444555@s.whatsapp.net"
    messages = [ReadMessage(id="A", sender=PEER), ReadMessage(id="B", sender=other), ReadMessage(id="C", sender=PEER)]
    await engine.mark_read(GROUP, messages)
    reads = [(args, kwargs) for name, args, kwargs in client.calls if name == "mark_read"]
    assert [args for args, _ in reads] == [("A", "C"), ("B",)]
    assert [incoming.jid_str(kw["sender"]) for _, kw in reads] == [PEER, other]
    assert all(incoming.jid_str(kw["chat"]) == GROUP and kw["receipt"] is ReceiptType.READ for _, kw in reads)
    assert "subscribe_presence" not in [name for name, _, _ in client.calls]  # not for groups

    await engine.mark_read(PEER, [ReadMessage(id="D", sender=PEER)])
    await engine.mark_read(PEER, [ReadMessage(id="E", sender=PEER)])
    assert [name for name, _, _ in client.calls].count("subscribe_presence") == 1


async def test_presence_calls_take_enums(tmp_path: Path) -> None:
    engine, client = await _engine(tmp_path, _sink())
    engine._connected = True
    await engine.send_presence("available", None)
    await engine.send_presence("recording", PEER)
    assert client.calls[0] == ("send_presence", (Presence.AVAILABLE,), {})
    name, args, _ = client.calls[1]
    assert name == "send_chat_presence" and incoming.jid_str(args[0]) == PEER
    assert args[1:] == (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO)
    with pytest.raises(EngineError) as info:
        await engine.send_presence("dancing", PEER)
    assert info.value.code == "INVALID_STATE"


async def test_a_call_is_committed_then_rejected_when_asked(tmp_path: Path) -> None:
    sink = _sink(reject=True)
    engine, client = await _engine(tmp_path, sink)
    engine._connected = True
    # whatsmeow calls back on its own thread and waits for the callback.
    await asyncio.to_thread(engine._cb_call_offer, client, _offer("audio", "video"))
    assert ("call", "CALL1") in sink.events and ("call_rejected", ("CALL1", PEER)) in sink.events
    rejects = [args for name, args, _ in client.calls if name == "reject_call"]
    assert len(rejects) == 1 and incoming.jid_str(rejects[0][0]) == PEER and rejects[0][1] == "CALL1"

    kept = _sink()
    engine2, client2 = await _engine(tmp_path / "2", kept)
    engine2._connected = True
    await asyncio.to_thread(engine2._cb_call_offer, client2, _offer("audio"))
    assert kept.events == [("call", "CALL1")] and client2.calls == []


async def test_presence_events_reach_the_sink(tmp_path: Path) -> None:
    sink = _sink()
    engine, client = await _engine(tmp_path, sink)
    source = MessageSource(Chat=_jid(PEER), Sender=_jid(PEER))
    engine._cb_chat_presence(client, ChatPresenceEv(MessageSource=source, State=ChatPresenceEv.COMPOSING))
    engine._cb_presence(client, PresenceEv(From=_jid(PEER), Unavailable=True, LastSeen=1_760_000_000))
    await asyncio.sleep(0.05)
    assert sink.events == [("chat_presence", (PEER, PEER, "typing")), ("presence", (PEER, False, 1_760_000_000.0))]

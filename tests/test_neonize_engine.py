"""The neonize engine without WhatsApp: real session processes whose dial fails (through a proxy
on a closed loopback port: the same with or without a route to WhatsApp), and the event/message
mapping built from neonize's own protobuf types.

The mapping tests import neonize's generated protobuf modules through a bare package
entry (``_proto_only``) so the test runner never loads neonize's Go runtime: a forked Go
runtime is broken, and this process starts many children. The session processes
spawned here load the real library.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from harness import pid_alive, running_worker, unreachable_proxy, wait_for

from session_proc.engine import (
    EngineContext,
    EngineError,
    IncomingCall,
    IncomingMessage,
    MessageChange,
    OutgoingMessage,
)
from session_proc.neonize.journal import SendJournal
from transport import wire
from transport.channel import RemoteError, RouterChannel

ROOT = Path(__file__).resolve().parent.parent


def _proto_only() -> None:
    """Make ``import neonize.proto...`` work without running neonize/__init__ (which loads Go)."""
    if "neonize" in sys.modules:
        return
    spec = importlib.util.find_spec("neonize")
    assert spec is not None and spec.submodule_search_locations, "neonize is not installed"
    package = types.ModuleType("neonize")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["neonize"] = package


_proto_only()

from neonize.proto.Neonize_pb2 import (  # noqa: E402
    JID,
    ConnectFailureReason,
    MessageInfo,
    MessageSource,
    SendResponse,
    UploadResponse,
)
from neonize.proto.Neonize_pb2 import ConnectFailure as ConnectFailureEv  # noqa: E402
from neonize.proto.Neonize_pb2 import LoggedOut as LoggedOutEv  # noqa: E402
from neonize.proto.Neonize_pb2 import Message as MessageEv  # noqa: E402
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv  # noqa: E402
from neonize.proto.waCommon.WACommon_pb2 import MessageKey  # noqa: E402
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (  # noqa: E402
    AudioMessage,
    ContactMessage,
    ContextInfo,
    DocumentMessage,
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    LocationMessage,
    Message,
    ReactionMessage,
    VideoMessage,
)

from session_proc.neonize import incoming, outgoing, send_errors  # noqa: E402
from session_proc.neonize.engine import NeonizeEngine  # noqa: E402

ME = "628111@s.whatsapp.net"
PEER = "628222@s.whatsapp.net"
GROUP = "120363000000000001@g.us"
VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Budi Santoso\nTEL;type=CELL:+62 812 3333\nEND:VCARD"


def _jid(value: str) -> JID:
    user, server = value.split("@")
    return JID(User=user, Server=server)


def _event(content: Message, *, msg_id: str = "3EB0AAA1", chat: str = PEER, sender: str = PEER) -> MessageEv:
    source = MessageSource(Chat=_jid(chat), Sender=_jid(sender), IsFromMe=False, IsGroup=chat.endswith("@g.us"))
    info = MessageInfo(ID=msg_id, MessageSource=source, Timestamp=1_760_000_000_123, Pushname="Budi")
    return MessageEv(Info=info, Message=content)


def _upload() -> UploadResponse:
    return UploadResponse(
        url="https://mmg.whatsapp.net/x",
        DirectPath="/v/t62/x",
        MediaKey=b"k" * 32,
        FileEncSHA256=b"e" * 32,
        FileSHA256=b"s" * 32,
        FileLength=1234,
    )


# -- incoming mapping ----------------------------------------------------------------------------------
def test_plain_text_maps_with_seconds_and_recipient() -> None:
    mapped = incoming.map_message(_event(Message(conversation="halo")), me=ME)
    assert mapped is not None and mapped.media is None
    msg = mapped.message
    assert (msg.id, msg.type, msg.text) == ("3EB0AAA1", "text", "halo")
    assert (msg.chat, msg.sender, msg.to, msg.from_me) == (PEER, PEER, ME, False)
    assert msg.timestamp == pytest.approx(1_760_000_000.123)  # message events carry milliseconds


def test_extended_text_carries_reply_and_mentions() -> None:
    context = ContextInfo(stanzaID="3EB0QUOTED", participant=ME, mentionedJID=[ME, "628333@s.whatsapp.net"])
    content = Message(extendedTextMessage=ExtendedTextMessage(text="@628111 lihat ini", contextInfo=context))
    mapped = incoming.map_message(_event(content, chat=GROUP), me=ME)
    assert mapped is not None
    msg = mapped.message
    assert (msg.type, msg.text, msg.reply_to) == ("text", "@628111 lihat ini", "3EB0QUOTED")
    assert msg.mentions == [ME, "628333@s.whatsapp.net"]
    assert (msg.chat, msg.sender, msg.to) == (GROUP, PEER, GROUP)


@pytest.mark.parametrize(
    ("field", "part", "kind"),
    [
        ("imageMessage", ImageMessage(mimetype="image/jpeg", caption="foto", fileLength=5120), "image"),
        ("videoMessage", VideoMessage(mimetype="video/mp4", caption="klip", fileLength=90000), "video"),
        ("audioMessage", AudioMessage(mimetype="audio/ogg; codecs=opus", PTT=True, fileLength=777), "audio"),
        (
            "documentMessage",
            DocumentMessage(mimetype="application/pdf", fileName="faktur.pdf", caption="tagihan", fileLength=4242),
            "document",
        ),
    ],
)
def test_media_maps_type_caption_size_and_download_part(field: str, part: Any, kind: str) -> None:
    part.URL = "https://mmg.whatsapp.net/d"
    part.mediaKey = b"k" * 32
    part.contextInfo.CopyFrom(ContextInfo(stanzaID="3EB0PREV"))
    mapped = incoming.map_message(_event(Message(**{field: part})), me=ME)
    assert mapped is not None
    msg = mapped.message
    assert msg.type == kind
    assert msg.mimetype == part.mimetype and msg.media_size == part.fileLength
    assert msg.reply_to == "3EB0PREV"
    if kind != "audio":
        assert msg.caption == part.caption
    if kind == "document":
        assert msg.name == "faktur.pdf"
    # The part handed to download_any holds the media (URL, key) and nothing else.
    assert mapped.media is not None
    assert [f.name for f, _ in mapped.media.ListFields()] == [field]
    assert getattr(mapped.media, field).mediaKey == b"k" * 32


def test_document_with_caption_and_view_once_envelopes_are_unwrapped() -> None:
    doc = DocumentMessage(mimetype="application/pdf", fileName="a.pdf", caption="isi", fileLength=10)
    wrapped = Message(documentWithCaptionMessage=FutureProofMessage(message=Message(documentMessage=doc)))
    mapped = incoming.map_message(_event(wrapped), me=ME)
    assert mapped is not None and (mapped.message.type, mapped.message.caption) == ("document", "isi")
    image = Message(imageMessage=ImageMessage(mimetype="image/jpeg", fileLength=3))
    view_once = Message(viewOnceMessage=FutureProofMessage(message=image))
    ephemeral = Message(ephemeralMessage=FutureProofMessage(message=view_once))
    mapped = incoming.map_message(_event(ephemeral), me=ME)
    assert mapped is not None and mapped.message.type == "image"


def test_location_contact_and_reaction_map() -> None:
    loc = LocationMessage(degreesLatitude=-6.2, degreesLongitude=106.8, name="Monas", address="Jakarta Pusat")
    msg = incoming.map_message(_event(Message(locationMessage=loc)), me=ME)
    assert msg is not None
    m = msg.message
    assert (m.type, m.latitude, m.longitude, m.name, m.address) == ("location", -6.2, 106.8, "Monas", "Jakarta Pusat")

    contact = ContactMessage(displayName="Budi Santoso", vcard=VCARD)
    msg = incoming.map_message(_event(Message(contactMessage=contact)), me=ME)
    assert msg is not None
    assert (msg.message.type, msg.message.name, msg.message.vcard) == ("contact", "Budi Santoso", VCARD)

    reaction = ReactionMessage(key=MessageKey(remoteJID=PEER, fromMe=True, ID="3EB0MINE"), text="👍")
    msg = incoming.map_message(_event(Message(reactionMessage=reaction)), me=ME)
    assert msg is not None
    assert (msg.message.type, msg.message.text, msg.message.reaction_to) == ("reaction", "👍", "3EB0MINE")


def test_lid_addressed_sender_is_shown_by_phone_number_and_protocol_messages_are_skipped() -> None:
    event = _event(Message(conversation="x"))
    event.Info.MessageSource.Sender.CopyFrom(JID(User="99887766", Server="lid"))
    event.Info.MessageSource.Chat.CopyFrom(JID(User="99887766", Server="lid"))
    event.Info.MessageSource.SenderAlt.CopyFrom(_jid(PEER))
    mapped = incoming.map_message(event, me=ME)
    assert mapped is not None and (mapped.message.sender, mapped.message.chat) == (PEER, PEER)
    assert incoming.map_message(_event(Message()), me=ME) is None  # e.g. a protocol or key-distribution message


def test_receipts_map_to_delivered_and_read_only_from_the_other_side() -> None:
    source = MessageSource(Chat=_jid(PEER), Sender=_jid(PEER), IsFromMe=False)
    delivered = ReceiptEv(
        MessageSource=source, MessageIDs=["A", "B"], Timestamp=1_760_000_001, Type=ReceiptEv.DELIVERED
    )
    update = incoming.map_receipt(delivered)
    assert update is not None and (update.ids, update.status, update.chat, update.timestamp) == (
        ["A", "B"],
        "delivered",
        PEER,
        1_760_000_001.0,  # receipts carry seconds
    )
    for kind, status in ((ReceiptEv.READ, "read"), (ReceiptEv.PLAYED, "read")):
        update = incoming.map_receipt(ReceiptEv(MessageSource=source, MessageIDs=["A"], Timestamp=1, Type=kind))
        assert update is not None and update.status == status
    mine = MessageSource(Chat=_jid(PEER), Sender=_jid(ME), IsFromMe=True)
    assert incoming.map_receipt(ReceiptEv(MessageSource=mine, MessageIDs=["A"], Type=ReceiptEv.READ_SELF)) is None
    assert incoming.map_receipt(ReceiptEv(MessageSource=source, MessageIDs=["A"], Type=ReceiptEv.RETRY)) is None


def test_connection_refusals_and_logouts_name_their_reason() -> None:
    reason, retry = incoming.connect_failure(ConnectFailureEv(Reason=ConnectFailureReason.SERVICE_UNAVAILABLE))
    assert (reason, retry) == ("connect failure: service_unavailable", True)
    reason, retry = incoming.connect_failure(
        ConnectFailureEv(Reason=ConnectFailureReason.BAD_USER_AGENT, Message="bad agent")
    )
    assert (reason, retry) == ("connect failure: bad_user_agent (bad agent)", False)
    assert incoming.logged_out_reason(LoggedOutEv(Reason=ConnectFailureReason.LOGGED_OUT)) == "logged_out"


def test_jids_parse_from_digits_users_and_groups() -> None:
    assert incoming.jid_str(incoming.parse_jid("628222")) == PEER
    assert incoming.jid_str(incoming.parse_jid("628222:3@s.whatsapp.net")) == PEER
    assert incoming.jid_str(incoming.parse_jid(GROUP)) == GROUP
    for bad in ("", "abc", "@s.whatsapp.net", "62a@s.whatsapp.net"):
        with pytest.raises(ValueError):
            incoming.parse_jid(bad)


# -- outgoing building -------------------------------------------------------------------------------------
def test_plain_text_goes_out_as_conversation_not_extended_text() -> None:
    built = outgoing.build_message(OutgoingMessage(id="w1", to=PEER, text="halo"))
    assert [f.name for f, _ in built.ListFields()] == ["conversation"] and built.conversation == "halo"


def test_text_with_mentions_and_reply_carries_context() -> None:
    quoted = outgoing.QuotedRef(id="3EB0Q", sender=PEER, message=Message(conversation="asli"))
    out = OutgoingMessage(id="w2", to=GROUP, text="@628222 ya", mentions=[PEER], reply_to="3EB0Q")
    built = outgoing.build_message(out, quoted=quoted)
    ext = built.extendedTextMessage
    assert ext.text == "@628222 ya"
    assert list(ext.contextInfo.mentionedJID) == [PEER]
    assert (ext.contextInfo.stanzaID, ext.contextInfo.participant) == ("3EB0Q", PEER)
    assert ext.contextInfo.quotedMessage.conversation == "asli"


@pytest.mark.parametrize("kind", ["image", "video", "audio", "document"])
def test_media_messages_carry_the_upload(kind: str) -> None:
    mimetype = {"image": "image/png", "video": "video/mp4", "audio": "audio/ogg; codecs=opus", "document": "text/csv"}
    out = OutgoingMessage(
        id="w3", to=PEER, type=kind, caption="lihat", mimetype=mimetype[kind], filename="data.csv", reply_to="3EB0Q"
    )
    built = outgoing.build_message(out, upload=_upload(), quoted=outgoing.QuotedRef(id="3EB0Q", sender=PEER), now=1000)
    part = getattr(built, f"{kind}Message")
    assert (part.URL, part.directPath, part.fileLength) == ("https://mmg.whatsapp.net/x", "/v/t62/x", 1234)
    assert (part.mediaKey, part.fileSHA256, part.fileEncSHA256) == (b"k" * 32, b"s" * 32, b"e" * 32)
    assert part.mimetype == mimetype[kind] and part.mediaKeyTimestamp == 1000
    assert part.contextInfo.stanzaID == "3EB0Q"
    if kind in ("image", "video", "document"):
        assert part.caption == "lihat"
    if kind == "document":
        assert (part.fileName, part.title) == ("data.csv", "data.csv")
    if kind == "audio":
        assert not part.PTT  # a voice note only when asked for (voice: true): tests/test_neonize_polls.py


def test_location_contact_and_reaction_build() -> None:
    loc = outgoing.build_message(
        OutgoingMessage(id="w4", to=PEER, type="location", latitude=-6.2, longitude=106.8, name="Monas", address="Jkt")
    ).locationMessage
    assert (loc.degreesLatitude, loc.degreesLongitude, loc.name, loc.address) == (-6.2, 106.8, "Monas", "Jkt")

    contact = outgoing.build_message(OutgoingMessage(id="w5", to=PEER, type="contact", vcard=VCARD)).contactMessage
    assert (contact.displayName, contact.vcard) == ("Budi Santoso", VCARD)  # name taken from the vCard's FN

    target = outgoing.QuotedRef(id="3EB0T", sender=PEER, from_me=False)
    reaction = outgoing.build_message(
        OutgoingMessage(id="w6", to=GROUP, type="reaction", text="❤", reaction_to="3EB0T"), target=target, now=12.5
    ).reactionMessage
    assert (reaction.key.remoteJID, reaction.key.ID, reaction.key.fromMe) == (GROUP, "3EB0T", False)
    assert reaction.key.participant == PEER and reaction.text == "❤" and reaction.senderTimestampMS == 12500


def test_invalid_messages_are_refused_with_permanent_codes() -> None:
    cases = [
        (OutgoingMessage(id="x", to=PEER, text=""), "INVALID_MESSAGE"),
        (OutgoingMessage(id="x", to=PEER, type="location", latitude=1.0), "INVALID_MESSAGE"),
        (OutgoingMessage(id="x", to=PEER, type="contact"), "INVALID_MESSAGE"),
        (OutgoingMessage(id="x", to=PEER, type="reaction", text="👍"), "INVALID_MESSAGE"),
        (OutgoingMessage(id="x", to=PEER, type="image"), "MEDIA_MISSING"),
        (OutgoingMessage(id="x", to=PEER, type="sticker"), "MEDIA_MISSING"),
        (OutgoingMessage(id="x", to=PEER, type="poll"), "UNSUPPORTED_TYPE"),  # no builder: neonize makes polls
    ]
    for out, code in cases:
        with pytest.raises(EngineError) as info:
            outgoing.build_message(out)
        assert info.value.code == code


# -- the engine's send journal and callbacks, with a stand-in for the Go client ---------------------------
class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.messages: list[IncomingMessage] = []
        self.votes: list[wire.PollVote] = []
        self.changes: list[MessageChange] = []

    def on_qr(self, code: str, expires_at: float) -> None:
        self.events.append(("qr", (code, expires_at)))

    def on_connected(self, phone: str, push_name: str | None) -> None:
        self.events.append(("connected", phone))

    def on_disconnected(self, reason: str, *, will_retry: bool) -> None:
        self.events.append(("disconnected", (reason, will_retry)))

    def on_logged_out(self, reason: str) -> None:
        self.events.append(("logged_out", reason))

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float, *, by: str | None = None) -> None:
        self.events.append(("receipt", (message_id, status, chat, timestamp)))

    def on_credentials_changed(self) -> None:
        self.events.append(("creds", None))

    async def on_message(self, message: IncomingMessage) -> None:
        self.messages.append(message)

    # presence and calls (tests/test_neonize_account.py)
    reject_calls = False

    def on_chat_presence(self, chat: str, sender: str, state: str) -> None:
        self.events.append(("chat_presence", (chat, sender, state)))

    def on_presence(self, jid: str, online: bool, last_seen: float | None) -> None:
        self.events.append(("presence", (jid, online, last_seen)))

    async def on_call(self, call: IncomingCall) -> bool:
        self.events.append(("call", call.id))
        return self.reject_calls

    async def on_call_rejected(self, call_id: str, sender: str) -> None:
        self.events.append(("call_rejected", (call_id, sender)))

    async def on_poll_vote(self, vote: wire.PollVote) -> None:
        self.votes.append(vote)

    async def on_message_change(self, change: MessageChange) -> None:
        self.changes.append(change)

    async def on_group_event(self, event: wire.GroupEvent) -> None:
        self.events.append(("group", event))


class _FakeClient:
    """Stands in for neonize's NewClient: records sends, fails on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[JID, Message]] = []
        self.fail_with: Exception | None = None
        self.uploads: list[tuple[bytes, str]] = []
        self.counter = 0

    def send_message(self, to: JID, message: Message) -> SendResponse:
        if self.fail_with is not None:
            raise self.fail_with
        self.counter += 1
        self.sent.append((to, message))
        return SendResponse(ID=f"3EB0WA{self.counter}", Timestamp=1_760_000_100)

    def upload(self, data: bytes, kind: str) -> UploadResponse:
        self.uploads.append((data, kind))
        return _upload()

    def download_any(self, message: Message) -> bytes:
        return b"\xff\xd8 jpeg bytes"


async def _engine(session_dir: Path, client: _FakeClient | None = None, **options: Any) -> tuple[NeonizeEngine, _Sink]:
    sink = _Sink()
    engine = NeonizeEngine(EngineContext(session_id="s1", session_dir=session_dir, sink=sink, options=options))
    journal = await asyncio.to_thread(SendJournal.open, session_dir)
    media_types = {name: name for name in ("MediaImage", "MediaVideo", "MediaAudio", "MediaDocument")}
    await engine.attach(
        client or _FakeClient(), journal=journal, incoming=incoming, outgoing=outgoing, media_types=media_types
    )
    engine._connected = True
    return engine, sink


async def test_a_confirmed_send_is_answered_again_from_the_journal_not_resent(tmp_path: Path) -> None:
    client = _FakeClient()
    engine, _ = await _engine(tmp_path, client)
    first = await engine.send(OutgoingMessage(id="wid-1", to="628222", text="halo"))
    again = await engine.send(OutgoingMessage(id="wid-1", to="628222", text="halo"))
    assert first.id == again.id == "wid-1" and first.timestamp == again.timestamp == 1_760_000_100
    assert len(client.sent) == 1
    assert incoming.jid_str(client.sent[0][0]) == PEER and client.sent[0][1].conversation == "halo"
    # A restarted process (new engine, same directory) still knows it.
    engine2, _ = await _engine(tmp_path, client)
    assert (await engine2.send(OutgoingMessage(id="wid-1", to=PEER, text="halo"))).timestamp == 1_760_000_100
    assert len(client.sent) == 1


async def test_a_send_a_crash_interrupted_is_reported_unknown_and_never_resent(tmp_path: Path) -> None:
    journal = SendJournal.open(tmp_path)
    journal.begin("wid-2")  # written before the send; then the process died
    journal.close()
    client = _FakeClient()
    engine, _ = await _engine(tmp_path, client)
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-2", to=PEER, text="halo"))
    assert info.value.code == "OUTCOME_UNKNOWN" and client.sent == []


async def test_ambiguous_errors_settle_unknown_and_refusals_may_be_retried(tmp_path: Path) -> None:
    client = _FakeClient()
    engine, _ = await _engine(tmp_path, client)
    client.fail_with = RuntimeError("timed out waiting for message send response")
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-3", to=PEER, text="a"))
    assert info.value.code == "OUTCOME_UNKNOWN"
    client.fail_with = None
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-3", to=PEER, text="a"))
    assert info.value.code == "OUTCOME_UNKNOWN" and client.sent == []

    # Failed before anything was written: the next attempt sends it.
    client.fail_with = RuntimeError("failed to get device list: info query timed out")
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-4", to=PEER, text="b"))
    assert info.value.code == "SEND_FAILED"
    client.fail_with = None
    assert (await engine.send(OutgoingMessage(id="wid-4", to=PEER, text="b"))).id == "wid-4"
    assert len(client.sent) == 1

    # The server answered with an error: it had the message; never sent twice.
    client.fail_with = RuntimeError("server returned error 479")
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-5", to=PEER, text="c"))
    assert info.value.code == "OUTCOME_UNKNOWN"
    client.fail_with = None
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-5", to=PEER, text="c"))
    assert info.value.code == "OUTCOME_UNKNOWN" and len(client.sent) == 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        # whatsmeow's own texts (errors.go, send.go), as neonize raises them.
        ("websocket not connected", "SEND_FAILED"),
        ("failed to send message node: websocket not connected", "SEND_FAILED"),
        ("the store doesn't contain a device JID", "SEND_FAILED"),
        ("failed to get device list: info query timed out", "SEND_FAILED"),
        ("failed to get group members: info query timed out", "SEND_FAILED"),
        # A group that refuses the account: failed for good, never retried.
        ("failed to get group members: that group does not exist", "GROUP_NOT_FOUND"),
        ("failed to get group members: you're not participating in that group", "GROUP_NOT_FOUND"),
        ("failed to get LID for PN 628222@s.whatsapp.net: info query timed out", "SEND_FAILED"),
        ("no LID found for 628222@s.whatsapp.net from server", "SEND_FAILED"),
        ("failed to prefetch sessions: context canceled", "SEND_FAILED"),
        ("failed to encrypt peer message for 628222@s.whatsapp.net: untrusted identity", "SEND_FAILED"),
        ("failed to encrypt group message to send 3EB0 to 1203@g.us: no sender key", "SEND_FAILED"),
        ("can't encrypt message for device: no signal session established with 628222.0", "SEND_FAILED"),
        ("cipher encryption failed: invalid key", "SEND_FAILED"),
        ("failed to marshal message: proto: required field not set", "SEND_FAILED"),
        ("can't send message to unknown server example.com", "INVALID_RECIPIENT"),
        ("message recipient must be a user JID with no device part", "INVALID_RECIPIENT"),
        ("sending to non-status broadcast lists is not yet supported", "INVALID_RECIPIENT"),
        # Written, or answered: the outcome is open.
        ("failed to send message node: write tcp 10.0.0.2:50514->157.240.1.1:443: broken pipe", "OUTCOME_UNKNOWN"),
        ("failed to send message node: failed to write frame: context deadline exceeded", "OUTCOME_UNKNOWN"),
        ("timed out waiting for message send response", "OUTCOME_UNKNOWN"),
        ("server returned error 479", "OUTCOME_UNKNOWN"),
        ("info query timed out", "OUTCOME_UNKNOWN"),
        ("something whatsmeow has never said before", "OUTCOME_UNKNOWN"),
        ("", "OUTCOME_UNKNOWN"),
    ],
)
def test_only_errors_from_before_the_network_may_be_retried(error: str, code: str) -> None:
    assert send_errors.classify(error) == code


_COMMIT_FAILS = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, "tests")
import test_neonize_engine as t
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from session_proc.engine import EngineContext
from session_proc.neonize import incoming, outgoing
from session_proc.neonize.engine import NeonizeEngine
from session_proc.neonize.journal import SendJournal

class Sink(t._Sink):
    failures = int(sys.argv[2])  # commits that fail before one succeeds; -1: all fail

    async def on_message(self, message):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the supervisor could not commit")
        await super().on_message(message)

async def main():
    session_dir = Path(sys.argv[1])
    sink = Sink()
    context = EngineContext(session_id="s1", session_dir=session_dir, sink=sink, options={"deliver_wait": 2})
    engine = NeonizeEngine(context)
    journal = SendJournal.open(session_dir)
    await engine.attach(t._FakeClient(), journal=journal, incoming=incoming, outgoing=outgoing, media_types={})
    client = t._FakeClient()
    await asyncio.to_thread(engine._cb_message, client, t._event(Message(conversation="halo"), msg_id="IN9"))
    print("returned", [m.id for m in sink.messages], flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize(("failures", "returns"), [(2, True), (-1, False)])
def test_the_message_callback_returns_only_after_the_supervisor_committed(
    tmp_path: Path, failures: int, returns: bool
) -> None:
    # whatsmeow acknowledges a message to WhatsApp when the callback returns: a callback that
    # returned after a failed commit would lose the message for good.
    proc = subprocess.run(
        [sys.executable, "-c", _COMMIT_FAILS, str(tmp_path), str(failures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if returns:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "returned ['IN9']"
    else:
        assert proc.returncode == 75, proc.stderr  # EX_TEMPFAIL: restarted, and WhatsApp redelivers
        assert "returned" not in proc.stdout
        assert "exiting unacknowledged" in proc.stderr


async def test_sends_while_offline_or_to_bad_recipients_are_refused_before_the_journal(tmp_path: Path) -> None:
    engine, _ = await _engine(tmp_path)
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-5", to="not a jid", text="a"))
    assert info.value.code == "INVALID_RECIPIENT"
    engine._connected = False
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-6", to=PEER, text="a"))
    assert info.value.code == "NOT_CONNECTED"
    assert SendJournal.open(tmp_path).get("wid-5") is None


async def test_media_send_uploads_bytes_and_replies_quote_by_worker_id(tmp_path: Path) -> None:
    client = _FakeClient()
    engine, _ = await _engine(tmp_path, client)
    await engine.send(OutgoingMessage(id="wid-7", to=PEER, text="pertama"))
    photo = tmp_path / "p.png"
    photo.write_bytes(b"\x89PNG fake")
    out = OutgoingMessage(id="wid-8", to=PEER, type="image", media_path=str(photo), mimetype="image/png",
                          caption="c", reply_to="wid-7")  # fmt: skip
    await engine.send(out)
    assert client.uploads == [(b"\x89PNG fake", "MediaImage")]
    image = client.sent[1][1].imageMessage
    # The reply names WhatsApp's id of our first message and quotes its content.
    assert image.contextInfo.stanzaID == "3EB0WA1" and image.contextInfo.quotedMessage.conversation == "pertama"
    with pytest.raises(EngineError) as info:
        await engine.send(OutgoingMessage(id="wid-9", to=PEER, type="document", media_path=str(tmp_path / "none")))
    assert info.value.code == "MEDIA_MISSING"


async def test_receipts_and_incoming_messages_hop_from_go_threads_to_the_loop(tmp_path: Path) -> None:
    client = _FakeClient()
    engine, sink = await _engine(tmp_path, client)
    await engine.send(OutgoingMessage(id="wid-10", to=PEER, text="halo"))
    source = MessageSource(Chat=_jid(PEER), Sender=_jid(PEER))
    receipt = ReceiptEv(MessageSource=source, MessageIDs=["3EB0WA1", "OTHER"], Timestamp=5, Type=ReceiptEv.READ)
    reaction = ReactionMessage(key=MessageKey(remoteJID=PEER, fromMe=True, ID="3EB0WA1"), text="👍")
    image = ImageMessage(mimetype="image/jpeg", fileLength=14, caption="foto", URL="https://mmg/x", mediaKey=b"k")

    def whatsmeow() -> None:  # the way Go calls back: on its own thread, one event at a time
        engine._cb_receipt(client, receipt)
        engine._cb_message(client, _event(Message(reactionMessage=reaction), msg_id="IN1"))
        engine._cb_message(client, _event(Message(imageMessage=image), msg_id="IN2"))

    thread = threading.Thread(target=whatsmeow)
    thread.start()
    await wait_for(lambda: _ready(len(sink.messages) == 2), timeout=10, what="two messages")
    await asyncio.to_thread(thread.join, 10)
    receipts = [body for kind, body in sink.events if kind == "receipt"]
    assert receipts == [("wid-10", "read", PEER, 5.0), ("OTHER", "read", PEER, 5.0)]
    assert sink.messages[0].type == "reaction" and sink.messages[0].reaction_to == "wid-10"
    media = sink.messages[1]
    assert media.type == "image" and media.caption == "foto" and media.media_path is not None
    assert Path(media.media_path) == tmp_path / "media" / "IN2.jpg"
    assert await asyncio.to_thread(Path(media.media_path).read_bytes) == b"\xff\xd8 jpeg bytes"


async def _ready(value: bool) -> bool:
    return value


async def test_qr_codes_rotate_with_expiry_and_the_login_deadline_gives_up(tmp_path: Path) -> None:
    engine, sink = await _engine(tmp_path, qr_login_timeout=0.3)
    engine._connected = False
    start = time.time()
    engine._qr_ready("2@first")
    engine._qr_ready("2@second")
    qrs = [body for kind, body in sink.events if kind == "qr"]
    assert [code for code, _ in qrs] == ["2@first", "2@second"]
    assert qrs[0][1] - start == pytest.approx(60, abs=2) and qrs[1][1] - start == pytest.approx(20, abs=2)
    await wait_for(lambda: _ready(("disconnected", ("qr_timeout", False)) in sink.events), timeout=5, what="timeout")


async def test_a_scan_before_the_deadline_cancels_it(tmp_path: Path) -> None:
    engine, sink = await _engine(tmp_path, qr_login_timeout=0.2)
    engine._connected = False
    engine._qr_ready("2@code")
    engine._paired()
    engine._online("628111", "Budi")
    assert engine._login_deadline is not None and engine._login_deadline.cancelled()
    assert [kind for kind, _ in sink.events] == ["qr", "creds", "connected"]
    assert engine._me == ME


# -- real session processes --------------------------------------------------------------------------------
def test_the_supervisor_never_imports_neonize() -> None:
    code = (
        "import sys, supervisor.app, supervisor.cli, session_proc.engines, session_proc.neonize.engine\n"
        "assert 'neonize' not in sys.modules, 'neonize imported'\n"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr


class _Child:
    """A session process with the neonize engine against a ROUTER this test binds."""

    def __init__(self, tmp_path: Path, options: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.options = options
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.router = RouterChannel(f"ipc://{tmp_path}/sup.sock", on_event=self._on_event, heartbeat_interval=0.2)
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_path = tmp_path / "child.log"

    async def _on_event(self, _identity: bytes, op: str, body: dict[str, Any]) -> None:
        await self.events.put((op, body))

    async def start(self) -> None:
        endpoint = self.router.bind()
        self.router.track(b"nz:1")
        with open(self.stderr_path, "wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "session_proc", "--session-id", "nz", "--incarnation", "1",
                "--endpoint", endpoint, "--engine", "neonize", "--storage-dir", str(self.tmp_path),
                "--hb-interval", "0.2", "--hb-liveness", "5",
                env={**os.environ, "WA_SESSION_OPTIONS": json.dumps(self.options)},
                cwd=ROOT, stdout=err, stderr=err,
            )  # fmt: skip

    async def next(self, op: str, timeout: float = 20) -> dict[str, Any]:
        while True:
            got, body = await asyncio.wait_for(self.events.get(), timeout)
            if got == op:
                return body

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self.router.close()


async def test_engine_process_reports_dial_failures_retries_with_backoff_and_stops_at_once(tmp_path: Path) -> None:
    child = _Child(tmp_path, {"retry_initial": 0.05, "retry_max": 0.4, "proxy": unreachable_proxy()})
    await child.start()
    try:
        assert child.proc is not None
        ready = await child.next("ready")
        assert ready == {"pid": child.proc.pid, "engine": "neonize"}
        reasons = [await child.next("disconnected") for _ in range(5)]
        assert all(r["willRetry"] for r in reasons)
        assert all("dial" in r["reason"] for r in reasons), reasons  # the dial's own error is the reason
        session_dir = tmp_path / "sessions" / "nz"
        assert (session_dir / "neonize.db").is_file()  # auth state in the session's directory
        # Sends while offline are refused with a retriable code (the outbox tries again later).
        with pytest.raises(RemoteError) as info:
            await wire.ask_child(child.router, b"nz:1", OutgoingMessage(id="w1", to=PEER, text="x"), timeout=5)
        assert info.value.code == "NOT_CONNECTED"
        # Backoff: each wait doubles (with +-20% jitter) up to retry_max, never a tight loop.
        waits = [float(w) for w in re.findall(r"next try in ([0-9.]+)s", child.log())]
        assert len(waits) >= 5 and waits[0] <= 0.1 and max(waits) <= 0.4 * 1.2 + 0.05
        assert waits[4] > waits[0] * 3
        started = time.monotonic()
        await wire.ask_child(child.router, b"nz:1", wire.Stop(), timeout=5)
        assert await asyncio.wait_for(child.proc.wait(), 15) == 0
        print(f"neonize session process exited {time.monotonic() - started:.2f}s after the stop request")
        assert "Traceback" not in child.log()
    finally:
        await child.close()


async def test_engine_process_dials_through_the_sessions_proxy(tmp_path: Path) -> None:
    dialled = asyncio.Event()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.set()  # WhatsApp's connection came to the proxy; refuse it
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    child = _Child(tmp_path, {"proxy": f"socks5://127.0.0.1:{port}", "retry_initial": 0.2})
    await child.start()
    try:
        await asyncio.wait_for(dialled.wait(), 20)
        reason = (await child.next("disconnected"))["reason"]
        assert "socks" in reason or str(port) in reason, reason
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)  # the supervisor's second stop phase
        assert await asyncio.wait_for(child.proc.wait(), 15) == 0
    finally:
        await child.close()
        server.close()
        await server.wait_closed()


async def test_worker_shows_the_dial_error_and_deletes_the_session_cleanly(tmp_path: Path) -> None:
    async with running_worker(tmp_path, WA_ENGINE="neonize") as worker:
        proxy = unreachable_proxy()
        status, body = await worker.api("POST", "/session/create", json={"sessionId": "real1", "proxy": proxy})
        assert status == 200, body
        item = await worker.wait_session(
            "real1", lambda s: s["status"] == "disconnected" and "dial" in (s["lastError"] or ""), timeout=30
        )
        assert item["pid"] and pid_alive(item["pid"])
        status, body = await worker.api("GET", "/session/real1/status")
        assert status == 200 and "dial" in body["data"]["error"]
        session_dir = tmp_path / "sessions" / "real1"
        assert (session_dir / "neonize.db").is_file()
        status, body = await worker.api("DELETE", "/session/real1")
        assert status == 200, body
        await wait_for(lambda: _ready(not pid_alive(item["pid"])), timeout=15, what="process gone")
        assert not session_dir.exists()


async def test_pair_code_waits_for_the_first_qr_and_validates_the_number(tmp_path: Path) -> None:
    client = _FakeClient()
    calls: list[tuple[str, bool]] = []

    def pair_phone(phone: str, push: bool) -> str:
        calls.append((phone, push))
        return "ABCD-EFGH"

    client.PairPhone = pair_phone  # type: ignore[attr-defined]
    engine, _ = await _engine(tmp_path, client)
    engine._connected = False
    with pytest.raises(EngineError) as info:
        await engine.pair_code("12ab")
    assert info.value.code == "INVALID_PHONE"
    pending = asyncio.ensure_future(engine.pair_code("+62 812-3456-7890"))
    await asyncio.sleep(0)
    assert not pending.done() and calls == []  # whatsmeow takes a pairing request only after its first QR
    engine._qr_ready("2@code")
    assert await asyncio.wait_for(pending, 5) == "ABCD-EFGH"
    assert calls == [("6281234567890", True)]


_STUCK_GO = """
import asyncio, sys, threading
from pathlib import Path
from session_proc.engine import EngineContext
from session_proc.neonize.engine import NeonizeEngine

class Sink:
    def __getattr__(self, name):
        return lambda *a, **k: None

async def main():
    engine = NeonizeEngine(EngineContext(session_id="s", session_dir=Path(sys.argv[1]), sink=Sink()))
    # Like neonize's connect thread after the QR timeout: not a daemon, and stop() cannot end it.
    engine._runner = threading.Thread(target=threading.Event().wait, daemon=False)
    engine._runner.start()
    await engine.stop()
    print("stopped", flush=True)

asyncio.run(main())
"""


def test_stop_ends_the_process_even_when_go_never_returns(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STUCK_GO, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "stopped"
    assert proc.returncode == 0, proc.stderr
    assert "exiting hard" in proc.stderr


async def test_connection_events_from_go_reach_the_sink_in_order(tmp_path: Path) -> None:
    from neonize.proto.Neonize_pb2 import Device, PairStatus, StreamError, TemporaryBan

    client = _FakeClient()
    client.me = Device(JID=JID(User="628111", Server="s.whatsapp.net", Device=7), PushName="Toko")  # type: ignore[attr-defined]
    engine, sink = await _engine(tmp_path, client)
    engine._connected = False

    def whatsmeow() -> None:
        engine._cb_pair_status(client, PairStatus(Status=PairStatus.SUCCESS))
        engine._cb_connected(client, None)
        engine._cb_disconnected(client, None)
        engine._cb_stream_error(client, StreamError(Code="515"))
        engine._cb_connect_failure(client, ConnectFailureEv(Reason=ConnectFailureReason.INTERNAL_SERVER_ERROR))
        engine._cb_temporary_ban(client, TemporaryBan(Code=TemporaryBan.SEND_TO_TOO_MANY_PEOPLE, Expire=3600))
        engine._cb_stream_replaced(client, None)
        engine._cb_logged_out(client, LoggedOutEv(Reason=ConnectFailureReason.MAIN_DEVICE_GONE))

    await asyncio.to_thread(whatsmeow)
    await wait_for(lambda: _ready(len(sink.events) == 8), timeout=5, what="8 events")
    assert sink.events == [
        ("creds", None),
        ("connected", "628111"),
        ("disconnected", ("connection lost", True)),
        ("disconnected", ("stream error 515", True)),
        ("disconnected", ("connect failure: internal_server_error", True)),
        ("disconnected", ("temporary ban (send_to_too_many_people), expires in 3600s", False)),
        ("disconnected", ("replaced by another connection", False)),
        ("logged_out", "main_device_gone"),
    ]


class _CountingClient(_FakeClient):
    """Counts downloads; fails them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.downloads = 0
        self.download_fails = False

    def download_any(self, message: Message) -> bytes:
        self.downloads += 1
        if self.download_fails:
            raise RuntimeError("failed to download media: 403 Forbidden")
        return super().download_any(message)


async def test_media_over_the_ceiling_is_never_downloaded_and_a_failed_download_still_commits(
    tmp_path: Path,
) -> None:
    client = _CountingClient()
    engine, sink = await _engine(tmp_path, client, max_media_bytes=1000)
    big = DocumentMessage(mimetype="application/pdf", fileName="big.pdf", fileLength=500_000_000, URL="https://mmg/b")
    small = ImageMessage(mimetype="image/jpeg", fileLength=14, URL="https://mmg/s", mediaKey=b"k")
    undeclared = DocumentMessage(mimetype="application/pdf", fileName="x.pdf", URL="https://mmg/u")

    def whatsmeow() -> None:
        engine._cb_message(client, _event(Message(documentMessage=big), msg_id="BIG"))
        engine._cb_message(client, _event(Message(documentMessage=undeclared), msg_id="UNDECLARED"))
        engine._cb_message(client, _event(Message(imageMessage=small), msg_id="SMALL"))
        client.download_fails = True
        engine._cb_message(client, _event(Message(imageMessage=small), msg_id="BROKEN"))

    # Every callback returned (so whatsmeow acknowledges each message) after its commit.
    await asyncio.wait_for(asyncio.to_thread(whatsmeow), 20)
    by_id = {m.id: m for m in sink.messages}
    assert list(by_id) == ["BIG", "UNDECLARED", "SMALL", "BROKEN"]
    assert (by_id["BIG"].media_error, by_id["BIG"].media_path, by_id["BIG"].media_size) == (
        "too_large",
        None,
        500_000_000,
    )
    assert by_id["BIG"].name == "big.pdf" and by_id["BIG"].type == "document"
    assert by_id["UNDECLARED"].media_error == "too_large"
    assert by_id["SMALL"].media_error is None and by_id["SMALL"].media_path is not None
    assert by_id["BROKEN"].media_error == "download_failed" and by_id["BROKEN"].media_path is None
    assert client.downloads == 2  # SMALL and BROKEN: nothing over the ceiling was fetched

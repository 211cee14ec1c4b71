"""Edits and revokes on the neonize engine: the protobuf sent (neonize's build_edit / build_revoke) and the
mapping of incoming ones, built from neonize's own protobuf classes; without WhatsApp and without Go."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import test_neonize_engine as t  # imports neonize's protobuf modules without its Go runtime
from harness import wait_for

from session_proc.engine import EngineError, OutgoingMessage


def _import_changes() -> None:
    # neonize.builder imports neonize.utils, whose log module calls logging.basicConfig(INFO) on import:
    # keep the test run's logging as it was (the session process does the same in loader.load).
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import session_proc.neonize.changes  # noqa: F401
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


_import_changes()

from neonize.proto.Neonize_pb2 import MessageInfo, MessageSource  # noqa: E402
from neonize.proto.waCommon.WACommon_pb2 import MessageKey  # noqa: E402
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (  # noqa: E402
    ExtendedTextMessage,
    FutureProofMessage,
    ImageMessage,
    Message,
    ProtocolMessage,
)

from session_proc.neonize import changes, incoming, outgoing  # noqa: E402
from session_proc.neonize.outgoing import QuotedRef  # noqa: E402


def _protocol(protocol: ProtocolMessage, *, wrapped: bool = False, from_me: bool = False) -> t.MessageEv:
    content = Message(protocolMessage=protocol)
    if wrapped:  # as sent; whatsmeow may or may not have unwrapped it (IsEdit) before neonize sees it
        content = Message(editedMessage=FutureProofMessage(message=content))
    source = MessageSource(Chat=t._jid(t.PEER), Sender=t._jid(t.ME if from_me else t.PEER), IsFromMe=from_me)
    info = MessageInfo(ID="3EB0CHANGE", MessageSource=source, Timestamp=1_760_000_000_500)
    return t.MessageEv(Info=info, Message=content)


@pytest.mark.parametrize("wrapped", [False, True])
def test_an_incoming_edit_names_the_original_and_its_new_text_in_seconds(wrapped: bool) -> None:
    edit = ProtocolMessage(
        type=ProtocolMessage.MESSAGE_EDIT,
        key=MessageKey(remoteJID=t.PEER, fromMe=False, ID="3EB0ORIGINAL"),
        editedMessage=Message(extendedTextMessage=ExtendedTextMessage(text="fixed typo")),
        timestampMS=1_760_000_001_250,
    )
    change = changes.map_change(_protocol(edit, wrapped=wrapped))
    assert change is not None
    assert (change.id, change.kind, change.target, change.text) == ("3EB0CHANGE", "edit", "3EB0ORIGINAL", "fixed typo")
    assert (change.chat, change.sender) == (t.PEER, t.PEER)
    assert change.timestamp == pytest.approx(1_760_000_001.25)  # timestampMS: milliseconds
    # The message itself is still not one of history's messages.
    assert incoming.map_message(_protocol(edit, wrapped=wrapped), me=t.ME) is None


def test_an_edited_caption_and_a_revoke_map() -> None:
    caption = ProtocolMessage(
        type=ProtocolMessage.MESSAGE_EDIT,
        key=MessageKey(ID="3EB0PHOTO"),
        editedMessage=Message(imageMessage=ImageMessage(caption="new caption")),
    )
    change = changes.map_change(_protocol(caption))
    assert change is not None and (change.kind, change.text) == ("edit", "new caption")
    assert change.timestamp == pytest.approx(1_760_000_000.5)  # no timestampMS: the event's, in ms too
    revoke = ProtocolMessage(type=ProtocolMessage.REVOKE, key=MessageKey(remoteJID=t.PEER, ID="3EB0GONE"))
    change = changes.map_change(_protocol(revoke))
    assert change is not None and (change.kind, change.target, change.text) == ("revoke", "3EB0GONE", None)
    # Other protocol messages and ordinary messages are no change.
    other = ProtocolMessage(type=ProtocolMessage.EPHEMERAL_SETTING, key=MessageKey(ID="x"))
    assert changes.map_change(_protocol(other)) is None
    assert changes.map_change(t._event(Message(conversation="halo"))) is None


def test_edits_and_revokes_are_built_by_neonizes_builders() -> None:
    ours = QuotedRef(id="3EB0WA7", sender=t.ME, from_me=True)
    edit = outgoing.build_message(
        OutgoingMessage(id="w1", to=t.PEER, type="edit", edit_of="w0", text="v2"), target=ours
    )
    protocol = edit.editedMessage.message.protocolMessage
    assert protocol.type == ProtocolMessage.MESSAGE_EDIT
    assert (protocol.key.ID, protocol.key.remoteJID, protocol.key.fromMe) == ("3EB0WA7", t.PEER, True)
    assert protocol.editedMessage.conversation == "v2" and protocol.timestampMS > 1e12  # milliseconds
    out = OutgoingMessage(id="w2", to=t.PEER, type="edit", edit_of="w0", caption="c2", mimetype="image/png")
    captioned = outgoing.build_message(out, target=ours).editedMessage.message.protocolMessage.editedMessage
    assert captioned.imageMessage.caption == "c2"
    revoke = outgoing.build_message(OutgoingMessage(id="w3", to=t.PEER, type="revoke", revoke_of="w0"), target=ours)
    assert revoke.protocolMessage.type == ProtocolMessage.REVOKE
    key = revoke.protocolMessage.key
    assert (key.ID, key.remoteJID, key.fromMe, key.participant) == ("3EB0WA7", t.PEER, True, "")
    for bad in (
        OutgoingMessage(id="w4", to=t.PEER, type="edit", edit_of="w0"),  # no new text
        OutgoingMessage(id="w5", to=t.PEER, type="revoke"),  # no target
    ):
        with pytest.raises(EngineError) as info:
            outgoing.build_message(bad, target=ours if bad.type == "edit" else None)
        assert info.value.code == "INVALID_MESSAGE"


async def test_the_engine_edits_by_whatsapps_id_and_hands_incoming_changes_to_the_supervisor(tmp_path: Path) -> None:
    client = t._FakeClient()
    engine, sink = await t._engine(tmp_path, client)
    await engine.send(OutgoingMessage(id="wid-1", to=t.PEER, text="helo"))
    await engine.send(OutgoingMessage(id="wid-2", to=t.PEER, type="edit", edit_of="wid-1", text="hello"))
    await engine.send(OutgoingMessage(id="wid-3", to=t.PEER, type="revoke", revoke_of="wid-1"))
    # The worker names its message by its own id; WhatsApp knows it by the id whatsmeow chose.
    assert client.sent[1][1].editedMessage.message.protocolMessage.key.ID == "3EB0WA1"
    assert client.sent[2][1].protocolMessage.key.ID == "3EB0WA1"
    # Our own edit made on the phone (another device) names our message: the worker's id comes back.
    mine = ProtocolMessage(
        type=ProtocolMessage.MESSAGE_EDIT,
        key=MessageKey(ID="3EB0WA1", fromMe=True),
        editedMessage=Message(conversation="hi"),
    )
    theirs = ProtocolMessage(type=ProtocolMessage.REVOKE, key=MessageKey(ID="3EB0THEIRS"))

    def whatsmeow() -> None:
        engine._cb_message(client, _protocol(mine, wrapped=True, from_me=True))
        engine._cb_message(client, _protocol(theirs))

    thread = threading.Thread(target=whatsmeow)
    thread.start()

    async def both() -> bool:
        return len(sink.changes) == 2

    await wait_for(both, timeout=10, what="two changes")
    await asyncio.to_thread(thread.join, 10)
    assert [(c.kind, c.target, c.sender) for c in sink.changes] == [
        ("edit", "wid-1", t.ME),
        ("revoke", "3EB0THEIRS", t.PEER),
    ]
    assert sink.messages == []

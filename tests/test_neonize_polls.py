"""The neonize engine's polls, stickers, view-once and voice notes, built from neonize's own protobuf classes.

A vote travels as WhatsApp sends it (a pollUpdateMessage whose decryption yields SHA-256 digests of the
option names); the supervisor's mapping (supervisor/messaging/polls.py) must turn the engine's output
back into the names.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import test_neonize_engine as nz  # loads neonize's protobuf modules without its Go library
from neonize.proto.Neonize_pb2 import JID, MessageInfo, MessageSource
from neonize.proto.Neonize_pb2 import Message as MessageEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    FutureProofMessage,
    ImageMessage,
    Message,
    MessageContextInfo,
    PollCreationMessage,
    PollEncValue,
    PollUpdateMessage,
    PollVoteMessage,
    StickerMessage,
)

from session_proc.engine import EngineError, OutgoingMessage
from session_proc.neonize import incoming, outgoing, polls, voice_notes
from session_proc.neonize.journal import SendJournal
from supervisor.messaging import polls as mapping
from transport.wire import PollSpec

PEER, LID_VOTER = nz.PEER, "555000111@lid"


def _builder(calls: list[tuple[str, list[str], bool]]) -> polls.PollBuilder:
    """What neonize's build_poll_vote_creation returns (whatsmeow's BuildPollCreation): the poll and its secret."""

    def build(name: str, options: list[str], multiple: bool) -> Message:
        calls.append((name, options, multiple))
        creation = PollCreationMessage(
            name=name,
            options=[PollCreationMessage.Option(optionName=o) for o in options],
            selectableOptionsCount=0 if multiple else 1,
        )
        return Message(pollCreationMessage=creation, messageContextInfo=MessageContextInfo(messageSecret=b"s" * 32))

    return build


def _vote_event(poll_wa_id: str, *, vote_id: str = "3EB0VOTE", sender: JID | None = None) -> MessageEv:
    update = PollUpdateMessage(
        pollCreationMessageKey=MessageKey(remoteJID=PEER, fromMe=True, ID=poll_wa_id),
        vote=PollEncValue(encPayload=b"sealed", encIV=b"iv"),
        senderTimestampMS=1_760_000_200_500,
    )
    source = MessageSource(
        Chat=nz._jid(PEER), Sender=sender or nz._jid(PEER), SenderAlt=nz._jid(PEER), IsFromMe=False, IsGroup=False
    )
    info = MessageInfo(ID=vote_id, MessageSource=source, Timestamp=1_760_000_201_000)
    return MessageEv(Info=info, Message=Message(pollUpdateMessage=update))


def _decrypts_to(*names: str) -> Any:
    def decrypt(event: MessageEv) -> PollVoteMessage:
        assert event.Message.HasField("pollUpdateMessage")  # the whole event, as neonize needs it
        return PollVoteMessage(selectedOptions=[hashlib.sha256(n.encode()).digest() for n in names])

    return decrypt


def _poll_out(**poll: Any) -> OutgoingMessage:
    spec = PollSpec(**{"name": "Colour?", "options": ["Red", "Green", "Blue"], "multiple": False, **poll})
    return OutgoingMessage(id="wid-poll", to=PEER, type="poll", poll=spec)


# -- sending ----------------------------------------------------------------------------------------
def test_a_poll_is_built_by_neonizes_builder_with_its_secret_and_context() -> None:
    calls: list[tuple[str, list[str], bool]] = []
    out = _poll_out(multiple=True)
    out.reply_to, out.mentions = "3EB0Q", [PEER]
    quoted = outgoing.QuotedRef(id="3EB0Q", sender=PEER)
    built = outgoing.build_message(out, quoted=quoted, poll_builder=_builder(calls))
    assert calls == [("Colour?", ["Red", "Green", "Blue"], True)]
    assert [o.optionName for o in built.pollCreationMessage.options] == ["Red", "Green", "Blue"]
    assert built.messageContextInfo.messageSecret == b"s" * 32  # what votes are sealed with: kept
    context = built.pollCreationMessage.contextInfo
    assert (context.stanzaID, list(context.mentionedJID)) == ("3EB0Q", [PEER])
    with pytest.raises(EngineError) as info:
        outgoing.build_message(OutgoingMessage(id="x", to=PEER, type="poll"), poll_builder=_builder([]))
    assert info.value.code == "INVALID_MESSAGE"


async def test_the_engine_sends_a_poll_and_maps_votes_on_it_to_the_workers_id(tmp_path: Path) -> None:
    calls: list[tuple[str, list[str], bool]] = []

    class Client(nz._FakeClient):
        decrypt: Any = staticmethod(_decrypts_to("Blue"))

        def build_poll_vote_creation(self, name: str, options: list[str], kind: Any) -> Message:
            return _builder(calls)(name, options, kind.value == 0)  # neonize's VoteType: MULTIPLE = 0

        def decrypt_poll_vote(self, event: MessageEv) -> PollVoteMessage:
            return Client.decrypt(event)

    client = Client()
    engine, sink = await nz._engine(tmp_path, client)
    votes = sink.votes
    await engine.send(_poll_out())
    assert calls == [("Colour?", ["Red", "Green", "Blue"], False)]
    wa_id = "3EB0WA1"
    assert client.sent[0][1].HasField("pollCreationMessage")

    # A vote arrives on whatsmeow's thread; the callback returns once the vote is committed.
    await asyncio.to_thread(engine._cb_message, client, _vote_event(wa_id))
    assert len(votes) == 1
    vote = votes[0]
    assert (vote.id, vote.poll_id, vote.voter, vote.error) == ("3EB0VOTE", "wid-poll", PEER, None)
    assert vote.timestamp == pytest.approx(1_760_000_200.5)  # the voter's own time, in milliseconds
    poll = {"name": "Colour?", "options": ["Red", "Green", "Blue"], "multiple": False}
    assert mapping.option_names(poll, vote.option_hashes) == ["Blue"]

    # After a restart the id mapping comes from the journal, not the memory of the last process.
    engine2, sink2 = await nz._engine(tmp_path, client)
    engine2._worker_by_wa = type(engine2._worker_by_wa)(10)
    Client.decrypt = staticmethod(_decrypts_to())  # an empty vote: retracted
    await asyncio.to_thread(engine2._cb_message, client, _vote_event(wa_id, vote_id="3EB0VOTE2"))
    assert [(v.poll_id, v.option_hashes) for v in sink2.votes] == [("wid-poll", [])]
    assert SendJournal.open(tmp_path).worker_id(wa_id) == "wid-poll"


async def test_a_vote_that_cannot_be_decrypted_is_reported_not_dropped(tmp_path: Path) -> None:
    class Client(nz._FakeClient):
        def decrypt_poll_vote(self, event: MessageEv) -> PollVoteMessage:
            raise RuntimeError("failed to get message secret: not found")

    client = Client()
    engine, sink = await nz._engine(tmp_path, client)
    await asyncio.to_thread(engine._cb_message, client, _vote_event("3EB0UNKNOWN"))
    assert [(v.poll_id, v.error, v.option_hashes) for v in sink.votes] == [("3EB0UNKNOWN", "undecryptable", [])]
    assert sink.messages == []  # not mistaken for a message either


def test_a_voter_known_by_lid_is_named_by_phone() -> None:
    lid = JID(User="555000111", Server="lid")
    ref = polls.vote_ref(_vote_event("3EB0P", sender=lid))
    assert ref is not None and (ref.voter, ref.poll_wa_id, ref.vote_id) == (PEER, "3EB0P", "3EB0VOTE")
    assert polls.vote_ref(nz._event(Message(conversation="hi"))) is None


def test_stickers_view_once_and_voice_notes_build() -> None:
    upload = nz._upload()
    sticker = outgoing.build_message(
        OutgoingMessage(id="s", to=PEER, type="sticker", mimetype="image/webp"), upload=upload
    ).stickerMessage
    assert (sticker.URL, sticker.mimetype, sticker.fileLength) == (upload.url, "image/webp", 1234)
    image = outgoing.build_message(OutgoingMessage(id="i", to=PEER, type="image", view_once=True), upload=upload)
    assert image.imageMessage.viewOnce
    video = outgoing.build_message(OutgoingMessage(id="v", to=PEER, type="video", view_once=True), upload=upload)
    assert video.videoMessage.viewOnce
    plain = outgoing.build_message(OutgoingMessage(id="p", to=PEER, type="image"), upload=upload)
    assert not plain.imageMessage.HasField("viewOnce")
    voice = outgoing.build_message(
        OutgoingMessage(id="a", to=PEER, type="audio", voice=True, mimetype="audio/mpeg"), upload=upload
    ).audioMessage
    assert voice.PTT and voice.mimetype == "audio/ogg; codecs=opus"  # converted to Opus before the upload


def test_received_polls_stickers_view_once_and_voice_notes_map() -> None:
    creation = PollCreationMessage(
        name="Lunch?", options=[PollCreationMessage.Option(optionName=o) for o in ("a", "b")], selectableOptionsCount=1
    )
    mapped = incoming.map_message(nz._event(Message(pollCreationMessageV3=creation)), me=nz.ME)
    assert mapped is not None and mapped.message.type == "poll"
    assert mapped.message.poll == PollSpec(name="Lunch?", options=["a", "b"], multiple=False)

    sticker = Message(stickerMessage=StickerMessage(mimetype="image/webp", fileLength=10, URL="u", mediaKey=b"k"))
    mapped = incoming.map_message(nz._event(sticker), me=nz.ME)
    assert mapped is not None and (mapped.message.type, mapped.message.view_once) == ("sticker", False)

    image = Message(imageMessage=ImageMessage(mimetype="image/jpeg", fileLength=3))
    once = Message(viewOnceMessageV2=FutureProofMessage(message=image))
    mapped = incoming.map_message(nz._event(once), me=nz.ME)
    assert mapped is not None and (mapped.message.type, mapped.message.view_once) == ("image", True)

    audio = Message(audioMessage=AudioMessage(mimetype="audio/ogg; codecs=opus", PTT=True, fileLength=7))
    mapped = incoming.map_message(nz._event(audio), me=nz.ME)
    assert mapped is not None and (mapped.message.voice, mapped.message.view_once) == (True, False)


# -- voice notes and ffmpeg ---------------------------------------------------------------------------
def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_voice_notes_pass_ogg_through_and_convert_the_rest(tmp_path: Path) -> None:
    ogg = tmp_path / "v.ogg"
    ogg.write_bytes(b"OggS opus")
    assert voice_notes.as_opus(ogg, "audio/ogg; codecs=opus", ffmpeg="/nonexistent") == b"OggS opus"
    mp3 = tmp_path / "v.mp3"
    mp3.write_bytes(b"ID3 mp3")
    # A stand-in ffmpeg: checks it is asked for Opus in Ogg from the file, answers on stdout.
    fake = _script(
        tmp_path / "ffmpeg",
        'echo "$@" | grep -q -- "-i .*v.mp3 .*-c:a libopus .*-f ogg pipe:1" && printf OggS-converted',
    )
    assert voice_notes.as_opus(mp3, "audio/mpeg", ffmpeg=fake) == b"OggS-converted"
    broken = _script(tmp_path / "ffmpeg-broken", 'echo "Invalid data found when processing input" >&2; exit 1')
    with pytest.raises(EngineError) as info:
        voice_notes.as_opus(mp3, "audio/mpeg", ffmpeg=broken)
    assert info.value.code == "MEDIA_CONVERSION_FAILED" and "Invalid data" in info.value.message


def test_a_missing_ffmpeg_is_a_clear_final_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg anywhere
    mp3 = tmp_path / "v.mp3"
    mp3.write_bytes(b"ID3 mp3")
    with pytest.raises(EngineError) as info:
        voice_notes.as_opus(mp3, "audio/mpeg")
    assert info.value.code == "FFMPEG_MISSING" and "install" in info.value.message
    from supervisor.messaging.outbox import PERMANENT_ERRORS

    assert "FFMPEG_MISSING" in PERMANENT_ERRORS  # failed at once with its reason, not retried for an hour
    assert os.environ["PATH"] == str(tmp_path)

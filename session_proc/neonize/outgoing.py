"""OutgoingMessage -> the WhatsApp ``Message`` protobuf neonize sends.

Pure: media arrives already uploaded (an ``UploadResponse``), the quoted
message of a reply comes from the engine's cache, so tests check every field
without a network. Built by hand rather than with neonize's ``build_*``
helpers, which upload inside (a network call), fetch URLs without a timeout and
need ffmpeg; plain text goes out as ``conversation`` (neonize's string path
would make it an ``extendedTextMessage``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from neonize.proto.Neonize_pb2 import UploadResponse
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    ContactMessage,
    ContextInfo,
    DocumentMessage,
    ExtendedTextMessage,
    ImageMessage,
    LocationMessage,
    Message,
    ReactionMessage,
    StickerMessage,
    VideoMessage,
)

from session_proc.engine import EngineError, OutgoingMessage

if TYPE_CHECKING:
    from session_proc.neonize.polls import PollBuilder

MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
SEND_TYPES = ("text", "location", "contact", "reaction", "poll", *MEDIA_TYPES, "edit", "revoke")
DEFAULT_MIMETYPES = {
    "image": "image/jpeg",
    "document": "application/octet-stream",
    "audio": "audio/ogg; codecs=opus",
    "video": "video/mp4",
    "sticker": "image/webp",
}
VOICE_MIMETYPE = "audio/ogg; codecs=opus"  # what a voice note is (the engine converts other audio first)


@dataclass(slots=True)
class QuotedRef:
    """A message a reply quotes or a reaction targets, as WhatsApp knows it."""

    id: str  # WhatsApp's id of the message
    sender: str  # JID of who wrote it
    from_me: bool = False
    message: Message | None = None  # its content, shown in the reply bubble when known


def build_message(
    out: OutgoingMessage,
    *,
    upload: UploadResponse | None = None,
    quoted: QuotedRef | None = None,
    target: QuotedRef | None = None,
    now: float | None = None,
    poll_builder: PollBuilder | None = None,
) -> Message:
    """The Message to send for ``out``.

    ``upload`` is the uploaded media of image/document/audio/video; ``quoted``
    the message replied to (``out.reply_to``); ``target`` the message reacted to
    (``out.reaction_to``), edited or revoked (``out.edit_of``, ``out.revoke_of``:
    changes.py); ``poll_builder`` neonize's poll builder (a Go call, so handed in).
    Raises EngineError(INVALID_MESSAGE / UNSUPPORTED_TYPE) for a message that cannot be built.
    """
    now = time.time() if now is None else now
    kind = out.type
    if kind == "text":
        if not out.text:
            raise EngineError("INVALID_MESSAGE", "a text message needs text")
        context = _context(out, quoted)
        if context is None:
            return Message(conversation=out.text)
        return Message(extendedTextMessage=ExtendedTextMessage(text=out.text, contextInfo=context))
    if kind in MEDIA_TYPES:
        if upload is None:
            raise EngineError("MEDIA_MISSING", f"a {kind} message needs its media uploaded first")
        return _media(out, upload, _context(out, quoted), now)
    if kind == "location":
        if out.latitude is None or out.longitude is None:
            raise EngineError("INVALID_MESSAGE", "a location needs latitude and longitude")
        location = LocationMessage(degreesLatitude=float(out.latitude), degreesLongitude=float(out.longitude))
        if out.name:
            location.name = out.name
        if out.address:
            location.address = out.address
        if (context := _context(out, quoted)) is not None:
            location.contextInfo.CopyFrom(context)
        return Message(locationMessage=location)
    if kind == "contact":
        if not out.vcard:
            raise EngineError("INVALID_MESSAGE", "a contact needs a vcard")
        contact = ContactMessage(displayName=out.name or _vcard_name(out.vcard) or "", vcard=out.vcard)
        if (context := _context(out, quoted)) is not None:
            contact.contextInfo.CopyFrom(context)
        return Message(contactMessage=contact)
    if kind == "reaction":
        if target is None:
            raise EngineError("INVALID_MESSAGE", "a reaction needs reaction_to, the id of the message reacted to")
        key = MessageKey(remoteJID=out.to, fromMe=target.from_me, ID=target.id)
        if out.to.endswith("@g.us") and not target.from_me:
            key.participant = target.sender  # in groups the key names the author
        return Message(reactionMessage=ReactionMessage(key=key, text=out.text or "", senderTimestampMS=int(now * 1000)))
    if kind == "poll" and poll_builder is not None:
        from session_proc.neonize.polls import build_poll

        return build_poll(out, poll_builder, _context(out, quoted))
    if kind in ("edit", "revoke"):
        from session_proc.neonize.changes import build_change  # it imports this module

        return build_change(out, target)
    raise EngineError("UNSUPPORTED_TYPE", f"cannot send messages of type {kind!r}; known: {', '.join(SEND_TYPES)}")


def _context(out: OutgoingMessage, quoted: QuotedRef | None) -> ContextInfo | None:
    """Mentions and the quoted message, or None when there are neither."""
    if not out.mentions and quoted is None:
        return None
    context = ContextInfo(mentionedJID=list(out.mentions))
    if quoted is not None:
        context.stanzaID = quoted.id
        context.participant = quoted.sender
        if quoted.message is not None:
            context.quotedMessage.CopyFrom(quoted.message)
    return context


def _media(out: OutgoingMessage, upload: UploadResponse, context: ContextInfo | None, now: float) -> Message:
    mimetype = out.mimetype or DEFAULT_MIMETYPES[out.type]
    common = {
        "URL": upload.url,
        "directPath": upload.DirectPath,
        "mediaKey": upload.MediaKey,
        "fileEncSHA256": upload.FileEncSHA256,
        "fileSHA256": upload.FileSHA256,
        "fileLength": upload.FileLength,
        "mimetype": mimetype,
        "mediaKeyTimestamp": int(now),
    }
    if context is not None:
        common["contextInfo"] = context
    # As neonize's builders do it: the part's own viewOnce flag; a voice note is Opus sent push-to-talk.
    once = {"viewOnce": True} if out.view_once else {}
    if out.type == "image":
        return Message(imageMessage=ImageMessage(caption=out.caption, **once, **common))
    if out.type == "video":
        return Message(videoMessage=VideoMessage(caption=out.caption, **once, **common))
    if out.type == "audio":
        if out.voice:
            common["mimetype"] = VOICE_MIMETYPE
        return Message(audioMessage=AudioMessage(PTT=out.voice, **common))
    if out.type == "sticker":
        return Message(stickerMessage=StickerMessage(**common))
    name = out.filename or "file"
    return Message(documentMessage=DocumentMessage(fileName=name, title=name, caption=out.caption, **common))


def _vcard_name(vcard: str) -> str | None:
    for line in vcard.splitlines():
        if line.upper().startswith("FN:") or line.upper().startswith("FN;"):
            return line.split(":", 1)[1].strip() or None
    return None

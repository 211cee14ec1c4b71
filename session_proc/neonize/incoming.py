"""What neonize reports, as the engine interface's records: messages, receipts, connection reasons.

Pure functions over neonize's own protobuf types (``neonize.proto``), so the
tests build real events and check the mapping without a network. Timestamps:
message events carry milliseconds, receipts seconds (measured in neonize 0.5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from neonize.proto.Neonize_pb2 import JID, ConnectFailureReason
from neonize.proto.Neonize_pb2 import ConnectFailure as ConnectFailureEv
from neonize.proto.Neonize_pb2 import LoggedOut as LoggedOutEv
from neonize.proto.Neonize_pb2 import Message as MessageEv
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message

from session_proc.engine import IncomingMessage
from transport.wire import PollSpec

# Envelopes that only wrap the real content (disappearing, view-once, captioned documents).
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
)
# Media fields of a Message and the API type each becomes.
MEDIA_FIELDS = {
    "imageMessage": "image",
    "stickerMessage": "sticker",
    "documentMessage": "document",
    "audioMessage": "audio",
    "videoMessage": "video",
    "ptvMessage": "video",  # round video notes
}
RECEIPT_STATUS = {
    ReceiptEv.ReceiptType.DELIVERED: "delivered",
    ReceiptEv.ReceiptType.READ: "read",
    ReceiptEv.ReceiptType.PLAYED: "read",  # a voice note listened to
}
# Server answers after which whatsmeow reconnects by itself; any other refusal would repeat.
_RETRIED_FAILURES = frozenset({ConnectFailureReason.INTERNAL_SERVER_ERROR, ConnectFailureReason.SERVICE_UNAVAILABLE})


@dataclass(slots=True)
class MappedMessage:
    """An incoming message as the API sees it, plus the part to download when it carries media."""

    message: IncomingMessage
    content: Message  # the unwrapped message (what a reply quotes)
    media: Message | None = None  # a Message holding only the media part, for download_any


@dataclass(slots=True)
class ReceiptUpdate:
    """Delivery or read receipts for one or more sent messages."""

    ids: list[str]
    status: str
    chat: str
    timestamp: float
    by: str | None = None  # a group: the participant whose receipt it is


def jid_str(jid: JID) -> str:
    """``user@server`` without device or agent (``628123@s.whatsapp.net``, ``1203...@g.us``)."""
    if not jid.User:
        return str(jid.Server)
    return f"{jid.User}@{jid.Server}"


def parse_jid(value: str) -> JID:
    """A JID from ``628123@s.whatsapp.net``, ``1203...@g.us`` or plain digits; ValueError otherwise."""
    user, _, server = value.partition("@")
    if not server:
        server = "s.whatsapp.net"
    user = user.split(":", 1)[0]  # drop a device suffix
    if not user or not server or (server == "s.whatsapp.net" and not user.isdigit()):
        raise ValueError(f"{value!r} is not a WhatsApp JID")
    return JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def unwrap(message: Message) -> Message:
    """The content inside disappearing/view-once/captioned-document envelopes."""
    for _ in range(4):  # envelopes nest at most a couple deep
        for name in _WRAPPERS:
            if message.HasField(name):  # type: ignore[arg-type]
                message = getattr(message, name).message
                break
        else:
            return message
    return message


def phone_jid(jid: JID, alt: JID) -> str:
    # Newer chats address people by LID (hidden ids); the phone-number JID rides along as *Alt.
    if jid.Server == "lid" and alt.User:
        return jid_str(alt)
    return jid_str(jid)


def map_message(event: MessageEv, *, me: str | None = None) -> MappedMessage | None:
    """The IncomingMessage for a neonize message event; None for what the API does not expose
    (protocol messages, edits, polls, key distribution)."""
    info = event.Info
    source = info.MessageSource
    content = unwrap(event.Message)
    from_me = source.IsFromMe
    sender = phone_jid(source.Sender, source.SenderAlt)
    chat = phone_jid(source.Chat, source.RecipientAlt if from_me else source.SenderAlt)
    if source.IsGroup or from_me:
        to = chat
    else:
        to = me or ""
    msg = IncomingMessage(
        id=info.ID,
        chat=chat,
        sender=sender,
        to=to,
        type="text",
        timestamp=info.Timestamp / 1000.0,
        from_me=from_me,
        participant=sender if source.IsGroup else None,  # issue 17: who in the group sent it
    )
    context: ContextInfo | None = None
    media: Message | None = None
    if content.HasField("conversation"):
        msg.text = content.conversation
    elif content.HasField("extendedTextMessage"):
        msg.text = content.extendedTextMessage.text
        context = content.extendedTextMessage.contextInfo
    elif (field := _media_field(content)) is not None:
        part = getattr(content, field)
        msg.type = MEDIA_FIELDS[field]
        msg.mimetype = part.mimetype or None
        msg.media_size = int(part.fileLength) if part.HasField("fileLength") else None
        if field in ("imageMessage", "documentMessage", "videoMessage"):
            msg.caption = part.caption or None
        if field == "documentMessage":
            msg.name = part.fileName or part.title or None
        context = part.contextInfo
        media = Message()
        getattr(media, field).CopyFrom(part)
    elif content.HasField("locationMessage") or content.HasField("liveLocationMessage"):
        loc = content.locationMessage if content.HasField("locationMessage") else content.liveLocationMessage
        msg.type = "location"
        msg.latitude, msg.longitude = loc.degreesLatitude, loc.degreesLongitude
        if content.HasField("locationMessage"):
            msg.name = content.locationMessage.name or None
            msg.address = content.locationMessage.address or None
        context = loc.contextInfo
    elif content.HasField("contactMessage"):
        msg.type = "contact"
        msg.name = content.contactMessage.displayName or None
        msg.vcard = content.contactMessage.vcard or None
        context = content.contactMessage.contextInfo
    elif (poll := poll_spec(content)) is not None:
        msg.type, msg.poll = "poll", poll
        context = getattr(content, _poll_field(content) or POLL_FIELDS[0]).contextInfo
    elif content.HasField("reactionMessage"):
        msg.type = "reaction"
        msg.text = content.reactionMessage.text  # "" means the reaction was removed
        msg.reaction_to = content.reactionMessage.key.ID or None
    else:
        return None
    if context is not None:
        msg.reply_to = context.stanzaID or None
        msg.mentions = list(context.mentionedJID)
    msg.view_once, msg.voice = _view_once(event.Message, content), content.audioMessage.PTT
    return MappedMessage(message=msg, content=content, media=media)


# -- polls, stickers, view-once, voice notes ---------------------------------------------------------
# WhatsApp has sent polls under three fields over the years; neonize's builder picks one.
POLL_FIELDS = ("pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3")
_VIEW_ONCE_WRAPPERS = ("viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension")


def _poll_field(message: Message) -> str | None:
    return next((f for f in POLL_FIELDS if message.HasField(f)), None)  # type: ignore[arg-type]


def poll_spec(content: Message) -> PollSpec | None:
    """A poll's question and options; None when ``content`` is no poll."""
    field = _poll_field(content)
    if field is None:
        return None
    poll = getattr(content, field)
    # selectableOptionsCount 0 means any number; 1 is a single-choice poll.
    return PollSpec(
        name=poll.name, options=[o.optionName for o in poll.options], multiple=poll.selectableOptionsCount != 1
    )


def _view_once(message: Message, content: Message) -> bool:
    # Phones wrap a view-once photo (viewOnceMessageV2); neonize's builders set the part's own flag.
    wrapped = any(message.HasField(w) for w in _VIEW_ONCE_WRAPPERS)  # type: ignore[arg-type]
    return wrapped or content.imageMessage.viewOnce or content.videoMessage.viewOnce


def _media_field(content: Message) -> str | None:
    for name in MEDIA_FIELDS:
        if content.HasField(name):  # type: ignore[arg-type]
            return name
    return None


def map_receipt(event: ReceiptEv) -> ReceiptUpdate | None:
    """Delivered/read receipts from the other side; None for our own devices' and technical receipts."""
    status = RECEIPT_STATUS.get(event.Type)
    if status is None or event.MessageSource.IsFromMe or not event.MessageIDs:
        return None
    return ReceiptUpdate(
        ids=list(event.MessageIDs),
        status=status,
        chat=jid_str(event.MessageSource.Chat),
        timestamp=float(event.Timestamp),
        by=phone_jid(event.MessageSource.Sender, event.MessageSource.SenderAlt)
        if event.MessageSource.IsGroup
        else None,
    )


def connect_failure(event: ConnectFailureEv) -> tuple[str, bool]:
    """(reason, will_retry) for a refused connection: only server-side hiccups are retried."""
    name = _reason_name(event.Reason)
    reason = f"connect failure: {name}" + (f" ({event.Message})" if event.Message else "")
    return reason, event.Reason in _RETRIED_FAILURES


def logged_out_reason(event: LoggedOutEv) -> str:
    """Why the device was unlinked, e.g. ``logged_out`` (removed on the phone) or ``main_device_gone``."""
    return _reason_name(event.Reason)


def _reason_name(value: int) -> str:
    try:
        return str(ConnectFailureReason.Name(value)).lower()  # type: ignore[arg-type]
    except ValueError:
        return f"reason {value}"

"""Edits and revokes on real WhatsApp: the protobuf to send, and what an incoming one means.

Sending goes through neonize's own builders: ``build_edit`` (a ``protocolMessage`` of type MESSAGE_EDIT
wrapped in ``editedMessage``, ``timestampMS`` in milliseconds) and ``build_revoke`` (type REVOKE). Not
``client.revoke_message``/``client.build_revoke``: they decide "from me" with ``get_me()``, which aborts
the process when called at the wrong moment, and mislabel LID senders. We only ever change our own
messages, so the revoke's key is ours by construction.

Receiving: an edit arrives as a message whose ``protocolMessage`` (possibly inside the ``editedMessage``
wrapper, which whatsmeow may already have removed and flagged ``IsEdit``) has type MESSAGE_EDIT, names
the original by ``key.ID`` and carries the new content in ``editedMessage``; a revoke is type REVOKE.
Times: the event's timestamp and ``timestampMS`` are milliseconds.
"""

from __future__ import annotations

import time

from neonize.builder import build_edit, build_revoke
from neonize.proto.Neonize_pb2 import Message as MessageEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    DocumentMessage,
    ImageMessage,
    Message,
    ProtocolMessage,
    VideoMessage,
)

from session_proc.engine import EngineError, MessageChange, OutgoingMessage
from session_proc.neonize.incoming import parse_jid, phone_jid, unwrap
from session_proc.neonize.outgoing import QuotedRef

CHANGE_TYPES = ("edit", "revoke")


def build_change(out: OutgoingMessage, target: QuotedRef | None) -> Message:
    """The Message that edits or revokes ``target`` (our own message, by WhatsApp's id) in ``out.to``."""
    if target is None:
        raise EngineError("INVALID_MESSAGE", f"a {out.type} needs the id of the message it changes")
    try:
        chat = parse_jid(out.to)
    except ValueError as exc:
        raise EngineError("INVALID_RECIPIENT", str(exc)) from None
    if out.type == "revoke":
        # sender and myJID alike: the key says fromMe, which is true of every message we may revoke.
        return build_revoke(chat, chat, target.id, chat)
    if out.caption is not None:
        edited = _captioned(out.mimetype or "", out.caption)
    elif out.text:
        edited = Message(conversation=out.text)
    else:
        raise EngineError("INVALID_MESSAGE", "an edit needs the new text")
    return build_edit(chat, target.id, edited)


def _captioned(mimetype: str, caption: str) -> Message:
    if mimetype.startswith("image/"):
        return Message(imageMessage=ImageMessage(caption=caption))
    if mimetype.startswith("video/"):
        return Message(videoMessage=VideoMessage(caption=caption))
    return Message(documentMessage=DocumentMessage(caption=caption))


def map_change(event: MessageEv) -> MessageChange | None:
    """The MessageChange for an incoming edit or revoke; None for any other message."""
    content = event.Message
    if content.HasField("editedMessage"):
        content = content.editedMessage.message
    content = unwrap(content)
    if not content.HasField("protocolMessage"):
        return None
    protocol = content.protocolMessage
    if protocol.type == ProtocolMessage.MESSAGE_EDIT:
        kind, text = "edit", _text(protocol.editedMessage)
    elif protocol.type == ProtocolMessage.REVOKE:
        kind, text = "revoke", None
    else:
        return None
    if not protocol.key.ID:
        return None
    info = event.Info
    source = info.MessageSource
    millis = protocol.timestampMS if protocol.HasField("timestampMS") and protocol.timestampMS else info.Timestamp
    return MessageChange(
        id=info.ID,
        chat=phone_jid(source.Chat, source.RecipientAlt if source.IsFromMe else source.SenderAlt),
        sender=phone_jid(source.Sender, source.SenderAlt),
        target=protocol.key.ID,
        kind=kind,
        timestamp=millis / 1000.0 if millis else time.time(),
        text=text,
    )


def _text(edited: Message) -> str:
    """The new text of an edit: the text, or the caption of edited media."""
    if edited.HasField("conversation"):
        return str(edited.conversation)
    if edited.HasField("extendedTextMessage"):
        return str(edited.extendedTextMessage.text)
    for field in ("imageMessage", "videoMessage", "documentMessage"):
        if edited.HasField(field):  # type: ignore[arg-type]
            return str(getattr(edited, field).caption)
    return ""

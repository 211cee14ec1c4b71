"""Presence and calls as neonize reports them, and the arguments of neonize's presence and read calls.

Pure functions over neonize's own protobuf and enum types, so tests check them without a network.
Only neonize's enum members ever reach its presence calls: ``send_chat_presence`` indexes a
two-entry Go slice with the value it is given, and any other value panics Go, which ends the
whole session process (measured in neonize 0.5.2).
"""

from __future__ import annotations

from typing import Any

from neonize.proto.Neonize_pb2 import CallOffer as CallOfferEv
from neonize.proto.Neonize_pb2 import ChatPresence as ChatPresenceEv
from neonize.proto.Neonize_pb2 import Presence as PresenceEv
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, Presence, ReceiptType

from session_proc.engine import IncomingCall
from session_proc.neonize.incoming import jid_str, phone_jid

# Read receipts as WhatsApp's blue ticks; PLAYED (a voice note listened to) is not what POST /read says.
READ_RECEIPT = ReceiptType.READ
ACCOUNT_PRESENCE = {"available": Presence.AVAILABLE, "unavailable": Presence.UNAVAILABLE}
# The API's chat states as send_chat_presence's two enums: recording is composing audio.
CHAT_PRESENCE: dict[str, tuple[ChatPresence, ChatPresenceMedia]] = {
    "typing": (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
    "recording": (ChatPresence.CHAT_PRESENCE_COMPOSING, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO),
    "paused": (ChatPresence.CHAT_PRESENCE_PAUSED, ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT),
}


def _seconds(value: int) -> float | None:
    """Epoch seconds from neonize's integer time (seconds or milliseconds); None for none."""
    if value <= 0:
        return None
    return value / 1000.0 if value > 1e11 else float(value)


def chat_presence(event: ChatPresenceEv) -> tuple[str, str, str] | None:
    """``(chat, sender, state)`` of a ChatPresence event; None for a state the API does not know."""
    source = event.MessageSource
    sender = phone_jid(source.Sender, source.SenderAlt)
    chat = jid_str(source.Chat) if source.IsGroup else sender
    if event.State == ChatPresenceEv.COMPOSING:
        state = "recording" if event.Media == ChatPresenceEv.AUDIO else "typing"
    elif event.State == ChatPresenceEv.PAUSED:
        state = "paused"
    else:
        return None
    return chat, sender, state


def presence(event: PresenceEv) -> tuple[str, bool, float | None]:
    """``(jid, online, last_seen)`` of a Presence event (last_seen in epoch seconds, when told)."""
    return jid_str(event.From), not event.Unavailable, _seconds(event.LastSeen)


def call_offer(event: CallOfferEv) -> tuple[IncomingCall, Any] | None:
    """The call of a CallOffer event and the caller's JID as delivered (what ``reject_call`` needs);
    None without a call id."""
    meta = event.basicCallMeta
    if not meta.callID:
        return None
    caller = meta.callCreator if meta.callCreator.User else getattr(meta, "from")
    call = IncomingCall(
        id=meta.callID,
        sender=phone_jid(caller, meta.callCreatorAlt),
        # The offer node lists the media offered: a video call carries a <video> child.
        video=any(node.Tag == "video" for node in event.data.Nodes),
        timestamp=_seconds(meta.timestamp) or 0.0,
    )
    return call, getattr(meta, "from") if getattr(meta, "from").User else caller

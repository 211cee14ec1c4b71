"""The interface between a session process and the WhatsApp engine it runs.

An engine (``neonize`` for real WhatsApp, ``sim`` for the simulated network)
drives one linked device. It reports what happens through an
:class:`EngineSink` and takes commands through the :class:`Engine` methods.
Both run on the session process's asyncio loop; engines whose library calls
back from other threads must hop onto the loop before touching the sink.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# The messages an engine sends and receives are bodies of the wire contract: declared there, once.
from transport import wire
from transport.wire import (
    ContactCard,
    IncomingCall,
    IncomingMessage,
    MessageChange,
    OutgoingMessage,
    PhoneCheck,
    PollVote,
    ReadMessage,
    SendResult,
)

__all__ = [
    "MESSAGE_TYPES",
    "ContactCard",
    "Engine",
    "EngineContext",
    "EngineError",
    "EngineSink",
    "IncomingCall",
    "IncomingMessage",
    "MessageChange",
    "OutgoingMessage",
    "PhoneCheck",
    "PollVote",
    "ReadMessage",
    "SendResult",
]

MESSAGE_TYPES = (
    "text",
    "image",
    "document",
    "audio",
    "video",
    "location",
    "contact",
    "reaction",
    "sticker",
    "poll",
    "edit",
    "revoke",
)


class EngineError(Exception):
    """A command the engine could not carry out; ``code`` is a machine code for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class EngineContext:
    """What an engine is given to start with."""

    session_id: str
    session_dir: Path  # the engine keeps its auth state here (STORAGE_DIR/sessions/<id>/)
    sink: EngineSink
    incarnation: int = 0  # which start of the session this process is (the suffix of its routing identity)
    proxy: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # engine-specific, e.g. {"hub": "tcp://..."}


class EngineSink(Protocol):
    """Where an engine reports. All methods are called on the process's event loop."""

    def on_qr(self, code: str, expires_at: float) -> None:
        """A new QR string to show; it stops being scannable at ``expires_at`` (epoch seconds)."""

    def on_connected(self, phone: str, push_name: str | None) -> None:
        """The device is linked and online as ``phone`` (digits)."""

    def on_disconnected(self, reason: str, *, will_retry: bool) -> None:
        """The connection dropped; ``will_retry`` is False when the engine gave up (e.g. replaced)."""

    def on_logged_out(self, reason: str) -> None:
        """The device was unlinked; its credentials are gone and a new QR is needed."""

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float, *, by: str | None = None) -> None:
        """A sent message was ``delivered`` or ``read`` (in a group: by the participant ``by``)."""

    def on_credentials_changed(self) -> None:
        """The auth state on disk changed (paired, keys rotated): time for a backup."""

    async def on_message(self, message: IncomingMessage) -> None:
        """A received message; returns once the supervisor has committed it, raises if not."""

    # -- presence and calls --
    def on_chat_presence(self, chat: str, sender: str, state: str) -> None:
        """``sender`` shows ``state`` (typing, recording, paused) in ``chat``; nothing is committed."""

    def on_presence(self, jid: str, online: bool, last_seen: float | None) -> None:
        """``jid`` went online or offline (``last_seen`` epoch seconds, when known); nothing is committed."""

    async def on_call(self, call: IncomingCall) -> bool:
        """A call offer; returns once the supervisor committed it, with whether to reject it (raises if not
        committed: the engine must then leave the call unacknowledged)."""

    async def on_call_rejected(self, call_id: str, sender: str) -> None:
        """The engine rejected a call; returns once the supervisor committed it."""

    async def on_poll_vote(self, vote: PollVote) -> None:
        """A vote on a poll (option hashes as received); returns once committed, raises if not."""

    async def on_message_change(self, change: MessageChange) -> None:
        """Someone edited or deleted for everyone a message; returns once the supervisor has committed it,
        raises if not (like ``on_message``: acknowledged to the network only then)."""

    async def on_group_event(self, event: wire.GroupEvent) -> None:
        """A change of a group; returns once the supervisor has committed its event, raises if not."""


class Engine(abc.ABC):
    """One linked WhatsApp device."""

    name: str = "engine"

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    async def start(self) -> None:
        """Start connecting (with stored credentials, else by QR); return without waiting for the link."""

    @abc.abstractmethod
    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message with its chosen id; raise EngineError when it cannot be sent."""

    @abc.abstractmethod
    async def logout(self) -> None:
        """Unlink the device from the account and delete its credentials."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect and release everything; the credentials stay for the next start."""

    async def pair_code(self, phone: str) -> str:
        """Ask for a pairing code for ``phone`` instead of a QR scan."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot pair by code")

    # -- read receipts and presence --
    async def mark_read(self, chat: str, messages: list[ReadMessage]) -> None:
        """Send read receipts for received ``messages`` of ``chat`` to their senders."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot send read receipts")

    async def send_presence(self, state: str, chat: str | None) -> None:
        """Show the account available/unavailable, or a chat state (typing, recording, paused) in ``chat``."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot send presence")

    # -- contacts, blocking, disappearing messages (account operations; connected only) --------------
    async def check_phones(self, phones: list[str]) -> list[PhoneCheck]:
        """Whether each number (digits) is on WhatsApp, in the order asked."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot check numbers")

    async def contact_info(self, jid: str) -> ContactCard:
        """A user's profile; EngineError NOT_ON_WHATSAPP for a number that is not on WhatsApp."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot look contacts up")

    async def set_blocked(self, jid: str, blocked: bool) -> None:
        """Block or unblock a user."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot block")

    async def blocklist(self) -> list[str]:
        """The user JIDs the account blocked."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot read the blocklist")

    async def set_disappearing(self, chat: str, seconds: int) -> None:
        """Set a chat's disappearing-messages timer (one of wire.DISAPPEARING_TIMERS)."""
        raise EngineError("NOT_SUPPORTED", f"the {self.name} engine cannot set disappearing messages")

    # -- groups (issue 17): each engine that has groups overrides all of these ----------------
    def _no_groups(self) -> EngineError:
        return EngineError("NOT_SUPPORTED", f"the {self.name} engine has no groups")

    async def group_create(self, request: wire.GroupCreate) -> wire.GroupCreateReply:
        """Create a group; one result per participant asked for."""
        raise self._no_groups()

    async def group_list(self) -> wire.GroupListReply:
        """The groups this account is in."""
        raise self._no_groups()

    async def group_info(self, jid: str) -> wire.GroupInfo:
        """One group's subject, settings and participants."""
        raise self._no_groups()

    async def group_update(self, request: wire.GroupUpdate) -> None:
        """Change a group's subject, description, announce or locked setting."""
        raise self._no_groups()

    async def group_picture(self, jid: str, jpeg: bytes) -> None:
        """Set a group's picture."""
        raise self._no_groups()

    async def group_participants(self, request: wire.GroupParticipants) -> wire.ParticipantResults:
        """Add, remove, promote or demote participants; one result each."""
        raise self._no_groups()

    async def group_invite(self, jid: str, *, revoke: bool) -> str:
        """The group's invite code (a new one when ``revoke``)."""
        raise self._no_groups()

    async def group_invite_info(self, code: str) -> wire.GroupInfo:
        """The group behind an invite code, without joining."""
        raise self._no_groups()

    async def group_join(self, code: str) -> wire.GroupInfo:
        """Join the group behind an invite code."""
        raise self._no_groups()

    async def group_leave(self, jid: str) -> None:
        """Leave a group."""
        raise self._no_groups()

"""The interface between a session process and the WhatsApp engine it runs.

An engine (``neonize`` for real WhatsApp, ``sim`` for the simulated network)
drives one linked device. It reports what happens through an
:class:`EngineSink` and takes commands through the :class:`Engine` methods.
Both run on the session process's asyncio loop; engines whose library calls
back from other threads must hop onto the loop before touching the sink.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

MESSAGE_TYPES = ("text", "image", "document", "audio", "video", "location", "contact", "reaction")


class EngineError(Exception):
    """A command the engine could not carry out; ``code`` is a machine code for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class OutgoingMessage:
    """A message to send. ``id`` is chosen by the worker and reused on every retry."""

    id: str
    to: str  # a JID: 628123@s.whatsapp.net or 1203...@g.us
    type: str = "text"
    text: str | None = None
    caption: str | None = None
    media_path: str | None = None
    mimetype: str | None = None
    filename: str | None = None
    reply_to: str | None = None  # id of the quoted message (a reply)
    mentions: list[str] = field(default_factory=list)  # JIDs mentioned in text/caption
    latitude: float | None = None  # type "location"
    longitude: float | None = None
    name: str | None = None  # location name, or a contact's display name
    address: str | None = None  # location address
    vcard: str | None = None  # type "contact"
    reaction_to: str | None = None  # type "reaction": the message reacted to; the emoji is `text` ("" removes it)

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> OutgoingMessage:
        known = {k: body[k] for k in cls.__dataclass_fields__ if k in body}
        return cls(**known)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class SendResult:
    """What the network said about a sent message."""

    id: str
    timestamp: float


@dataclass(slots=True)
class IncomingMessage:
    """A message the linked account received."""

    id: str
    chat: str
    sender: str
    to: str
    type: str
    timestamp: float
    text: str | None = None
    caption: str | None = None
    mimetype: str | None = None
    media_size: int | None = None
    media_path: str | None = None
    reply_to: str | None = None
    from_me: bool = False
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    vcard: str | None = None
    reaction_to: str | None = None
    mentions: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class EngineContext:
    """What an engine is given to start with."""

    session_id: str
    session_dir: Path  # the engine keeps its auth state here (STORAGE_DIR/sessions/<id>/)
    sink: EngineSink
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

    def on_receipt(self, message_id: str, status: str, chat: str, timestamp: float) -> None:
        """A sent message was ``delivered`` or ``read``."""

    def on_credentials_changed(self) -> None:
        """The auth state on disk changed (paired, keys rotated): time for a backup."""

    async def on_message(self, message: IncomingMessage) -> None:
        """A received message; returns once the supervisor has committed it, raises if not."""


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

"""The wire contract between the supervisor and a session process: every operation
and the typed body of each, declared once and used by both sides.

- :class:`ToChild`: requests the supervisor sends and the session process answers;
- :class:`ToSupervisor`: requests the session process sends and the supervisor answers
  (an incoming message is committed before the process acknowledges it to the network);
- :class:`ChildEvent`: events the session process sends, unanswered.

Each body is a msgspec Struct that names its operation (``OP``) and, for a request, the
type of its reply (``REPLY``). A sender passes the body only (:func:`ask_child`,
:func:`ask_supervisor`, :func:`emit`); a receiver turns an operation and a plain map
into a body with :func:`decode` and matches on its type. An unknown operation, an
unknown key, a missing key or a value of the wrong type is a :class:`WireError`:
never silently accepted. The framing of bodies is transport/protocol.py's; the
operations are described in docs/architecture.md ("Wire protocol").
"""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import msgspec

from transport.channel import Body, DealerChannel, RemoteError
from transport.protocol import Payload, ProtocolError

R = TypeVar("R", bound="Reply")
B = TypeVar("B", bound="msgspec.Struct")

# Set in the environment of tests (tests/conftest.py): a protocol error is raised where it is received
# instead of being logged and answered, so a test fails at the exchange that broke the contract.
STRICT_ENV = "WA_WIRE_STRICT"
# The machine code of a reply to a request that broke the contract.
PROTOCOL_ERROR = "PROTOCOL_ERROR"
# An engine's code for "this session is not connected to WhatsApp (now)", on both engines.
ERR_NOT_CONNECTED = "NOT_CONNECTED"


class WireError(ProtocolError):
    """A body or an operation that does not follow this contract."""

    code = PROTOCOL_ERROR


class ToChild(StrEnum):
    """Requests the supervisor sends; the session process answers each."""

    SEND = "send"
    LOGOUT = "logout"
    PAIR_CODE = "pair_code"
    STOP = "stop"
    # read receipts and presence (session_proc/engine.py: Engine.mark_read, Engine.send_presence)
    MARK_READ = "mark_read"
    SEND_PRESENCE = "send_presence"
    # contacts, blocking, disappearing messages (account operations)
    CHECK_PHONES = "check_phones"
    CONTACT_INFO = "contact_info"
    SET_BLOCKED = "set_blocked"
    BLOCKLIST = "blocklist"
    SET_DISAPPEARING = "set_disappearing"
    # groups (issue 17)
    GROUP_CREATE = "group_create"
    GROUP_LIST = "group_list"
    GROUP_INFO = "group_info"
    GROUP_UPDATE = "group_update"
    GROUP_PICTURE = "group_picture"
    GROUP_PARTICIPANTS = "group_participants"
    GROUP_INVITE = "group_invite"
    GROUP_INVITE_INFO = "group_invite_info"
    GROUP_JOIN = "group_join"
    GROUP_LEAVE = "group_leave"


class ToSupervisor(StrEnum):
    """Requests a session process sends; the supervisor answers each."""

    MESSAGE = "message"
    FATAL = "fatal"
    # calls: committed before the engine acknowledges them, like messages
    CALL = "call"
    CALL_REJECTED = "call_rejected"
    POLL_VOTE = "poll_vote"
    MESSAGE_CHANGE = "message_change"
    GROUP_EVENT = "group_event"


class ChildEvent(StrEnum):
    """Events a session process sends; nobody answers them."""

    READY = "ready"
    QR = "qr"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    LOGGED_OUT = "logged_out"
    RECEIPT = "receipt"
    CREDS = "creds"
    # presence: ephemeral, unanswered
    CHAT_PRESENCE = "chat_presence"
    PRESENCE = "presence"


class _Body(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Every body: unknown keys are refused, defaults stay off the wire."""


class Reply(_Body):
    """The result of an answered request."""


class Done(Reply):
    """An answer that carries nothing but success."""


class SendResult(Reply):
    """What the network said about a sent message: its id and when it was sent (epoch seconds)."""

    id: str
    timestamp: float


class PairCodeReply(Reply):
    """A pairing code to type on the phone."""

    code: str


class ChildRequest(_Body, Generic[R]):
    """A request the session process answers with a ``REPLY``."""

    OP: ClassVar[ToChild]
    REPLY: ClassVar[type[Reply]]


class SupervisorRequest(_Body, Generic[R]):
    """A request the supervisor answers with a ``REPLY``."""

    OP: ClassVar[ToSupervisor]
    REPLY: ClassVar[type[Reply]]


class Event(_Body, rename="camel"):
    """An event of a session process (camelCase keys on the wire)."""

    OP: ClassVar[ChildEvent]


# -- polls, stickers, view-once, voice notes -------------------------------------------


class PollSpec(_Body):
    """A poll's question and options; ``multiple``: voters may choose several (else one)."""

    name: str
    options: list[str]
    multiple: bool


class PollVote(SupervisorRequest[Done]):
    """A vote on a poll, answered once the supervisor committed it (then acknowledged to the network).

    Options travel as WhatsApp sends them, hex SHA-256 digests of the option texts: the supervisor maps
    them to names from the poll in its history. ``error`` says why a vote could not be read
    ("undecryptable"): reported, never dropped.
    """

    OP = ToSupervisor.POLL_VOTE
    REPLY = Done

    id: str  # the vote's own message id
    poll_id: str  # the poll's id (the worker's, for polls this session sent)
    chat: str
    voter: str
    timestamp: float
    option_hashes: list[str] = []  # an empty vote retracts the voter's earlier one
    error: str | None = None


# -- supervisor → session process --------------------------------------------------


class OutgoingMessage(ChildRequest[SendResult]):
    """A message to send. ``id`` is chosen by the worker and reused on every retry.

    Also what the outbox keeps in its table, so its keys stay as they are (snake_case).
    """

    OP = ToChild.SEND
    REPLY = SendResult

    id: str
    to: str  # a JID: 628123@s.whatsapp.net or 1203...@g.us
    type: str = "text"
    text: str | None = None
    caption: str | None = None
    media_path: str | None = None
    mimetype: str | None = None
    filename: str | None = None
    reply_to: str | None = None  # id of the quoted message (a reply)
    mentions: list[str] = []  # JIDs mentioned in text/caption
    latitude: float | None = None  # type "location"
    longitude: float | None = None
    name: str | None = None  # location name, or a contact's display name
    address: str | None = None  # location address
    vcard: str | None = None  # type "contact"
    reaction_to: str | None = None  # type "reaction": the message reacted to; the emoji is `text` ("" removes it)
    typing: float = 0.0  # seconds of "typing" shown in the chat before it goes (paced sending)
    poll: PollSpec | None = None  # type "poll"
    view_once: bool = False  # image or video shown once
    voice: bool = False  # audio as a voice note (push-to-talk)
    # type "edit": the message whose text becomes `text` (or, for media, whose caption becomes `caption`;
    # `mimetype` is then the original's). type "revoke": the message deleted for everyone.
    edit_of: str | None = None
    revoke_of: str | None = None


class Logout(ChildRequest[Done]):
    """Unlink the device from its account; the process exits once it has."""

    OP = ToChild.LOGOUT
    REPLY = Done


class PairCode(ChildRequest[PairCodeReply]):
    """Ask for a pairing code for ``phone`` (digits) instead of a QR scan."""

    OP = ToChild.PAIR_CODE
    REPLY = PairCodeReply

    phone: str


class Stop(ChildRequest[Done]):
    """Leave now, cleanly; the credentials stay for the next start."""

    OP = ToChild.STOP
    REPLY = Done


# -- read receipts, presence and calls (supervisor → session process) ---------------------

# What POST /session/{id}/presence may show: the account's own presence, or a chat state.
PRESENCE_STATES = ("available", "unavailable")
CHAT_STATES = ("typing", "recording", "paused")


class ReadMessage(_Body):
    """One received message to mark read: its id and who sent it (needed in groups)."""

    id: str
    sender: str


class MarkRead(ChildRequest[Done]):
    """Send read receipts for received ``messages`` of ``chat`` to their senders."""

    OP = ToChild.MARK_READ
    REPLY = Done

    chat: str
    messages: list[ReadMessage]


class SendPresence(ChildRequest[Done]):
    """Show the account ``available``/``unavailable``, or a chat state (``typing``, ``recording``,
    ``paused``) in ``chat``."""

    OP = ToChild.SEND_PRESENCE
    REPLY = Done

    state: str
    chat: str | None = None


# -- contacts, blocking, disappearing messages (account operations) ------------------


class PhoneCheck(_Body):
    """Whether one number is on WhatsApp; ``jid`` is its user JID when it is."""

    phone: str
    exists: bool
    jid: str | None = None


class PhoneChecks(Reply):
    """One check per number asked, in the order asked."""

    results: list[PhoneCheck]


class CheckPhones(ChildRequest[PhoneChecks]):
    """Which of these numbers (digits) are on WhatsApp."""

    OP = ToChild.CHECK_PHONES
    REPLY = PhoneChecks

    phones: list[str]


class ContactCard(Reply):
    """What a contact shows of itself; None where it shows nothing (or hides it)."""

    jid: str
    push_name: str | None = None
    about: str | None = None
    picture_url: str | None = None


class ContactInfo(ChildRequest[ContactCard]):
    """A contact's profile (user JID); the engine answers NOT_ON_WHATSAPP for a number that is not."""

    OP = ToChild.CONTACT_INFO
    REPLY = ContactCard

    jid: str


class SetBlocked(ChildRequest[Done]):
    """Block (``blocked``) or unblock a user JID."""

    OP = ToChild.SET_BLOCKED
    REPLY = Done

    jid: str
    blocked: bool


class Blocked(Reply):
    """The account's blocklist: user JIDs."""

    jids: list[str]


class Blocklist(ChildRequest[Blocked]):
    """The account's blocklist."""

    OP = ToChild.BLOCKLIST
    REPLY = Blocked


# The disappearing-messages timers WhatsApp offers, in seconds: off, 24 hours, 7 days, 90 days.
DISAPPEARING_TIMERS = (0, 86400, 604800, 7776000)


class SetDisappearing(ChildRequest[Done]):
    """Set a chat's disappearing-messages timer: 0 (off), 86400, 604800 or 7776000 seconds."""

    OP = ToChild.SET_DISAPPEARING
    REPLY = Done

    chat: str
    seconds: int


# -- session process → supervisor ----------------------------------------------------


class IncomingMessage(SupervisorRequest[Done]):
    """A message the linked account received; answered once the supervisor committed it."""

    OP = ToSupervisor.MESSAGE
    REPLY = Done

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
    media_path: str | None = None  # a file the session process wrote; the supervisor moves it to storage
    # Why a media message came without its media: "too_large" (over MAX_INCOMING_MEDIA_MB, never
    # downloaded) or "download_failed"; the message itself is committed and acknowledged either way.
    media_error: str | None = None
    reply_to: str | None = None
    from_me: bool = False
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    vcard: str | None = None
    reaction_to: str | None = None
    mentions: list[str] = []
    poll: PollSpec | None = None
    view_once: bool = False
    voice: bool = False
    participant: str | None = None  # a group message: who in the group sent it (``chat`` is the group)


class MessageChange(SupervisorRequest[Done]):
    """Someone edited (``kind`` "edit", new ``text``) or deleted for everyone (``kind`` "revoke") the message
    ``target``; answered once the supervisor committed the change to history and its event."""

    OP = ToSupervisor.MESSAGE_CHANGE
    REPLY = Done

    id: str  # the change's own message id on the network
    chat: str
    sender: str
    target: str
    kind: str  # "edit" | "revoke"
    timestamp: float  # epoch seconds
    text: str | None = None


class Fatal(SupervisorRequest[Done]):
    """The process is about to exit with a crash: why, as a machine code and a message."""

    OP = ToSupervisor.FATAL
    REPLY = Done

    code: str
    error: str


class CallDecision(Reply):
    """The supervisor's answer to an incoming call, once committed: whether to reject it (rejectCalls)."""

    reject: bool


class IncomingCall(SupervisorRequest[CallDecision]):
    """A call offer; answered once ``call.received`` is committed, and only then acknowledged."""

    OP = ToSupervisor.CALL
    REPLY = CallDecision

    id: str
    sender: str
    video: bool
    timestamp: float


class CallRejected(SupervisorRequest[Done]):
    """The engine rejected call ``id`` (rejectCalls); answered once ``call.rejected`` is committed."""

    OP = ToSupervisor.CALL_REJECTED
    REPLY = Done

    id: str
    sender: str


# -- session process events ----------------------------------------------------------


class Ready(Event):
    """The process runs and listens; its engine is starting."""

    OP = ChildEvent.READY

    pid: int
    engine: str


class Qr(Event):
    """A new QR code to show; it stops being scannable at ``expires_at`` (epoch seconds)."""

    OP = ChildEvent.QR

    qr: str
    expires_at: float


class Connected(Event):
    """The device is linked and online as ``phone`` (digits)."""

    OP = ChildEvent.CONNECTED

    phone: str
    push_name: str | None


class Disconnected(Event):
    """The connection dropped; ``will_retry`` is False when the engine gave up."""

    OP = ChildEvent.DISCONNECTED

    reason: str
    will_retry: bool


class LoggedOut(Event):
    """The device was unlinked; a new QR is needed."""

    OP = ChildEvent.LOGGED_OUT

    reason: str


class Receipt(Event):
    """A sent message was ``delivered`` or ``read``."""

    OP = ChildEvent.RECEIPT

    id: str
    status: str
    chat: str
    timestamp: float
    by: str | None = None  # a group message: the participant whose receipt this is


class Creds(Event):
    """The auth state on disk changed (paired, keys rotated) at ``at`` (epoch seconds)."""

    OP = ChildEvent.CREDS

    at: float


class ChatPresence(Event):
    """``sender`` shows ``state`` (typing, recording, paused) in ``chat``."""

    OP = ChildEvent.CHAT_PRESENCE

    chat: str
    sender: str
    state: str


class PresenceUpdate(Event):
    """``jid`` went online or offline; ``last_seen`` in epoch seconds when WhatsApp tells it."""

    OP = ChildEvent.PRESENCE

    jid: str
    online: bool
    last_seen: float | None = None


# -- groups (issue 17) -----------------------------------------------------------------
# Group JIDs are ``<digits>@g.us``; participants are user JIDs (``628123@s.whatsapp.net``).


class GroupMember(_Body):
    """One participant of a group: ``admin`` is None, ``admin`` or ``superadmin`` (the creator)."""

    jid: str
    admin: str | None = None


class GroupInfo(Reply):
    """A group as the account sees it. ``created_at`` in epoch seconds (neonize: float32, about ±64 s)."""

    jid: str
    subject: str
    description: str | None = None
    owner: str | None = None
    created_at: float | None = None
    announce: bool = False  # only admins may send
    locked: bool = False  # only admins may edit the subject, description and picture
    participants: list[GroupMember] = []


class GroupSummary(_Body):
    """One line of the account's group list."""

    jid: str
    subject: str
    size: int
    is_admin: bool


class GroupListReply(Reply):
    """The groups this account is in."""

    groups: list[GroupSummary]


class ParticipantResult(_Body):
    """What became of one participant of a change: ``ok``, ``invite_required``, ``not_found``, ``not_admin``
    or ``already``, with WhatsApp's numeric code (200, 403, 404, 401, 409)."""

    jid: str
    result: str
    code: int


class ParticipantResults(Reply):
    """One result per participant asked for, in the order asked: never a silent partial success."""

    results: list[ParticipantResult]


class GroupCreateReply(Reply):
    """A created group and what became of each participant asked for."""

    group: GroupInfo
    results: list[ParticipantResult]


class InviteReply(Reply):
    """A group's invite code (the link is ``https://chat.whatsapp.com/<code>``)."""

    code: str


class GroupCreate(ChildRequest[GroupCreateReply]):
    """Create a group with this account as its owner."""

    OP = ToChild.GROUP_CREATE
    REPLY = GroupCreateReply

    subject: str
    participants: list[str]


class GroupList(ChildRequest[GroupListReply]):
    """The groups this account is in."""

    OP = ToChild.GROUP_LIST
    REPLY = GroupListReply


class GroupInfoRequest(ChildRequest[GroupInfo]):
    """One group's subject, settings and participants."""

    OP = ToChild.GROUP_INFO
    REPLY = GroupInfo

    jid: str


class GroupUpdate(ChildRequest[Done]):
    """Change a group's subject, description (``""`` removes it), announce or locked setting."""

    OP = ToChild.GROUP_UPDATE
    REPLY = Done

    jid: str
    subject: str | None = None
    description: str | None = None
    announce: bool | None = None
    locked: bool | None = None


class GroupPicture(ChildRequest[Done]):
    """Set a group's picture from a JPEG file the supervisor staged."""

    OP = ToChild.GROUP_PICTURE
    REPLY = Done

    jid: str
    path: str


class GroupParticipants(ChildRequest[ParticipantResults]):
    """Add, remove, promote or demote participants; one result each."""

    OP = ToChild.GROUP_PARTICIPANTS
    REPLY = ParticipantResults

    jid: str
    action: str  # add | remove | promote | demote
    participants: list[str]


class GroupInvite(ChildRequest[InviteReply]):
    """The group's invite code; a new one (the old one dies) when ``revoke``."""

    OP = ToChild.GROUP_INVITE
    REPLY = InviteReply

    jid: str
    revoke: bool = False


class GroupInviteInfo(ChildRequest[GroupInfo]):
    """The group behind an invite code, without joining it."""

    OP = ToChild.GROUP_INVITE_INFO
    REPLY = GroupInfo

    code: str


class GroupJoin(ChildRequest[GroupInfo]):
    """Join the group behind an invite code."""

    OP = ToChild.GROUP_JOIN
    REPLY = GroupInfo

    code: str


class GroupLeave(ChildRequest[Done]):
    """Leave a group."""

    OP = ToChild.GROUP_LEAVE
    REPLY = Done

    jid: str


class GroupEvent(SupervisorRequest[Done]):
    """A change of a group the account is in; answered once committed to the event log, and only then
    acknowledged to the network (like an incoming message).

    ``kind``: ``joined`` (this account is in a group now), ``left`` (it is no longer),
    ``participants`` (``action`` add/remove/promote/demote of ``participants``) or ``updated``
    (``changes``: subject, description, announce, locked, picture). ``by`` is who did it, when known.
    """

    OP = ToSupervisor.GROUP_EVENT
    REPLY = Done

    id: str  # unique per change: lets a consumer drop a repeat delivered after a crash
    kind: str
    group: str
    timestamp: float
    by: str | None = None
    subject: str | None = None
    action: str | None = None
    participants: list[str] = []
    changes: dict[str, str | bool | None] = {}


GROUP_REQUESTS: tuple[type[ChildRequest[Any]], ...] = (
    GroupCreate,
    GroupList,
    GroupInfoRequest,
    GroupUpdate,
    GroupPicture,
    GroupParticipants,
    GroupInvite,
    GroupInviteInfo,
    GroupJoin,
    GroupLeave,
)


def _by_op(*kinds: type[B]) -> dict[str, type[B]]:
    return {str(kind.OP): kind for kind in kinds}  # type: ignore[attr-defined]


CHILD_REQUESTS: dict[str, type[ChildRequest[Any]]] = _by_op(
    OutgoingMessage,
    Logout,
    PairCode,
    Stop,
    *(MarkRead, SendPresence),  # read receipts, presence
    *(CheckPhones, ContactInfo, SetBlocked, Blocklist, SetDisappearing),  # contacts, blocking, disappearing
    *GROUP_REQUESTS,
)
SUPERVISOR_REQUESTS: dict[str, type[SupervisorRequest[Any]]] = _by_op(
    IncomingMessage, Fatal, IncomingCall, CallRejected, PollVote, MessageChange, GroupEvent
)
EVENTS: dict[str, type[Event]] = _by_op(
    Ready, Qr, Connected, Disconnected, LoggedOut, Receipt, Creds, ChatPresence, PresenceUpdate
)


# -- decoding ------------------------------------------------------------------------


def parse(kind: type[B], body: Body, *, what: str) -> B:
    """``body`` as a ``kind``, or WireError naming ``what`` and the offending key (never a value)."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise WireError(f"{what}: {exc}") from None


def _decode(table: dict[str, type[B]], direction: str, op: str, body: Body) -> B:
    kind = table.get(op)
    if kind is None:
        raise WireError(f"unknown {direction} {op!r}")
    return parse(kind, body, what=f"{direction} {op!r}")


def decode_child_request(op: str, body: Body) -> ChildRequest[Any]:
    """A request from the supervisor, as the session process receives it."""
    return _decode(CHILD_REQUESTS, "request", op, body)


def decode_supervisor_request(op: str, body: Body) -> SupervisorRequest[Any]:
    """A request from a session process, as the supervisor receives it."""
    return _decode(SUPERVISOR_REQUESTS, "request", op, body)


def decode_event(op: str, body: Body) -> Event:
    """An event from a session process, as the supervisor receives it."""
    return _decode(EVENTS, "event", op, body)


def strict() -> bool:
    """Whether protocol errors are raised where they are received (tests) instead of handled."""
    return os.environ.get(STRICT_ENV) == "1"


def refuse(log: logging.Logger, exc: WireError, extra: dict[str, str]) -> RemoteError:
    """Log a broken exchange once, with its context; the RemoteError to answer a request with.

    Raises ``exc`` itself in strict mode, so a test fails where the contract broke.
    """
    log.error("wire protocol error: %s", exc, extra=extra)
    if strict():
        raise exc
    return RemoteError(PROTOCOL_ERROR, str(exc))


# -- sending -------------------------------------------------------------------------


class ChildRequester(Protocol):
    """What sends a request to a session process by its routing identity: the supervisor's RouterChannel
    (or a test's scripted stand-in)."""

    async def request(self, identity: bytes, op: str, body: Payload | None = None, *, timeout: float) -> Body: ...


async def ask_child(router: ChildRequester, identity: bytes, body: ChildRequest[R], *, timeout: float) -> R:
    """Send a request to a session process and return its typed reply."""
    reply = await router.request(identity, body.OP, body, timeout=timeout)
    return cast(R, parse(body.REPLY, reply, what=f"reply to {body.OP!r}"))


async def ask_supervisor(dealer: DealerChannel, body: SupervisorRequest[R], *, timeout: float) -> R:
    """Send a request to the supervisor and return its typed reply."""
    reply = await dealer.request(body.OP, body, timeout=timeout)
    return cast(R, parse(body.REPLY, reply, what=f"reply to {body.OP!r}"))


def emit(dealer: DealerChannel, event: Event) -> None:
    """Send an event to the supervisor; raises PeerGone if it cannot be queued now."""
    dealer.emit(event.OP, event)

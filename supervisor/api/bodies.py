"""What clients may send: every request body, query and header, declared once.

These pydantic models are both the validation (``validation.parse``) and the
OpenAPI document's request schemas (``openapi.document``): a limit, a pattern
or a field name changes here and nowhere else.

Why pydantic v2 rather than msgspec: a failure comes back as structured errors
(the field's location and the kind of failure), which is what lets every field
answer with its own machine code (``Invalid`` below) instead of parsing error
text; its JSON Schema output (refs, nullable fields, patterns, bounds) is what
OpenAPI 3.1 reads; and it is already installed (schemathesis and moto depend on
it). msgspec decodes faster, but a send body is validated in a few microseconds
either way (``make bench`` prints the figure next to a plain ``json.loads``),
against milliseconds for the send itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Json, model_validator
from pydantic_core import PydanticCustomError

from supervisor.api.codes import ErrorCode
from supervisor.sessions.proxy import PROXY_SCHEMES, PROXY_URL_PATTERN
from supervisor.url_hosts import IPV6_LITERAL

# Session ids become file and object names: nothing else may pass.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SEPARATORS = r"[\s\-()]"
# Digits with an optional leading + and separators anywhere (what a person types: +62 812-3456-789).
PHONE_DIGITS_PATTERN = rf"^{_SEPARATORS}*\+?{_SEPARATORS}*(?:[0-9]{_SEPARATORS}*){{5,20}}$"
JID_PATTERN = r"^\s*(?:[0-9]{5,20}@s\.whatsapp\.net|[0-9]{5,20}(?:-[0-9]{5,20})?@g\.us)\s*$"
PHONE_TARGET_PATTERN = f"{JID_PATTERN}|{PHONE_DIGITS_PATTERN}"
# No control characters: ids are echoed into logs, events and the engine's protocol.
MESSAGE_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
# An http(s) URL with a host: what a webhook delivery can be POSTed to.
WEBHOOK_URL_PATTERN = (
    rf"^[hH][tT][tT][pP][sS]?://([^\s/?#@]+@)?({IPV6_LITERAL}|[^\s/?#@\[\]:]+)(:[0-9]{{0,5}})?([/?#]\S*)?$"
)
# /session/create is the create route, so a session of that name could not be deleted or told apart.
RESERVED_IDS = ("create",)
MAX_TEXT = 65536
MAX_MENTIONS = 256
MAX_SEQ = 2**63 - 1  # event ids are SQLite INTEGERs: a larger number cannot even be bound to a query
MAX_PAGE = 500
MAX_EVENTS_PAGE = 1000
JSON_TYPES = ("text", "location", "contact", "reaction", "poll")
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
VIEW_ONCE_TYPES = ("image", "video")  # what WhatsApp shows once
POLL_MAX_NAME = 255  # WhatsApp's limits on a poll's question and each option
POLL_MAX_OPTION = 100
POLL_MIN_OPTIONS, POLL_MAX_OPTIONS = 2, 12


@dataclass(frozen=True, slots=True)
class Invalid:
    """How a field's failure is answered: its machine code and what the field must be."""

    code: ErrorCode
    must: str


def _not_reserved(value: str) -> str:
    if value in RESERVED_IDS:
        raise PydanticCustomError("reserved", "a reserved name")
    return value


def _separators_removed(value: str) -> str:
    return re.sub(_SEPARATORS, "", value.strip())


def _as_jid(value: str) -> str:
    candidate = value.strip()
    return candidate if "@" in candidate else f"{_separators_removed(candidate).lstrip('+')}@s.whatsapp.net"


def _as_digits(value: str) -> str:
    return _separators_removed(value).lstrip("+")


SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_ID_PATTERN,
        examples=["shop-42"],
        description="letters, digits, '.', '_', '-'; 1-64 characters, starting with a letter or digit; not 'create'",
        json_schema_extra={"not": {"enum": list(RESERVED_IDS)}},
    ),
    AfterValidator(_not_reserved),
    Invalid(
        ErrorCode.INVALID_SESSION_ID,
        f"must match {SESSION_ID_PATTERN} (letters, digits, . _ -; max 64) and not be {', '.join(RESERVED_IDS)}",
    ),
]
PhoneTarget = Annotated[
    str,
    Field(
        pattern=PHONE_TARGET_PATTERN,
        examples=["628123456789"],
        description="a JID (628123456789@s.whatsapp.net, 1203630...@g.us) or a phone number in digits "
        "(a leading + and spaces, dashes or brackets are allowed)",
    ),
    AfterValidator(_as_jid),
    Invalid(ErrorCode.INVALID_TARGET, "must be a JID (628...@s.whatsapp.net, ...@g.us) or digits"),
]
PhoneDigits = Annotated[
    str,
    Field(
        pattern=PHONE_DIGITS_PATTERN,
        examples=["628123456789"],
        description="a phone number in international format (a leading + and separators allowed)",
    ),
    AfterValidator(_as_digits),
    Invalid(ErrorCode.INVALID_PHONE, "must be a phone number in international format, digits only"),
]
Text = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT),
    Invalid(ErrorCode.INVALID_FIELD, f"must be a non-empty string of at most {MAX_TEXT} characters"),
]
MessageId = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=MESSAGE_ID_PATTERN),
    Invalid(ErrorCode.INVALID_FIELD, "must be a message id (1-128 characters, no control characters)"),
]
ShortText = Annotated[
    str, Field(max_length=256), Invalid(ErrorCode.INVALID_FIELD, "must be a string of at most 256 characters")
]
IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the same key answers the first answer again and sends nothing more",
    ),
    Invalid(ErrorCode.INVALID_IDEMPOTENCY_KEY, "must be 1-255 printable characters"),
]
EventSeq = Annotated[
    int,
    Field(ge=0, le=MAX_SEQ),
    Invalid(ErrorCode.INVALID_QUERY, f"must be an event id (an integer between 0 and {MAX_SEQ})"),
]
TimeBound = Annotated[
    float | datetime,
    Field(description="epoch seconds or an ISO 8601 (RFC 3339) time"),
    Invalid(ErrorCode.INVALID_QUERY, "must be epoch seconds or an ISO 8601 time"),
]


class Body(BaseModel):
    """A JSON request body: JSON types as sent (no "5" for 5); unknown fields are ignored; null means absent."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Query(BaseModel):
    """A query string: every value arrives as text and is read as the declared type."""

    model_config = ConfigDict(strict=False, extra="ignore", allow_inf_nan=False)


class WebhookRequest(Body):
    """Where a session's events are POSTed, and the secret that signs them."""

    url: Annotated[
        str,
        Field(
            max_length=2048,
            pattern=WEBHOOK_URL_PATTERN,
            examples=["https://backend.example/hooks/wa"],
            description="public destinations only: a loopback, private, link-local, multicast or reserved host"
            " answers 400 WEBHOOK_URL_REFUSED (unless the worker runs with WEBHOOK_ALLOW_PRIVATE=true);"
            " redirects are not followed",
        ),
        Invalid(ErrorCode.INVALID_WEBHOOK, "must be an http(s) URL of at most 2048 characters"),
    ]
    secret: Annotated[
        str | None,
        Field(min_length=16, max_length=256, description="signs deliveries (X-Signature); generated when left out"),
        Invalid(ErrorCode.INVALID_WEBHOOK, "must be a string of 16 to 256 characters"),
    ] = None


class CreateSessionRequest(Body):
    """POST /session/create."""

    sessionId: SessionId
    userId: ShortText | None = None
    sessionName: ShortText | None = None
    proxy: Annotated[
        str | None,
        Field(
            max_length=2048,
            pattern=PROXY_URL_PATTERN,
            examples=["socks5://user:secret@203.0.113.7:1080"],
            description="the address WhatsApp sees the session connect from: socks5://, http:// or https://, with "
            "a host and a port, user:password@ optional. Stored with the session (sealed with ENCRYPTION_KEY) and "
            "used on every start, also after a worker restart; answers show it with the password masked. A create "
            "for an existing session with a different proxy answers 409 PROXY_MISMATCH (leaving it out keeps "
            "the stored one)",
        ),
        Invalid(
            ErrorCode.INVALID_PROXY,
            f"must be a {', '.join(PROXY_SCHEMES)} URL with a host and a port (socks5://user:pass@host:1080), "
            "at most 2048 characters",
        ),
    ] = None
    takeover: Annotated[
        bool,
        Field(
            description="wait for another worker's lease instead of 409: until that worker's liveness record "
            "lapses (about WORKER_ALIVE_TTL), or up to LEASE_TTL + 5 s for a worker that keeps none"
        ),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false"),
    ] = False
    # Checked with the rest, before anything is created: a bad webhook must not leave a half-made session.
    webhook: Annotated[
        WebhookRequest | None, Invalid(ErrorCode.INVALID_WEBHOOK, "must be an object {url, secret?}")
    ] = None


class PairCodeRequest(Body):
    """POST /session/{id}/pair-code."""

    phoneNumber: PhoneDigits


def _one_of_required(*names: str) -> dict[str, Any]:
    """JSON Schema: at least one of ``names`` present and not null."""
    return {"anyOf": [{"required": [n], "properties": {n: {"not": {"type": "null"}}}} for n in names]}


class MessageBase(Body):
    """What every message type may carry: its target, a reply context and mentions."""

    to: PhoneTarget
    quotedMessageId: Annotated[MessageId | None, Field(description="reply to this message")] = None
    mentions: Annotated[
        list[PhoneTarget] | None,
        Field(max_length=MAX_MENTIONS),
        Invalid(ErrorCode.INVALID_FIELD, f"must be a list of at most {MAX_MENTIONS} phone targets"),
    ] = None

    def wire(self) -> dict[str, Any]:
        """The engine's message fields (OutgoingMessage on the wire, without the id the worker assigns)."""
        out: dict[str, Any] = {"to": self.to, "type": self.kind()}
        if self.quotedMessageId is not None:
            out["reply_to"] = self.quotedMessageId
        if self.mentions is not None:
            out["mentions"] = self.mentions
        return out

    def kind(self) -> str:
        raise NotImplementedError


class TextMessage(MessageBase):
    """A text message (the default type)."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("text", "message"))

    type: Literal["text"] = "text"
    text: Text | None = None
    message: Annotated[Text | None, Field(description="another name for text")] = None

    @model_validator(mode="after")
    def _has_text(self) -> TextMessage:
        if self.text is None and self.message is None:
            raise PydanticCustomError(ErrorCode.INVALID_FIELD, "text must be a non-empty string")
        return self

    def kind(self) -> str:
        return "text"

    def wire(self) -> dict[str, Any]:
        return {**super().wire(), "text": self.text if self.text is not None else self.message}


Latitude = Annotated[float, Field(ge=-90, le=90), Invalid(ErrorCode.INVALID_FIELD, "must be a number from -90 to 90")]
Longitude = Annotated[
    float, Field(ge=-180, le=180), Invalid(ErrorCode.INVALID_FIELD, "must be a number from -180 to 180")
]


class LocationMessage(MessageBase):
    """A location pin."""

    type: Literal["location"]
    latitude: Latitude
    longitude: Longitude
    name: Annotated[Text | None, Field(description="the place's name")] = None
    address: Text | None = None

    def kind(self) -> str:
        return "location"

    def wire(self) -> dict[str, Any]:
        return {
            **super().wire(),
            "latitude": self.latitude,
            "longitude": self.longitude,
            "name": self.name,
            "address": self.address,
        }


class Contact(Body):
    """A contact card: a name and a phone number, or a name and a vCard."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("phoneNumber", "vcard"))

    name: Text
    phoneNumber: PhoneTarget | None = None
    vcard: Annotated[
        str | None,
        Field(min_length=1, max_length=MAX_TEXT, pattern=r"^BEGIN:VCARD"),
        Invalid(ErrorCode.INVALID_FIELD, "must be a vCard (BEGIN:VCARD ... END:VCARD)"),
    ] = None

    @model_validator(mode="after")
    def _has_card(self) -> Contact:
        if self.vcard is None and self.phoneNumber is None:
            raise PydanticCustomError(ErrorCode.INVALID_TARGET, "contact needs a phoneNumber or a vcard")
        return self

    def card(self) -> str:
        """The vCard given, or one made from the name and phone number."""
        if self.vcard is not None:
            return self.vcard
        assert self.phoneNumber is not None
        digits = self.phoneNumber.split("@", 1)[0]
        return f"BEGIN:VCARD\nVERSION:3.0\nFN:{self.name}\nTEL;type=CELL;waid={digits}:+{digits}\nEND:VCARD"


class ContactMessage(MessageBase):
    """A contact card."""

    type: Literal["contact"]
    contact: Annotated[
        Contact, Invalid(ErrorCode.INVALID_FIELD, "must be an object {name, phoneNumber} or {name, vcard}")
    ]

    def kind(self) -> str:
        return "contact"

    def wire(self) -> dict[str, Any]:
        return {**super().wire(), "name": self.contact.name, "vcard": self.contact.card()}


class ReactionMessage(MessageBase):
    """A reaction to a message; an empty emoji removes it."""

    type: Literal["reaction"]
    messageId: Annotated[MessageId, Field(description="the message reacted to")]
    emoji: Annotated[
        str, Field(max_length=MAX_TEXT), Invalid(ErrorCode.INVALID_FIELD, "must be a string (empty removes it)")
    ]

    def kind(self) -> str:
        return "reaction"

    def wire(self) -> dict[str, Any]:
        return {**super().wire(), "reaction_to": self.messageId, "text": self.emoji}


class Poll(Body):
    """A poll's question and options; votes name options by the SHA-256 of their text, so options differ."""

    name: Annotated[
        str,
        Field(min_length=1, max_length=POLL_MAX_NAME, pattern=r"\S", description="the question"),
        Invalid(ErrorCode.INVALID_POLL_NAME, f"must be a non-blank string of at most {POLL_MAX_NAME} characters"),
    ]
    options: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=POLL_MAX_OPTION, pattern=r"\S")]],
        Field(min_length=POLL_MIN_OPTIONS, max_length=POLL_MAX_OPTIONS, description="distinct option texts"),
        Invalid(
            ErrorCode.INVALID_POLL_OPTIONS,
            f"must be a list of {POLL_MIN_OPTIONS} to {POLL_MAX_OPTIONS} non-blank strings"
            f" of at most {POLL_MAX_OPTION} characters",
        ),
    ]
    multiple: Annotated[
        bool,
        Field(description="voters may choose several options (false: one)"),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false"),
    ] = False

    @model_validator(mode="after")
    def _distinct(self) -> Poll:
        if len(set(self.options)) != len(self.options):
            raise PydanticCustomError(ErrorCode.POLL_OPTIONS_NOT_DISTINCT, "poll options must all differ")
        return self


class PollMessage(MessageBase):
    """A poll; its votes arrive as poll.vote events and are tallied by GET /session/{id}/polls/{messageId}."""

    type: Literal["poll"]
    poll: Annotated[Poll, Invalid(ErrorCode.INVALID_POLL, "must be an object {name, options, multiple?}")]

    def kind(self) -> str:
        return "poll"

    def wire(self) -> dict[str, Any]:
        spec = {"name": self.poll.name, "options": list(self.poll.options), "multiple": self.poll.multiple}
        return {**super().wire(), "poll": spec}


# The JSON send body, by its "type" (absent means text).
SEND_BODIES: dict[str, type[MessageBase]] = {
    "text": TextMessage,
    "location": LocationMessage,
    "contact": ContactMessage,
    "reaction": ReactionMessage,
    "poll": PollMessage,
}
SendRequest = Annotated[
    TextMessage | LocationMessage | ContactMessage | ReactionMessage | PollMessage,
    Field(description="media (image, document, audio, video, sticker) is sent as multipart/form-data"),
]


# A part's name travels in its Content-Disposition header, where HTTP allows no control character but
# the tab; form encoders escape line breaks (and quotes) as %0A, %0D and %22, so those names still fit.
# The server's part reader refuses the rest (400 INVALID_MULTIPART), so the document says so.
FORM_FIELD_NAME = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"


def _file_part(schema: dict[str, Any]) -> None:
    # The file is streamed to disk by the upload, not validated here; the document still names it.
    schema["properties"]["file"] = {
        "type": "string",
        "format": "binary",
        "minLength": 1,  # an empty file part is 400 MEDIA_MISSING
        "description": "at most MAX_UPLOAD_MB",
    }
    schema["required"] = ["file", *schema.get("required", [])]
    schema["propertyNames"] = {"pattern": FORM_FIELD_NAME}


def _form_flag(value: Any) -> Any:
    # A form field is text: "true"/"false" (any case), or "1"/"0", as HTML forms and curl -F send them.
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0", ""):
            return False
    return value


FormFlag = Annotated[bool, BeforeValidator(_form_flag), Invalid(ErrorCode.INVALID_FIELD, "must be true or false")]


def _flag_for(flag: str, types: tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema for "when ``flag`` is true, ``type`` is one of ``types``"."""
    # Not if/then: schemathesis cannot judge an if/then over a form holding a file (it crashes).
    return {"anyOf": [{"properties": {flag: {"const": False}}}, {"properties": {"type": {"enum": list(types)}}}]}


def _media_form(schema: dict[str, Any]) -> None:
    _file_part(schema)
    # The rule SendMediaRequest._flags_fit checks, in the document too, so a client generating forms
    # from it (a test's fuzzer, a code generator) knows it.
    schema["allOf"] = [_flag_for("viewOnce", VIEW_ONCE_TYPES), _flag_for("voice", ("audio",))]


class SendMediaRequest(Body):
    """POST /session/{id}/send as multipart/form-data: a media file and its fields."""

    model_config = ConfigDict(json_schema_extra=_media_form)

    type: Annotated[
        Literal["image", "document", "audio", "video", "sticker"],
        Field(description="a sticker must be WebP (else 415 UNSUPPORTED_MEDIA_TYPE)"),
        Invalid(ErrorCode.INVALID_TYPE, f"must be one of {', '.join(MEDIA_TYPES)} in a multipart send"),
    ]
    to: PhoneTarget
    quotedMessageId: MessageId | None = None
    mentions: Annotated[
        Json[Annotated[list[PhoneTarget], Field(max_length=MAX_MENTIONS)]] | None,
        # A form field cannot be null: an empty one, or the JSON literal null, means none.
        BeforeValidator(lambda value: None if isinstance(value, str) and value.strip() in ("", "null") else value),
        Field(description="a JSON array of phone targets"),
        Invalid(ErrorCode.INVALID_FIELD, "must be a JSON array of phone targets"),
    ] = None
    caption: Text | None = None
    filename: Text | None = None
    viewOnce: Annotated[
        FormFlag,
        Field(description="image or video only: the recipient can open it once (else 400 VIEW_ONCE_NOT_ALLOWED)"),
    ] = False
    voice: Annotated[
        FormFlag,
        Field(description="audio only: a voice note, push-to-talk (else 400 VOICE_NOT_ALLOWED)"),
    ] = False

    @model_validator(mode="after")
    def _flags_fit(self) -> SendMediaRequest:
        if self.viewOnce and self.type not in VIEW_ONCE_TYPES:
            raise PydanticCustomError(
                ErrorCode.VIEW_ONCE_NOT_ALLOWED, f"viewOnce is for {' and '.join(VIEW_ONCE_TYPES)}, not {self.type}"
            )
        if self.voice and self.type != "audio":
            raise PydanticCustomError(ErrorCode.VOICE_NOT_ALLOWED, f"voice is for audio, not {self.type}")
        return self

    def wire(self) -> dict[str, Any]:
        """The engine's message fields (the upload adds the file's)."""
        out: dict[str, Any] = {"to": self.to, "type": self.type}
        if self.quotedMessageId is not None:
            out["reply_to"] = self.quotedMessageId
        if self.mentions is not None:
            out["mentions"] = self.mentions
        out["caption"], out["filename"] = self.caption, self.filename
        # Only when set: history and the idempotency fingerprint of other media stay as they were.
        if self.viewOnce:
            out["view_once"] = True
        if self.voice:
            out["voice"] = True
        return out


class PageQuery(Query):
    """A page of a list: how many, from where."""

    limit: Annotated[
        int, Field(ge=1, le=MAX_PAGE), Invalid(ErrorCode.INVALID_QUERY, f"must be an integer from 1 to {MAX_PAGE}")
    ] = 50
    offset: Annotated[
        int, Field(ge=0, le=10**9), Invalid(ErrorCode.INVALID_QUERY, "must be an integer from 0 to 1000000000")
    ] = 0


class MessagesQuery(PageQuery):
    """GET /session/{id}/messages."""

    contact: Annotated[PhoneTarget | None, Field(description="only the chat with this JID or number")] = None
    direction: Annotated[Literal["in", "out"] | None, Invalid(ErrorCode.INVALID_QUERY, "must be 'in' or 'out'")] = None
    since: TimeBound | None = None
    until: TimeBound | None = None


class EventsQuery(Query):
    """GET /events."""

    since: Annotated[
        EventSeq, Field(description="the last event id seen: events after it are answered (empty: from the start)")
    ] = 0
    limit: Annotated[
        int,
        Field(ge=1, le=MAX_EVENTS_PAGE),
        Invalid(ErrorCode.INVALID_QUERY, f"must be an integer from 1 to {MAX_EVENTS_PAGE}"),
    ] = 100
    sessionId: SessionId | None = None


class StreamQuery(Query):
    """GET /events/stream (the Last-Event-ID header, sent by EventSource on reconnect, wins over since)."""

    since: Annotated[EventSeq | None, Field(description="the last event id seen")] = None
    sessionId: SessionId | None = None


class MetricsQuery(Query):
    """GET /metrics."""

    format: Annotated[
        Literal["json", "prometheus"] | None, Invalid(ErrorCode.INVALID_QUERY, "must be 'json' or 'prometheus'")
    ] = None


class MediaQuery(Query):
    """GET /media/{bucket}/{key}: the presigned URL's expiry and signature."""

    expires: str
    signature: str


# -- contacts, blocking, disappearing messages ----------------------------------------------------
MAX_CHECK_PHONES = 50
USER_TARGET_PATTERN = rf"^\s*[0-9]{{5,20}}@s\.whatsapp\.net\s*$|{PHONE_DIGITS_PATTERN}"
UserTarget = Annotated[
    str,
    Field(
        pattern=USER_TARGET_PATTERN,
        examples=["628123456789@s.whatsapp.net"],
        description="a user JID (628123456789@s.whatsapp.net) or a phone number in digits",
    ),
    AfterValidator(_as_jid),
    Invalid(ErrorCode.INVALID_TARGET, "must be a user JID (628...@s.whatsapp.net) or digits"),
]


class CheckPhonesRequest(Body):
    """POST /session/{id}/contacts/check."""

    phones: Annotated[
        list[PhoneDigits],
        Field(min_length=1, max_length=MAX_CHECK_PHONES),
        Invalid(ErrorCode.INVALID_FIELD, f"must be a list of 1 to {MAX_CHECK_PHONES} phone numbers"),
    ]


class DisappearingRequest(Body):
    """PUT /session/{id}/chats/{jid}/disappearing."""

    seconds: Annotated[
        Literal[0, 86400, 604800, 7776000],
        Field(description="0 turns it off; 86400 (24 hours), 604800 (7 days), 7776000 (90 days)"),
        Invalid(ErrorCode.INVALID_FIELD, "must be 0 (off), 86400 (24 hours), 604800 (7 days) or 7776000 (90 days)"),
    ]


class ContactPath(Query):
    """The path of /session/{id}/contacts/{jid}..."""

    id: SessionId
    jid: UserTarget


class ChatPath(Query):
    """The path of /session/{id}/chats/{jid}..."""

    id: SessionId
    jid: PhoneTarget


class MediaPath(Query):
    """The path of a stored media file."""

    bucket: str
    key: str


class PathId(Query):
    """The ``{id}`` of /session/{id}/... paths."""

    id: SessionId


class PollPath(PathId):
    """The path of GET /session/{id}/polls/{messageId}."""

    messageId: Annotated[MessageId, Field(description="the poll's message id (as the send answered it)")]


class MessagePath(Query):
    """The ``{id}`` and ``{messageId}`` of /session/{id}/messages/{messageId}."""

    id: SessionId
    messageId: MessageId


class EditMessageRequest(Body):
    """PATCH /session/{id}/messages/{messageId}: the message's new text (its caption for media)."""

    text: Text


class SendHeaders(Query):
    """Headers of POST /session/{id}/send."""

    idempotencyKey: Annotated[IdempotencyKey | None, Field(alias="Idempotency-Key")] = None


class StreamHeaders(Query):
    """Headers of GET /events/stream."""

    lastEventId: Annotated[
        EventSeq | Literal[""] | None,
        # Browsers never send it empty, but a proxy or a client library may: it means "from the start".
        Field(alias="Last-Event-ID", description="the last event id received; empty means none, as if left out"),
        Invalid(ErrorCode.INVALID_QUERY, f"must be an event id (an integer between 0 and {MAX_SEQ}) or empty"),
    ] = None


# -- read receipts, presence, settings, chats (supervisor/api/account_routes.py) -------------------
MAX_READ_IDS = 100
ACCOUNT_STATES = ("available", "unavailable")
CHAT_STATES = ("typing", "recording", "paused")


class ReadRequest(Body):
    """POST /session/{id}/read."""

    chat: Annotated[PhoneTarget, Field(description="the chat the messages were received in")]
    messageIds: Annotated[
        list[MessageId],
        Field(
            min_length=1,
            max_length=MAX_READ_IDS,
            description="received messages of that chat; an id that is not one is answered in unknown, not sent",
        ),
        Invalid(ErrorCode.INVALID_FIELD, f"must be a list of 1 to {MAX_READ_IDS} message ids"),
    ]


class PresenceRequest(Body):
    """POST /session/{id}/presence."""

    # A chat state needs its chat: the account's states, or a chat given.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"state": {"enum": list(ACCOUNT_STATES)}}},
                _one_of_required("chat")["anyOf"][0],
            ]
        }
    )

    state: Annotated[
        Literal["available", "unavailable", "typing", "recording", "paused"],
        Field(description="available/unavailable: the account; typing, recording, paused: in chat"),
        Invalid(ErrorCode.INVALID_FIELD, f"must be one of {', '.join(ACCOUNT_STATES + CHAT_STATES)}"),
    ]
    chat: Annotated[PhoneTarget | None, Field(description="required for typing, recording and paused")] = None

    @model_validator(mode="after")
    def _chat_for_chat_states(self) -> PresenceRequest:
        if self.state in CHAT_STATES and self.chat is None:
            raise PydanticCustomError(ErrorCode.INVALID_FIELD, f"chat is required for state {self.state}")
        return self


PacingGap = Annotated[
    float | None,
    Field(ge=0, le=3600),
    Invalid(ErrorCode.INVALID_FIELD, "must be a number of seconds from 0 to 3600, or null"),
]


class PacingSettings(Body):
    """A session's own pace (README "Paced sending"): each setting given replaces the worker's PACING_*
    default; null puts it back; those left out keep their values."""

    gap: Annotated[PacingGap, Field(description="seconds between two sends of a lane (0: off)")] = None
    coldGap: Annotated[PacingGap, Field(description="seconds between first messages to new chats (0: off)")] = None
    jitter: Annotated[
        float | None,
        Field(ge=0, le=10, description="each gap stretched by a random fraction of itself, up to this"),
        Invalid(ErrorCode.INVALID_FIELD, "must be a number from 0 to 10, or null"),
    ] = None
    dailyCap: Annotated[
        int | None,
        Field(ge=0, le=1_000_000, description="outreach sends per UTC day (0: no cap); replies are never held"),
        # JSON has one number type: 2.0 is the integer 2 (as JSON Schema's "integer" says).
        BeforeValidator(lambda value: int(value) if isinstance(value, float) and value.is_integer() else value),
        Invalid(ErrorCode.INVALID_FIELD, "must be a whole number from 0, or null"),
    ] = None
    warmupDays: Annotated[
        float | None,
        Field(ge=0, le=365, description="days after the session's creation at a third of the pace"),
        Invalid(ErrorCode.INVALID_FIELD, "must be a number of days from 0 to 365, or null"),
    ] = None
    typing: Annotated[
        bool | None,
        Field(description="show typing in the chat before a text, for as long as a person would type it"),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false, or null"),
    ] = None

    def changes(self) -> dict[str, Any]:
        """The settings given, nulls included (API names)."""
        return self.model_dump(exclude_unset=True)


class SettingsRequest(Body):
    """PUT /session/{id}/settings: the settings to change (those left out keep their values)."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("rejectCalls", "pacing"))

    rejectCalls: Annotated[
        bool | None,
        Field(description="the session declines every incoming call itself (call.rejected follows call.received)"),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false"),
    ] = None
    pacing: Annotated[PacingSettings | None, Field(description="the session's own pace")] = None

    def changes(self) -> dict[str, Any]:
        """The settings given (API names)."""
        out = self.model_dump(exclude_none=True, exclude={"pacing"})
        if self.pacing is not None:
            out["pacing"] = self.pacing.changes()
        return out

    @model_validator(mode="after")
    def _something(self) -> SettingsRequest:
        if not self.changes():
            raise PydanticCustomError(ErrorCode.INVALID_FIELD, "give at least one setting: rejectCalls, pacing")
        return self


class ChatsQuery(PageQuery):
    """GET /session/{id}/chats."""


# -- groups (issue 17) ---------------------------------------------------------------------------
GROUP_JID_PATTERN = r"^[0-9]{5,20}(?:-[0-9]{5,20})?@g\.us$"
MAX_GROUP_SUBJECT = 100  # WhatsApp's limit
MAX_GROUP_DESCRIPTION = 2048
MAX_GROUP_PARTICIPANTS = 1024  # WhatsApp's group size limit
INVITE_CODE_PATTERN = r"^[A-Za-z0-9_-]+$"

GroupJid = Annotated[
    str,
    Field(pattern=GROUP_JID_PATTERN, examples=["120363025246125486@g.us"]),
    Invalid(ErrorCode.INVALID_TARGET, "must be a group JID like 120363025246125486@g.us"),
]
GroupSubject = Annotated[
    str,
    Field(min_length=1, max_length=MAX_GROUP_SUBJECT),
    Invalid(ErrorCode.INVALID_FIELD, f"must be a string of 1 to {MAX_GROUP_SUBJECT} characters"),
]
PersonTarget = Annotated[
    str,
    Field(
        pattern=rf"^\s*[0-9]{{5,20}}@s\.whatsapp\.net\s*$|{PHONE_DIGITS_PATTERN}",
        examples=["628123456789"],
        description="a person: a user JID (628123456789@s.whatsapp.net) or a phone number in digits",
    ),
    AfterValidator(_as_jid),
    Invalid(ErrorCode.INVALID_TARGET, "must be a person: a user JID (628...@s.whatsapp.net) or digits"),
]
Participants = Annotated[
    list[PersonTarget],
    Field(min_length=1, max_length=MAX_GROUP_PARTICIPANTS, description="phone numbers or user JIDs"),
    Invalid(ErrorCode.INVALID_FIELD, f"must be a list of 1 to {MAX_GROUP_PARTICIPANTS} phone targets"),
]
InviteCode = Annotated[
    str,
    Field(min_length=1, max_length=256, pattern=INVITE_CODE_PATTERN, examples=["F4kS8dKZbGm2zP1vQx9aTe"]),
    Invalid(ErrorCode.INVALID_FIELD, "must be an invite code (letters, digits, _ and -)"),
]
InviteLink = Annotated[
    str,
    Field(max_length=300, pattern=r"^https://chat\.whatsapp\.com/[A-Za-z0-9_-]+$"),
    Invalid(ErrorCode.INVALID_FIELD, "must be a link like https://chat.whatsapp.com/<code>"),
]


class GroupPath(Query):
    """The ``{id}`` and ``{groupJid}`` of /session/{id}/groups/{groupJid}/... paths."""

    id: SessionId
    groupJid: GroupJid


class GroupCreateRequest(Body):
    """POST /session/{id}/groups."""

    subject: GroupSubject
    participants: Participants


class GroupUpdateRequest(Body):
    """PATCH /session/{id}/groups/{groupJid}: at least one field."""

    model_config = ConfigDict(
        json_schema_extra=lambda s: s.update(_one_of_required("subject", "description", "announce", "locked"))
    )

    subject: GroupSubject | None = None
    description: Annotated[
        str | None,
        Field(max_length=MAX_GROUP_DESCRIPTION, description='"" removes the description'),
        Invalid(ErrorCode.INVALID_FIELD, f"must be a string of at most {MAX_GROUP_DESCRIPTION} characters"),
    ] = None
    announce: Annotated[
        bool | None,
        Field(description="only admins may send"),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false"),
    ] = None
    locked: Annotated[
        bool | None,
        Field(description="only admins may change the subject, description and picture"),
        Invalid(ErrorCode.INVALID_FIELD, "must be true or false"),
    ] = None


class GroupParticipantsRequest(Body):
    """POST /session/{id}/groups/{groupJid}/participants."""

    action: Annotated[
        Literal["add", "remove", "promote", "demote"],
        Invalid(ErrorCode.INVALID_FIELD, "must be add, remove, promote or demote"),
    ]
    participants: Participants


class GroupJoinRequest(Body):
    """POST /session/{id}/groups/join: a code or a link."""

    model_config = ConfigDict(json_schema_extra=lambda s: s.update(_one_of_required("code", "link")))

    code: InviteCode | None = None
    link: InviteLink | None = None


class InviteInfoQuery(Query):
    """GET /session/{id}/groups/invite-info?code=."""

    code: Annotated[
        str,
        Field(min_length=1, max_length=256, pattern=INVITE_CODE_PATTERN),
        Invalid(ErrorCode.INVALID_QUERY, "code must be an invite code (letters, digits, _ and -)"),
    ]


def _jpeg_part(schema: dict[str, Any]) -> None:
    _file_part(schema)
    schema["properties"]["file"] |= {"contentMediaType": "image/jpeg", "description": "a JPEG of at most 5 MB"}


class GroupPictureForm(Body):
    """PUT /session/{id}/groups/{groupJid}/picture as multipart/form-data: a JPEG in the ``file`` part."""

    model_config = ConfigDict(json_schema_extra=_jpeg_part)


# -- the operator's dashboard: the simulated network (WA_ENGINE=sim) ------------------------------------


class SimScanRequest(Body):
    """POST /session/{id}/sim/scan: a simulated phone scans the session's QR."""

    phoneNumber: Annotated[
        PhoneDigits | None, Field(description="the phone that scans; default: one named for the session")
    ] = None


class SimMessageRequest(Body):
    """POST /session/{id}/sim/message: a simulated phone sends the session a text."""

    phoneNumber: PhoneDigits
    text: Text

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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Json, model_validator
from pydantic_core import PydanticCustomError

from supervisor.api.codes import ErrorCode
from supervisor.sessions.proxy import PROXY_SCHEMES, PROXY_URL_PATTERN

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
    r"^[hH][tT][tT][pP][sS]?://([^\s/?#@]+@)?(\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]:]+)(:[0-9]{0,5})?([/?#]\S*)?$"
)
# /session/create is the create route, so a session of that name could not be deleted or told apart.
RESERVED_IDS = ("create",)
MAX_TEXT = 65536
MAX_MENTIONS = 256
MAX_SEQ = 2**63 - 1  # event ids are SQLite INTEGERs: a larger number cannot even be bound to a query
MAX_PAGE = 500
MAX_EVENTS_PAGE = 1000
JSON_TYPES = ("text", "location", "contact", "reaction")
MEDIA_TYPES = ("image", "document", "audio", "video")


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


# The JSON send body, by its "type" (absent means text).
SEND_BODIES: dict[str, type[MessageBase]] = {
    "text": TextMessage,
    "location": LocationMessage,
    "contact": ContactMessage,
    "reaction": ReactionMessage,
}
SendRequest = Annotated[
    TextMessage | LocationMessage | ContactMessage | ReactionMessage,
    Field(description="media (image, document, audio, video) is sent as multipart/form-data"),
]


def _file_part(schema: dict[str, Any]) -> None:
    # The file is streamed to disk by the upload, not validated here; the document still names it.
    schema["properties"]["file"] = {"type": "string", "format": "binary", "description": "at most MAX_UPLOAD_MB"}
    schema["required"] = ["file", *schema.get("required", [])]


class SendMediaRequest(Body):
    """POST /session/{id}/send as multipart/form-data: a media file and its fields."""

    model_config = ConfigDict(json_schema_extra=_file_part)

    type: Annotated[
        Literal["image", "document", "audio", "video"],
        Invalid(ErrorCode.INVALID_TYPE, f"must be one of {', '.join(MEDIA_TYPES)} in a multipart send"),
    ]
    to: PhoneTarget
    quotedMessageId: MessageId | None = None
    mentions: Annotated[
        Json[Annotated[list[PhoneTarget], Field(max_length=MAX_MENTIONS)]] | None,
        Field(description="a JSON array of phone targets"),
        Invalid(ErrorCode.INVALID_FIELD, "must be a JSON array of phone targets"),
    ] = None
    caption: Text | None = None
    filename: Text | None = None

    def wire(self) -> dict[str, Any]:
        """The engine's message fields (the upload adds the file's)."""
        out: dict[str, Any] = {"to": self.to, "type": self.type}
        if self.quotedMessageId is not None:
            out["reply_to"] = self.quotedMessageId
        if self.mentions is not None:
            out["mentions"] = self.mentions
        out["caption"], out["filename"] = self.caption, self.filename
        return out


class MessagesQuery(Query):
    """GET /session/{id}/messages."""

    limit: Annotated[
        int, Field(ge=1, le=MAX_PAGE), Invalid(ErrorCode.INVALID_QUERY, f"must be an integer from 1 to {MAX_PAGE}")
    ] = 50
    offset: Annotated[
        int, Field(ge=0, le=10**9), Invalid(ErrorCode.INVALID_QUERY, "must be an integer from 0 to 1000000000")
    ] = 0
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


class MediaPath(Query):
    """The path of a stored media file."""

    bucket: str
    key: str


class PathId(Query):
    """The ``{id}`` of /session/{id}/... paths."""

    id: SessionId


class SendHeaders(Query):
    """Headers of POST /session/{id}/send."""

    idempotencyKey: Annotated[IdempotencyKey | None, Field(alias="Idempotency-Key")] = None


class StreamHeaders(Query):
    """Headers of GET /events/stream."""

    lastEventId: Annotated[EventSeq | None, Field(alias="Last-Event-ID")] = None


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

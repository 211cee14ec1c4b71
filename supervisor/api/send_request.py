"""What a client may ask POST /session/{id}/send to send, checked and turned into the
engine's message fields (OutgoingMessage on the wire, without the id the worker assigns)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from supervisor.api import validation as v
from supervisor.api.errors import ApiError

JSON_TYPES = ("text", "location", "contact", "reaction")
MEDIA_TYPES = ("image", "document", "audio", "video")
MAX_MENTIONS = 256


def _text(value: object, field: str, *, required: bool, allow_empty: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ApiError(400, "INVALID_FIELD", f"{field} must be a non-empty string")
    if len(value) > v.MAX_TEXT:
        raise ApiError(400, "INVALID_FIELD", f"{field} is longer than {v.MAX_TEXT} characters")
    return value


def _coordinate(body: dict[str, Any], field: str, limit: float) -> float:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, "INVALID_FIELD", f"{field} must be a number")
    if abs(value) > limit:
        raise ApiError(400, "INVALID_FIELD", f"{field} must be between -{limit:g} and {limit:g}")
    return float(value)


def _message_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128 or not value.isprintable():
        raise ApiError(400, "INVALID_FIELD", f"{field} must be a message id")
    return value


def _vcard(name: str, phone: str) -> str:
    digits = phone.split("@", 1)[0]
    return f"BEGIN:VCARD\nVERSION:3.0\nFN:{name}\nTEL;type=CELL;waid={digits}:+{digits}\nEND:VCARD"


def common_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Fields every message type may carry: reply context and mentions."""
    out: dict[str, Any] = {}
    quoted = body.get("quotedMessageId")
    if quoted is not None:
        out["reply_to"] = _message_id(quoted, "quotedMessageId")
    mentions = body.get("mentions")
    if mentions is not None:
        if not isinstance(mentions, list) or len(mentions) > MAX_MENTIONS:
            raise ApiError(400, "INVALID_FIELD", f"mentions must be a list of at most {MAX_MENTIONS} phone targets")
        out["mentions"] = [v.phone_target(m, field="mentions[]") for m in mentions]
    return out


def parse_json_message(body: dict[str, Any]) -> dict[str, Any]:
    """The wire fields of a JSON send request (every type but media)."""
    to = v.phone_target(body.get("to"))
    kind = body.get("type", "text")
    if kind in MEDIA_TYPES:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", f"send {kind} messages as multipart/form-data with a file part")
    if kind not in JSON_TYPES:
        raise ApiError(
            400, "INVALID_TYPE", f"type must be one of {', '.join(JSON_TYPES + MEDIA_TYPES)}; got {kind!r}"
        )
    msg: dict[str, Any] = {"to": to, "type": kind, **common_fields(body)}
    if kind == "text":
        msg["text"] = _text(body.get("text", body.get("message")), "text", required=True)
    elif kind == "location":
        msg["latitude"] = _coordinate(body, "latitude", 90)
        msg["longitude"] = _coordinate(body, "longitude", 180)
        msg["name"] = _text(body.get("name"), "name", required=False)
        msg["address"] = _text(body.get("address"), "address", required=False)
    elif kind == "contact":
        contact = body.get("contact")
        if not isinstance(contact, dict):
            raise ApiError(400, "INVALID_FIELD", "contact must be an object {name, phoneNumber} or {name, vcard}")
        name = _text(contact.get("name"), "contact.name", required=True)
        assert name is not None
        vcard = _text(contact.get("vcard"), "contact.vcard", required=False)
        if vcard is None:
            vcard = _vcard(name, v.phone_target(contact.get("phoneNumber"), field="contact.phoneNumber"))
        elif not vcard.startswith("BEGIN:VCARD"):
            raise ApiError(400, "INVALID_FIELD", "contact.vcard must be a vCard (BEGIN:VCARD ... END:VCARD)")
        msg["name"], msg["vcard"] = name, vcard
    elif kind == "reaction":
        msg["reaction_to"] = _message_id(body.get("messageId"), "messageId")
        msg["text"] = _text(body.get("emoji"), "emoji", required=True, allow_empty=True)
    return msg


def parse_media_fields(fields: dict[str, str]) -> dict[str, Any]:
    """The wire fields of a multipart media send (the file itself is handled by the upload)."""
    kind = fields.get("type")
    if kind not in MEDIA_TYPES:
        raise ApiError(400, "INVALID_TYPE", f"a multipart send needs type one of {', '.join(MEDIA_TYPES)}")
    body: dict[str, Any] = dict(fields)
    if "mentions" in fields:
        try:
            body["mentions"] = json.loads(fields["mentions"])
        except ValueError:
            raise ApiError(400, "INVALID_FIELD", "mentions must be a JSON array of phone targets") from None
    msg: dict[str, Any] = {"to": v.phone_target(fields.get("to")), "type": kind, **common_fields(body)}
    msg["caption"] = _text(fields.get("caption"), "caption", required=False)
    msg["filename"] = _text(fields.get("filename"), "filename", required=False)
    return msg


def fingerprint(message: dict[str, Any]) -> str:
    """A digest of what was asked, so a reused Idempotency-Key with another request is caught.

    Media count by their content digest, not by where this upload happened to be stored.
    """
    asked = {k: v for k, v in message.items() if k not in ("media_path", "media_ref")}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


def idempotency_key(headers: Any) -> str | None:
    """The Idempotency-Key header, checked."""
    key = headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > 255 or not key.isprintable():
        raise ApiError(400, "INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1-255 printable characters")
    return str(key)

"""What a client may ask POST /session/{id}/send to send, read through ``bodies`` and turned into the
engine's message fields (OutgoingMessage on the wire, without the id the worker assigns)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from supervisor.api import bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError


def parse_json_message(body: dict[str, Any]) -> dict[str, Any]:
    """The wire fields of a JSON send request (every type but media)."""
    kind = body.get("type", "text")
    if kind in bodies.MEDIA_TYPES:
        raise ApiError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"send {kind} messages as multipart/form-data with a file part"
        )
    _refuse_media_flags(body)
    model = bodies.SEND_BODIES.get(kind) if isinstance(kind, str) else None
    if model is None:
        kinds = ", ".join(bodies.JSON_TYPES + bodies.MEDIA_TYPES)
        raise ApiError(400, ErrorCode.INVALID_TYPE, f"type must be one of {kinds}; got {kind!r}")
    return v.parse(model, body).wire()


def _refuse_media_flags(body: dict[str, Any]) -> None:
    # Ignoring them would send an ordinary message where the client asked for one shown once.
    if body.get("viewOnce") not in (None, False):
        raise ApiError(
            400, ErrorCode.VIEW_ONCE_NOT_ALLOWED, "viewOnce is for image and video, sent as multipart/form-data"
        )
    if body.get("voice") not in (None, False):
        raise ApiError(400, ErrorCode.VOICE_NOT_ALLOWED, "voice is for audio, sent as multipart/form-data")


def parse_media_fields(fields: dict[str, str]) -> dict[str, Any]:
    """The wire fields of a multipart media send (the file itself is handled by the upload)."""
    return v.parse(bodies.SendMediaRequest, fields).wire()


def fingerprint(message: dict[str, Any]) -> str:
    """A digest of what was asked, so a reused Idempotency-Key with another request is caught.

    Media count by their content digest, not by where this upload happened to be stored.
    """
    asked = {k: v for k, v in message.items() if k not in ("media_path", "media_ref")}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()

"""Checks on what clients send: session ids, phone targets, JSON bodies."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from supervisor.api.errors import ApiError

# Session ids become file and object names: nothing else may pass.
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIGITS = re.compile(r"^\+?[0-9]{5,20}$")
_JID = re.compile(r"^[0-9]{5,20}@s\.whatsapp\.net$|^[0-9]{5,20}(-[0-9]{5,20})?@g\.us$")
MAX_TEXT = 65536


def session_id(value: object, *, field: str = "sessionId") -> str:
    """A valid session id, or a 400."""
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise ApiError(
            400, "INVALID_SESSION_ID", f"{field} must match {SESSION_ID.pattern} (letters, digits, . _ -; max 64)"
        )
    return value


def path_session_id(request: web.Request) -> str:
    return session_id(request.match_info["id"], field="session id")


def phone_target(value: object, *, field: str = "to") -> str:
    """A JID for a phone target given as a JID or as digits (a leading + and separators allowed)."""
    if not isinstance(value, str):
        raise ApiError(400, "INVALID_TARGET", f"{field} must be a string: a JID or a phone number")
    candidate = value.strip()
    if _JID.fullmatch(candidate):
        return candidate
    digits = re.sub(r"[\s\-()]", "", candidate)
    if _DIGITS.fullmatch(digits):
        return f"{digits.lstrip('+')}@s.whatsapp.net"
    raise ApiError(400, "INVALID_TARGET", f"{field} must be a JID (628...@s.whatsapp.net, ...@g.us) or digits")


def phone_digits(value: object, *, field: str = "phoneNumber") -> str:
    """A phone number as digits only (a leading + and separators allowed), or a 400."""
    if isinstance(value, str):
        digits = re.sub(r"[\s\-()]", "", value.strip()).lstrip("+")
        if _DIGITS.fullmatch(digits):
            return digits
    raise ApiError(400, "INVALID_PHONE", f"{field} must be a phone number in international format, digits only")


def optional_str(body: dict[str, Any], name: str, *, max_len: int = 256) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise ApiError(400, "INVALID_FIELD", f"{name} must be a string of at most {max_len} characters")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 415/400 saying what is wrong."""
    if request.content_type != "application/json":
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "send the body as application/json")
    try:
        body = await request.json(loads=json.loads)
        # JSON may escape lone surrogates (\ud800) that no UTF-8 store or engine accepts.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError):
        raise ApiError(400, "INVALID_JSON", "the body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise ApiError(400, "INVALID_JSON", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_JSON", "the body must be a JSON object")
    return body

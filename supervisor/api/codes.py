"""Every machine code an error answer may carry (``{"success": false, "error", "code"}``).

One enum, so the OpenAPI document lists them and a code cannot be misspelt in a route.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine codes of error answers, for programs (the ``error`` text is for people)."""

    # the request itself
    BAD_REQUEST = "BAD_REQUEST"
    INVALID_JSON = "INVALID_JSON"
    INVALID_FIELD = "INVALID_FIELD"
    INVALID_QUERY = "INVALID_QUERY"
    INVALID_SESSION_ID = "INVALID_SESSION_ID"
    INVALID_TARGET = "INVALID_TARGET"
    INVALID_PHONE = "INVALID_PHONE"
    INVALID_TYPE = "INVALID_TYPE"
    INVALID_WEBHOOK = "INVALID_WEBHOOK"
    INVALID_PROXY = "INVALID_PROXY"
    WEBHOOK_URL_REFUSED = "WEBHOOK_URL_REFUSED"  # well formed, but aimed at a non-public address
    INVALID_MULTIPART = "INVALID_MULTIPART"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    MEDIA_MISSING = "MEDIA_MISSING"
    MEDIA_TYPE_MISMATCH = "MEDIA_TYPE_MISMATCH"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    # polls, stickers, view-once and voice notes
    INVALID_POLL = "INVALID_POLL"  # the poll field is missing or not an object
    INVALID_POLL_NAME = "INVALID_POLL_NAME"
    INVALID_POLL_OPTIONS = "INVALID_POLL_OPTIONS"  # not 2-12 non-blank strings of at most 100 characters
    POLL_OPTIONS_NOT_DISTINCT = "POLL_OPTIONS_NOT_DISTINCT"  # votes name options by a hash of their text
    VIEW_ONCE_NOT_ALLOWED = "VIEW_ONCE_NOT_ALLOWED"  # viewOnce on another type than image or video
    VOICE_NOT_ALLOWED = "VOICE_NOT_ALLOWED"  # voice on another type than audio
    POLL_NOT_FOUND = "POLL_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    NOT_ON_WHATSAPP = "NOT_ON_WHATSAPP"  # a contact looked up, blocked or timed is not on WhatsApp
    INVALID_RECIPIENT = "INVALID_RECIPIENT"  # the engine cannot address that chat or sender
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    HTTP_ERROR = "HTTP_ERROR"
    # credentials and limits
    UNAUTHORIZED = "UNAUTHORIZED"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    INVALID_TOKEN = "INVALID_TOKEN"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    # the session's state
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_NOT_CONNECTED = "SESSION_NOT_CONNECTED"
    SESSION_NOT_READY = "SESSION_NOT_READY"
    ALREADY_LINKED = "ALREADY_LINKED"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    ENGINE_ERROR = "ENGINE_ERROR"  # WhatsApp (or the engine) refused or failed an account operation
    ENGINE_TIMEOUT = "ENGINE_TIMEOUT"  # the session's process did not answer in time
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    MESSAGE_SENDING = "MESSAGE_SENDING"  # on its way to WhatsApp right now: too late to cancel
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    SESSION_LEASED = "SESSION_LEASED"
    BACKUP_REFUSED = "BACKUP_REFUSED"
    PROXY_MISMATCH = "PROXY_MISMATCH"
    PROXY_UNREADABLE = "PROXY_UNREADABLE"
    # edits and revokes of a message in history
    UNKNOWN_MESSAGE = "UNKNOWN_MESSAGE"  # history holds no message with this id
    NOT_OWN_MESSAGE = "NOT_OWN_MESSAGE"  # only the session's own messages can be edited or revoked
    EDIT_WINDOW_EXPIRED = "EDIT_WINDOW_EXPIRED"  # WhatsApp accepts edits for 15 minutes (EDIT_WINDOW)
    MESSAGE_NOT_EDITABLE = "MESSAGE_NOT_EDITABLE"  # not a text or a captioned media message, or not sent
    MESSAGE_REVOKED = "MESSAGE_REVOKED"  # deleted for everyone already
    # the worker
    CAPACITY = "CAPACITY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORAGE_FULL = "STORAGE_FULL"  # the worker's disk refused a write; retry once space is freed
    INTERNAL = "INTERNAL"
    # groups (issue 17)
    NOT_ADMIN = "NOT_ADMIN"  # WhatsApp refuses this to a member who is not an admin of the group
    GROUP_NOT_FOUND = "GROUP_NOT_FOUND"  # no such group, or this account is not in it
    INVITE_INVALID = "INVITE_INVALID"  # the invite code was revoked or never issued
    # the simulated network, through the dashboard (WA_ENGINE=sim)
    SIM_REFUSED = "SIM_REFUSED"  # the simulated network refused (an expired QR, no such phone linked)
    SIM_UNAVAILABLE = "SIM_UNAVAILABLE"  # the simulated network did not answer

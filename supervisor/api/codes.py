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
    NOT_FOUND = "NOT_FOUND"
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
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    SESSION_LEASED = "SESSION_LEASED"
    BACKUP_REFUSED = "BACKUP_REFUSED"
    PROXY_MISMATCH = "PROXY_MISMATCH"
    PROXY_UNREADABLE = "PROXY_UNREADABLE"
    # the worker
    CAPACITY = "CAPACITY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORAGE_FULL = "STORAGE_FULL"  # the worker's disk refused a write; retry once space is freed
    INTERNAL = "INTERNAL"
    # the simulated network, through the dashboard (WA_ENGINE=sim)
    SIM_REFUSED = "SIM_REFUSED"  # the simulated network refused (an expired QR, no such phone linked)
    SIM_UNAVAILABLE = "SIM_UNAVAILABLE"  # the simulated network did not answer

"""The two answer shapes: ``{"success": true, "data": ...}`` and, for every failure,
``{"success": false, "error": "...", "code": "..."}``.

The middleware turns every exception into that shape; a stack trace never
reaches a client (it goes to the log, once, with the request's context).
"""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from supervisor.api.codes import ErrorCode
from supervisor.sessions import SessionError

log = logging.getLogger("supervisor.api")

# Session command failures, by machine code, to HTTP statuses.
SESSION_ERROR_STATUS = {
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_NOT_CONNECTED: 409,
    ErrorCode.SESSION_NOT_READY: 409,
    ErrorCode.ALREADY_LINKED: 409,
    ErrorCode.NOT_SUPPORTED: 409,
    ErrorCode.ENGINE_ERROR: 502,
    ErrorCode.ENGINE_TIMEOUT: 504,
    ErrorCode.NOT_ON_WHATSAPP: 404,
    ErrorCode.INVALID_PHONE: 400,
    ErrorCode.INVALID_RECIPIENT: 400,
    ErrorCode.PROXY_MISMATCH: 409,
    ErrorCode.PROXY_UNREADABLE: 409,
    ErrorCode.UNKNOWN_MESSAGE: 404,
    ErrorCode.NOT_OWN_MESSAGE: 409,
    ErrorCode.EDIT_WINDOW_EXPIRED: 409,
    ErrorCode.MESSAGE_NOT_EDITABLE: 409,
    ErrorCode.MESSAGE_REVOKED: 409,
    ErrorCode.CAPACITY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    # object storage (leases, backups)
    ErrorCode.SESSION_LEASED: 409,
    ErrorCode.BACKUP_REFUSED: 409,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    # groups (issue 17)
    ErrorCode.NOT_ADMIN: 409,
    ErrorCode.GROUP_NOT_FOUND: 404,
    ErrorCode.INVITE_INVALID: 404,
}

# aiohttp's own HTTP errors (no route, wrong method, body too large), by status, to machine codes.
HTTP_ERROR_CODE = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


class ApiError(Exception):
    """An answer other than success: HTTP status, machine code, human message."""

    def __init__(self, status: int, code: ErrorCode, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def ok(data: Any, status: int = 200) -> web.Response:
    """The success envelope ``{"success": true, "data": ...}`` (``data`` as declared in ``answers``)."""
    return web.json_response({"success": True, "data": data}, status=status)


def error_response(status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The one error shape (declared as ``Error`` in the OpenAPI document)."""
    return web.json_response({"success": False, "error": message, "code": code}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _session_error(exc: SessionError) -> web.Response:
    try:
        code = ErrorCode(exc.code)
    except ValueError:
        log.error("a session command failed with an undeclared code %s: %s", exc.code, exc.message)
        return error_response(500, ErrorCode.INTERNAL, "internal error; see the worker's log")
    status = SESSION_ERROR_STATUS.get(code, 500)
    if exc.retry_after is not None:  # starting or reconnecting: the same call should work shortly
        headers: dict[str, str] | None = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    else:
        headers = {"Retry-After": "5"} if status in (429, 503) else None
    return error_response(status, code, exc.message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure in the one error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except SessionError as exc:
        return _session_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_ERROR_CODE.get(exc.status, ErrorCode.HTTP_ERROR)
        # Allow (on 405) tells the client what would work; other headers of the exception are aiohttp's.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.reason, headers)
    except Exception as exc:
        if disk_full(exc):
            # An answer, not a crash: nothing was accepted, and the same call works once space is freed.
            log.error("disk full: %s %s refused", request.method, request.path)
            return error_response(
                507,
                ErrorCode.STORAGE_FULL,
                "the worker's disk is full: nothing was accepted; retry once space is freed",
                {"Retry-After": str(DISK_FULL_RETRY_AFTER)},
            )
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, ErrorCode.INTERNAL, "internal error; see the worker's log")


# Seconds a client is told to wait after a write the full disk refused.
DISK_FULL_RETRY_AFTER = 30


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the disk refusing a write: ENOSPC/EDQUOT, or SQLite's FULL."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False

"""One error shape for every answer: ``{"success": false, "error": "...", "code": "..."}``.

The middleware turns every exception into that shape; a stack trace never
reaches a client (it goes to the log, once, with the request's context).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from supervisor.sessions import SessionError

log = logging.getLogger("supervisor.api")

# Session command failures, by machine code, to HTTP statuses.
SESSION_ERROR_STATUS = {
    "SESSION_NOT_FOUND": 404,
    "SESSION_NOT_CONNECTED": 409,
    "CAPACITY": 503,
    "SHUTTING_DOWN": 503,
    "SEND_FAILED": 502,
    "SEND_TIMEOUT": 504,
    "SESSION_NOT_READY": 409,
    "ALREADY_LINKED": 409,
    "NOT_SUPPORTED": 409,
    "INVALID_PHONE": 400,
    "RATE_LIMITED": 429,
    "SESSION_LEASED": 409, "BACKUP_REFUSED": 409, "STORAGE_UNAVAILABLE": 503,  # object storage (leases, backups)
}

# aiohttp's own HTTP errors (no route, wrong method, body too large), by status, to machine codes.
HTTP_ERROR_CODE = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class ApiError(Exception):
    """An answer other than success: HTTP status, machine code, human message."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"success": False, "error": message, "code": code}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure in the one error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except SessionError as exc:
        status = SESSION_ERROR_STATUS.get(exc.code, 500)
        if exc.retry_after is not None:
            headers: dict[str, str] | None = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        else:
            headers = {"Retry-After": "5"} if status in (429, 503) else None
        return error_response(status, exc.code, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_ERROR_CODE.get(exc.status, "HTTP_ERROR")
        # Allow (on 405) tells the client what would work; other headers of the exception are aiohttp's.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "INTERNAL", "internal error; see the worker's log")

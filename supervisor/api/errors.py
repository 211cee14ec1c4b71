"""One error shape for every answer: ``{"success": false, "error": "...", "code": "..."}``.

The middleware turns every exception into that shape; a stack trace never
reaches a client (it goes to the log, once, with the request's context).
"""

from __future__ import annotations

import logging
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
        headers = {"Retry-After": "5"} if status == 503 else None
        return error_response(status, exc.code, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(exc.status, "HTTP_ERROR")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "INTERNAL", "internal error; see the worker's log")

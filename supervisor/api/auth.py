"""Authentication: ``X-Worker-Token`` on everything but ``/health``, compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from supervisor.api.errors import Handler, error_response

OPEN_PATHS = frozenset({"/health"})


def token_middleware(token: str) -> object:
    """Middleware requiring ``X-Worker-Token: <token>``."""
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("X-Worker-Token")
        if given is None:
            return error_response(401, "UNAUTHORIZED", "send the worker token in X-Worker-Token")
        if not hmac.compare_digest(given.encode(), expected):
            return error_response(403, "FORBIDDEN", "the worker token is wrong")
        return await handler(request)

    return check_token

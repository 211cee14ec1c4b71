"""Rate limits, in process: sends per session, session operations per client.

WhatsApp bans accounts that blast messages, so sends are limited per session
(whoever asks); operations that start or stop processes (create, restart,
logout, pair-code, delete) are limited per client credential so one caller
cannot churn the worker. Moving windows of one minute (the `limits` library,
memory storage); a refused request answers 429 with ``Retry-After`` in seconds.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from aiohttp import web
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from supervisor.api.auth import CLIENT
from supervisor.api.bodies import SESSION_ID_PATTERN
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError, Handler
from supervisor.api.operations import template

SESSION_ID = re.compile(SESSION_ID_PATTERN)
SEND_ROUTE = ("POST", "/session/{id}/send")
SESSION_OPS = frozenset(
    {
        ("POST", "/session/create"),
        ("POST", "/session/{id}/restart"),
        ("POST", "/session/{id}/logout"),
        ("POST", "/session/{id}/pair-code"),
        ("DELETE", "/session/{id}"),
    }
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per minute; 0 switches a limit off."""

    send_per_session: int
    session_ops_per_client: int


class RateLimiter:
    """The worker's limits over one in-memory moving-window store."""

    def __init__(self, limits: RateLimits) -> None:
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._send: RateLimitItem | None = (
            RateLimitItemPerMinute(limits.send_per_session) if limits.send_per_session > 0 else None
        )
        self._ops: RateLimitItem | None = (
            RateLimitItemPerMinute(limits.session_ops_per_client) if limits.session_ops_per_client > 0 else None
        )

    async def _hit(self, item: RateLimitItem, scope: str, key: str, what: str) -> None:
        if await self._limiter.hit(item, scope, key):
            return
        stats = await self._limiter.get_window_stats(item, scope, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            f"{what}: at most {item.amount} per minute; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )

    async def check(self, request: web.Request) -> None:
        """Count ``request`` against its limit; raise a 429 ApiError when it is over."""
        info = request.match_info
        route = getattr(info, "route", None)
        resource = getattr(route, "resource", None)
        if resource is None:
            return
        key = (request.method, template(resource.canonical))
        session_id = info.get("id")
        if session_id is not None and not SESSION_ID.fullmatch(session_id):
            return  # a malformed id is the handler's 400 and costs nothing: it touches no process
        if key == SEND_ROUTE and self._send is not None and session_id is not None:
            await self._hit(self._send, "send", session_id, f"sends for session {session_id}")
        elif key in SESSION_OPS and self._ops is not None:
            client = str(request.get(CLIENT) or request.remote or "unknown")
            await self._hit(self._ops, "session-ops", client, "session operations")

    def middleware(self) -> object:
        """The aiohttp middleware (it must run after authentication, which names the client)."""

        @web.middleware
        async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            await self.check(request)
            return await handler(request)

        return rate_limit

"""Rate limits, in process: sends per session, session operations per client.

WhatsApp bans accounts that blast messages, so sends are limited per session
(whoever asks), in moving windows of one minute (the `limits` library, memory
storage). Operations that start or stop processes (create, restart, logout,
pair-code, delete) are limited per client credential so one caller cannot churn
the worker, by a token bucket: a backend moving a dead worker's sessions here
creates them all at once, and that burst (up to twice ``MAX_SESSIONS`` by
default) must pass, while a runaway client is held to the sustained rate. A
refused request answers 429 with ``Retry-After`` in seconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
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
    # session operations one client may make at once before the per-minute rate applies
    session_ops_burst: int = 0


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` requests at once, refilled at ``per_minute``."""

    capacity: float
    per_minute: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        """Add what the time since the last look earned, up to the capacity."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_minute / 60.0)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0, or the seconds until one is there (nothing taken)."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * 60.0 / self.per_minute


# Idle clients' buckets (full again) are forgotten past this many clients.
MAX_BUCKETS = 1000


class RateLimiter:
    """The worker's limits over one in-memory moving-window store."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._send: RateLimitItem | None = (
            RateLimitItemPerMinute(limits.send_per_session) if limits.send_per_session > 0 else None
        )

    def take_session_op(self, client: str) -> None:
        """Count one session operation of ``client``; raise a 429 ApiError when its bucket is empty."""
        per_minute = self.limits.session_ops_per_client
        if per_minute <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            capacity = float(max(self.limits.session_ops_burst, 1))
            bucket = self._buckets[client] = TokenBucket(capacity, per_minute, capacity, now)
        wait = bucket.take(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                f"session operations: at most {int(bucket.capacity)} at once, then {per_minute} per minute;"
                f" retry in {retry_after}s",
                headers={"Retry-After": str(retry_after)},
            )

    def _forget_idle(self, now: float) -> None:
        for client, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.capacity:  # full: forgetting it changes nothing
                del self._buckets[client]

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
        elif key in SESSION_OPS:
            self.take_session_op(str(request.get(CLIENT) or request.remote or "unknown"))

    def middleware(self) -> object:
        """The aiohttp middleware (it must run after authentication, which names the client)."""

        @web.middleware
        async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
            await self.check(request)
            return await handler(request)

        return rate_limit

"""Delivering the event log over HTTP: to the backend, and to each session's webhook.

At least once, in order: a consumer posts one event at a time and moves its
stored cursor only after a 2xx answer, retrying the same event with exponential
backoff otherwise. A receiver dedupes on the event's ``id`` (also sent as
``X-Event-Id``). A worker killed between an event's commit and its delivery
delivers it after it starts again.

Webhook signatures (``X-Signature: t=<unix seconds>,v1=<hex>``): ``v1`` is
HMAC-SHA256 keyed with the webhook's secret over ``f"{t}.{raw body}"``; a
receiver recomputes it over the exact bytes it received and rejects stale ``t``.

No redirect is followed (a redirect would carry the body, and the backend's token, to wherever the
receiver points): a 3xx is a failed delivery like a 5xx. What went wrong is kept as a category
(``timeout``, ``refused``, ``http_503``, ...; :func:`failure_category`), never the raw error: a
webhook's owner reads it back through the API, and connection errors would tell them which ports
answer on hosts they cannot reach themselves. The log keeps the detail.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.tasks import cancel_and_wait
from supervisor.database.store import EventRow
from supervisor.events.destinations import RefusedDestination
from supervisor.events.log import EventLog, envelope

log = logging.getLogger("supervisor.events.delivery")

RETRY_FIRST = 0.5
RETRY_MAX = 60.0
POST_TIMEOUT = 10.0
IDLE_WAIT = 5.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """Check an ``X-Signature`` header the way a receiver should (constant time, freshness)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def status_category(status: int) -> str:
    """A non-2xx answer as a failure category: ``http_3xx`` for any redirect, else ``http_<status>``."""
    return "http_3xx" if 300 <= status < 400 else f"http_{status}"


def failure_category(exc: BaseException) -> str:
    """What a failed call's exception says, as one word an API client may read back."""
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(exc, RefusedDestination) or isinstance(cause, RefusedDestination):
        return "refused_address"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(cause, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "unreachable"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return "connection_lost"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_response"
    return "error"


@dataclass(slots=True)
class Target:
    """Where one consumer posts its events."""

    name: str  # the cursor's name in the store
    url: str
    headers: dict[str, str]
    session_id: str | None = None  # only this session's events (webhooks)
    secret: str | None = None  # sign with this (webhooks)
    start_at_end: bool = False  # a new consumer starts with the events that come after it


class Deliverer:
    """One consumer of the event log posting to one URL."""

    def __init__(
        self,
        events: EventLog,
        http: aiohttp.ClientSession,
        target: Target,
        *,
        worker_id: str,
        on_delivered: Callable[[EventRow], Awaitable[bool]] | None = None,
    ) -> None:
        self.events = events
        self.http = http
        self.target = target
        self.worker_id = worker_id
        self.on_delivered = on_delivered
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.cursor = 0
        self._progress = asyncio.Event()  # replaced after each delivered event; flush() waits on it
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"deliver-{self.target.name}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def flush(self) -> None:
        """Return once everything queued before this call was delivered (callers bound the wait)."""
        target = await self.events.store.last_event_seq()
        while self.cursor < target:
            progress = self._progress
            await progress.wait()

    async def _run(self) -> None:
        store = self.events.store
        start = await store.last_event_seq() if self.target.start_at_end else 0
        self.cursor = await store.consumer_cursor(self.target.name, start=start, session_id=self.target.session_id)
        while True:
            try:
                rows = await self.events.wait(self.cursor, timeout=IDLE_WAIT, session_id=self.target.session_id)
                for row in rows:
                    await self._deliver(row)
                    await store.advance_consumer(self.target.name, row.seq)
                    self.cursor = row.seq
                    progress, self._progress = self._progress, asyncio.Event()
                    progress.set()
                    if self.on_delivered is not None and await self.on_delivered(row):
                        return  # the consumer is done for good
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery to %s failed unexpectedly", self.target.name)
                await asyncio.sleep(RETRY_MAX)

    async def _deliver(self, row: EventRow) -> None:
        body = json.dumps(envelope(row), separators=(",", ":"), default=str).encode()
        delay = RETRY_FIRST
        outage = False
        while True:
            headers = {
                **self.target.headers,
                "Content-Type": "application/json",
                "X-Event-Id": str(row.seq),
                "X-Worker-Id": self.worker_id,
            }
            if self.target.secret is not None:
                headers["X-Signature"] = sign(self.target.secret, body, int(time.time()))
            try:
                async with self.http.post(
                    self.target.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT),
                    allow_redirects=False,
                ) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        if outage:
                            log.info("%s takes events again", self.target.name, extra=self._extra(row))
                        self.last_error = None
                        return
                    category = status_category(resp.status)
                    detail = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                category = failure_category(exc)
                # A connection error's text names host and port; an invalid URL's would be the URL itself,
                # credentials included, so that one is logged by its kind only.
                detail = type(exc).__name__ if isinstance(exc, aiohttp.InvalidURL) else f"{type(exc).__name__}: {exc}"
            self.failures += 1
            self.last_error = category
            if not outage:
                # Once per outage: a receiver down for an hour must not write thousands of lines.
                log.warning(
                    "%s refused event %d (%s; %s); retrying with backoff",
                    self.target.name,
                    row.seq,
                    category,
                    detail,
                    extra=self._extra(row),
                )
                outage = True
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(RETRY_MAX, delay * 2)

    def _extra(self, row: EventRow) -> dict[str, Any]:
        return {"workerId": self.worker_id, **({"sessionId": row.session_id} if row.session_id else {})}

"""The session-operation token bucket, on a fake clock: a failover's burst passes, a runaway client waits."""

from __future__ import annotations

import pytest

from supervisor.api.errors import ApiError
from supervisor.api.ratelimit import MAX_BUCKETS, RateLimiter, RateLimits, TokenBucket
from supervisor.config import load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_backend_moving_max_sessions_at_once_is_not_refused() -> None:
    settings = load({"MAX_SESSIONS": "50"})
    assert (settings.rate_limit_session_ops, settings.rate_limit_session_ops_burst) == (30, 100)
    clock = Clock()
    limiter = RateLimiter(
        RateLimits(100, settings.rate_limit_session_ops, settings.rate_limit_session_ops_burst), clock=clock
    )
    for _ in range(50):  # a dead worker's sessions, created here in the same second
        limiter.take_session_op("backend")
    for _ in range(50):  # and each restarted once
        limiter.take_session_op("backend")
    with pytest.raises(ApiError) as info:  # a runaway client: the bucket is empty
        limiter.take_session_op("backend")
    assert (info.value.status, info.value.code) == (429, "RATE_LIMITED")
    assert info.value.headers == {"Retry-After": "2"}  # 30 per minute: one every 2 s
    limiter.take_session_op("dashboard")  # another credential has its own bucket
    clock.now += 2.0
    limiter.take_session_op("backend")
    with pytest.raises(ApiError):
        limiter.take_session_op("backend")
    clock.now += 60.0
    for _ in range(30):  # the sustained rate
        limiter.take_session_op("backend")
    with pytest.raises(ApiError):
        limiter.take_session_op("backend")


def test_the_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(capacity=3, per_minute=6, tokens=3, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(10.0)  # one token every 10 s
    assert bucket.take(5.0) == pytest.approx(5.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(3600.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # never more than capacity


def test_zero_switches_the_limit_off_and_idle_buckets_are_forgotten() -> None:
    off = RateLimiter(RateLimits(0, 0, 1))
    for _ in range(1000):
        off.take_session_op("x")
    clock = Clock()
    limiter = RateLimiter(RateLimits(0, 60, 5), clock=clock)
    for n in range(MAX_BUCKETS):
        limiter.take_session_op(f"client-{n}")
    clock.now += 60.0  # everyone's bucket is full again
    limiter.take_session_op("one-more")
    assert len(limiter._buckets) == 1

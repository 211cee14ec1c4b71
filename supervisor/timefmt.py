"""Timestamps as the API and events show them: ISO 8601 in UTC with milliseconds."""

from __future__ import annotations

import time


def iso(ts: float | None) -> str | None:
    """``2026-11-29T05:06:00.123Z`` for epoch seconds; None stays None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"

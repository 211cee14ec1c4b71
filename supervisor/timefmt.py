"""Points in time as every answer, event and heartbeat shows them: ISO 8601 in UTC with milliseconds.

One format everywhere (``2026-12-01T01:59:18.236Z``, the seed's): a backend parses
every time field the same way (``new Date(...)`` in JavaScript). Durations are
not points in time and stay numbers of seconds.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import overload

# Exactly what ``iso`` writes: the contract test holds every time field to it.
ISO_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: None) -> None: ...
@overload
def iso(ts: float | None) -> str | None: ...


def iso(ts: float | None) -> str | None:
    """``2026-11-29T05:06:00.123Z`` for epoch seconds (truncated to the millisecond); None stays None."""
    if ts is None:
        return None
    # Rounded to microseconds first: 0.236 * 1000 is 235.99999... in binary floating point.
    millis = math.floor(round(ts * 1000, 3))
    moment = datetime.fromtimestamp(millis // 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"


def epoch(text: str) -> float:
    """Epoch seconds of a time ``iso`` wrote (ValueError for anything else)."""
    if not ISO_PATTERN.match(text):
        raise ValueError(f"not an ISO 8601 UTC time with milliseconds: {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()

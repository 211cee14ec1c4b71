"""The supervisor's cyclic garbage collector, tuned for a long-running server."""

from __future__ import annotations

import gc

# Allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once start-up is done: keep the collector off what it built, and run it less often.

    Start-up objects (modules, the app, the store, the channels) live as long as the
    worker; frozen, full collections never scan them again (nor reclaim them, so call
    this before anything that may be dropped later, such as sessions). A young collection costs about the live
    objects it scans, which the requests in flight keep at much the same count however
    often it runs, so running it every 10,000 allocations instead of 700 cuts the time
    spent without leaving more than a few requests' worth of cyclic garbage. Measured
    at saturation (6 alternating runs each): supervisor CPU per message 0.70 -> 0.60 ms,
    send p99 118 -> 97 ms (medians).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)

"""Which asyncio event loop the worker's processes run on: uvloop (libuv) or the standard library's.

Every process of the worker (the supervisor, session processes, the simulated network's hub) starts
its loop here, so ``EVENT_LOOP`` chooses for all of them; the supervisor passes it to its children.
aiohttp's server and the ZeroMQ channels' reader callbacks (transport/channel.py) run on either.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")
DEFAULT = "uvloop"


def chosen(env: dict[str, str] | None = None) -> str:
    """The loop ``EVENT_LOOP`` names (``uvloop`` unless it says ``asyncio``); ValueError for anything else."""
    value = (os.environ if env is None else env).get(ENV) or DEFAULT
    if value not in LOOPS:
        raise ValueError(f"{ENV} must be one of {', '.join(LOOPS)}, not {value!r}")
    return value


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the chosen event loop (as ``asyncio.run`` does)."""
    if chosen() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)

"""This worker's version: the installed package's (registration, ``GET /metrics``)."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def worker_version() -> str:
    """The version of the installed ``wa-worker`` package (``0+unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("wa-worker")
    except metadata.PackageNotFoundError:
        return "0+unknown"

"""The success envelope of the API's JSON answers (all but /health and /metrics): ``{"success": true, "data": ...}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def ok(data: Any, status: int = 200) -> web.Response:
    """A successful answer carrying ``data``."""
    return web.json_response({"success": True, "data": data}, status=status)

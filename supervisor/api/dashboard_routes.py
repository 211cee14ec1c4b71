"""``/dashboard``: the operator's page, served from the package's own files.

The page is plain HTML, CSS and one script under supervisor/dashboard/; it loads
nothing from anywhere but this worker. It calls the same API with the same
credentials as a backend (the token the operator types, kept for the browser tab),
so the page itself and its files need none. The content security policy allows
this origin only; ``data:`` images are the QR codes the API answers as data URLs.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError
from supervisor.api.operations import Reply, operation

routes = web.RouteTableDef()

PAGE = "/dashboard"
ASSETS = "/dashboard/assets"
FILES = Path(__file__).resolve().parent.parent / "dashboard"
ASSET_TYPES = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str, content_type: str) -> web.Response:
    # Small files, read once per request: an operator's page, not a hot path.
    return web.Response(
        body=(FILES / name).read_bytes(), content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS
    )


@operation(
    routes,
    "GET",
    PAGE,
    id="dashboard",
    summary="The operator's dashboard (sign in with the API token)",
    tag="docs",
    open=True,
    ok=Reply("HTML", {"text/html": {"type": "string"}}, enveloped=False),
)
async def dashboard_page(request: web.Request) -> web.Response:
    return _file("index.html", "text/html")


@routes.get(ASSETS + "/{name}")
async def dashboard_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = ASSET_TYPES.get(name)
    if content_type is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no dashboard file {name!r}")
    return _file(name, content_type)

"""``/docs``: the OpenAPI document rendered by Swagger UI 5 (which reads OpenAPI 3.1).

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package, installed
with the worker and served from the virtualenv under /docs/assets/: the page
loads nothing from anywhere but this worker.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from supervisor.api.operations import Reply, operation

routes = web.RouteTableDef()

ASSETS = "/docs/assets"
UI_ASSETS = ASSETS + "/ui"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>WhatsApp worker API</title>
  <link rel="stylesheet" href="{ui}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ui}/swagger-ui-bundle.js"></script>
  <script src="{ui}/swagger-ui-standalone-preset.js"></script>
  <script src="{assets}/docs-init.js"></script>
</body>
</html>
"""

# Inline scripts would need a looser Content-Security-Policy; this one is served as a file.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  validatorUrl: null
});
"""


@operation(
    routes,
    "GET",
    "/docs",
    id="docs",
    summary="This document, rendered",
    tag="docs",
    open=True,
    ok=Reply("HTML", {"text/html": {"type": "string"}}, enveloped=False),
)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE.format(ui=UI_ASSETS, assets=ASSETS), content_type="text/html")


@routes.get(ASSETS + "/docs-init.js")
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=INIT_JS, content_type="application/javascript")


def swagger_ui_dir() -> Path | None:
    """Where the installed Swagger UI keeps its files (None when the package is missing or too old for 3.1)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    # Swagger UI before 5 cannot read OpenAPI 3.1 ("Unable to render this definition").
    if not path.name.startswith("swagger-ui-") or int(path.name.split("-")[2].split(".")[0]) < 5:
        return None
    return path if path.is_dir() else None


def add_assets(app: web.Application) -> None:
    """Serve Swagger UI's files under /docs/assets/ui/ from the installed package."""
    path = swagger_ui_dir()
    if path is not None:
        app.router.add_static(UI_ASSETS, path, follow_symlinks=False, append_version=False)

"""Putting the API together on an app: middlewares in their order, routes, and their state."""

from __future__ import annotations

from aiohttp import web

from supervisor.api import (
    dashboard_routes,
    docs,
    health_routes,
    metrics,
    openapi,
    operator_routes,
    session_routes,
    sim_routes,
)
from supervisor.api.auth import Credentials, JwtRules
from supervisor.api.errors import error_middleware
from supervisor.api.keys import CREDENTIALS
from supervisor.api.ratelimit import RateLimiter, RateLimits
from supervisor.config import Settings


def client_max_size(settings: Settings) -> int:
    """The largest request body in bytes (MAX_UPLOAD_MB); aiohttp answers 413 past it."""
    return int(settings.max_upload_mb * 1024 * 1024)


def install_api(app: web.Application, settings: Settings, token: str) -> None:
    """Add the middlewares (timing, errors, auth, rate limits: outermost first) and the API's routes."""
    limiter = RateLimiter(
        RateLimits(
            send_per_session=settings.rate_limit_send_per_session,
            session_ops_per_client=settings.rate_limit_session_ops,
            session_ops_burst=settings.rate_limit_session_ops_burst,
        )
    )
    credentials = Credentials(token, jwt_rules(settings))
    app[CREDENTIALS] = credentials
    app[metrics.STATS] = metrics.RequestStats()
    app[health_routes.BACKEND] = health_routes.BackendProbe()
    app.middlewares.extend(
        [
            metrics.metrics_middleware,
            error_middleware,
            credentials.middleware(),  # type: ignore[list-item]
            limiter.middleware(),  # type: ignore[list-item]
        ]
    )
    app.add_routes(health_routes.routes)
    app.add_routes(session_routes.routes)
    app.add_routes(metrics.routes)
    app.add_routes(openapi.routes)
    app.add_routes(docs.routes)
    docs.add_assets(app)
    app.add_routes(dashboard_routes.routes)
    app.add_routes(operator_routes.routes)
    app.add_routes(sim_routes.routes)


def jwt_rules(settings: Settings) -> JwtRules | None:
    """What the settings ask of a JWT; None without JWT_SECRET (JWTs are not accepted)."""
    if settings.jwt_secret is None:
        return None
    return JwtRules(
        settings.jwt_secret,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        max_lifetime=settings.jwt_max_lifetime,
    )

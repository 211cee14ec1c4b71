"""Authentication on everything but ``/health`` and the API's own description.

A client proves itself with ``X-Worker-Token: <WORKER_AUTH_TOKEN>`` (compared in
constant time) or ``Authorization: Bearer <JWT>``: a JWT signed with
``JWT_SECRET`` using HS256 only (the algorithm is pinned, so ``none`` or an
RS256 token signed with the secret as a "public key" never passes) and carrying
an ``exp`` that has not passed, no further away than ``JWT_MAX_LIFETIME`` from its
``iat`` (or from now), and, when configured, the expected ``aud`` (``JWT_AUDIENCE``)
and ``iss`` (``JWT_ISSUER``). The bearer may also be the worker token itself. A
credential that is not UTF-8 text is a 401, like a missing one.
Who the client is (``request["client"]``) keys the per-client rate limits.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from supervisor.api.codes import ErrorCode
from supervisor.api.errors import Handler, error_response

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/dashboard"})
OPEN_PREFIXES = ("/docs/", "/dashboard/assets/", "/media/")  # /media/: presigned URLs carry their own signature
JWT_ALGORITHMS = ["HS256"]
# Who the caller is, for rate limits and logs (never the secret itself).
CLIENT = web.RequestKey("client", str)


def _client_of_token(token: bytes) -> str:
    # A digest prefix names the credential without revealing it.
    return "token:" + hashlib.sha256(token).hexdigest()[:12]


LEEWAY = 5.0  # seconds of clock skew between the backend and this worker


@dataclass(frozen=True, slots=True)
class JwtRules:
    """What a JWT must carry besides a valid HS256 signature and an ``exp`` to come."""

    secret: str
    audience: str | None = None
    issuer: str | None = None
    max_lifetime: float = 0.0  # seconds from iat (or now) to exp at most; 0: any


def verify_jwt(token: str, rules: JwtRules) -> dict[str, object]:
    """The claims of a valid ``token``; raises ``jwt.InvalidTokenError`` (or a subclass) otherwise."""
    required = ["exp", *(["aud"] if rules.audience else []), *(["iss"] if rules.issuer else [])]
    claims = dict(
        jwt.decode(
            token,
            rules.secret,
            algorithms=JWT_ALGORITHMS,
            audience=rules.audience,
            issuer=rules.issuer,
            options={"require": required, "verify_exp": True, "verify_signature": True},
            leeway=LEEWAY,
        )
    )
    if rules.max_lifetime > 0:
        # A stolen token that lives for years is a key for years.
        issued = claims.get("iat")
        start = float(issued) if isinstance(issued, int | float) else time.time()
        exp = claims["exp"]
        if not isinstance(exp, int | float) or float(exp) - start > rules.max_lifetime + LEEWAY:
            raise jwt.InvalidTokenError(f"it lives longer than JWT_MAX_LIFETIME ({rules.max_lifetime:.0f}s)")
    return claims


def _utf8(value: str) -> bytes | None:
    """A header's value as the bytes a client meant, or None when it was not UTF-8 text."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # aiohttp keeps undecodable bytes as surrogates
        return None


def is_open(path: str) -> bool:
    """Paths that need no credentials: the health probe and the API's description."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class Credentials:
    """The worker token and, with ``jwt_rules``, valid JWTs: who may call the API."""

    def __init__(self, token: str, jwt_rules: JwtRules | None = None) -> None:
        self._expected = token.encode()
        self._token_client = _client_of_token(self._expected)
        self._jwt_rules = jwt_rules

    def check(self, request: web.Request) -> str | web.Response:
        """The caller's name (for rate limits and logs), or the error answer its credentials earn."""
        given = request.headers.get("X-Worker-Token")
        if given is not None:
            given_bytes = _utf8(given)
            if given_bytes is None:
                return _unauthorized("X-Worker-Token must be UTF-8 text")
            if not hmac.compare_digest(given_bytes, self._expected):
                return error_response(403, ErrorCode.FORBIDDEN, "the worker token is wrong")
            return self._token_client
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return _unauthorized("send the worker token in X-Worker-Token or a JWT as Authorization: Bearer")
        if _utf8(authorization) is None:
            return _unauthorized("Authorization must be UTF-8 text")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return _unauthorized("Authorization must be 'Bearer <token>'")
        if hmac.compare_digest(credential.encode(), self._expected):
            return self._token_client
        if self._jwt_rules is None:
            return error_response(
                403, ErrorCode.FORBIDDEN, "the bearer token is wrong (JWTs are not enabled: no JWT_SECRET)"
            )
        try:
            claims = verify_jwt(credential, self._jwt_rules)
        except jwt.ExpiredSignatureError:
            return _unauthorized("the JWT has expired", ErrorCode.TOKEN_EXPIRED)
        except jwt.InvalidTokenError as exc:
            return _unauthorized(f"the JWT is not valid: {exc}", ErrorCode.INVALID_TOKEN)
        subject = claims.get("sub")
        return f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt"

    def authenticated(self, request: web.Request) -> bool:
        """Whether ``request`` carries valid credentials (for an open path that shows more to callers who do)."""
        return isinstance(self.check(request), str)

    def middleware(self) -> object:
        """Middleware requiring valid credentials on every path but the open ones."""

        @web.middleware
        async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
            if is_open(request.path):
                return await handler(request)
            checked = self.check(request)
            if isinstance(checked, web.Response):
                return checked
            request[CLIENT] = checked
            return await handler(request)

        return check_token


def _unauthorized(message: str, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> web.Response:
    return error_response(401, code, message, {"WWW-Authenticate": 'Bearer realm="wa-worker"'})


def token_middleware(token: str, jwt_rules: JwtRules | None = None) -> object:
    """Middleware requiring the worker token (header or bearer) or, with ``jwt_rules``, a valid JWT."""
    return Credentials(token, jwt_rules).middleware()

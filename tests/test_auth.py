"""Authentication: the worker token and HS256 JWTs pass; missing, wrong, expired and
wrong-algorithm credentials are refused in the one error shape."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from harness import TOKEN, running_worker

from supervisor.api.auth import CLIENT, JwtRules, token_middleware
from supervisor.api.errors import error_middleware

SECRET = "jwt-secret-for-tests-" + "0123456789abcdef" * 3  # 64 bytes: long enough for HS512 too


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], *, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """An ``alg: none`` token: no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def valid_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "backend", "exp": int(time.time()) + 300, **extra}


# (name, headers, status, code): every way in that must fail.
REFUSED: list[tuple[str, dict[str, str], int, str]] = [
    ("missing", {}, 401, "UNAUTHORIZED"),
    ("wrong worker token", {"X-Worker-Token": "not-the-token"}, 403, "FORBIDDEN"),
    ("empty worker token", {"X-Worker-Token": ""}, 403, "FORBIDDEN"),
    ("worker token with a suffix", {"X-Worker-Token": TOKEN + "x"}, 403, "FORBIDDEN"),
    ("basic auth", {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "UNAUTHORIZED"),
    ("empty bearer", {"Authorization": "Bearer "}, 401, "UNAUTHORIZED"),
    ("garbage bearer", {"Authorization": "Bearer not.a.jwt"}, 401, "INVALID_TOKEN"),
    (
        "expired",
        {"Authorization": f"Bearer {make_jwt({'sub': 'b', 'exp': int(time.time()) - 120})}"},
        401,
        "TOKEN_EXPIRED",
    ),
    ("no exp", {"Authorization": f"Bearer {make_jwt({'sub': 'b'})}"}, 401, "INVALID_TOKEN"),
    ("other secret", {"Authorization": f"Bearer {make_jwt(valid_claims(), key='x' * 64)}"}, 401, "INVALID_TOKEN"),
    ("HS512", {"Authorization": f"Bearer {make_jwt(valid_claims(), algorithm='HS512')}"}, 401, "INVALID_TOKEN"),
    ("HS384", {"Authorization": f"Bearer {make_jwt(valid_claims(), algorithm='HS384')}"}, 401, "INVALID_TOKEN"),
    ("alg none", {"Authorization": f"Bearer {unsigned_jwt(valid_claims())}"}, 401, "INVALID_TOKEN"),
    (
        "future nbf",
        {"Authorization": f"Bearer {make_jwt(valid_claims(nbf=int(time.time()) + 600))}"},
        401,
        "INVALID_TOKEN",
    ),
]


async def _echo_client(
    *, jwt_secret: str | None, audience: str | None = None, issuer: str | None = None, max_lifetime: float = 0.0
) -> TestClient[web.Request, web.Application]:
    async def who(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"client": request.get(CLIENT)}})

    rules = None if jwt_secret is None else JwtRules(jwt_secret, audience, issuer, max_lifetime)
    app = web.Application(middlewares=[error_middleware, token_middleware(TOKEN, rules)])  # type: ignore[list-item]
    app.router.add_get("/sessions", who)
    app.router.add_get("/health", who)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.mark.parametrize(("name", "headers", "status", "code"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_refused_credentials(name: str, headers: dict[str, str], status: int, code: str) -> None:
    client = await _echo_client(jwt_secret=SECRET)
    try:
        resp = await client.get("/sessions", headers=headers)
        body = await resp.json()
        assert resp.status == status, (name, body)
        assert body == {"success": False, "error": body["error"], "code": code}
        if status == 401:
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        await client.close()


async def test_accepted_credentials_name_the_client() -> None:
    client = await _echo_client(jwt_secret=SECRET)
    try:
        for headers, who in [
            ({"X-Worker-Token": TOKEN}, "token:"),
            ({"Authorization": f"Bearer {TOKEN}"}, "token:"),
            ({"Authorization": f"Bearer {make_jwt(valid_claims())}"}, "jwt:backend"),
            ({"Authorization": f"bearer {make_jwt({'exp': int(time.time()) + 60})}"}, "jwt"),
        ]:
            resp = await client.get("/sessions", headers=headers)
            assert resp.status == 200, headers
            client_name = (await resp.json())["data"]["client"]
            assert client_name.startswith(who) and TOKEN not in client_name
        resp = await client.get("/health")
        assert resp.status == 200
    finally:
        await client.close()


async def test_without_a_jwt_secret_no_jwt_passes() -> None:
    client = await _echo_client(jwt_secret=None)
    try:
        resp = await client.get("/sessions", headers={"Authorization": f"Bearer {make_jwt(valid_claims())}"})
        assert resp.status == 403 and (await resp.json())["code"] == "FORBIDDEN"
        resp = await client.get("/sessions", headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 200
    finally:
        await client.close()


async def test_a_credential_that_is_not_utf8_is_a_401_not_a_crash() -> None:
    client = await _echo_client(jwt_secret=SECRET)
    try:
        host, port = client.server.host, client.server.port
        for header in (b"X-Worker-Token: \xff\xfe", b"Authorization: Bearer \xc3\x28"):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /sessions HTTP/1.1\r\nHost: w\r\nConnection: close\r\n" + header + b"\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 401"), (header, answer[:200])
            assert b'"code": "UNAUTHORIZED"' in answer
    finally:
        await client.close()


async def test_jwt_audience_issuer_and_lifetime_are_checked_when_configured() -> None:
    client = await _echo_client(jwt_secret=SECRET, audience="wa-worker", issuer="gateway", max_lifetime=3600)
    now = int(time.time())
    right = {"sub": "backend", "aud": "wa-worker", "iss": "gateway", "iat": now, "exp": now + 600}
    try:
        for claims, status in [
            (right, 200),
            ({**right, "aud": "another-service"}, 401),
            ({k: v for k, v in right.items() if k != "aud"}, 401),
            ({**right, "iss": "someone-else"}, 401),
            ({k: v for k, v in right.items() if k != "iss"}, 401),
            ({**right, "exp": now + 30 * 86400}, 401),  # lives a month
            ({k: v for k, v in right.items() if k != "iat"}, 200),  # no iat: counted from now
            ({**{k: v for k, v in right.items() if k != "iat"}, "exp": now + 7200}, 401),
        ]:
            resp = await client.get("/sessions", headers={"Authorization": f"Bearer {make_jwt(claims)}"})
            body = await resp.json()
            assert resp.status == status, (claims, body)
            if status == 401:
                assert body["code"] == "INVALID_TOKEN"
    finally:
        await client.close()


async def test_a_real_worker_takes_both_credentials(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", JWT_SECRET=SECRET) as w, aiohttp.ClientSession() as anon:
        valid = make_jwt(valid_claims())
        expired = make_jwt({"sub": "b", "exp": int(time.time()) - 120})
        wrong_alg = make_jwt(valid_claims(), algorithm="HS512")
        cases = [
            ({}, 401),
            ({"X-Worker-Token": "wrong"}, 403),
            ({"Authorization": f"Bearer {expired}"}, 401),
            ({"Authorization": f"Bearer {wrong_alg}"}, 401),
            ({"Authorization": f"Bearer {unsigned_jwt(valid_claims())}"}, 401),
            ({"X-Worker-Token": TOKEN}, 200),
            ({"Authorization": f"Bearer {valid}"}, 200),
        ]
        for path in ("/sessions", "/metrics", "/session/create"):
            for headers, want in cases:
                method = "POST" if path == "/session/create" else "GET"
                kwargs: dict[str, Any] = {"json": {"sessionId": "authed"}} if method == "POST" else {}
                async with anon.request(method, f"{w.url}{path}", headers=headers, **kwargs) as resp:
                    assert resp.status == want, (path, headers, await resp.text())
        # open without credentials: the probe and the API's description
        for path in ("/health", "/openapi.json", "/docs"):
            async with anon.get(f"{w.url}{path}") as resp:
                assert resp.status == 200, path

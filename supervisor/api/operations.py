"""Declaring a route and its contract in one place: ``@operation(routes, "GET", "/path", ...)``.

The decorator registers the handler with aiohttp and records what the route
reads (body, query, headers) and answers (per status), by the declarations of
``bodies`` and ``answers``. The OpenAPI document is built from these records,
so a route cannot exist without being described.

GET routes answer GET only (no implicit HEAD): a 405's ``Allow`` then lists
exactly the methods the document has.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from supervisor.api.bodies import PathId

H = TypeVar("H", bound=Callable[..., Any])

# Statuses every operation behind credentials may answer.
AUTH_ERRORS = (401, 403)
# Statuses of an account operation carried out by the session's process (``SessionRegistry.ask``): not
# connected (409), refused by WhatsApp or the engine (502), no answer in time (504).
ACCOUNT_ERRORS = (409, 502, 504)


@dataclass(frozen=True, slots=True)
class Reply:
    """One success answer: why it comes, and its body per media type (a declaration or a JSON Schema)."""

    description: str
    content: dict[str, Any]
    enveloped: bool = True  # {"success": true, "data": <body>}; /health and /metrics answer bare figures
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path and its contract."""

    method: str
    path: str  # as OpenAPI names it: /media/{bucket}/{key}
    id: str
    summary: str
    tag: str
    replies: dict[int, Reply]
    errors: tuple[int, ...] = ()
    body: Any = None  # a JSON body's declaration
    form: type[BaseModel] | None = None  # a multipart/form-data body's declaration
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    open: bool = False  # answered without credentials
    links: dict[str, Any] = field(default_factory=dict)


OPERATIONS: list[Operation] = []


def template(path: str) -> str:
    """A route's path as OpenAPI names it: ``/media/{bucket}/{key:.+}`` is ``/media/{bucket}/{key}``."""
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)


def json_reply(model: Any, description: str = "done", *, enveloped: bool = True) -> Reply:
    """A JSON success answer with ``model`` as its data."""
    return Reply(description, {"application/json": model}, enveloped)


def operation(
    routes: web.RouteTableDef,
    method: str,
    path: str,
    *,
    id: str,
    summary: str,
    tag: str,
    ok: Reply | dict[int, Reply],
    errors: tuple[int, ...] = (),
    **declared: Any,
) -> Callable[[H], H]:
    """Register the decorated handler for ``method path`` with ``routes`` and record its contract."""
    replies = ok if isinstance(ok, dict) else {200: ok}
    open_ = bool(declared.get("open"))
    op = Operation(
        method=method.upper(),
        path=template(path),
        id=id,
        summary=summary,
        tag=tag,
        replies=replies,
        errors=tuple(
            sorted(
                set(errors)
                | (set() if open_ else set(AUTH_ERRORS))
                # Whatever writes can meet a full disk: answered 507, never a 500.
                | ({DISK_FULL} if method.upper() in WRITES else set())
            )
        ),
        **declared,
    )
    OPERATIONS.append(op)

    def register(handler: H) -> H:
        routes.route(method, path)(handler)
        return handler

    return register


# Methods that write (history, outbox, sessions, webhooks, staged uploads) and the status of a full disk.
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DISK_FULL = 507


def session_operation(routes: web.RouteTableDef, method: str, path: str, **declared: Any) -> Callable[[H], H]:
    """An operation on one session: its id in the path (400 when malformed, 404 when unknown)."""
    errors = (400, 404, *declared.pop("errors", ()))
    # A path with more parameters than the id declares them all (a subclass of PathId).
    path_params = declared.pop("path_params", PathId)
    return operation(routes, method, path, path_params=path_params, errors=errors, **declared)

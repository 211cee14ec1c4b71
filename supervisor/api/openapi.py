"""The API's OpenAPI 3.1 document (``GET /openapi.json``), built from the declarations.

Paths come from the routes' ``@operation`` records; request and response schemas
from the pydantic models in ``bodies`` and ``answers``. Nothing here restates a
field, a limit or a pattern: change the declaration and the document follows.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from supervisor.api import answers
from supervisor.api.codes import ErrorCode
from supervisor.api.operations import OPERATIONS, Operation, Reply, json_reply, operation

routes = web.RouteTableDef()

API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"
Schema = dict[str, Any]

ERRORS = {
    400: "malformed body, query or id",
    401: "no credentials, or an expired or invalid JWT",
    403: "wrong worker token",
    404: "no such session",
    409: "the session is in the wrong state for this",
    405: "no such method on this path (DELETE /session/create: 'create' is never a session id); see Allow",
    413: "body larger than MAX_UPLOAD_MB",
    415: "body is not application/json",
    429: "rate limited; see Retry-After",
    502: "the session's process could not carry it out",
    503: "worker at MAX_SESSIONS, shutting down or its storage unavailable; see Retry-After",
    504: "the session's process did not answer in time (ENGINE_TIMEOUT)",
    507: "the worker's disk is full (STORAGE_FULL): nothing was accepted; see Retry-After",
}
ALLOW = {"Allow": {"description": "the methods this path answers", "schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every property (the name says it)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _adapter(declared: Any) -> TypeAdapter[Any]:
    return TypeAdapter(declared)


def _schemas(declared: list[tuple[Any, JsonSchemaMode]]) -> tuple[dict[tuple[int, str], Schema], dict[str, Schema]]:
    """The schema of each declaration (by position and mode) and the components they refer to."""
    inputs = [((i, mode), mode, _adapter(d)) for i, (d, mode) in enumerate(declared)]
    mapping, defs = TypeAdapter.json_schemas(inputs, ref_template=REF, schema_generator=_Schemas)
    return {(key[0], key[1]): schema for (key, _), schema in mapping.items()}, defs.get("$defs", {})


def _without_null(schema: Schema) -> Schema:
    """A parameter's schema: an optional parameter is absent, never null."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o != {"type": "null"}]
        if len(rest) == 1:
            schema.pop("anyOf")
            schema = {**rest[0], **schema}
        else:
            schema["anyOf"] = rest
    return schema


def _parameters(model: Any, where: str, defs: dict[str, Schema]) -> list[Schema]:
    schema = _adapter(model).json_schema(ref_template=REF, schema_generator=_Schemas)
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        param: Schema = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": _without_null(prop),
        }
        if description:
            param["description"] = description
        out.append(param)
    return out


def _envelope(data: Schema) -> Schema:
    """``{"success": true, "data": ...}``."""
    return {
        "type": "object",
        "properties": {"success": {"const": True}, "data": data},
        "required": ["success", "data"],
        "additionalProperties": False,
    }


def _content(reply: Reply, schema_of: dict[int, Schema]) -> Schema:
    content = {}
    for media_type, declared in reply.content.items():
        schema = declared if isinstance(declared, dict) else schema_of[id(declared)]
        if media_type == "application/json" and reply.enveloped:
            schema = _envelope(schema)
        content[media_type] = {"schema": schema}
    return content


def _operation(op: Operation, schema_of: dict[int, Schema], defs: dict[str, Schema]) -> Schema:
    responses: Schema = {}
    for status, reply in op.replies.items():
        responses[str(status)] = {"description": reply.description, "content": _content(reply, schema_of)}
        if reply.headers:
            responses[str(status)]["headers"] = reply.headers
    for status in op.errors:
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{status}"})
    out: Schema = {"operationId": op.id, "summary": op.summary, "tags": [op.tag], "responses": responses}
    parameters = []
    for model, where in ((op.path_params, "path"), (op.query, "query"), (op.headers, "header")):
        if model is not None:
            parameters += _parameters(model, where, defs)
    if parameters:
        out["parameters"] = parameters
    content = {}
    if op.body is not None:
        content["application/json"] = {"schema": schema_of[id(op.body)]}
    if op.form is not None:
        content["multipart/form-data"] = {"schema": schema_of[id(op.form)]}
    if content:
        out["requestBody"] = {"required": True, "content": content}
    if op.open:
        out["security"] = []
    if op.links:
        out["responses"]["200"]["links"] = op.links
    return out


def _declared(ops: list[Operation]) -> list[tuple[Any, JsonSchemaMode]]:
    """Every declaration the operations name, once, with the mode it is read in."""
    seen: dict[int, tuple[Any, JsonSchemaMode]] = {id(answers.Error): (answers.Error, "serialization")}
    for op in ops:
        for declared in (op.body, op.form):
            if declared is not None:
                seen.setdefault(id(declared), (declared, "validation"))
        for reply in op.replies.values():
            for declared in reply.content.values():
                if not isinstance(declared, dict):
                    seen.setdefault(id(declared), (declared, "serialization"))
    return list(seen.values())


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route (built once: the declarations do not change while running)."""
    # The route modules record their operations when imported.
    from supervisor.api import (  # noqa: F401
        account_routes,
        change_routes,
        contact_routes,
        dashboard_routes,
        docs,
        event_routes,
        group_routes,
        health_routes,
        media_routes,
        message_routes,
        metrics,
        operator_routes,
        outbox_routes,
        poll_routes,
        session_routes,
        sim_routes,
    )

    declared = _declared(OPERATIONS)
    by_position, defs = _schemas(declared)
    schema_of = {id(d): by_position[(i, mode)] for i, (d, mode) in enumerate(declared)}
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schema_of, defs)
    error_schema = schema_of[id(answers.Error)]
    responses = {}
    for status, text in ERRORS.items():
        response: Schema = {"description": text, "content": {"application/json": {"schema": error_schema}}}
        if status in (429, 503, 507):
            response["headers"] = RETRY_AFTER
        if status == 405:
            response["headers"] = ALLOW
        responses[str(status)] = response
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "WhatsApp worker API",
            "version": API_VERSION,
            "description": "Answers are {success: true, data}; errors are {success: false, error, code} "
            "with the status listed per route (except /health and /metrics, which answer their figures). "
            f"Error codes: {', '.join(ErrorCode)}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"WorkerToken": []}, {"BearerJWT": []}],
        "tags": [{"name": n} for n in ("sessions", "messages", "account", "contacts", "events", "operations", "docs")],
        "paths": paths,
        "components": {
            "schemas": defs,
            "responses": responses,
            "securitySchemes": {
                "WorkerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
                "BearerJWT": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256, signed with JWT_SECRET, with exp",
                },
            },
        },
    }


@functools.cache
def _encoded() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


@operation(
    routes,
    "GET",
    "/openapi.json",
    id="openapi",
    summary="This document",
    tag="docs",
    open=True,
    ok=json_reply({"type": "object"}, "OpenAPI 3.1", enveloped=False),
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")

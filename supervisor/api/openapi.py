"""The API's OpenAPI 3 description (``/openapi.json``) and a docs page that renders it (``/docs``).

The document is written out here by hand, next to the routes, so that a backend
developer can code against it alone; a test checks that every route the app
serves is in it. The docs page is Swagger UI from the ``swagger-ui-bundle``
package, served from the virtualenv: nothing is fetched from the internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from supervisor.api.validation import SESSION_ID

routes = web.RouteTableDef()

API_VERSION = "1.0.0"
DOCS_ASSETS = "/docs/assets"
SESSION_ID_PATTERN = SESSION_ID.pattern
MAX_SEQ = 2**63 - 1  # event ids are SQLite INTEGERs

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *, extra: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return out


def envelope(data: Schema) -> Schema:
    """``{"success": true, "data": ...}``."""
    return obj({"success": {"type": "boolean", "enum": [True]}, "data": data}, ["success", "data"])


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
STATUS = {
    "type": "string",
    "enum": ["initializing", "qr_ready", "connected", "disconnected", "logged_out", "failed"],
    "description": "initializing, qr_ready and connected hold while the process runs; logged_out needs a new "
    "QR; failed means the restart budget is spent (POST /session/{id}/restart revives it)",
}
PHONE_TARGET = {
    "type": "string",
    "pattern": r"^\+?[0-9]{5,20}$|^[0-9]{5,20}@s\.whatsapp\.net$|^[0-9]{5,20}(-[0-9]{5,20})?@g\.us$",
    "description": "a JID (628123456789@s.whatsapp.net, 1203630...@g.us) or a phone number in digits "
    "(a leading + and spaces, dashes or brackets are allowed)",
    "example": "628123456789",
}
MEMORY = obj({"rss": nullable(INT), "uss": nullable(INT)})
EXIT = obj(
    {
        "at": TIME,
        "reason": {"type": "string", "example": "killed by SIGKILL"},
        "code": nullable(INT),
        "signal": nullable(INT),
        "crashed": BOOL,
    },
    ["at", "reason", "crashed"],
)

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "success": {"type": "boolean", "enum": [False]},
            "error": {"type": "string", "description": "for people"},
            "code": {"type": "string", "description": "for programs", "example": "INVALID_SESSION_ID"},
        },
        ["success", "error", "code"],
    ),
    "SessionStatus": STATUS,
    "CreateSessionRequest": obj(
        {
            "sessionId": {"type": "string", "pattern": SESSION_ID_PATTERN, "example": "shop-42"},
            "userId": {"type": "string", "maxLength": 256},
            "sessionName": {"type": "string", "maxLength": 256},
            "proxy": {"type": "string", "maxLength": 2048, "description": "socks5:// or http:// proxy URL"},
            "webhook": ref("WebhookRequest"),
            "takeover": {
                "type": "boolean",
                "description": (
                    "wait for another worker's lease instead of 409: until that worker's liveness record "
                    "lapses (about WORKER_ALIVE_TTL), or up to LEASE_TTL + 5 s for a worker that keeps none"
                ),
            },
        },
        ["sessionId"],
    ),
    "CreateSessionResult": obj(
        {
            "sessionId": STR,
            "status": STATUS,
            "qrCode": nullable({"type": "string", "description": "data:image/png;base64,..."}),
            "webhook": obj(
                {"url": STR, "secret": {"type": "string", "description": "for X-Signature; shown only here"}},
                ["url", "secret"],
            ),
        },
        ["sessionId", "status", "qrCode"],
    ),
    "QrResult": obj(
        {
            "sessionId": STR,
            "qrCode": nullable({"type": "string", "description": "the QR as a PNG data URL"}),
            "qr": nullable({"type": "string", "description": "the raw QR string"}),
            "status": STATUS,
            "expiresAt": nullable({"type": "number", "description": "epoch seconds"}),
            "qrCount": INT,
        },
        ["sessionId", "qrCode", "qr", "status", "expiresAt"],
    ),
    "StatusResult": obj(
        {
            "sessionId": STR,
            "status": STATUS,
            "phoneNumber": nullable(STR),
            "lastSeen": nullable(TIME),
            "messageCount": INT,
            "error": nullable(STR),
        },
        ["sessionId", "status", "phoneNumber", "lastSeen", "messageCount"],
    ),
    "ProcessView": obj(
        {
            "sessionId": STR,
            "userId": nullable(STR),
            "sessionName": nullable(STR),
            "status": STATUS,
            "statusSince": nullable(TIME),
            "secondsInStatus": NUM,
            "phoneNumber": nullable(STR),
            "processState": {
                "type": "string",
                "enum": ["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"],
            },
            "pid": nullable(INT),
            "restarts": INT,
            "uptime": NUM,
            "cpuPercent": nullable(NUM),
            "memory": MEMORY,
            "threads": nullable(INT),
            "openFiles": nullable(INT),
            "lastExit": nullable(EXIT),
            "lastError": nullable(STR),
            "qrCount": INT,
            "messageCount": INT,
        },
        ["sessionId", "status", "phoneNumber", "pid", "restarts", "uptime", "cpuPercent", "memory", "lastExit",
         "lastError", "qrCount"],
    ),
    "ExitInfo": EXIT,
    "SendRequest": obj(
        {
            "to": PHONE_TARGET,
            "type": {"type": "string", "enum": ["text", "location", "contact", "reaction"], "default": "text",
                     "description": "media (image, document, audio, video) is sent as multipart/form-data"},
            "text": {"type": "string", "minLength": 1, "maxLength": 65536, "description": "type text"},
            "message": {"type": "string", "minLength": 1, "maxLength": 65536, "description": "alias of text"},
            "latitude": {"type": "number", "minimum": -90, "maximum": 90, "description": "type location"},
            "longitude": {"type": "number", "minimum": -180, "maximum": 180, "description": "type location"},
            "name": {"type": "string", "description": "type location: place name"},
            "address": {"type": "string", "description": "type location"},
            "contact": obj(
                {"name": STR, "phoneNumber": PHONE_TARGET, "vcard": STR},
                ["name"],
            ),
            "messageId": {"type": "string", "description": "type reaction: the message reacted to"},
            "emoji": {"type": "string", "description": "type reaction; empty removes the reaction"},
            "quotedMessageId": {"type": "string", "description": "reply to this message"},
            "mentions": {"type": "array", "items": PHONE_TARGET, "maxItems": 256},
        },
        ["to"],
    ),
    "SendMediaRequest": obj(
        {
            "to": PHONE_TARGET,
            "type": {"type": "string", "enum": ["image", "document", "audio", "video"]},
            "file": {"type": "string", "format": "binary", "description": "at most MAX_UPLOAD_MB"},
            "caption": {"type": "string", "maxLength": 65536},
            "filename": {"type": "string", "maxLength": 65536},
            "quotedMessageId": STR,
            "mentions": {"type": "string", "description": "a JSON array of phone targets"},
        },
        ["to", "type", "file"],
    ),
    "SendResult": obj(
        {
            "messageId": STR,
            "status": {"type": "string", "enum": ["pending", "sent", "failed", "unknown"]},
            "timestamp": nullable(NUM),
            "mediaUrl": nullable(STR),
        },
        ["messageId", "status"],
    ),
    "Message": obj(
        {
            "id": STR,
            "direction": {"type": "string", "enum": ["in", "out"]},
            "chat": STR,
            "from": nullable(STR),
            "to": nullable(STR),
            "type": STR,
            "text": nullable(STR),
            "caption": nullable(STR),
            "mediaUrl": nullable(STR),
            "timestamp": nullable(TIME),
            "status": STR,
        },
        ["id", "direction", "chat", "from", "to", "type", "text", "caption", "mediaUrl", "timestamp", "status"],
    ),
    "MessagesPage": obj(
        {
            "messages": {"type": "array", "items": ref("Message")},
            "pagination": obj({"total": INT, "limit": INT, "offset": INT}, ["total", "limit", "offset"]),
        },
        ["messages", "pagination"],
    ),
    "Event": obj(
        {
            "id": {"type": "integer", "description": "sequence number: pass it as since / Last-Event-ID"},
            "event": {"type": "string", "example": "message.received"},
            "sessionId": nullable(STR),
            "data": {"type": "object"},
            "timestamp": TIME,
        },
        ["id", "event", "sessionId", "data", "timestamp"],
    ),
    "EventsPage": obj(
        {
            "events": {"type": "array", "items": ref("Event")},
            "nextSince": {"type": "integer", "description": "pass back as since to continue"},
            "latest": {"type": "integer"},
        },
        ["events", "nextSince", "latest"],
    ),
    "WebhookRequest": obj(
        {
            "url": {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^https?://"},
            "secret": {"type": "string", "minLength": 16, "maxLength": 256,
                       "description": "signs deliveries; generated when left out"},
        },
        ["url"],
    ),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy", "draining"]},
            "workerId": STR,
            "uptime": NUM,
            "timestamp": NUM,
            "engine": STR,
            "sessions": obj({"total": INT, "max": INT, "active": INT}, ["total", "max"]),
            "resources": obj({"supervisor": {"type": "object"}, "sessions": {"type": "object"},
                              "system": {"type": "object"}}),
            "storage": obj({"type": STR, "path": STR, "status": {"type": "string", "enum": ["ok", "error"]},
                            "writable": BOOL, "freeBytes": INT}, ["status"]),
            "database": obj({"type": STR, "status": {"type": "string", "enum": ["ok", "error"]},
                             "latencyMs": NUM, "error": STR}, ["status"]),
            "backend": obj({"status": {"type": "string", "enum": ["not_configured", "reachable", "unreachable"]},
                            "url": STR}, ["status"]),
        },
        ["status", "workerId", "uptime", "sessions", "resources", "storage", "database"],
    ),
    "Metrics": obj(
        {
            "worker": obj({"id": STR, "uptime": NUM, "engine": STR, "cpuPercent": nullable(NUM), "memory": MEMORY},
                          ["id", "uptime"]),
            "sessions": obj(
                {"total": INT, "active": INT, "max": INT,
                 "byStatus": {"type": "object", "additionalProperties": INT}},
                ["total", "byStatus"],
            ),
            "messages": obj(
                {"sent": INT, "received": INT, "failed": INT, "pending": INT,
                 "lastHour": {"type": "integer", "description": "messages in and out in the last hour"}},
                ["sent", "received", "failed", "lastHour"],
            ),
            "performance": obj(
                {
                    "avgResponseTime": {"type": "number", "description": "milliseconds, last 5 minutes"},
                    "errorRate": {"type": "number", "description": "share (0-1) of 5xx answers, last 5 minutes"},
                    "throughput": {"type": "number", "description": "requests per second, last 5 minutes"},
                    "requests": INT,
                    "window": NUM,
                },
                ["avgResponseTime", "errorRate", "throughput"],
            ),
            "database": obj(
                {
                    "commits": {"type": "integer", "description": "SQLite commits since start"},
                    "writes": {"type": "integer", "description": "write transactions, grouped into commits"},
                    "outboxWaiting": {"type": "integer", "description": "outgoing messages not settled yet"},
                },
                ["commits", "writes", "outboxWaiting"],
            ),
            "timestamp": NUM,
        },
        ["worker", "sessions", "messages", "performance"],
    ),
}

ERRORS = {
    "400": "malformed body, query or id",
    "401": "no credentials, or an expired or invalid JWT",
    "403": "wrong worker token",
    "404": "no such session",
    "409": "the session is in the wrong state for this",
    "413": "body larger than MAX_UPLOAD_MB",
    "415": "body is not application/json",
    "429": "rate limited; see Retry-After",
    "503": "worker at MAX_SESSIONS or shutting down; see Retry-After",
}
RESPONSES = {
    code: {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
    for code, text in ERRORS.items()
}
SESSION_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "session id: letters, digits, '.', '_', '-'; 1-64 characters, starting with a letter or digit",
    "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{code}"} for code in codes}


def _ok(schema: Schema, description: str = "done", status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def _json_body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


AUTH_ERRORS = ("401", "403")
SESSION_ERRORS = ("400", "401", "403", "404")


def _op(summary: str, responses: dict[str, Any], *, tag: str = "sessions", **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


# What a backend does next with a session it created (OpenAPI links: also what stateful fuzzing follows).
SESSION_LINKS = {
    op: {"operationId": op, "parameters": {"id": "$response.body#/data/sessionId"}}
    for op in ("getQr", "getStatus", "getProcess", "sendMessage", "listMessages", "restartSession", "logoutSession",
               "pairCode", "deleteSession")
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    session_params = [SESSION_ID_PARAM]
    paths: dict[str, Any] = {
        "/session/create": {
            "post": _op(
                "Start a session (idempotent: an existing session answers its current state)",
                {
                    **_ok(envelope(ref("CreateSessionResult")),
                          "started; qrCode is a PNG data URL when the first QR came within CREATE_QR_WAIT"),
                    **_errors("400", *AUTH_ERRORS, "413", "415", "429", "503"),
                },
                operationId="createSession",
                requestBody=_json_body(ref("CreateSessionRequest")),
            )
        },
        "/session/{id}/qr": {
            "get": _op("The current QR", {**_ok(envelope(ref("QrResult"))), **_errors(*SESSION_ERRORS)},
                       operationId="getQr", parameters=session_params)
        },
        "/session/{id}/status": {
            "get": _op("The session's status", {**_ok(envelope(ref("StatusResult"))), **_errors(*SESSION_ERRORS)},
                       operationId="getStatus", parameters=session_params)
        },
        "/session/{id}": {
            "delete": _op(
                "Log out, stop the process, remove the auth state and history",
                {**_ok(envelope(obj({"sessionId": STR, "deleted": BOOL}, ["sessionId", "deleted"]))),
                 **_errors(*SESSION_ERRORS, "429")},
                operationId="deleteSession",
                parameters=session_params,
            )
        },
        "/session/{id}/send": {
            "post": _op(
                "Send a message (JSON: text, location, contact, reaction)",
                {
                    **_ok(envelope(ref("SendResult")), "sent (or failed) within SEND_TIMEOUT"),
                    **_ok(envelope(ref("SendResult")), "accepted and kept in the outbox; not confirmed yet", "202"),
                    **_errors(*SESSION_ERRORS, "409", "413", "415", "429", "503"),
                },
                tag="messages",
                operationId="sendMessage",
                parameters=[
                    SESSION_ID_PARAM,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "the same key answers the first answer again and sends nothing more",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    },
                ],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("SendRequest")},
                        "multipart/form-data": {"schema": ref("SendMediaRequest")},
                    },
                },
            )
        },
        "/session/{id}/messages": {
            "get": _op(
                "Message history, newest first",
                {**_ok(envelope(ref("MessagesPage"))), **_errors(*SESSION_ERRORS)},
                tag="messages",
                operationId="listMessages",
                parameters=[
                    SESSION_ID_PARAM,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                               "default": 50}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "contact", "in": "query", "schema": PHONE_TARGET,
                     "description": "only the chat with this JID or number"},
                    {"name": "direction", "in": "query", "schema": {"type": "string", "enum": ["in", "out"]}},
                    {"name": "since", "in": "query", "schema": STR, "description": "epoch seconds or ISO 8601"},
                    {"name": "until", "in": "query", "schema": STR, "description": "epoch seconds or ISO 8601"},
                ],
            )
        },
        "/session/{id}/restart": {
            "post": _op(
                "Restart the session's process (also revives failed and logged_out sessions)",
                {**_ok(envelope(obj({"sessionId": STR, "status": STATUS}, ["sessionId", "status"]))),
                 **_errors(*SESSION_ERRORS, "429", "503")},
                operationId="restartSession",
                parameters=session_params,
            )
        },
        "/session/{id}/logout": {
            "post": _op(
                "Unlink the device but keep the session: a new QR follows",
                {**_ok(envelope(obj({"sessionId": STR, "status": STATUS, "loggedOut": BOOL},
                                    ["sessionId", "status", "loggedOut"]))),
                 **_errors(*SESSION_ERRORS, "429", "503")},
                operationId="logoutSession",
                parameters=session_params,
            )
        },
        "/session/{id}/pair-code": {
            "post": _op(
                "A pairing code: link a phone by entering a code instead of scanning the QR",
                {
                    **_ok(envelope(obj({"sessionId": STR, "phoneNumber": STR,
                                        "pairingCode": {"type": "string", "example": "ABCD-EFGH"}},
                                       ["sessionId", "phoneNumber", "pairingCode"]))),
                    **_errors(*SESSION_ERRORS, "409", "413", "415", "429", "503"),
                },
                operationId="pairCode",
                parameters=session_params,
                requestBody=_json_body(obj(
                    {"phoneNumber": {"type": "string", "pattern": r"^\+?[0-9]{5,20}$", "example": "628123456789"}},
                    ["phoneNumber"],
                )),
            )
        },
        "/session/{id}/process": {
            "get": _op(
                "The session's process: figures and the recent exits with their reasons",
                {**_ok(envelope({"allOf": [ref("ProcessView"), obj(
                    {"exits": {"type": "array", "items": ref("ExitInfo")}}, ["exits"])]})),
                 **_errors(*SESSION_ERRORS)},
                tag="operations",
                operationId="getProcess",
                parameters=session_params,
            )
        },
        "/sessions": {
            "get": _op(
                "Every session with its process figures",
                {**_ok(envelope(obj({"sessions": {"type": "array", "items": ref("ProcessView")}}, ["sessions"]))),
                 **_errors(*AUTH_ERRORS)},
                tag="operations",
                operationId="listSessions",
            )
        },
        "/health": {
            "get": _op(
                "Worker health (no credentials needed)",
                {**_ok(ref("Health"), "healthy or degraded"),
                 "503": {"description": "unhealthy (database or storage unusable) or draining",
                         "content": {"application/json": {"schema": ref("Health")}}}},
                tag="operations",
                operationId="health",
                security=[],
            )
        },
        "/metrics": {
            "get": _op(
                "Worker figures: JSON, or Prometheus text with ?format=prometheus or Accept: text/plain",
                {
                    "200": {
                        "description": "figures",
                        "content": {
                            "application/json": {"schema": ref("Metrics")},
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors("400", *AUTH_ERRORS),
                },
                tag="operations",
                operationId="metrics",
                parameters=[{"name": "format", "in": "query",
                             "schema": {"type": "string", "enum": ["json", "prometheus"]}}],
            )
        },
        "/events": {
            "get": _op(
                "Replay the durable event log (messages, statuses, receipts), oldest first",
                {**_ok(envelope(ref("EventsPage"))), **_errors("400", *AUTH_ERRORS)},
                tag="events",
                operationId="listEvents",
                parameters=[
                    {"name": "since", "in": "query",
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "sessionId", "in": "query", "schema": {"type": "string", "pattern": SESSION_ID_PATTERN}},
                ],
            )
        },
        "/events/stream": {
            "get": _op(
                "The event log as a live Server-Sent Events stream (resumes from Last-Event-ID)",
                {"200": {"description": "text/event-stream: id, event and data (an Event) per message",
                         "content": {"text/event-stream": {"schema": STR}}},
                 **_errors("400", *AUTH_ERRORS)},
                tag="events",
                operationId="streamEvents",
                parameters=[
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                    {"name": "Last-Event-ID", "in": "header",
                     "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}},
                    {"name": "sessionId", "in": "query", "schema": {"type": "string", "pattern": SESSION_ID_PATTERN}},
                ],
            )
        },
        "/session/{id}/webhook": {
            "put": _op(
                "Set the session's webhook: its events are POSTed there, signed with the secret",
                {**_ok(envelope(obj({"sessionId": STR, "url": STR, "secret": STR}, ["sessionId", "url", "secret"]))),
                 **_errors(*SESSION_ERRORS, "413", "415")},
                tag="events",
                operationId="putWebhook",
                parameters=session_params,
                requestBody=_json_body(ref("WebhookRequest")),
            ),
            "get": _op(
                "The session's webhook and its delivery figures",
                {**_ok(envelope(obj({"sessionId": STR, "url": STR, "delivered": INT, "failures": INT,
                                     "lastError": nullable(STR)}, ["sessionId", "url"]))),
                 **_errors(*SESSION_ERRORS)},
                tag="events",
                operationId="getWebhook",
                parameters=session_params,
            ),
            "delete": _op(
                "Remove the session's webhook",
                {**_ok(envelope(obj({"sessionId": STR, "deleted": BOOL}, ["sessionId", "deleted"]))),
                 **_errors(*SESSION_ERRORS)},
                tag="events",
                operationId="deleteWebhook",
                parameters=session_params,
            ),
        },
        "/media/{bucket}/{key}": {
            "get": _op(
                "A stored media file, by the presigned URL an answer gave (local storage only; no credentials: "
                "the URL's signature and expiry authenticate it)",
                {
                    "200": {"description": "the file", "content": {"application/octet-stream": {"schema": {
                        "type": "string", "format": "binary"}}}},
                    **_errors("403", "404"),
                },
                tag="messages",
                operationId="getMedia",
                security=[],
                parameters=[
                    {"name": "bucket", "in": "path", "required": True, "schema": STR},
                    {"name": "key", "in": "path", "required": True, "schema": STR},
                    {"name": "expires", "in": "query", "required": True, "schema": STR},
                    {"name": "signature", "in": "query", "required": True, "schema": STR},
                ],
            )
        },
        "/openapi.json": {
            "get": _op("This document", {"200": {"description": "OpenAPI 3.1",
                                                 "content": {"application/json": {"schema": {"type": "object"}}}}},
                       tag="docs", operationId="openapi", security=[])
        },
        "/docs": {
            "get": _op("This document, rendered", {"200": {"description": "HTML",
                                                           "content": {"text/html": {"schema": STR}}}},
                       tag="docs", operationId="docs", security=[])
        },
    }
    paths["/session/create"]["post"]["responses"]["200"]["links"] = SESSION_LINKS
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "WhatsApp worker API",
            "version": API_VERSION,
            "description": "Answers are {success: true, data}; errors are {success: false, error, code} "
            "with the status listed per route (except /health and /metrics, which answer their figures).",
        },
        "servers": [{"url": "/"}],
        "security": [{"WorkerToken": []}, {"BearerJWT": []}],
        "tags": [{"name": n} for n in ("sessions", "messages", "events", "operations", "docs")],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "WorkerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
                "BearerJWT": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                              "description": "HS256, signed with JWT_SECRET, with exp"},
            },
        },
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>WhatsApp worker API</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="{assets}/swagger-ui-standalone-preset.js"></script>
  <script src="{assets}/docs-init.js"></script>
</body>
</html>
"""

# Inline scripts would need a looser Content-Security-Policy; this one is served as a file.
DOCS_INIT_JS = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  validatorUrl: null
});
"""


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML.format(assets=DOCS_ASSETS), content_type="text/html")


@routes.get(DOCS_ASSETS + "/docs-init.js")
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_INIT_JS, content_type="application/javascript")


def swagger_ui_dir() -> Path | None:
    """Where the swagger-ui-bundle package keeps Swagger UI's files, if it is installed."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(swagger_ui_bundle.swagger_ui_path)
    return path if path.is_dir() else None


def add_docs_assets(app: web.Application) -> None:
    """Serve Swagger UI's files under /docs/assets/ from the installed package."""
    path = swagger_ui_dir()
    if path is not None:
        app.router.add_static(DOCS_ASSETS, path, follow_symlinks=False, append_version=False)

"""The API's contract, checked on every answer the test suite receives.

Every ``aiohttp.ClientResponse`` from a watched origin (the workers the harness
starts, in-process test servers) is recorded: its status and content type when
it starts, its body when the test reads it. After each test the records are
checked against the OpenAPI document the worker serves: the status must be one
the operation declares, the content type one it declares for that status, and
a JSON body must match the declared schema, where answers allow no property
they do not declare. Error answers are checked too, also on paths and methods
that do not exist (they must still be the one error shape).

Streams (Server-Sent Events) are read line by line, never with ``read()``: their
events are checked by ``check_sse_event`` where a test reads them.

One time format: a ``date-time`` in the document is the exact ISO 8601 UTC form
``supervisor.timefmt.iso`` writes, and every key named like a point in time
(``timestamp``, ``*At``, ``lastSeen``, ...) anywhere in a body, free-form event
``data`` included, must be such a string or null (``time_problems``; the fake
backend and webhook receivers check what they receive with it too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from jsonschema import Draft202012Validator, FormatChecker

from supervisor.api.openapi import document
from supervisor.timefmt import ISO_PATTERN

Schema = dict[str, Any]


@dataclass(slots=True)
class Record:
    """One answer as the client saw it."""

    method: str
    url: str
    status: int
    content_type: str
    whole_api: bool  # as the origin was watched when the answer came (its port may serve another later)
    body: bytes | None = None


@dataclass(slots=True)
class Watch:
    """The origins whose answers are checked, and what was received from them."""

    # origin -> True when it serves the whole API (False: a test app whose error answers alone are the API's)
    origins: dict[str, bool] = field(default_factory=dict)
    records: dict[int, tuple[aiohttp.ClientResponse, Record]] = field(default_factory=dict)

    def take(self) -> list[Record]:
        taken = [record for _, record in self.records.values()]
        self.records.clear()
        return taken


WATCH = Watch()


def watch(origin: str, *, whole_api: bool = True) -> None:
    """Check every answer from ``origin`` (``http://host:port``) from now on."""
    WATCH.origins[origin.rstrip("/")] = whole_api


def unwatch(origin: str) -> None:
    """Stop checking answers from ``origin``: its port may next serve something that is not the API."""
    WATCH.origins.pop(origin.rstrip("/"), None)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def install() -> None:
    """Record answers from watched origins (patches aiohttp's ClientResponse; once per process)."""
    if getattr(aiohttp.ClientResponse, "_contract_recorded", False):
        return
    original_start = aiohttp.ClientResponse.start
    original_read = aiohttp.ClientResponse.read

    async def start(self: aiohttp.ClientResponse, connection: Any) -> aiohttp.ClientResponse:
        response = await original_start(self, connection)
        whole_api = WATCH.origins.get(_origin(str(self.url)))
        if whole_api is not None:
            record = Record(self.method, str(self.url), self.status, self.content_type, whole_api)
            WATCH.records[id(self)] = (self, record)
        return response

    async def read(self: aiohttp.ClientResponse) -> bytes:
        body = await original_read(self)
        entry = WATCH.records.get(id(self))
        if entry is not None and entry[0] is self:
            entry[1].body = body
        return body

    aiohttp.ClientResponse.start = start  # type: ignore[method-assign]
    aiohttp.ClientResponse.read = read  # type: ignore[method-assign]
    aiohttp.ClientResponse._contract_recorded = True  # type: ignore[attr-defined]


# -- checking ----------------------------------------------------------------------------------------


@cache
def _operations() -> list[tuple[re.Pattern[str], str, str]]:
    """(path regex, method, path template) for every operation of the document."""
    out = []
    for path, ops in document()["paths"].items():
        pattern = re.escape(path)
        for name in re.findall(r"\\\{(\w+)\\\}", pattern):
            # {key} of /media/{bucket}/{key} spans slashes; other parameters are one segment.
            pattern = pattern.replace(rf"\{{{name}\}}", ".+" if name == "key" else "[^/]+")
        for method in ops:
            out.append((re.compile(f"^{pattern}$"), method.upper(), path))
    return out


def _template(method: str, path: str) -> str | None:
    """The document's path for ``method path`` (None: the document has no such operation)."""
    return next((t for regex, m, t in _operations() if m == method and regex.match(path)), None)


def _response(template: str, method: str, status: int) -> tuple[list[str], Schema] | None:
    """Where the declared response is in the document, and the response itself."""
    response = document()["paths"][template][method.lower()]["responses"].get(str(status))
    if response is None:
        return None
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        return ["components", "responses", name], document()["components"]["responses"][name]
    return ["paths", template, method.lower(), "responses", str(status)], response


@cache
def _validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``pointer`` in the document (its $refs resolve in the document)."""
    doc = document()
    root = {"$ref": pointer, "components": doc["components"], "paths": doc["paths"]}
    return Draft202012Validator(root, format_checker=FORMATS)


FORMATS = FormatChecker()


@FORMATS.checks("date-time")
def _iso_time(instance: object) -> bool:
    """Our one time format, stricter than RFC 3339 (which allows offsets and any fraction)."""
    return not isinstance(instance, str) or ISO_PATTERN.match(instance) is not None


# Keys that name a point in time (durations such as uptime or avgResponseTime are numbers of seconds or ms).
TIME_KEY = re.compile(r"^(timestamp|at|lastSeen|startTime|statusSince|\w+At|\w+Until)$")


def time_problems(value: Any, where: str = "") -> list[str]:
    """Every key named like a point in time in ``value`` whose value is not an ISO time string (or null)."""
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}/{key}"
            if TIME_KEY.match(key) and item is not None and not (isinstance(item, str) and ISO_PATTERN.match(item)):
                problems.append(f"{path}: {item!r} is not an ISO 8601 UTC time like 2026-12-01T01:59:18.236Z")
            else:
                problems += time_problems(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += time_problems(item, f"{where}/{i}")
    return problems


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _error_pointer() -> str:
    return _pointer("components", "responses", "400", "content", "application/json", "schema")


def _problems(schema_pointer: str, body: bytes, *, times: bool = True) -> list[str]:
    try:
        instance = json.loads(body)
    except ValueError:
        return ["the body is not JSON"]
    errors = sorted(_validator(schema_pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
    found = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5]]
    # The API's own description names its time fields as keys of schemas: it is not an answer with times.
    return found + (time_problems(instance) if times else [])


def check(record: Record, *, whole_api: bool) -> list[str]:
    """What is wrong with one answer, by the document (nothing: an empty list)."""
    path = urlsplit(record.url).path
    where = f"{record.method} {path} -> {record.status}"
    template = _template(record.method, path) if whole_api else None
    if template is None:
        # A path or method the document lacks (or a test app): only the one error shape is the contract.
        if record.status < 400:
            return []
        if record.content_type != "application/json":
            return [f"{where}: an error answered as {record.content_type}, not application/json"]
        return [] if record.body is None else [f"{where}: {p}" for p in _problems(_error_pointer(), record.body)]
    found = _response(template, record.method, record.status)
    if found is None:
        return [f"{where}: status {record.status} is not declared for {record.method} {template}"]
    base, response = found
    declared = response.get("content", {})
    family = record.content_type.split("/", 1)[0] + "/*"
    if not {record.content_type, family, "*/*"} & set(declared):
        return [f"{where}: content type {record.content_type} is not declared (only {', '.join(declared)})"]
    if record.body is None or record.content_type != "application/json":
        return []
    pointer = _pointer(*base, "content", record.content_type, "schema")
    return [f"{where}: {p}" for p in _problems(pointer, record.body, times=template != "/openapi.json")]


def check_all(records: list[Record]) -> list[str]:
    """What is wrong with the answers recorded, by the document."""
    problems = []
    for record in records:
        problems += check(record, whole_api=record.whole_api)
    return problems


def check_sse_event(fields: dict[str, str]) -> list[str]:
    """What is wrong with one Server-Sent Event of /events/stream (its fields: id, event, data)."""
    found = _response("/events/stream", "GET", 200)
    assert found is not None
    base, response = found
    pointer = _pointer(*base, "content", "text/event-stream", "schema")
    problems = [e.message for e in _validator(pointer).iter_errors(fields)]
    event = _resolve(response["content"]["text/event-stream"]["schema"])
    # The event's data is JSON with a schema of its own (contentSchema): checked as such.
    try:
        data = json.loads(fields.get("data", ""))
    except ValueError:
        return [*problems, "data is not JSON"]
    data_pointer = event["properties"]["data"]["contentSchema"]["$ref"]
    problems += [f"data: {e.message}" for e in _validator(data_pointer).iter_errors(data)]
    return problems + [f"data{p}" for p in time_problems(data)]


def _resolve(schema: Schema) -> Schema:
    ref = schema.get("$ref")
    return schema if ref is None else dict(document()["components"]["schemas"][ref.rsplit("/", 1)[1]])


async def check_served_document(fetch: Callable[[str], Any], origin: str) -> None:
    """Fail unless ``origin`` serves the document the checks use (once per test run)."""
    if _SERVED_CHECKED:
        return
    served = await fetch(f"{origin}/openapi.json")
    assert served == json.loads(json.dumps(document())), "GET /openapi.json is not the document the checks use"
    _SERVED_CHECKED.append(origin)


_SERVED_CHECKED: list[str] = []


def failure(problems: list[str]) -> str:
    """A report of answers that break the contract."""
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return f"{len(problems)} answer(s) do not match GET /openapi.json:\n  {shown}{more}"

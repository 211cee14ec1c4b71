"""Reading what clients send through the declarations in ``bodies``: JSON bodies, queries, headers, ids.

A failure answers 400 with the machine code the failing field declares (its
``Invalid`` marker): the first failure in declaration order, as a person reads
the body.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from supervisor.api import bodies
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def _marker(metadata: Any) -> bodies.Invalid | None:
    return next((m for m in metadata if isinstance(m, bodies.Invalid)), None)


def _unwrap(tp: Any) -> tuple[Any, bodies.Invalid | None]:
    """The type under Annotated/Optional/Json, and the innermost Invalid marker met on the way."""
    found = None
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            found = _marker(tp.__metadata__) or found
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp, found
            tp = rest[0]
        else:
            return tp, found


def _field(model: type[BaseModel], name: str) -> FieldInfo | None:
    """A field by its name or by its alias (failures name aliased fields by their alias)."""
    return model.model_fields.get(name) or next((f for f in model.model_fields.values() if f.alias == name), None)


def _at(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, bodies.Invalid | None]:
    """The field's name as a client wrote it (``contact.phoneNumber``, ``mentions[]``) and its marker."""
    tp: Any = model
    found: bodies.Invalid | None = None
    names: list[str] = []
    for part in loc:
        if isinstance(part, int):
            names[-1:] = [f"{names[-1]}[]"] if names else ["[]"]
            args = typing.get_args(tp)
            tp, marker = _unwrap(args[0]) if args else (Any, None)
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and (field := _field(tp, part)) is not None:
            names.append(field.alias or part)
            marker = _marker(field.metadata)
            tp, inner = _unwrap(field.annotation)
            marker = inner or marker
        else:
            continue  # a union's tag or a Json wrapper: not a name the client wrote
        found = marker or found
    return ".".join(names), found


def _error(model: type[BaseModel], error: ErrorDetails, default: ErrorCode) -> ApiError:
    if error["type"] in ErrorCode.__members__:
        # A validator's own verdict (PydanticCustomError named after a code): its message says it all.
        return ApiError(400, ErrorCode(error["type"]), error["msg"])
    name, marker = _at(model, tuple(error["loc"]))
    if marker is None:
        return ApiError(400, default, f"{name or 'the body'}: {error['msg']}")
    return ApiError(400, marker.code, f"{name} {marker.must}")


def parse(model: type[M], data: Mapping[str, Any], *, default: ErrorCode = ErrorCode.INVALID_FIELD) -> M:
    """``data`` read as ``model``, or the 400 its first failing field declares."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _error(model, exc.errors()[0], default) from None


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 415/400 saying what is wrong."""
    if request.content_type != "application/json":
        raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    try:
        body = await request.json(loads=json.loads)
        # JSON may escape lone surrogates (\ud800) that no UTF-8 store or engine accepts.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError):
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not valid JSON (UTF-8)") from None
    except RecursionError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body must be a JSON object")
    return body


async def body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body read as ``model``."""
    return parse(model, await json_body(request))


def query(request: web.Request, model: type[M], *, blank_is_absent: tuple[str, ...] = ()) -> M:
    """The request's query string read as ``model`` (a repeated name counts once: the first)."""
    given = {name: request.query[name] for name in request.query}
    for name in blank_is_absent:
        if given.get(name) == "":
            del given[name]
    return parse(model, given, default=ErrorCode.INVALID_QUERY)


def headers(request: web.Request, model: type[M]) -> M:
    """The request headers ``model`` declares (by their alias), read as ``model``."""
    wanted = {
        f.alias: request.headers[f.alias] for f in model.model_fields.values() if f.alias and f.alias in request.headers
    }
    return parse(model, wanted)


def path_session_id(request: web.Request) -> str:
    """The ``{id}`` of the path, or a 400."""
    return parse(bodies.PathId, {"id": request.match_info["id"]}).id


_SESSION_ID = TypeAdapter(bodies.SessionId)
_PHONE_TARGET = TypeAdapter(bodies.PhoneTarget)
_PHONE_DIGITS = TypeAdapter(bodies.PhoneDigits)


def _one(adapter: TypeAdapter[str], value: object, code: ErrorCode, must: str, field: str) -> str:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError:
        raise ApiError(400, code, f"{field} {must}") from None


def session_id(value: object, *, field: str = "sessionId") -> str:
    """A valid session id, or a 400."""
    return _one(_SESSION_ID, value, ErrorCode.INVALID_SESSION_ID, _marker_of(bodies.SessionId).must, field)


def phone_target(value: object, *, field: str = "to") -> str:
    """A JID for a phone target given as a JID or as digits (a leading + and separators allowed)."""
    return _one(_PHONE_TARGET, value, ErrorCode.INVALID_TARGET, _marker_of(bodies.PhoneTarget).must, field)


def phone_digits(value: object, *, field: str = "phoneNumber") -> str:
    """A phone number as digits only (a leading + and separators allowed), or a 400."""
    return _one(_PHONE_DIGITS, value, ErrorCode.INVALID_PHONE, _marker_of(bodies.PhoneDigits).must, field)


def _marker_of(tp: Any) -> bodies.Invalid:
    marker = _unwrap(tp)[1]
    assert marker is not None
    return marker

"""The wire protocol: one msgpack map per ZeroMQ frame.

Every frame carries a protocol version ``v``, a ``kind`` (``req``, ``rep``,
``event`` or ``hb``), a correlation ``id`` (for ``req``/``rep``), an ``op``
and a ``body``. Decoding never raises anything but :class:`ProtocolError`, so a
peer can log and drop whatever garbage reaches its socket. What each ``op``
means and what its body holds is declared in transport/wire.py.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import msgspec

PROTOCOL_VERSION = 1

REQ = "req"
REP = "rep"
EVENT = "event"
HB = "hb"
KINDS = frozenset({REQ, REP, EVENT, HB})

# A frame is control traffic, never bulk data: media travel by reference.
# The cap stops a hostile or broken peer from making us allocate gigabytes.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class ProtocolError(ValueError):
    """A frame that cannot be decoded or does not follow the protocol."""


# A body as sent: a plain map, or one of the typed bodies of transport/wire.py (encoded as a map).
Payload = dict[str, Any] | msgspec.Struct


@dataclass(slots=True)
class Frame:
    """One protocol message. A received frame's body is always a plain map."""

    kind: str
    op: str = ""
    body: Payload = field(default_factory=dict)
    id: int = 0
    v: int = PROTOCOL_VERSION


class _Received(msgspec.Struct):
    """The frame layout, checked by msgspec's decoder in one pass (several times cheaper than msgpack's
    unpackb followed by checks in Python, measured per frame)."""

    v: int
    kind: str
    id: int = 0
    op: str = ""
    body: dict[str, Any] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Received)
_any_decoder = msgspec.msgpack.Decoder()


def encode(frame: Frame) -> bytes:
    """Serialise a frame to msgpack bytes."""
    return _encoder.encode({"v": frame.v, "kind": frame.kind, "id": frame.id, "op": frame.op, "body": frame.body})


def decode(data: bytes) -> Frame:
    """Parse msgpack bytes into a frame, or raise ProtocolError saying why."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        raw = _decoder.decode(data)
    except msgspec.ValidationError:
        raise ProtocolError(_why_invalid(data)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if raw.v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {raw.v!r}")
    if raw.kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {raw.kind!r}")
    if raw.kind in (REQ, REP) and raw.id <= 0:
        raise ProtocolError(f"{raw.kind} frame without a correlation id")
    return Frame(kind=raw.kind, op=raw.op, body=raw.body, id=raw.id, v=raw.v)


def _why_invalid(data: bytes) -> str:
    """Why a frame does not have the frame layout (the slow path, for garbage only)."""
    try:
        raw = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:  # a valid first value with bytes after it, for one
        return f"undecodable frame: {exc}"
    if not isinstance(raw, dict):
        return f"frame is a {type(raw).__name__}, not a map"
    if raw.get("v") != PROTOCOL_VERSION:
        return f"unsupported protocol version {raw.get('v')!r}"
    if raw.get("kind") not in KINDS:
        return f"unknown frame kind {raw.get('kind')!r}"
    return "frame fields op/body/id have the wrong types"


class IdSource:
    """Correlation ids, unique per process and never zero."""

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        # Start at a random offset so ids of two incarnations rarely collide in logs.
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)

    def next(self) -> int:
        return next(self._counter)


def ok(result: Payload | None = None) -> dict[str, Any]:
    """Body of a successful reply."""
    return {"ok": True, "result": result if result is not None else {}}


def fail(code: str, message: str) -> dict[str, Any]:
    """Body of a failed reply: a machine code and a human message."""
    return {"ok": False, "error": {"code": code, "message": message}}

"""The wire protocol: one msgpack map per ZeroMQ frame.

Every frame carries a protocol version ``v``, a ``kind`` (``req``, ``rep``,
``event`` or ``hb``), a correlation ``id`` (for ``req``/``rep``), an ``op``
and a ``body``. Decoding never raises anything but :class:`ProtocolError`, so a
peer can log and drop whatever garbage reaches its socket.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import msgpack

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


@dataclass(slots=True)
class Frame:
    """One protocol message."""

    kind: str
    op: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    v: int = PROTOCOL_VERSION


def encode(frame: Frame) -> bytes:
    """Serialise a frame to msgpack bytes."""
    return msgpack.packb(
        {"v": frame.v, "kind": frame.kind, "id": frame.id, "op": frame.op, "body": frame.body},
        use_bin_type=True,
    )


def decode(data: bytes) -> Frame:
    """Parse msgpack bytes into a frame, or raise ProtocolError saying why."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"frame is a {type(raw).__name__}, not a map")
    version = raw.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    op = raw.get("op", "")
    body = raw.get("body", {})
    ident = raw.get("id", 0)
    if not isinstance(op, str) or not isinstance(body, dict) or not isinstance(ident, int):
        raise ProtocolError("frame fields op/body/id have the wrong types")
    if kind in (REQ, REP) and ident <= 0:
        raise ProtocolError(f"{kind} frame without a correlation id")
    return Frame(kind=kind, op=op, body=body, id=ident, v=version)


class IdSource:
    """Correlation ids, unique per process and never zero."""

    __slots__ = ("_counter",)

    def __init__(self) -> None:
        # Start at a random offset so ids of two incarnations rarely collide in logs.
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)

    def next(self) -> int:
        return next(self._counter)


def ok(result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Body of a successful reply."""
    return {"ok": True, "result": result or {}}


def fail(code: str, message: str) -> dict[str, Any]:
    """Body of a failed reply: a machine code and a human message."""
    return {"ok": False, "error": {"code": code, "message": message}}

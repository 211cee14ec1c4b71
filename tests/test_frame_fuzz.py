"""Fuzz what a session process can send the supervisor: any bytes, any msgpack value, any op and body.

Whatever arrives, decoding either yields a frame / a typed body or raises the protocol's own error
(ProtocolError, WireError): never another exception, which would reach the supervisor's handlers.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import wire
from transport.protocol import ProtocolError, decode

JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
OPS = st.sampled_from([*wire.EVENTS, *wire.SUPERVISOR_REQUESTS, "status", "", "ready\0", "x" * 300]) | st.text(
    max_size=12
)
# Bodies shaped like the real ones, with their keys kept, dropped, mistyped or joined by strangers.
KEYS = st.sampled_from(
    [
        "id",
        "qr",
        "expires_at",
        "phone",
        "push_name",
        "reason",
        "will_retry",
        "status",
        "chat",
        "timestamp",
        "at",
        "pid",
        "engine",
        "code",
        "error",
        "text",
        "media_path",
        "sender",
        "type",
    ]
)
BODIES = st.dictionaries(KEYS | st.text(max_size=8), JSONISH, max_size=8)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_decode_to_a_frame_or_a_protocol_error(raw: bytes) -> None:
    try:
        decode(raw)
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(value=JSONISH)
def test_any_msgpack_value_decodes_to_a_frame_or_a_protocol_error(value: Any) -> None:
    try:
        decode(msgpack.packb(value, use_bin_type=True))
    except ProtocolError:
        pass


@settings(max_examples=600, deadline=None)
@given(op=OPS, body=BODIES)
def test_any_op_and_body_from_a_session_process_is_typed_or_refused(op: str, body: dict[str, Any]) -> None:
    for decoder in (wire.decode_event, wire.decode_supervisor_request):
        try:
            decoded = decoder(op, body)
        except wire.WireError:
            continue
        assert isinstance(decoded, (wire.Event, wire.SupervisorRequest))

"""The wire contract between the supervisor and a session process (transport/wire.py), without processes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from transport import wire
from transport.protocol import EVENT, REQ, Frame, decode, encode


def test_every_operation_has_exactly_one_body() -> None:
    assert set(wire.CHILD_REQUESTS) == {op.value for op in wire.ToChild}
    assert set(wire.SUPERVISOR_REQUESTS) == {op.value for op in wire.ToSupervisor}
    assert set(wire.EVENTS) == {op.value for op in wire.ChildEvent}
    kinds = [*wire.CHILD_REQUESTS.values(), *wire.SUPERVISOR_REQUESTS.values(), *wire.EVENTS.values()]
    assert len(set(kinds)) == len(kinds)


@pytest.mark.parametrize(
    "body",
    [
        wire.OutgoingMessage(id="3EB0AA", to="628111@s.whatsapp.net", text="hi", mentions=["628222@s.whatsapp.net"]),
        wire.PairCode(phone="628111"),
        wire.Stop(),
        wire.Logout(),
        wire.MarkRead(
            chat="628222@s.whatsapp.net", messages=[wire.ReadMessage(id="A", sender="628222@s.whatsapp.net")]
        ),
        wire.SendPresence(state="typing", chat="628222@s.whatsapp.net"),
        wire.SendPresence(state="available"),
    ],
)
def test_requests_to_the_child_survive_the_frame_round_trip(body: wire.ChildRequest[Any]) -> None:
    frame = decode(encode(Frame(kind=REQ, op=body.OP, body=body, id=1)))
    assert isinstance(frame.body, dict)
    assert wire.decode_child_request(frame.op, frame.body) == body


@pytest.mark.parametrize(
    "event",
    [
        wire.Ready(pid=12, engine="sim"),
        wire.Qr(qr="2@abc", expires_at=1.5),
        wire.Connected(phone="628111", push_name=None),
        wire.Disconnected(reason="qr_timeout", will_retry=False),
        wire.LoggedOut(reason="unlinked"),
        wire.Receipt(id="3EB0AA", status="read", chat="628222@s.whatsapp.net", timestamp=2.0),
        wire.Creds(at=3.0),
        wire.ChatPresence(chat="628222@s.whatsapp.net", sender="628222@s.whatsapp.net", state="recording"),
        wire.PresenceUpdate(jid="628222@s.whatsapp.net", online=False, last_seen=4.0),
        wire.PresenceUpdate(jid="628222@s.whatsapp.net", online=True),
    ],
)
def test_events_survive_the_frame_round_trip(event: wire.Event) -> None:
    frame = decode(encode(Frame(kind=EVENT, op=event.OP, body=event)))
    assert isinstance(frame.body, dict)
    assert wire.decode_event(frame.op, frame.body) == event


@pytest.mark.parametrize(
    "body",
    [
        wire.IncomingCall(id="C1", sender="628222@s.whatsapp.net", video=True, timestamp=5.0),
        wire.CallRejected(id="C1", sender="628222@s.whatsapp.net"),
    ],
)
def test_call_requests_survive_the_frame_round_trip(body: wire.SupervisorRequest[Any]) -> None:
    frame = decode(encode(Frame(kind=REQ, op=body.OP, body=body, id=1)))
    assert isinstance(frame.body, dict)
    assert wire.decode_supervisor_request(frame.op, frame.body) == body
    assert msgspec.convert(msgspec.to_builtins(wire.CallDecision(reject=True)), wire.CallDecision).reject is True


def test_event_keys_are_camel_case_and_messages_keep_theirs() -> None:
    assert msgspec.to_builtins(wire.Qr(qr="q", expires_at=1.0)) == {"qr": "q", "expiresAt": 1.0}
    message = wire.OutgoingMessage(id="a", to="b", reaction_to="c", text="")
    # Defaults stay off the wire; the outbox table holds these keys, so they never change.
    assert msgspec.to_builtins(message) == {"id": "a", "to": "b", "text": "", "reaction_to": "c"}


@pytest.mark.parametrize(
    "decoder, op, body, why",
    [
        (wire.decode_child_request, "status", {}, "unknown request 'status'"),
        (wire.decode_child_request, "send", {"id": "a", "to": "b", "txt": "typo"}, "unknown field `txt`"),
        (wire.decode_child_request, "send", {"id": "a"}, "missing required field `to`"),
        (wire.decode_child_request, "pair_code", {"phone": 628111}, r"Expected `str`, got `int` - at `\$.phone`"),
        (wire.decode_child_request, "stop", {"now": True}, "unknown field `now`"),
        (wire.decode_supervisor_request, "message", {"id": "a"}, "missing required field"),
        (wire.decode_supervisor_request, "fatal", {"code": "X", "error": "y", "extra": 1}, "unknown field `extra`"),
        (wire.decode_supervisor_request, "send", {}, "unknown request 'send'"),  # the other direction's op
        (wire.decode_event, "qr", {"qr": "q", "expires_at": 1.0}, "unknown field `expires_at`"),  # snake, not camel
        (wire.decode_event, "connected", {"phone": "1"}, "missing required field `pushName`"),
        (wire.decode_event, "status", {}, "unknown event 'status'"),
    ],
)
def test_unknown_ops_and_unknown_missing_or_mistyped_keys_are_protocol_errors(
    decoder: Any, op: str, body: dict[str, Any], why: str
) -> None:
    with pytest.raises(wire.WireError, match=why) as info:
        decoder(op, body)
    assert info.value.code == "PROTOCOL_ERROR"


def test_a_protocol_error_never_logs_a_value() -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode_child_request("send", {"id": "a", "to": "b", "text": ["secret words"]})
    assert "secret" not in str(info.value)


def test_refuse_raises_in_strict_mode_and_answers_an_error_otherwise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test.wire")
    error = wire.WireError("unknown request 'status'")
    monkeypatch.setenv(wire.STRICT_ENV, "1")
    with pytest.raises(wire.WireError):
        wire.refuse(log, error, {"sessionId": "s1"})
    monkeypatch.setenv(wire.STRICT_ENV, "0")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="test.wire"):
        answer = wire.refuse(log, error, {"sessionId": "s1"})
    assert (answer.code, answer.message) == ("PROTOCOL_ERROR", "unknown request 'status'")
    [record] = caplog.records
    assert record.getMessage() == "wire protocol error: unknown request 'status'"
    assert record.__dict__["sessionId"] == "s1"

"""The neonize engine's contacts, blocking and disappearing messages: the mapping of neonize's own
protobuf answers, and the engine's calls against a stand-in for the Go client (no network, no Go)."""

from __future__ import annotations

import ctypes
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_neonize_engine import _engine, _FakeClient  # imports neonize's protobuf modules without Go

from neonize.proto.Neonize_pb2 import (  # isort: skip
    JID,
    Blocklist,
    ContactInfo,
    GetUserInfoSingleReturnFunction,
    IsOnWhatsAppResponse,
    ProfilePictureInfo,
    UserInfo,
)
from session_proc.engine import EngineError
from session_proc.neonize import contacts
from transport.wire import ContactCard, PhoneCheck

ANA, BO, NOBODY = "628111", "628222", "628999"


def user(phone: str, device: int = 0) -> JID:
    return JID(User=phone, Server="s.whatsapp.net", Device=device)


def on_whatsapp(query: str, phone: str, *, is_in: bool = True) -> IsOnWhatsAppResponse:
    return IsOnWhatsAppResponse(Query=query, JID=user(phone), IsIn=is_in)


# -- mapping -----------------------------------------------------------------------------------------
def test_number_checks_keep_the_order_asked_and_match_the_echoed_query() -> None:
    responses = [
        on_whatsapp(f"+{BO}", BO),
        on_whatsapp(f"{ANA}@c.us", ANA),  # an echo in another shape: matched by the JID's user
        on_whatsapp(f"+{NOBODY}", NOBODY, is_in=False),
    ]
    assert contacts.phone_checks([ANA, NOBODY, BO, "628000"], responses) == [
        PhoneCheck(phone=ANA, exists=True, jid=f"{ANA}@s.whatsapp.net"),
        PhoneCheck(phone=NOBODY, exists=False, jid=None),
        PhoneCheck(phone=BO, exists=True, jid=f"{BO}@s.whatsapp.net"),
        PhoneCheck(phone="628000", exists=False, jid=None),  # no answer at all
    ]


def test_contact_card_from_user_info_contact_store_and_picture() -> None:
    jid = f"{ANA}@s.whatsapp.net"
    assert contacts.contact_card(
        jid,
        info=UserInfo(Status="at work", PictureID="1"),
        contact=ContactInfo(Found=True, PushName="Ana", FullName="Ana (address book)"),
        picture=ProfilePictureInfo(URL="https://pps.whatsapp.net/v/ana.jpg", ID="1"),
    ) == ContactCard(jid=jid, push_name="Ana", about="at work", picture_url="https://pps.whatsapp.net/v/ana.jpg")
    # Nothing shown: empty strings and an unknown contact are null, never "".
    assert contacts.contact_card(
        jid, info=UserInfo(), contact=ContactInfo(Found=False, PushName="stale"), picture=ProfilePictureInfo()
    ) == ContactCard(jid=jid)
    assert contacts.contact_card(jid, info=None, contact=None, picture=None) == ContactCard(jid=jid)


def test_blocklist_jids_drop_the_device_part() -> None:
    blocklist = Blocklist(DHash="h", JIDs=[user(ANA, device=3), user(BO)])
    assert contacts.blocklist_jids(blocklist) == [f"{ANA}@s.whatsapp.net", f"{BO}@s.whatsapp.net"]


def test_disappearing_timer_is_sent_in_nanoseconds_not_neonizes_milliseconds() -> None:
    day = 86400
    neonize_would_send = int(timedelta(seconds=day).total_seconds() * 1000)  # client.set_disappearing_timer
    assert contacts.timer_nanoseconds(day) == 86_400_000_000_000 == neonize_would_send * 1_000_000
    assert contacts.timer_nanoseconds(7776000) < 2**63  # fits the export's int64


class _GoExports:
    """Stands in for neonize's Go library: records SetDisappearingTimer and answers a C string."""

    def __init__(self, error: bytes = b"") -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._answer = ctypes.create_string_buffer(error)

    def SetDisappearingTimer(self, *args: Any) -> int:
        self.calls.append(args)
        return ctypes.addressof(self._answer)  # restype c_void_p: Python gets the address as an int


def test_set_disappearing_calls_the_export_and_reads_its_error() -> None:
    go = _GoExports()
    contacts.set_disappearing(go, b"s1", f"{ANA}@s.whatsapp.net", 604800)
    [(uuid, buf, size, timer, setting_ts)] = go.calls
    assert (uuid, size, timer, setting_ts) == (b"s1", len(buf), 604800 * 10**9, 0)
    assert JID.FromString(buf).User == ANA

    with pytest.raises(EngineError) as refused:
        contacts.set_disappearing(_GoExports(b"invalid disappearing timer provided"), b"s1", ANA, 86400)
    assert refused.value.code == contacts.REFUSED and "invalid disappearing timer" in refused.value.message
    assert contacts.c_error(None) == ""


# -- the engine's calls, with a stand-in client ---------------------------------------------------------------
class _AccountClient(_FakeClient):
    """A connected client that knows two numbers on WhatsApp, a blocklist and Ana's profile."""

    uuid = b"s1"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, ...]] = []
        self.blocked: list[str] = [BO]
        self.actions: list[tuple[str, str]] = []

    def is_on_whatsapp(self, *numbers: str) -> list[IsOnWhatsAppResponse]:
        self.asked.append(numbers)
        return [on_whatsapp(n, n.lstrip("+"), is_in=n.lstrip("+") in (ANA, BO)) for n in numbers]

    def get_user_info(self, *jids: JID) -> list[GetUserInfoSingleReturnFunction]:
        return [GetUserInfoSingleReturnFunction(JID=j, UserInfo=UserInfo(Status=f"about {j.User}")) for j in jids]

    def get_contact(self, jid: JID) -> ContactInfo:
        return ContactInfo(Found=jid.User == ANA, PushName="Ana")

    def get_profile_picture(self, jid: JID) -> ProfilePictureInfo:
        raise RuntimeError("the user doesn't have a profile picture")  # whatsmeow's "none set"

    def update_blocklist(self, jid: JID, action: Any) -> Blocklist:
        self.actions.append((jid.User, action.value))
        return Blocklist()

    def get_blocklist(self) -> Blocklist:
        return Blocklist(JIDs=[user(p) for p in self.blocked])


async def test_engine_account_operations_with_a_connected_client(tmp_path: Path) -> None:
    client = _AccountClient()
    engine, _ = await _engine(tmp_path, client)  # type: ignore[arg-type]
    checks = await engine.check_phones([ANA, NOBODY])
    assert client.asked == [(f"+{ANA}", f"+{NOBODY}")]  # whatsmeow wants international numbers with +
    assert [(c.phone, c.exists) for c in checks] == [(ANA, True), (NOBODY, False)]

    assert await engine.contact_info(f"{ANA}@s.whatsapp.net") == ContactCard(
        jid=f"{ANA}@s.whatsapp.net", push_name="Ana", about=f"about {ANA}", picture_url=None
    )
    with pytest.raises(EngineError) as missing:
        await engine.contact_info(f"{NOBODY}@s.whatsapp.net")
    assert missing.value.code == "NOT_ON_WHATSAPP"
    with pytest.raises(EngineError) as group:
        await engine.set_blocked("120363000000000001@g.us", True)
    assert group.value.code == "INVALID_RECIPIENT"

    await engine.set_blocked(f"{ANA}@s.whatsapp.net", True)
    await engine.set_blocked(BO, False)
    assert client.actions == [(ANA, "block"), (BO, "unblock")]
    assert await engine.blocklist() == [f"{BO}@s.whatsapp.net"]

    go = _GoExports()
    engine._gocode = go
    await engine.set_disappearing(f"{ANA}@s.whatsapp.net", 7776000)
    assert [call[3] for call in go.calls] == [7776000 * 10**9]


async def test_engine_calls_nothing_in_go_unless_connected(tmp_path: Path) -> None:
    client = _AccountClient()
    engine, _ = await _engine(tmp_path, client)  # type: ignore[arg-type]
    engine._gocode = go = _GoExports()
    for connected, stopping in ((False, False), (True, True)):  # before Connected; after stop()
        engine._connected = connected
        if stopping:
            engine._stopping.set()
        calls = (
            engine.check_phones([ANA]),
            engine.contact_info(ANA),
            engine.set_blocked(ANA, True),
            engine.blocklist(),
            engine.set_disappearing(ANA, 0),
        )
        for call in calls:
            with pytest.raises(EngineError) as refused:
                await call
            assert refused.value.code == "NOT_CONNECTED"
    assert client.asked == client.actions == go.calls == []

"""The neonize engine's groups (issue 17): the mapping from neonize's own protobuf classes, and the
engine's calls against a stand-in client (no network, no Go)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from harness import wait_for
from neonize.proto.Neonize_pb2 import (
    JID,
    GroupAnnounce,
    GroupInfo,
    GroupInfoEvent,
    GroupLocked,
    GroupName,
    GroupParticipant,
    GroupParticipantAddRequest,
    GroupTopic,
    JoinedGroup,
    MessageSource,
)
from neonize.proto.Neonize_pb2 import Receipt as ReceiptEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from test_neonize_engine import ME, PEER, _engine, _event, _FakeClient, _jid  # also loads neonize's protos only

from session_proc.engine import EngineError
from session_proc.neonize import group_calls, groups, incoming
from transport import wire

GROUP = "120363025246125486@g.us"
THIRD = "628333@s.whatsapp.net"
LID = JID(User="99887766", Server="lid")


def _lid_to_phone(jid: JID) -> str:
    return THIRD if jid.Server == "lid" else incoming.jid_str(jid)


def _info() -> GroupInfo:
    return GroupInfo(
        JID=_jid(GROUP),
        OwnerJID=LID,
        OwnerPN=_jid(ME),
        GroupName=GroupName(Name="Support"),
        GroupTopic=GroupTopic(Topic="help desk"),
        GroupAnnounce=GroupAnnounce(IsAnnounce=True),
        GroupLocked=GroupLocked(isLocked=False),
        GroupCreated=1_760_000_000.0,
        Participants=[
            GroupParticipant(JID=LID, PhoneNumber=_jid(ME), IsAdmin=True, IsSuperAdmin=True),
            GroupParticipant(JID=_jid(PEER), IsAdmin=True),
            GroupParticipant(JID=LID),  # no phone number given: looked up
            GroupParticipant(JID=_jid("628444@s.whatsapp.net"), Error=403),  # a create could not add this one
        ],
    )


def test_group_info_maps_settings_admins_and_phone_numbers_for_lids() -> None:
    info = groups.group_info(_info(), _lid_to_phone)
    assert (info.jid, info.subject, info.description, info.owner) == (GROUP, "Support", "help desk", ME)
    assert (info.announce, info.locked) == (True, False)
    # GroupCreated is a float32: 1_760_000_000 comes back only to the nearest 128 s.
    assert info.created_at == pytest.approx(1_760_000_000, abs=128)
    assert [(p.jid, p.admin) for p in info.participants] == [(ME, "superadmin"), (PEER, "admin"), (THIRD, None)]
    deleted = _info()
    deleted.GroupTopic.TopicDeleted = True
    assert groups.group_info(deleted).description is None
    line = groups.summary(_info(), ME, _lid_to_phone)
    assert (line.jid, line.subject, line.size, line.is_admin) == (GROUP, "Support", 3, True)
    assert groups.summary(_info(), THIRD, _lid_to_phone).is_admin is False


def test_each_participant_gets_its_own_result_from_whatsmeows_error_codes() -> None:
    returned = [
        GroupParticipant(JID=_jid(PEER)),
        GroupParticipant(JID=_jid(THIRD), Error=403, AddRequest=GroupParticipantAddRequest(Code="abc", Expiration=1)),
        GroupParticipant(JID=_jid("628555@s.whatsapp.net"), Error=404),
        GroupParticipant(JID=LID, PhoneNumber=_jid("628666@s.whatsapp.net"), Error=409),
        GroupParticipant(JID=_jid("628777@s.whatsapp.net"), Error=500),
    ]
    asked = [PEER, THIRD, "628555@s.whatsapp.net", "628666@s.whatsapp.net", "628777@s.whatsapp.net", ME]
    results = groups.participant_results(asked, returned)
    assert [(r.jid, r.result, r.code) for r in results] == [
        (PEER, "ok", 200),
        (THIRD, "invite_required", 403),
        ("628555@s.whatsapp.net", "not_found", 404),
        ("628666@s.whatsapp.net", "already", 409),
        ("628777@s.whatsapp.net", "error", 500),  # never counted a success
        (ME, "not_found", 404),  # missing from the answer
    ]


def test_joined_group_and_group_info_events_become_the_wire_events_in_order() -> None:
    joined = JoinedGroup(GroupInfo=_info(), Sender=LID, SenderPN=_jid(PEER))
    event = groups.joined_event(joined, now=5.0)
    assert (event.kind, event.group, event.subject, event.by, event.timestamp) == (
        "joined",
        GROUP,
        "Support",
        PEER,
        5.0,
    )
    assert groups.joined_event(joined, now=6.0).id == event.id  # the same notification again: the same id

    change = GroupInfoEvent(
        JID=_jid(GROUP),
        Sender=LID,
        Timestamp=1_760_000_100,
        Join=[_jid(ME), _jid(PEER)],
        Leave=[_jid("628555@s.whatsapp.net")],
        Promote=[_jid(PEER)],
        Name=GroupName(Name="Support 2"),
        Topic=GroupTopic(TopicDeleted=True),
        Locked=GroupLocked(isLocked=True),
    )
    events = groups.info_events(change, me=ME, now=1.0, to_phone=_lid_to_phone)
    assert [(e.kind, e.action, e.participants) for e in events] == [
        ("joined", None, []),
        ("participants", "add", [PEER]),
        ("participants", "remove", ["628555@s.whatsapp.net"]),
        ("participants", "promote", [PEER]),
        ("updated", None, []),
    ]
    assert events[-1].changes == {"subject": "Support 2", "description": None, "locked": True}
    assert {e.by for e in events} == {THIRD} and {e.timestamp for e in events} == {1_760_000_100.0}
    assert len({e.id for e in events}) == 5
    left = groups.info_events(GroupInfoEvent(JID=_jid(GROUP), Leave=[_jid(ME)]), me=ME, now=2.0)
    assert [(e.kind, e.by, e.timestamp) for e in left] == [("left", None, 2.0)]


def test_group_messages_name_their_participant_and_group_receipts_whose() -> None:
    event = _event(Message(conversation="hi all"), chat=GROUP, sender=PEER)
    event.Info.MessageSource.IsGroup = True
    mapped = incoming.map_message(event, me=ME)
    assert mapped is not None
    assert (mapped.message.chat, mapped.message.sender, mapped.message.participant) == (GROUP, PEER, PEER)
    assert incoming.map_message(_event(Message(conversation="x")), me=ME).message.participant is None  # type: ignore[union-attr]
    source = MessageSource(Chat=_jid(GROUP), Sender=_jid(THIRD), IsGroup=True)
    update = incoming.map_receipt(ReceiptEv(MessageSource=source, MessageIDs=["A"], Timestamp=1, Type=ReceiptEv.READ))
    assert update is not None and (update.chat, update.by) == (GROUP, THIRD)


class _GroupClient(_FakeClient):
    """The stand-in client with whatsmeow's group calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.refuse: str | None = None

    def _record(self, name: str, *args: Any) -> None:
        if self.refuse is not None:
            raise RuntimeError(self.refuse)
        self.calls.append((name, args))

    def update_group_participants(self, jid: JID, people: list[JID], action: Any) -> list[GroupParticipant]:
        self._record("update_group_participants", incoming.jid_str(jid), action.value)
        return [GroupParticipant(JID=people[0]), GroupParticipant(JID=people[1], Error=403)]

    def get_joined_groups(self) -> list[GroupInfo]:
        self._record("get_joined_groups")
        return [_info()]

    def set_group_name(self, jid: JID, name: str) -> None:
        self._record("set_group_name", name)

    def set_group_topic(self, jid: JID, previous: str, new: str, topic: str) -> None:
        self._record("set_group_topic", previous, new, topic)

    def set_group_locked(self, jid: JID, locked: bool) -> None:
        self._record("set_group_locked", locked)

    def get_group_invite_link(self, jid: JID, revoke: bool) -> str:
        self._record("get_group_invite_link", revoke)
        return "https://chat.whatsapp.com/AbC123"


async def test_engine_reports_a_partial_add_per_participant_and_refusals_as_codes(tmp_path: Path) -> None:
    client = _GroupClient()
    engine, _ = await _engine(tmp_path, client)  # type: ignore[arg-type]
    request = wire.GroupParticipants(jid=GROUP, action="add", participants=[PEER, THIRD])
    reply = await engine.group_participants(request)
    assert [(r.jid, r.result, r.code) for r in reply.results] == [(PEER, "ok", 200), (THIRD, "invite_required", 403)]
    assert client.calls == [("update_group_participants", (GROUP, "add"))]

    await engine.group_update(wire.GroupUpdate(jid=GROUP, subject="New", description="", locked=True))
    assert client.calls[1:] == [
        ("set_group_name", ("New",)),
        ("set_group_topic", ("", "", "")),  # whatsmeow fills the topic ids; "" removes the description
        ("set_group_locked", (True,)),
    ]
    assert await engine.group_invite(GROUP, revoke=True) == "AbC123"

    client.refuse = "info query returned status 403: forbidden"
    with pytest.raises(EngineError) as refused:
        await engine.group_participants(request)
    assert refused.value.code == "NOT_ADMIN"
    assert group_calls.refusal("group not found").code == "GROUP_NOT_FOUND"
    assert group_calls.refusal("you're not participating in that group").code == "GROUP_NOT_FOUND"
    assert group_calls.refusal("you don't have the permission to get the group's invite link").code == "NOT_ADMIN"
    assert group_calls.refusal("that group invite link is not valid", invite=True).code == "INVITE_INVALID"
    assert group_calls.refusal("websocket closed").code == "GROUP_FAILED"  # the API shows ENGINE_ERROR 502
    assert group_calls.refusal("invite link has been revoked", invite=True).code == "INVITE_INVALID"


async def test_the_group_list_is_cached_until_a_group_event_which_is_committed_before_whatsmeow_returns(
    tmp_path: Path,
) -> None:
    client = _GroupClient()
    engine, sink = await _engine(tmp_path, client)  # type: ignore[arg-type]
    engine._me = ME
    first = await engine.group_list()
    again = await engine.group_list()
    assert first == again and [g.jid for g in first.groups] == [GROUP] and first.groups[0].is_admin
    assert [c for c, _ in client.calls] == ["get_joined_groups"]

    done = threading.Event()

    def whatsmeow() -> None:  # Go's thread: returns only once the event was committed
        engine._cb_group_info(client, GroupInfoEvent(JID=_jid(GROUP), Sender=_jid(PEER), Leave=[_jid(THIRD)]))
        done.set()

    thread = threading.Thread(target=whatsmeow)
    thread.start()

    async def committed() -> list[Any] | None:
        found = [body for kind, body in sink.events if kind == "group"]
        return found or None

    events = await wait_for(committed, timeout=10, what="the group event")
    thread.join(10)
    assert done.is_set()
    assert (events[0].kind, events[0].action, events[0].participants, events[0].by) == (
        "participants",
        "remove",
        [THIRD],
        PEER,
    )
    await engine.group_list()
    assert [c for c, _ in client.calls] == ["get_joined_groups", "get_joined_groups"]  # refreshed after the event

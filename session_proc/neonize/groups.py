"""neonize's groups as the wire contract's records (issue 17): pure functions over neonize's own
protobuf types, so tests build real GroupInfo, GroupParticipant, JoinedGroup and GroupInfoEvent
values and check the mapping without a network.

People in groups may be addressed by LID (hidden ids). Every JID shown is a phone-number JID where
one is known: a participant's ``PhoneNumber``, an owner's ``OwnerPN``, a sender's ``SenderPN``,
else ``to_phone`` (the engine's lookup through whatsmeow's ``get_pn_from_lid``), else the LID as is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from neonize.proto.Neonize_pb2 import JID, GroupInfo, GroupInfoEvent, GroupParticipant, JoinedGroup

from session_proc.neonize.incoming import jid_str
from transport import wire

ToPhone = Callable[[JID], str]  # a JID (maybe a LID) as the phone-number JID it stands for, as text

# whatsmeow's GroupParticipant.Error codes and the result each is (0: no error).
RESULTS = {0: "ok", 200: "ok", 401: "not_admin", 403: "invite_required", 404: "not_found", 409: "already"}
UNKNOWN_RESULT = "error"  # any other code: shown with that code, never counted a success


def plain_phone(jid: JID) -> str:
    """``to_phone`` without a LID lookup: the JID as it is."""
    return jid_str(jid)


def _pick(preferred: JID, jid: JID, to_phone: ToPhone) -> str | None:
    if preferred.User:
        return jid_str(preferred)
    if jid.User:
        return to_phone(jid)
    return None


def group_info(info: GroupInfo, to_phone: ToPhone = plain_phone) -> wire.GroupInfo:
    """A neonize GroupInfo as the wire's. ``GroupCreated`` arrives as a float32 of epoch seconds:
    precise to about ±64 s today (2^24 s / 2^8), so ``created_at`` is that coarse on this engine."""
    topic = info.GroupTopic
    return wire.GroupInfo(
        jid=jid_str(info.JID),
        subject=info.GroupName.Name,
        description=None if topic.TopicDeleted or not topic.Topic else topic.Topic,
        owner=_pick(info.OwnerPN, info.OwnerJID, to_phone),
        created_at=float(info.GroupCreated) or None,
        announce=info.GroupAnnounce.IsAnnounce,
        locked=info.GroupLocked.isLocked,
        participants=[
            wire.GroupMember(
                jid=_participant_jid(p, to_phone),
                admin="superadmin" if p.IsSuperAdmin else "admin" if p.IsAdmin else None,
            )
            for p in info.Participants
            if not p.Error  # a create's answer lists those it could not add too, each with its Error
        ],
    )


def _participant_jid(p: GroupParticipant, to_phone: ToPhone) -> str:
    return _pick(p.PhoneNumber, p.JID, to_phone) or ""


def summary(info: GroupInfo, me: str | None, to_phone: ToPhone = plain_phone) -> wire.GroupSummary:
    """One line of the group list; ``me`` is the account's phone-number JID."""
    mapped = group_info(info, to_phone)
    admin = any(p.jid == me and p.admin is not None for p in mapped.participants)
    return wire.GroupSummary(jid=mapped.jid, subject=mapped.subject, size=len(mapped.participants), is_admin=admin)


def participant_results(
    asked: Sequence[str], returned: Sequence[GroupParticipant], to_phone: ToPhone = plain_phone
) -> list[wire.ParticipantResult]:
    """One result per participant asked for, in the order asked.

    whatsmeow answers an update as a success even when some participants failed: each
    ``GroupParticipant.Error`` says how that one fared (403: an invite is required, and an
    ``AddRequest`` came with it). One asked for but missing from the answer is ``not_found``.
    """
    by_jid = {_participant_jid(p, to_phone): p for p in returned}
    results = []
    for jid in asked:
        p = by_jid.get(jid)
        if p is None:
            results.append(wire.ParticipantResult(jid=jid, result="not_found", code=404))
            continue
        code = int(p.Error)
        result = RESULTS.get(code, UNKNOWN_RESULT)
        results.append(wire.ParticipantResult(jid=jid, result=result, code=200 if result == "ok" else code))
    return results


def _event_id(kind: str, payload: bytes) -> str:
    # The same notification delivered again (after a crash before whatsmeow's ack) gets the same id.
    return f"{kind}-{hashlib.sha256(payload).hexdigest()[:24]}"


def _seconds(value: int) -> float:
    # neonize hands some times as milliseconds and others as seconds: a value past 10^11 is milliseconds.
    return value / 1000.0 if value > 100_000_000_000 else float(value)


def joined_event(event: JoinedGroup, *, now: float, to_phone: ToPhone = plain_phone) -> wire.GroupEvent:
    """This account was added to (or created, or joined) a group."""
    info = event.GroupInfo
    return wire.GroupEvent(
        id=_event_id("joined", event.SerializePartialToString(deterministic=True)),
        kind="joined",
        group=jid_str(info.JID),
        subject=info.GroupName.Name or None,
        by=_pick(event.SenderPN, event.Sender, to_phone),
        timestamp=now,
    )


def info_events(
    event: GroupInfoEvent, *, me: str | None, now: float, to_phone: ToPhone = plain_phone
) -> list[wire.GroupEvent]:
    """The wire's events for one GroupInfoEvent, in a fixed order: joins, leaves, promotions,
    demotions, then one ``updated`` with every setting it changed. The account's own join or leave
    is ``joined``/``left`` (whoever else came or went with it stays in ``participants``)."""
    group = jid_str(event.JID)
    by = to_phone(event.Sender) if event.Sender.User else None
    ts = _seconds(event.Timestamp) if event.Timestamp > 0 else now
    base = _event_id("info", event.SerializePartialToString(deterministic=True))
    out: list[wire.GroupEvent] = []

    def add(
        kind: str,
        *,
        action: str | None = None,
        participants: list[str] | None = None,
        changes: dict[str, str | bool | None] | None = None,
    ) -> None:
        out.append(
            wire.GroupEvent(
                id=f"{base}-{len(out)}",
                kind=kind,
                group=group,
                by=by,
                timestamp=ts,
                action=action,
                participants=participants or [],
                changes=changes or {},
            )
        )

    for action, jids in (
        ("add", event.Join),
        ("remove", event.Leave),
        ("promote", event.Promote),
        ("demote", event.Demote),
    ):
        people = [to_phone(j) for j in jids]
        if not people:
            continue
        if me is not None and me in people and action in ("add", "remove"):
            add("joined" if action == "add" else "left")
            people = [p for p in people if p != me]
            if not people:
                continue
        add("participants", action=action, participants=people)
    changes: dict[str, str | bool | None] = {}
    if event.HasField("Name"):
        changes["subject"] = event.Name.Name
    if event.HasField("Topic"):
        changes["description"] = None if event.Topic.TopicDeleted else event.Topic.Topic or None
    if event.HasField("Announce"):
        changes["announce"] = event.Announce.IsAnnounce
    if event.HasField("Locked"):
        changes["locked"] = event.Locked.isLocked
    if changes:
        add("updated", changes=changes)
    return out

"""The neonize engine's group operations and group events (issue 17).

Calls run in worker threads (``_call_go``), mapped by :mod:`session_proc.neonize.groups` (imported
only once neonize is loaded). whatsmeow's refusals become the API's codes: 403/401 NOT_ADMIN, a
group that is not there (or not ours) GROUP_NOT_FOUND, a bad or revoked invite INVITE_INVALID.

Group events (``JoinedGroup``, ``GroupInfoEvent``) are handed to the supervisor on whatsmeow's
thread and the callback returns (so whatsmeow acknowledges the notification) only after they were
committed, as for messages. The joined-group list is cached (``get_joined_groups`` is slow on big
accounts) and dropped on every group event and every change made here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from session_proc.engine import EngineContext, EngineError
from transport import wire

if TYPE_CHECKING:
    from neonize.proto.Neonize_pb2 import JID

log = logging.getLogger("session_proc.neonize")

INVITE_PREFIX = "https://chat.whatsapp.com/"
EXIT_UNACKNOWLEDGED = 75  # as for a message that could not be committed: WhatsApp delivers it again


def refusal(error: str, *, invite: bool = False) -> EngineError:
    """An EngineError with the API's code for whatsmeow's error text (its ErrInviteLinkInvalid/Revoked,
    ErrGroupInviteLinkUnauthorized, ErrGroupNotFound, ErrNotInGroup, and IQ errors "...status 403: forbidden")."""
    text = error.lower()
    if invite and any(s in text for s in ("invite link", "revoked", "not valid", "406", "410", "not-acceptable")):
        return EngineError("INVITE_INVALID", f"WhatsApp refused the invite: {error}")
    if any(s in text for s in ("403", "401", "forbidden", "not-authorized", "not authorized", "permission")):
        return EngineError("NOT_ADMIN", f"WhatsApp refused: {error}")
    if any(s in text for s in ("404", "not found", "item-not-found", "not participating")):
        return EngineError("GROUP_NOT_FOUND", f"WhatsApp knows no such group for this account: {error}")
    return EngineError("GROUP_FAILED", error)


class NeonizeGroups:
    """Mixed into NeonizeEngine: what it provides is declared here for the type checker."""

    ctx: EngineContext
    _client: Any
    _loop: asyncio.AbstractEventLoop | None
    _me: str | None
    deliver_wait: float
    _call_go: Callable[..., Any]
    _groups_cache: list[wire.GroupSummary] | None = None
    _participant_change: Any = None  # neonize.utils.enum.ParticipantChange, once needed

    # -- helpers ----------------------------------------------------------------------------
    def _jid(self, value: str) -> JID:
        from session_proc.neonize.incoming import parse_jid

        try:
            return parse_jid(value)
        except ValueError as exc:
            raise EngineError("INVALID_RECIPIENT", str(exc)) from None

    def _to_phone(self, jid: JID) -> str:
        """A LID as the phone-number JID whatsmeow knows for it, else the JID as it is."""
        from session_proc.neonize.incoming import jid_str

        if jid.Server == "lid" and self._client is not None:
            try:
                found = self._client.get_pn_from_lid(jid)
                if found.User:
                    return jid_str(found)
            except Exception as exc:  # whatsmeow has no mapping: the LID is shown as it is
                log.debug("no phone number for a LID: %s", exc)
        return jid_str(jid)

    async def _go(self, fn: Callable[..., Any], *args: Any, invite: bool = False) -> Any:
        if self._client is None:
            raise EngineError("NOT_CONNECTED", "the engine has not started")
        try:
            return await self._call_go(fn, *args)
        except EngineError:
            raise
        except Exception as exc:
            raise refusal(str(exc) or type(exc).__name__, invite=invite) from None

    # -- Engine's group operations -------------------------------------------------------------
    async def group_create(self, request: wire.GroupCreate) -> wire.GroupCreateReply:
        """Create a group; each asked participant's result comes from the answer's Error codes."""
        from session_proc.neonize import groups

        people = [self._jid(p) for p in request.participants]
        info = await self._go(self._client.create_group, request.subject, people)
        self._groups_cache = None
        return wire.GroupCreateReply(
            group=groups.group_info(info, self._to_phone),
            results=groups.participant_results(request.participants, info.Participants, self._to_phone),
        )

    async def group_list(self) -> wire.GroupListReply:
        """The joined groups, from the cache while no group event or change came since."""
        from session_proc.neonize import groups

        if self._groups_cache is None:
            joined = await self._go(self._client.get_joined_groups)
            self._groups_cache = [groups.summary(g, self._me, self._to_phone) for g in joined]
        return wire.GroupListReply(groups=list(self._groups_cache))

    async def group_info(self, jid: str) -> wire.GroupInfo:
        """One group, asked of WhatsApp."""
        from session_proc.neonize import groups

        return groups.group_info(await self._go(self._client.get_group_info, self._jid(jid)), self._to_phone)

    async def group_update(self, request: wire.GroupUpdate) -> None:
        """Each setting given, one call each, in a fixed order; the first refusal stops the rest."""
        jid = self._jid(request.jid)
        client = self._client
        self._groups_cache = None
        if request.subject is not None:
            await self._go(client.set_group_name, jid, request.subject)
        if request.description is not None:
            # whatsmeow fills the previous and new topic ids itself; "" removes the description.
            await self._go(client.set_group_topic, jid, "", "", request.description)
        if request.announce is not None:
            await self._go(client.set_group_announce, jid, request.announce)
        if request.locked is not None:
            await self._go(client.set_group_locked, jid, request.locked)

    async def group_picture(self, jid: str, jpeg: bytes) -> None:
        """Set the group's picture from JPEG bytes (never a path: neonize would fetch URLs)."""
        await self._go(self._client.set_group_photo, self._jid(jid), jpeg)

    async def group_participants(self, request: wire.GroupParticipants) -> wire.ParticipantResults:
        """whatsmeow answers success even when some failed: each participant's Error is its result."""
        from session_proc.neonize import groups

        if self._participant_change is None:
            from neonize.utils.enum import ParticipantChange

            self._participant_change = ParticipantChange
        people = [self._jid(p) for p in request.participants]
        change = self._participant_change(request.action)
        returned = await self._go(self._client.update_group_participants, self._jid(request.jid), people, change)
        self._groups_cache = None
        return wire.ParticipantResults(
            results=groups.participant_results(request.participants, returned, self._to_phone)
        )

    async def group_invite(self, jid: str, *, revoke: bool) -> str:
        """The code of the group's invite link (a new one when ``revoke``)."""
        link = await self._go(self._client.get_group_invite_link, self._jid(jid), revoke)
        return str(link).removeprefix(INVITE_PREFIX)

    async def group_invite_info(self, code: str) -> wire.GroupInfo:
        """The group behind a code, without joining."""
        from session_proc.neonize import groups

        info = await self._go(self._client.get_group_info_from_link, code, invite=True)
        return groups.group_info(info, self._to_phone)

    async def group_join(self, code: str) -> wire.GroupInfo:
        """Join by code, then read the group."""
        jid = await self._go(self._client.join_group_with_link, code, invite=True)
        self._groups_cache = None
        from session_proc.neonize import groups

        return groups.group_info(await self._go(self._client.get_group_info, jid), self._to_phone)

    async def group_leave(self, jid: str) -> None:
        """Leave the group."""
        await self._go(self._client.leave_group, self._jid(jid))
        self._groups_cache = None

    # -- group events (whatsmeow's thread) --------------------------------------------------------
    def _cb_joined_group(self, _client: Any, event: Any) -> None:
        from session_proc.neonize import groups

        self._commit_group_events(lambda: [groups.joined_event(event, now=time.time(), to_phone=self._to_phone)])

    def _cb_group_info(self, _client: Any, event: Any) -> None:
        from session_proc.neonize import groups

        self._commit_group_events(
            lambda: groups.info_events(event, me=self._me, now=time.time(), to_phone=self._to_phone)
        )

    def _hand_over(self, item_id: str, commit: Callable[[], Coroutine[Any, Any, None]], deadline: float) -> bool:
        raise NotImplementedError  # the engine's: commit on the loop, retrying until the deadline

    def _commit_group_events(self, mapping: Callable[[], list[wire.GroupEvent]]) -> None:
        """Commit the events before whatsmeow acknowledges the notification (retrying like a message);
        exit unacknowledged if the supervisor cannot take one within ``deliver_wait`` (WhatsApp then
        delivers it again)."""
        self._groups_cache = None
        try:
            events = mapping()
        except Exception:
            log.exception("a group event could not be read")
            return
        for event in events:
            deadline = time.monotonic() + self.deliver_wait
            if not self._hand_over(event.id, functools.partial(self.ctx.sink.on_group_event, event), deadline):
                log.error("group event %s not committed: exiting unacknowledged, WhatsApp delivers it again", event.id)
                logging.shutdown()
                os._exit(EXIT_UNACKNOWLEDGED)

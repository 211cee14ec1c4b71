"""Where the outbox gets each paced message's slot: the sessions' ledgers and the facts
the pure policy (``supervisor.messaging.pacing``) decides from.

A slot is taken when a message is accepted, before it is stored, with no await between
the decision and the ledger update: concurrent sends of one session get distinct slots.
A restarted worker rebuilds the ledgers from the waiting messages (their slots are in
the outbox table) and the day's sent messages, so the pace holds across restarts.

Slots are decided when messages are accepted; whether one may really leave is checked
again when its time comes, against when the session's last messages really went out
(:meth:`Pacer.sent`): after a restart or a reconnect, or behind a send slower than its
gap, the messages whose slots passed are re-spaced from then (:meth:`Pacer.respace`,
stored by the outbox) instead of leaving back to back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from supervisor.database.store import OutboxRow, Store
from supervisor.messaging.pacing import (
    DAY,
    Chat,
    Lane,
    Ledger,
    PacingPolicy,
    Queued,
    Slot,
    keeps_pace,
    respace,
    schedule,
    take,
    typing_seconds,
)

# Message types that are not new messages to a chat (they change one already there): never paced.
UNPACED_TYPES = frozenset({"reaction", "edit", "revoke"})

# Given a session id: its pacing policy now (its own settings, else the worker's defaults).
PolicyLookup = Callable[[str], PacingPolicy]
# Given a session id: when its number was linked (warm-up), or None.
LinkedLookup = Callable[[str], float | None]


class Pacer:
    """The pace of every session's sends."""

    def __init__(self, store: Store, policy: PolicyLookup, linked_at: LinkedLookup) -> None:
        self.store = store
        self.policy = policy
        self.linked_at = linked_at
        self._ledgers: dict[str, Ledger] = {}
        # When each session's paced messages last really went out (each lane's, the last cold chat's).
        self._sent: dict[str, Ledger] = {}
        self._random = random.SystemRandom()

    async def restore(self, rows: Iterable[OutboxRow]) -> None:
        """Rebuild the ledgers from the waiting messages and the day's sent ones (at start)."""
        now = time.time()
        today = now - now % DAY
        for session_id, count in (await self.store.sent_since(today)).items():
            # Sent today: their lanes are not known any more, so they count against the cap, and the
            # next cold chat waits a gap after now (the safe side).
            self._ledgers[session_id] = Ledger(
                last_cold=now, per_day={int(today // DAY): count}, linked_at=self.linked_at(session_id)
            )
        for row in rows:
            if row.scheduled_at is not None and row.lane is not None:
                self._take(row.session_id, Slot(row.scheduled_at, Lane(row.lane), row.cold, None))
        # What went out last before the restart (the message in flight at a crash included) is not known:
        # as if just now, so the first paced message after the restart waits a gap too.
        for session_id in self._ledgers:
            self._sent[session_id] = Ledger(last={Lane.REPLY: now, Lane.OUTREACH: now}, last_cold=now)

    async def place(self, session_id: str, chat: str, message_type: str, waiting: Iterable[OutboxRow]) -> Slot | None:
        """The slot of a message to ``chat`` accepted now, taken from the session's ledger; None: not paced.

        ``waiting``: the session's messages still waiting (a chat's messages keep their order).
        """
        policy = self.policy(session_id)
        if message_type in UNPACED_TYPES or not policy.enabled:
            return None
        seen, last_inbound = await self.store.chat_seen(session_id, chat)
        # Decided and taken with no await in between: a concurrent send sees this slot taken.
        slots = [r.scheduled_at for r in waiting if r.payload.get("to") == chat and r.scheduled_at is not None]
        facts = Chat(cold=not seen and not slots, last_inbound=last_inbound, waiting_until=max(slots, default=None))
        ledger = self._ledger(session_id)
        slot = schedule(policy, ledger, facts, time.time(), self._random.random())
        self._take(session_id, slot)
        return slot

    def typing(self, session_id: str, message_type: str, text: str | None) -> float:
        """Seconds of "typing" to show before a message goes (texts only; 0 unless the session types)."""
        return typing_seconds(self.policy(session_id), text) if message_type == "text" else 0.0

    def forget(self, session_id: str) -> None:
        """A deleted session's ledger."""
        self._ledgers.pop(session_id, None)
        self._sent.pop(session_id, None)

    def sent(self, row: OutboxRow, at: float) -> None:
        """A paced message went out (or may have: an attempt without an answer) at ``at``."""
        if row.lane is None:
            return
        lane = Lane(row.lane)
        sent = self._sent.get(row.session_id, Ledger())
        last = {**sent.last, lane: max(at, sent.last.get(lane, at))}
        last_cold = max(at, sent.last_cold or at) if row.cold else sent.last_cold
        self._sent[row.session_id] = Ledger(last=last, last_cold=last_cold)

    def keeps_pace(self, row: OutboxRow, now: float) -> bool:
        """Whether a paced message due now may go: far enough after the session's last real sends."""
        if row.lane is None:
            return True
        policy = self.policy(row.session_id)
        if not policy.enabled:
            return True
        slot = Slot(now, Lane(row.lane), row.cold, None)
        return keeps_pace(policy, self._real(row.session_id), slot, now)

    def respace(self, session_id: str, rows: Sequence[OutboxRow], now: float) -> list[tuple[OutboxRow, Slot]]:
        """New slots for the session's waiting paced ``rows`` once some went overdue, taken from its ledger
        (no await: a message accepted meanwhile is placed after them); returns the rows that move."""
        paced = sorted(
            (r for r in rows if r.lane is not None and r.scheduled_at is not None),
            key=lambda r: (_at(r), r.created_at),
        )
        if not paced:
            return []
        ledger = self._ledger(session_id)
        per_day = dict(ledger.per_day)
        for row in paced:  # counted again at their new slots
            if row.lane == Lane.OUTREACH and row.scheduled_at is not None:
                day = int(row.scheduled_at // DAY)
                if per_day.get(day, 0) > 0:
                    per_day[day] -= 1
        base = replace(self._real(session_id), per_day=per_day)
        queue = [
            Queued(Slot(_at(r), Lane(r.lane), r.cold, None), str(r.payload.get("to", ""))) for r in paced if r.lane
        ]
        slots, taken = respace(self.policy(session_id), base, queue, now, iter(self._random.random, None))
        last = dict(ledger.last)
        for lane, at in taken.last.items():
            last[lane] = max(at, last.get(lane, at))
        last_cold = max(filter(None, (ledger.last_cold, taken.last_cold)), default=None)
        self._ledgers[session_id] = replace(ledger, last=last, last_cold=last_cold, per_day=taken.per_day)
        # An overdue message the pace lets go now stays as it is (due).
        return [(row, slot) for row, slot in zip(paced, slots, strict=True) if slot.at > max(_at(row), now)]

    def _real(self, session_id: str) -> Ledger:
        """The ledger of what really went out (with the warm-up of the number)."""
        return replace(self._sent.get(session_id, Ledger()), linked_at=self._ledger(session_id).linked_at)

    def _ledger(self, session_id: str) -> Ledger:
        ledger = self._ledgers.get(session_id)
        if ledger is None:
            ledger = self._ledgers[session_id] = Ledger(linked_at=self.linked_at(session_id))
        return ledger

    def _take(self, session_id: str, slot: Slot) -> None:
        ledger = self._ledger(session_id)
        self._ledgers[session_id] = take(ledger, slot)

    def linked(self, session_id: str, at: float) -> None:
        """The session's number was (re)linked at ``at``: its warm-up counts from then."""
        self._ledgers[session_id] = replace(self._ledger(session_id), linked_at=at)


def _at(row: OutboxRow) -> float:
    """When a paced message is to go: its slot, or later (a retry's time, an edit after its message)."""
    return max(row.next_attempt_at, row.scheduled_at or row.next_attempt_at)

"""Where the outbox gets each paced message's slot: the sessions' ledgers and the facts
the pure policy (``supervisor.messaging.pacing``) decides from.

A slot is taken when a message is accepted, before it is stored, with no await between
the decision and the ledger update: concurrent sends of one session get distinct slots.
A restarted worker rebuilds the ledgers from the waiting messages (their slots are in
the outbox table) and the day's sent messages, so the pace holds across restarts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from supervisor.database.store import OutboxRow, Store
from supervisor.messaging.pacing import DAY, Chat, Lane, Ledger, PacingPolicy, Slot, schedule, take, typing_seconds

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

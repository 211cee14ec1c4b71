"""Ban-safe pacing of one session's sends, as a pure function (like the restart policy).

WhatsApp restricts numbers that send in bursts, to many new chats, at machine-regular
intervals. Instead of refusing a send beyond the pace, the outbox accepts it and
gives it a *slot*: the time it may go out. :func:`schedule` decides the slot from
the session's policy, its :class:`Ledger` (the slots taken so far, sent or waiting),
what is known of the chat, the clock and one random draw; it does no I/O and reads
no clock or random source. :func:`take` is the ledger once the slot is taken.

Two lanes keep conversations fast while outreach is paced:

- *replies* (the chat wrote to us within ``reply_window``) are spaced by ``gap`` only,
  so they overtake outreach waiting for its slots and are never held by the daily cap;
- *outreach* (everything else) is spaced by ``gap``; a first message to a *cold* chat
  (nothing ever sent or received there) also waits ``cold_gap`` after the previous
  cold one, and outreach beyond the daily cap waits for the next UTC day.

``gap`` spaces the sends of a lane, not of the session: a reply may leave right after
an outreach message. Each gap is stretched by a random fraction (up to ``jitter``) of
itself, so no two are equal. During the first ``warmup_days`` after the session's
number was linked, gaps are ``warmup_factor`` times longer and the cap that many times
smaller. A chat's messages keep their order.

Slots passed by (a restart, a reconnect, a slow send) do not release a burst: when a
message is due, :func:`keeps_pace` checks it against the session's last *real* sends,
and :func:`respace` gives the overdue messages new slots from then, paced and jittered
like a burst accepted at that moment.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

DAY = 86400.0


class Lane(StrEnum):
    """Which timeline a send is paced on."""

    REPLY = "reply"
    OUTREACH = "outreach"


class Wait(StrEnum):
    """Why a send waits for its slot (shown in ``GET /session/{id}/outbox``)."""

    GAP = "gap"  # the minimum gap after the session's previous send
    COLD_CHAT = "cold_chat"  # the slower pace of first messages to new chats
    DAILY_CAP = "daily_cap"  # the day's sends are used up
    CHAT_ORDER = "chat_order"  # an earlier message to the same chat waits


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    """One session's pace; zeros turn a rule off."""

    gap: float = 0.0  # seconds between two sends of a lane (replies and outreach each have their own)
    cold_gap: float = 3.0  # seconds between first messages to cold chats
    jitter: float = 0.5  # each gap is stretched by a random fraction of itself, up to this
    daily_cap: int = 0  # outreach sends per UTC day
    warmup_days: float = 0.0  # after linking: gaps x warmup_factor, cap / warmup_factor
    warmup_factor: float = 3.0
    typing: bool = False  # show "typing" before a text, for as long as a person would type it
    typing_cps: float = 15.0  # characters a second of that person
    typing_max: float = 8.0  # seconds, at most
    reply_window: float = DAY  # a chat that wrote within this long gets replies at once

    @property
    def enabled(self) -> bool:
        """Whether any rule can delay a send."""
        return self.gap > 0 or self.cold_gap > 0 or self.daily_cap > 0


# Pacing off: what the bench runs with.
OFF = PacingPolicy(cold_gap=0.0)

# A session's own pacing settings (PUT /session/{id}/settings {pacing: {...}}): API name -> policy field.
SETTINGS = {
    "gap": "gap",
    "coldGap": "cold_gap",
    "jitter": "jitter",
    "dailyCap": "daily_cap",
    "warmupDays": "warmup_days",
    "typing": "typing",
}


def overridden(policy: PacingPolicy, overrides: dict[str, Any]) -> PacingPolicy:
    """``policy`` (the worker's defaults) with a session's own settings (API names) in force."""
    return replace(policy, **{SETTINGS[name]: value for name, value in overrides.items() if name in SETTINGS})


def settings_view(policy: PacingPolicy) -> dict[str, Any]:
    """The policy as the settings API names it."""
    return {name: getattr(policy, attr) for name, attr in SETTINGS.items()}


@dataclass(frozen=True, slots=True)
class Chat:
    """What the session knows of the chat a message goes to."""

    cold: bool  # nothing ever sent or received there, and nothing waiting for it
    last_inbound: float | None = None  # when the chat last wrote to us
    waiting_until: float | None = None  # the latest slot of a message to this chat still waiting


@dataclass(frozen=True, slots=True)
class Ledger:
    """The slots a session has taken (sent or waiting), as far as pacing needs them."""

    last: dict[Lane, float] = field(default_factory=dict)  # the latest slot of each lane
    last_cold: float | None = None  # the latest slot of a first message to a cold chat
    per_day: dict[int, int] = field(default_factory=dict)  # outreach slots per UTC day number
    linked_at: float | None = None  # when the number was linked (warm-up)


@dataclass(frozen=True, slots=True)
class Slot:
    """When a message may go out, on which lane, and why it waits (None: it goes now)."""

    at: float
    lane: Lane
    cold: bool
    reason: Wait | None


def schedule(policy: PacingPolicy, ledger: Ledger, chat: Chat, now: float, draw: float) -> Slot:
    """The slot of a message to ``chat`` accepted at ``now``; ``draw`` is a random sample in [0, 1)."""
    lane = (
        Lane.REPLY
        if chat.last_inbound is not None and now - chat.last_inbound <= policy.reply_window
        else Lane.OUTREACH
    )
    return _slot(policy, ledger, lane, chat.cold, chat.waiting_until, now, draw)


def _slot(
    policy: PacingPolicy, ledger: Ledger, lane: Lane, cold: bool, waiting_until: float | None, now: float, draw: float
) -> Slot:
    factor = policy.warmup_factor if _warming_up(policy, ledger, now) else 1.0
    stretch = factor * (1.0 + policy.jitter * draw)
    at, reason = now, None

    def later(candidate: float, why: Wait) -> None:
        nonlocal at, reason
        if candidate > at:
            at, reason = candidate, why

    previous = ledger.last.get(lane)
    if previous is not None and policy.gap > 0:
        later(previous + policy.gap * stretch, Wait.GAP)
    if cold and ledger.last_cold is not None and policy.cold_gap > 0:
        later(ledger.last_cold + policy.cold_gap * stretch, Wait.COLD_CHAT)
    if waiting_until is not None:
        later(waiting_until, Wait.CHAT_ORDER)
    cap = _cap(policy, factor)
    if lane == Lane.OUTREACH and cap:
        day = _day(at)
        while ledger.per_day.get(day, 0) >= cap:
            day += 1
            # Not all at midnight either: spread over the first gap of the day.
            later(day * DAY + max(policy.gap, policy.cold_gap, 1.0) * policy.jitter * draw, Wait.DAILY_CAP)
    return Slot(at=at, lane=lane, cold=cold, reason=reason)


def keeps_pace(policy: PacingPolicy, sent: Ledger, slot: Slot, now: float) -> bool:
    """Whether a message of ``slot`` may leave at ``now``: at least the gaps (unstretched) after the
    session's last real sends (``sent``: when each lane's, and the last cold chat's, went out)."""
    return _slot(policy, sent, slot.lane, slot.cold, None, now, 0.0).at <= now


@dataclass(frozen=True, slots=True)
class Queued:
    """A paced message waiting in the outbox, as re-spacing needs it."""

    slot: Slot  # its slot now (``at`` may have passed)
    chat: str


def respace(
    policy: PacingPolicy, sent: Ledger, queue: Sequence[Queued], now: float, draws: Iterator[float]
) -> tuple[list[Slot], Ledger]:
    """The slots of a session's waiting paced messages once some went overdue (a worker restart, a
    reconnect, a send slower than its gap), and the ledger once they are taken.

    ``queue``: every waiting paced message, in the order of its slots; ``sent``: the ledger of what
    really went out (each lane's and the last cold chat's last send), with the day counts of the slots
    not in ``queue``. An overdue message would leave at ``now``: it keeps that time if the pace allows
    it, else it moves to the first jittered slot that does (one ``draws`` sample each); a message whose
    slot has not come keeps it if the pace allows. So overdue messages leave one by one, spaced like a
    burst accepted now, in their order (a chat's messages too), and what comes after them moves back
    only as far as needed. Outreach beyond a day's cap still moves to the next day.
    """
    ledger = sent
    slots = []
    last_of_chat: dict[str, float] = {}
    for item in queue:
        at = max(item.slot.at, now)
        waiting_until = last_of_chat.get(item.chat)
        earliest = _slot(policy, ledger, item.slot.lane, item.slot.cold, waiting_until, at, 0.0)
        if earliest.at <= at:
            slot = replace(item.slot, at=at)
        else:
            slot = _slot(policy, ledger, item.slot.lane, item.slot.cold, waiting_until, at, next(draws))
        ledger = take(ledger, slot)
        last_of_chat[item.chat] = slot.at
        slots.append(slot)
    return slots, ledger


def take(ledger: Ledger, slot: Slot) -> Ledger:
    """The ledger once ``slot`` is taken."""
    last = {**ledger.last, slot.lane: max(slot.at, ledger.last.get(slot.lane, slot.at))}
    last_cold = max(slot.at, ledger.last_cold or slot.at) if slot.cold else ledger.last_cold
    per_day = ledger.per_day
    if slot.lane == Lane.OUTREACH:
        day = _day(slot.at)
        # Days before yesterday can no longer hold a slot: forget them.
        per_day = {d: n for d, n in per_day.items() if d >= day - 1}
        per_day[day] = per_day.get(day, 0) + 1
    return replace(ledger, last=last, last_cold=last_cold, per_day=per_day)


def typing_seconds(policy: PacingPolicy, text: str | None) -> float:
    """How long "typing" shows before a text goes out (0: not at all)."""
    if not policy.typing or not text:
        return 0.0
    return min(policy.typing_max, len(text) / policy.typing_cps)


def _warming_up(policy: PacingPolicy, ledger: Ledger, now: float) -> bool:
    return policy.warmup_days > 0 and ledger.linked_at is not None and now - ledger.linked_at < policy.warmup_days * DAY


def _cap(policy: PacingPolicy, factor: float) -> int:
    if policy.daily_cap <= 0:
        return 0
    return max(1, math.floor(policy.daily_cap / factor))


def _day(at: float) -> int:
    return math.floor(at / DAY)

"""The pacing policy driven by a fake clock and fixed random draws: slots and their reasons."""

from __future__ import annotations

import itertools
import random

from supervisor.messaging.pacing import (
    DAY,
    OFF,
    Chat,
    Lane,
    Ledger,
    PacingPolicy,
    Queued,
    Slot,
    Wait,
    keeps_pace,
    respace,
    schedule,
    take,
    typing_seconds,
)

T0 = 1_800_000_000.0  # a Friday, 08:00 UTC
COLD = Chat(cold=True)
WARM = Chat(cold=False)


def burst(
    policy: PacingPolicy, chats: list[Chat], now: float = T0, ledger: Ledger | None = None, seed: int = 7
) -> tuple[list[Slot], Ledger]:
    """Slots for messages accepted at the same moment, in order."""
    rng = random.Random(seed)
    ledger = ledger or Ledger()
    slots = []
    for chat in chats:
        slot = schedule(policy, ledger, chat, now, rng.random())
        ledger = take(ledger, slot)
        slots.append(slot)
    return slots, ledger


def test_pacing_off_sends_everything_now() -> None:
    slots, _ = burst(OFF, [COLD] * 20)
    assert all(s.at == T0 and s.reason is None for s in slots)
    assert not OFF.enabled


def test_default_paces_cold_chats_only() -> None:
    policy = PacingPolicy()
    slots, _ = burst(policy, [COLD] * 5 + [WARM] * 3)
    cold, warm = slots[:5], slots[5:]
    assert cold[0].at == T0 and cold[0].reason is None  # the first cold message waits for nobody
    assert all(s.reason == Wait.COLD_CHAT for s in cold[1:])
    assert all(s.at == T0 and s.reason is None for s in warm)  # conversations keep today's latency


def test_cold_gaps_are_at_least_the_gap_and_never_machine_regular() -> None:
    policy = PacingPolicy(cold_gap=2.0, jitter=0.5)
    slots, _ = burst(policy, [COLD] * 20)
    gaps = [b.at - a.at for a, b in itertools.pairwise(slots)]
    assert all(2.0 <= g <= 3.0 for g in gaps)
    assert len({round(g, 9) for g in gaps}) == len(gaps)  # no two equal
    assert [s.at for s in slots] == sorted(s.at for s in slots)  # in order


def test_a_reply_overtakes_queued_outreach() -> None:
    policy = PacingPolicy(cold_gap=5.0)
    slots, ledger = burst(policy, [COLD] * 10)
    reply = schedule(policy, ledger, Chat(cold=False, last_inbound=T0 - 3600), T0 + 1, 0.3)
    assert reply.lane == Lane.REPLY and reply.at == T0 + 1 and reply.reason is None
    assert reply.at < slots[-1].at
    # A chat that wrote more than the reply window ago is outreach again (but not cold).
    stale = schedule(policy, ledger, Chat(cold=False, last_inbound=T0 - 2 * DAY), T0 + 1, 0.3)
    assert stale.lane == Lane.OUTREACH and stale.reason is None


def test_the_gap_spaces_every_send_of_a_lane() -> None:
    policy = PacingPolicy(gap=1.0, cold_gap=0.0, jitter=0.2)
    slots, _ = burst(policy, [WARM] * 4)
    gaps = [b.at - a.at for a, b in itertools.pairwise(slots)]
    assert all(1.0 <= g <= 1.2 for g in gaps)
    assert all(s.reason == Wait.GAP for s in slots[1:])


def test_a_chats_messages_keep_their_order() -> None:
    policy = PacingPolicy(cold_gap=10.0)
    slots, ledger = burst(policy, [COLD, COLD])
    # A second message to the second chat, which waits for its first one's slot.
    follow = schedule(policy, ledger, Chat(cold=False, waiting_until=slots[1].at), T0 + 0.5, 0.0)
    assert follow.at == slots[1].at and follow.reason == Wait.CHAT_ORDER


def test_the_daily_cap_moves_outreach_to_the_next_day_and_not_replies() -> None:
    policy = PacingPolicy(cold_gap=0.0, daily_cap=3, jitter=0.5)
    slots, ledger = burst(policy, [WARM] * 5)
    assert [s.reason for s in slots] == [None, None, None, Wait.DAILY_CAP, Wait.DAILY_CAP]
    tomorrow = (T0 // DAY + 1) * DAY
    assert all(tomorrow <= s.at < tomorrow + 1.0 for s in slots[3:])
    reply = schedule(policy, ledger, Chat(cold=False, last_inbound=T0 - 60), T0, 0.5)
    assert reply.at == T0  # a conversation is never held back by the cap
    # The next day, the day's own cap counts again: two taken by the carried-over sends, one left.
    more, _ = burst(policy, [WARM] * 2, now=tomorrow + 3600, ledger=ledger)
    assert more[0].at == tomorrow + 3600 and more[1].reason == Wait.DAILY_CAP


def test_warm_up_slows_a_newly_linked_number() -> None:
    policy = PacingPolicy(cold_gap=2.0, jitter=0.0, daily_cap=9, warmup_days=3, warmup_factor=3.0)
    fresh = Ledger(linked_at=T0 - DAY)
    slots, _ = burst(policy, [COLD] * 4, ledger=fresh)
    assert [s.at - T0 for s in slots[:3]] == [0.0, 6.0, 12.0]  # 3x the gap
    assert slots[3].reason == Wait.DAILY_CAP  # a third of the cap
    settled = Ledger(linked_at=T0 - 4 * DAY)
    later, _ = burst(policy, [COLD] * 2, ledger=settled)
    assert later[1].at - later[0].at == 2.0


def test_typing_time_grows_with_the_text_up_to_a_bound() -> None:
    assert typing_seconds(PacingPolicy(), "hello") == 0.0  # off by default
    on = PacingPolicy(typing=True, typing_cps=10.0, typing_max=5.0)
    assert typing_seconds(on, "x" * 20) == 2.0
    assert typing_seconds(on, "x" * 500) == 5.0
    assert typing_seconds(on, None) == 0.0


def overdue_burst(policy: PacingPolicy, count: int) -> list[Queued]:
    """A burst of first messages to ``count`` new chats accepted at T0, waiting in the outbox."""
    slots, _ = burst(policy, [COLD] * count)
    return [Queued(slot, f"chat{n}") for n, slot in enumerate(slots)]


def test_overdue_messages_are_respaced_from_now_with_jitter_in_order() -> None:
    policy = PacingPolicy(cold_gap=2.0, jitter=0.5)
    queue = overdue_burst(policy, 6)
    now = T0 + 600  # the worker was down for ten minutes: every slot has passed
    draws = iter(random.Random(3).random, None)
    slots, ledger = respace(policy, Ledger(), queue, now, draws)
    assert slots[0].at == now  # nothing went out lately: the first leaves at once
    gaps = [b.at - a.at for a, b in itertools.pairwise(slots)]
    assert all(2.0 <= g <= 3.0 for g in gaps), gaps  # the pace, not a burst
    assert len({round(g, 9) for g in gaps}) == len(gaps)  # jittered again
    assert [s.reason for s in slots[1:]] == [Wait.COLD_CHAT] * 5
    assert ledger.last_cold == slots[-1].at and ledger.per_day == {int(now // DAY): 6}
    # Something went out just now (the message in flight at a crash, a first one after a reconnect).
    after_send, _ = respace(policy, Ledger(last={Lane.OUTREACH: now}, last_cold=now), queue, now, draws)
    assert after_send[0].at >= now + 2.0


def test_respacing_keeps_a_slot_that_keeps_the_pace_and_moves_only_what_it_must() -> None:
    policy = PacingPolicy(cold_gap=2.0, jitter=0.0)
    queue = overdue_burst(policy, 3)
    later = Queued(Slot(T0 + 100, Lane.OUTREACH, True, Wait.COLD_CHAT), "later")
    close = Queued(Slot(T0 + 101, Lane.OUTREACH, True, Wait.COLD_CHAT), "close")
    slots, _ = respace(policy, Ledger(), [*queue, later, close], T0 + 10, iter(lambda: 0.0, None))
    assert [s.at - T0 for s in slots] == [10.0, 12.0, 14.0, 100.0, 102.0]
    # Not overdue and paced already: the same slots.
    again, _ = respace(policy, Ledger(), queue, T0 - 1, iter(lambda: 0.0, None))
    assert [s.at for s in again] == [q.slot.at for q in queue]


def test_respacing_keeps_a_chats_order_across_lanes_and_the_daily_cap() -> None:
    policy = PacingPolicy(gap=1.0, cold_gap=0.0, jitter=0.0, daily_cap=3)
    first = Queued(Slot(T0, Lane.OUTREACH, False, None), "x")
    second = Queued(Slot(T0 + 1, Lane.OUTREACH, False, Wait.GAP), "y")
    reply = Queued(Slot(T0 + 0.5, Lane.REPLY, False, None), "y")  # the chat wrote meanwhile
    slots, _ = respace(policy, Ledger(), [first, reply, second], T0 + 60, iter(lambda: 0.0, None))
    assert [s.at - T0 for s in slots] == [60.0, 60.0, 61.0]
    # Two outreach sends already went out today: one left under the cap, the other moves to tomorrow.
    capped, _ = respace(policy, Ledger(per_day={int(T0 // DAY): 2}), [first, second], T0 + 60, iter(lambda: 0.5, None))
    assert capped[0].at == T0 + 60 and capped[1].reason == Wait.DAILY_CAP
    assert capped[1].at >= (T0 // DAY + 1) * DAY


def test_a_send_keeps_the_pace_of_the_last_real_sends() -> None:
    policy = PacingPolicy(gap=1.0, cold_gap=3.0, jitter=0.5)
    sent = Ledger(last={Lane.OUTREACH: T0}, last_cold=T0)
    assert not keeps_pace(policy, sent, Slot(T0 + 2, Lane.OUTREACH, True, None), T0 + 2)  # the cold gap
    assert keeps_pace(policy, sent, Slot(T0 + 2, Lane.OUTREACH, False, None), T0 + 2)  # a warm chat: the gap
    assert keeps_pace(policy, sent, Slot(T0 + 0.1, Lane.REPLY, False, None), T0 + 0.1)  # its own lane
    assert keeps_pace(policy, sent, Slot(T0 + 3, Lane.OUTREACH, True, None), T0 + 3)  # unstretched

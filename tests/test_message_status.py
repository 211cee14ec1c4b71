"""Message statuses: the forward-only rule receipts follow."""

from __future__ import annotations

import pytest

from supervisor.messaging.status import MessageStatus, moves_forward

S = MessageStatus


@pytest.mark.parametrize(
    ("current", "new", "forward"),
    [
        (S.PENDING, S.SENT, True),
        (S.SENT, S.DELIVERED, True),
        (S.SENT, S.READ, True),
        (S.DELIVERED, S.READ, True),
        (S.READ, S.DELIVERED, False),  # a late delivery receipt never overwrites read
        (S.DELIVERED, S.DELIVERED, False),
        (S.FAILED, S.DELIVERED, False),  # outside the ordering: never moved
        (S.UNKNOWN, S.READ, False),
        (S.SENT, "played", False),  # a receipt we do not know
        ("sent", "read", True),  # as stored: plain text
    ],
)
def test_receipts_only_move_a_message_forward(current: str, new: str, forward: bool) -> None:
    assert moves_forward(current, new) is forward

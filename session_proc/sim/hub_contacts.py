"""What the simulated network answers a linked account about other people, and the rules it keeps:
contact lookups (from the phone registry), each account's blocklist, each chat's disappearing timer.

Rules, as WhatsApp applies them:

- A blocked number's messages never reach the account that blocked it: the server drops them (the
  sender sees one tick, never learns why), so nothing arrives later either, unblocked or not. Messages
  sent after an unblock arrive as usual.
- The account cannot send to a number it blocked: WhatsApp's app asks to unblock first, so the
  hub refuses the send with ``RECIPIENT_BLOCKED`` (a definite failure, never retried).
- A disappearing timer belongs to the chat of two numbers, whoever set it; messages sent in that chat
  while it is on carry it (``disappearing`` seconds in the recipient's inbox).

Kept in the hub's SQLite database (tables ``blocks`` and ``disappearing``); numbers are digits.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from session_proc.sim import ops
from session_proc.sim.hub_phones import PhoneRegistry
from transport.wire import DISAPPEARING_TIMERS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    account TEXT NOT NULL,  -- the linked account's number
    blocked TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (account, blocked)
);
-- One row per chat of two numbers (low < high); no row: off.
CREATE TABLE IF NOT EXISTS disappearing (
    low     TEXT NOT NULL,
    high    TEXT NOT NULL,
    seconds INTEGER NOT NULL,
    set_by  TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (low, high)
);
"""

# The ops of session_proc.sim.ops answered here, for a linked account.
OPS = frozenset({ops.CHECK_PHONES, ops.CONTACT_INFO, ops.SET_BLOCKED, ops.BLOCKLIST, ops.SET_DISAPPEARING})
MAX_CHECK = 50  # numbers per check, as the worker's API allows


class ContactError(Exception):
    """A contact request the hub refuses: a machine code and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class ContactBook:
    """Lookups, blocklists and disappearing timers, over the hub's database and phone registry."""

    def __init__(self, db: sqlite3.Connection, phones: PhoneRegistry) -> None:
        self._db = db
        self._phones = phones
        self._db.executescript(_SCHEMA)

    # -- rules the hub applies to messages ------------------------------------------------
    def blocks(self, account: str, other: str) -> bool:
        """Whether ``account`` blocked ``other``."""
        row = self._db.execute("SELECT 1 FROM blocks WHERE account = ? AND blocked = ?", (account, other)).fetchone()
        return row is not None

    def timer(self, a: str, b: str) -> int:
        """The disappearing timer of the chat between two numbers, in seconds (0: off)."""
        row = self._db.execute("SELECT seconds FROM disappearing WHERE low = ? AND high = ?", _pair(a, b)).fetchone()
        return int(row[0]) if row else 0

    # -- what a phone's HTTP API shows -------------------------------------------------------
    def blocklist(self, account: str) -> list[str]:
        """The numbers ``account`` blocked, in the order it blocked them."""
        rows = self._db.execute("SELECT blocked FROM blocks WHERE account = ? ORDER BY at, blocked", (account,))
        return [row[0] for row in rows]

    def timers(self, phone: str) -> list[dict[str, Any]]:
        """The disappearing timers of the chats ``phone`` is in."""
        rows = self._db.execute(
            "SELECT low, high, seconds, set_by, at FROM disappearing WHERE low = ? OR high = ? ORDER BY at",
            (phone, phone),
        )
        return [
            {"with": high if low == phone else low, "seconds": seconds, "setBy": set_by, "at": at}
            for low, high, seconds, set_by, at in rows
        ]

    # -- a linked account's requests ----------------------------------------------------------
    def answer(self, account: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one of :data:`OPS` for the linked account ``account``; ContactError when refused."""
        if op == ops.CHECK_PHONES:
            phones = body.get("phones")
            if not isinstance(phones, list) or len(phones) > MAX_CHECK or not all(_digits(p) for p in phones):
                raise ContactError(ops.ERR_BAD_REQUEST, f"phones must be a list of at most {MAX_CHECK} numbers")
            return {"results": [{"phone": p, "exists": self._phones.exists(p)} for p in phones]}
        if op == ops.BLOCKLIST:
            return {"phones": self.blocklist(account)}
        phone = body.get("phone")
        if not _digits(phone):
            raise ContactError(ops.ERR_BAD_REQUEST, "phone must be a number of digits")
        assert isinstance(phone, str)
        profile = self._phones.profile(phone)
        if profile is None:
            raise ContactError(ops.ERR_NOT_ON_WHATSAPP, f"{phone} is not on WhatsApp")
        if op == ops.CONTACT_INFO:
            return {
                "phone": phone,
                "pushName": profile.push_name,
                "about": profile.about,
                "pictureUrl": profile.picture_url,
            }
        if op == ops.SET_BLOCKED:
            if body.get("blocked") is True:
                self._db.execute(
                    "INSERT OR IGNORE INTO blocks (account, blocked, at) VALUES (?, ?, ?)",
                    (account, phone, time.time()),
                )
            else:
                self._db.execute("DELETE FROM blocks WHERE account = ? AND blocked = ?", (account, phone))
            return {}
        seconds = body.get("seconds")  # ops.SET_DISAPPEARING
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds not in DISAPPEARING_TIMERS:
            raise ContactError(ops.ERR_BAD_REQUEST, f"seconds must be one of {DISAPPEARING_TIMERS}")
        if seconds == 0:
            self._db.execute("DELETE FROM disappearing WHERE low = ? AND high = ?", _pair(account, phone))
        else:
            self._db.execute(
                "INSERT INTO disappearing (low, high, seconds, set_by, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (low, high) DO UPDATE SET seconds = excluded.seconds, set_by = excluded.set_by,"
                " at = excluded.at",
                (*_pair(account, phone), seconds, account, time.time()),
            )
        return {}


def _digits(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit()

"""The hub's side of read receipts, presence and calls, and what phones see of them.

- What a phone sent (``GET /phones/{phone}/sent``) is kept in ``hub.db`` (``phone_sent``): its status
  becomes ``read`` when a linked device sends read receipts for it. In a group, as on WhatsApp, a
  receipt goes to each message's sender (the participant): the device names the sender and the group.
- Presence is ephemeral, as on WhatsApp: a device offline misses it; what phones saw of linked
  accounts is kept in memory, bounded, and a hub restart forgets it. A chat state in a group is shown
  to every other member.
- A phone's call (``phone_calls`` in ``hub.db``) is pushed to the callee's devices and waits for
  their ``call_ack`` like a message waits for its ``ack``; a device may reject it while it rings.
"""

from __future__ import annotations

import collections
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from session_proc.sim import ops
from session_proc.sim.hub_store import InboxEntry
from session_proc.sim.jids import is_group

if TYPE_CHECKING:
    from session_proc.sim.hub import Connection, Hub

log = logging.getLogger("sim.hub")

MAX_READ_IDS = 1000  # ids one read request may name
PRESENCE_KEPT = 200  # chat presences each phone remembers
ACCOUNT_STATES = ("available", "unavailable")
CHAT_STATES = ("typing", "recording", "paused")
REQUESTS = frozenset({ops.READ, ops.PRESENCE, ops.REJECT_CALL})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phone_sent (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    phone     TEXT NOT NULL,
    id        TEXT NOT NULL,
    to_phone  TEXT NOT NULL,
    type      TEXT NOT NULL,
    text      TEXT,
    status    TEXT NOT NULL,
    timestamp REAL NOT NULL,
    UNIQUE (phone, id)
);
CREATE INDEX IF NOT EXISTS phone_sent_to ON phone_sent (to_phone, phone);
CREATE TABLE IF NOT EXISTS phone_calls (
    id        TEXT PRIMARY KEY,
    phone     TEXT NOT NULL,
    to_phone  TEXT NOT NULL,
    video     INTEGER NOT NULL,
    status    TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS phone_calls_by_phone ON phone_calls (phone, timestamp);
"""


def _refused(status: int, code: str, message: str) -> Exception:
    """The hub's HubError (imported here: hub.py imports this module)."""
    from session_proc.sim.hub import HubError

    return HubError(status, code, message)


@dataclass(frozen=True, slots=True)
class Seen:
    """A presence a phone saw of a linked account."""

    sender: str
    state: str
    at: float
    group: str | None = None  # the group JID of a chat state shown in a group

    def to_json(self) -> dict[str, Any]:
        return {"from": self.sender, "state": self.state, "at": self.at} | ({"group": self.group} if self.group else {})


class HubAccount:
    """Read receipts, presence and calls between linked devices and phones."""

    def __init__(self, hub: Hub, db_path: Any) -> None:
        self._hub = hub
        # Its own connection to hub.db (WAL): short statements, all on the hub's event loop.
        self._db = sqlite3.connect(db_path, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._chat_seen: dict[str, collections.deque[Seen]] = {}
        self._account_seen: dict[str, Seen] = {}  # account phone → its latest available/unavailable

    def close(self) -> None:
        self._db.close()

    # -- what phones send (hooked into Hub.phone_send) ---------------------------------------
    def record_sent(self, entry: InboxEntry) -> None:
        """Remember a message a phone sent, as ``sent`` (a group message once, to the group's JID)."""
        self._db.execute(
            "INSERT OR IGNORE INTO phone_sent (phone, id, to_phone, type, text, status, timestamp)"
            " VALUES (?, ?, ?, ?, ?, 'sent', ?)",
            (entry.from_phone, entry.id, entry.phone, entry.type, entry.text, entry.timestamp),
        )

    def sent(self, phone: str) -> list[dict[str, Any]]:
        """What ``phone`` sent, oldest first."""
        rows = self._db.execute(
            "SELECT id, to_phone, type, text, status FROM phone_sent WHERE phone = ? ORDER BY seq", (phone,)
        )
        return [{"id": r[0], "to": r[1], "type": r[2], "text": r[3], "status": r[4]} for r in rows]

    # -- requests of linked devices ----------------------------------------------------------
    def on_request(self, conn: Connection, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """A read, presence or reject_call request of an online device."""
        device = self._hub.device_of(conn)
        if op == ops.READ:
            return {"read": self._read(device.phone, body)}
        if op == ops.PRESENCE:
            self._device_presence(device.phone, body)
            return {}
        self._reject(device.phone, body)
        return {}

    def _read(self, account: str, body: dict[str, Any]) -> int:
        """Read receipts of ``account`` for messages ``sender`` sent to it (a 1:1 chat: the sender is
        the chat) or to the group ``chat``."""
        chat, ids = body.get("chat"), body.get("ids")
        if not isinstance(chat, str) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _refused(400, ops.ERR_BAD_REQUEST, "read needs chat (a phone or a group) and ids (message ids)")
        group = is_group(chat)
        sender = body.get("sender") if group else chat
        if not isinstance(sender, str) or not sender:
            raise _refused(400, ops.ERR_BAD_REQUEST, "a read in a group needs sender (the phone that sent them)")
        if len(ids) > MAX_READ_IDS:
            raise _refused(400, ops.ERR_BAD_REQUEST, f"at most {MAX_READ_IDS} ids per read")
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        cur = self._db.execute(
            f"UPDATE phone_sent SET status = 'read' WHERE phone = ? AND to_phone = ? AND id IN ({marks})",
            (sender, chat if group else account, *ids),
        )
        log.info("account %s read %d messages of %s in %s", account, cur.rowcount, sender, chat)
        return cur.rowcount

    def _device_presence(self, account: str, body: dict[str, Any]) -> None:
        state, to = body.get("state"), body.get("to")
        now = time.time()
        if state in ACCOUNT_STATES:
            self._account_seen[account] = Seen(account, str(state), now)
            return
        if state not in CHAT_STATES or not isinstance(to, str) or not to:
            raise _refused(400, ops.ERR_BAD_REQUEST, "presence: a chat state needs to (a phone or a group)")
        group = to if is_group(to) else None
        for viewer in self._hub.groups.others(account, to) if group else [to]:
            seen = self._chat_seen.setdefault(viewer, collections.deque(maxlen=PRESENCE_KEPT))
            seen.append(Seen(account, str(state), now, group))

    def _reject(self, account: str, body: dict[str, Any]) -> None:
        call_id = body.get("id")
        row = self._db.execute("SELECT status FROM phone_calls WHERE id = ? AND to_phone = ?", (call_id, account))
        found = row.fetchone()
        if found is None:
            raise _refused(404, "CALL_UNKNOWN", f"no call {call_id!r} to {account}")
        self._db.execute("UPDATE phone_calls SET status = 'rejected' WHERE id = ?", (call_id,))
        log.info("account %s rejected call %s", account, call_id)

    def ack_call(self, conn: Connection, body: dict[str, Any]) -> None:
        """The device took over a call: stop offering it."""
        call_id = body.get("id")
        if conn.device_id is not None and isinstance(call_id, str):
            self._db.execute(
                "DELETE FROM pending WHERE device_id = ? AND kind = ? AND msg_id = ?",
                (conn.device_id, ops.CALL, call_id),
            )

    # -- what phones do ----------------------------------------------------------------------
    def phone_presence(self, phone: str, to: str, state: str) -> int:
        """The phone shows ``state`` to the account ``to``: its online devices hear it (none when it blocked
        the phone). Returns how many."""
        self._hub.linked(to)  # 404 NOT_LINKED first
        body: dict[str, Any]
        if state in CHAT_STATES:
            op, body = ops.CHAT_PRESENCE, {"from": phone, "state": state}
        elif state in ACCOUNT_STATES:
            online = state == "available"
            op, body = (
                ops.PRESENCE_UPDATE,
                {"from": phone, "online": online, "lastSeen": None if online else time.time()},
            )
        else:
            raise _refused(400, ops.ERR_BAD_REQUEST, f"state must be one of {', '.join(ACCOUNT_STATES + CHAT_STATES)}")
        targets = self._hub.devices_hearing(phone, to, f"presence {state}")
        return sum(self._hub.push_now(device_id, op, body) for device_id in targets)

    def presence_seen(self, phone: str) -> list[dict[str, Any]]:
        """What ``phone`` saw of linked accounts: every account's latest presence and the chat states
        shown to it, oldest first."""
        seen = [*self._account_seen.values(), *self._chat_seen.get(phone, ())]
        return [s.to_json() for s in sorted(seen, key=lambda s: s.at)]

    def call(self, phone: str, to: str, video: bool) -> dict[str, Any]:
        """The phone calls the account ``to``: its devices get the offer (kept until acknowledged); a call
        to an account that blocked the phone rings on the phone's side only, as on WhatsApp."""
        self._hub.linked(to)  # 404 NOT_LINKED first
        call_id = secrets.token_hex(16).upper()
        targets = self._hub.devices_hearing(phone, to, f"call {call_id}")
        now = time.time()
        self._db.execute(
            "INSERT INTO phone_calls (id, phone, to_phone, video, status, timestamp) VALUES (?, ?, ?, ?, 'ringing', ?)",
            (call_id, phone, to, int(video), now),
        )
        body = {"id": call_id, "from": phone, "video": video, "timestamp": now}
        for device_id in targets:
            self._hub.queue_for(device_id, ops.CALL, call_id, body)
        log.info("phone %s calls %s (%s)", phone, to, call_id)
        return {"id": call_id}

    def calls(self, phone: str) -> list[dict[str, Any]]:
        """The calls ``phone`` made, oldest first."""
        rows = self._db.execute(
            "SELECT id, to_phone, video, status FROM phone_calls WHERE phone = ? ORDER BY timestamp", (phone,)
        )
        return [{"id": r[0], "to": r[1], "video": bool(r[2]), "status": r[3]} for r in rows]

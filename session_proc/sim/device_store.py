"""The sim engine's credentials of its linked device, in SQLite (``sim-device.db``).

Like neonize's own database, it lives in the session directory, so a restarted
session process reconnects without a new scan, and the supervisor backs it up
with the SQLite backup API. Every write is committed before it returns.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "sim-device.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device (
    slot      INTEGER PRIMARY KEY CHECK (slot = 1),
    device_id TEXT NOT NULL,
    secret    TEXT NOT NULL,
    phone     TEXT NOT NULL,
    push_name TEXT
);
"""


@dataclass(slots=True, frozen=True)
class DeviceCreds:
    """What a linked device needs to reconnect."""

    device_id: str
    secret: str
    phone: str
    push_name: str | None = None


class DeviceStore:
    """One session's device credentials (at most one linked device)."""

    def __init__(self, session_dir: Path) -> None:
        session_dir.mkdir(parents=True, exist_ok=True)
        self.path = session_dir / DB_NAME
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # The credentials are the whole point of the file: a write must survive a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def load(self) -> DeviceCreds | None:
        """The stored credentials, or None when the session is not linked."""
        row = self._db.execute("SELECT device_id, secret, phone, push_name FROM device WHERE slot = 1").fetchone()
        return DeviceCreds(*row) if row else None

    def save(self, creds: DeviceCreds) -> None:
        """Store (replace) the credentials; committed on return."""
        self._db.execute(
            "INSERT OR REPLACE INTO device (slot, device_id, secret, phone, push_name) VALUES (1, ?, ?, ?, ?)",
            (creds.device_id, creds.secret, creds.phone, creds.push_name),
        )

    def clear(self) -> None:
        """Forget the credentials (logged out or unlinked); committed on return."""
        self._db.execute("DELETE FROM device")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

"""The simulated network's phone registry: which numbers are on WhatsApp, and their profiles.

A number is on WhatsApp once it joined (``POST /phones``), scanned a QR, entered a pairing
code or sent a message; every other number does not exist (``contacts/check`` answers
``exists: false`` for it). Profiles (push name, about, picture) are what a contact lookup
shows. Kept in the hub's SQLite database beside :class:`HubStore`'s tables, so a hub
restart forgets nobody. Phone numbers are checked by the callers (digits only).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phones (
    phone       TEXT PRIMARY KEY,
    push_name   TEXT,
    about       TEXT,
    picture_url TEXT,
    joined_at   REAL NOT NULL
);
"""

_COLUMNS = "phone, push_name, about, picture_url, joined_at"


@dataclass(slots=True, frozen=True)
class PhoneProfile:
    """A number on WhatsApp and what others see of it."""

    phone: str
    push_name: str | None
    about: str | None
    picture_url: str | None
    joined_at: float

    @property
    def jid(self) -> str:
        """The number's user JID."""
        return f"{self.phone}@s.whatsapp.net"

    def to_json(self) -> dict[str, Any]:
        """The profile as the hub's HTTP API shows it."""
        return {
            "phone": self.phone,
            "jid": self.jid,
            "pushName": self.push_name,
            "about": self.about,
            "pictureUrl": self.picture_url,
            "joinedAt": self.joined_at,
        }


class PhoneRegistry:
    """Numbers on the simulated WhatsApp, persisted in the hub's database.

    ``linked_push_name`` answers for numbers with a linked device (a hub.db from before this
    table knows them only as devices): such a number exists, with its device's push name.
    """

    def __init__(self, db: sqlite3.Connection, linked_push_name: Callable[[str], tuple[bool, str | None]]) -> None:
        self._db = db
        self._linked = linked_push_name
        self._db.executescript(_SCHEMA)

    def join(self, phone: str, *, push_name: str | None = None, about: str | None = None) -> PhoneProfile:
        """The number joins WhatsApp (again: its profile fields given here replace the old ones)."""
        self._db.execute(
            "INSERT INTO phones (phone, push_name, about, joined_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (phone) DO UPDATE SET push_name = COALESCE(excluded.push_name, push_name),"
            " about = COALESCE(excluded.about, about)",
            (phone, push_name, about, time.time()),
        )
        profile = self.profile(phone)
        assert profile is not None  # just written
        return profile

    def seen(self, phone: str, push_name: str | None = None) -> None:
        """The number scanned, paired or sent a message: it is on WhatsApp from now on."""
        self.join(phone, push_name=push_name)

    def set_profile(
        self,
        phone: str,
        *,
        push_name: str | None = None,
        about: str | None = None,
        picture_url: str | None = None,
    ) -> PhoneProfile | None:
        """Change the fields given of an existing number's profile; None if the number is not on WhatsApp."""
        if not self.exists(phone):
            return None
        self._db.execute(
            "INSERT INTO phones (phone, push_name, about, picture_url, joined_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (phone) DO UPDATE SET push_name = COALESCE(excluded.push_name, push_name),"
            " about = COALESCE(excluded.about, about), picture_url = COALESCE(excluded.picture_url, picture_url)",
            (phone, push_name, about, picture_url, time.time()),
        )
        return self.profile(phone)

    def exists(self, phone: str) -> bool:
        """Whether the number is on WhatsApp."""
        return self.profile(phone) is not None

    def profile(self, phone: str) -> PhoneProfile | None:
        """The number's profile, or None if it is not on WhatsApp."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM phones WHERE phone = ?", (phone,)).fetchone()
        linked, device_name = self._linked(phone)
        if row is None:
            return PhoneProfile(phone, device_name, None, None, 0.0) if linked else None
        profile = PhoneProfile(*row)
        if profile.push_name is None and device_name is not None:
            return PhoneProfile(phone, device_name, profile.about, profile.picture_url, profile.joined_at)
        return profile

    def all(self) -> list[PhoneProfile]:
        """Every number that joined, in the order they joined."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM phones ORDER BY joined_at, phone")
        return [PhoneProfile(*row) for row in rows]

"""Deleted sessions whose objects the store could not remove at the time, kept until it can.

A session deleted while object storage is unreachable would leave its backups (its
WhatsApp keys, sealed or not), lease and media behind, and a later create under the
same id would restore the deleted session's login. So the delete is remembered in
``STORAGE_DIR/pending-removals.json`` (rewritten whole, atomically: it survives a
restart) and retried until it lands; a create under that id waits for it.

What a retry removes is bounded by the time of the delete: backup versions are
named by the time they were written, so only those from before it go, and the
manifest only while it points at one of them. If another worker has taken the
session's lease by then, it created the id again and nothing is removed: its
media could not be told apart from the deleted session's (logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from supervisor.storage.local import write_atomic

log = logging.getLogger("supervisor.storage")


class PendingRemovals:
    """Session id -> time of its delete, persisted on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[str, float] = {}
        try:
            raw = json.loads(path.read_text())
            self._pending = {str(k): float(v) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError) as exc:
            # Written whole or not at all, so this is damage from outside; the next change rewrites it.
            log.error("%s is unreadable (%s): removals it held will not be retried", path, exc)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, session_id: str) -> float | None:
        """When the session was deleted, if its removal is pending."""
        return self._pending.get(session_id)

    def items(self) -> list[tuple[str, float]]:
        """The pending removals, oldest delete first."""
        return sorted(self._pending.items(), key=lambda item: item[1])

    async def add(self, session_id: str, deleted_at: float) -> None:
        """Remember a removal; ``deleted_at`` bounds what it removes."""
        self._pending[session_id] = deleted_at
        await self._save()

    async def done(self, session_id: str) -> None:
        """The removal landed (or was given up)."""
        if self._pending.pop(session_id, None) is not None:
            await self._save()

    async def _save(self) -> None:
        data = json.dumps(self._pending, sort_keys=True).encode()
        await asyncio.to_thread(write_atomic, self.path, data)

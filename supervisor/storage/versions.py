"""The newest backup version this worker has seen of each session, so a restore never goes back.

Whoever can write the sessions bucket could point a manifest at an older backup
version: a session would then start on stale keys (WhatsApp would refuse them, or
worse, accept a device the phone has since unlinked). Versions are named by the
time they were written, and a sealed backup authenticates its name
(:mod:`supervisor.storage.cipher`), so a worker remembers, per session, the newest
version it wrote or restored and the format it was sealed in, and refuses a restore
of an older one, or of the older format once it has seen the newer. Kept in
``STORAGE_DIR/backup-versions.json``, rewritten whole and atomically on change.

What it cannot know: versions written by other workers that this one never read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from supervisor.storage.local import write_atomic

log = logging.getLogger("supervisor.storage")


@dataclass(frozen=True, slots=True)
class Seen:
    """The newest version of one session's backups this worker has seen."""

    written_at: float  # the time in its name
    binds_version: bool  # sealed in the format that authenticates its name


class SeenVersions:
    """Session id -> newest backup version seen, persisted on every change (None: in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, Seen] = {}
        if path is None:
            return
        try:
            raw = json.loads(path.read_text())
            self._seen = {str(k): Seen(float(v["writtenAt"]), bool(v["bindsVersion"])) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Written whole or not at all, so this is damage from outside; the next change rewrites it.
            log.error("%s is unreadable (%s): restores are not checked against it", path, exc)

    def get(self, session_id: str) -> Seen | None:
        return self._seen.get(session_id)

    async def saw(self, session_id: str, written_at: float, *, binds_version: bool) -> None:
        """Remember a version written or restored here, when it is the newest so far."""
        current = self._seen.get(session_id)
        if current is not None and current.written_at >= written_at:
            return
        self._seen[session_id] = Seen(written_at, binds_version or (current is not None and current.binds_version))
        await self._save()

    async def forget(self, session_id: str) -> None:
        """The session's backups were removed (logout, delete): a new link starts over."""
        if self._seen.pop(session_id, None) is not None:
            await self._save()

    async def _save(self) -> None:
        if self.path is None:
            return
        data = {k: {"writtenAt": v.written_at, "bindsVersion": v.binds_version} for k, v in self._seen.items()}
        await asyncio.to_thread(write_atomic, self.path, json.dumps(data, sort_keys=True).encode())

"""Consistent snapshots of a session's auth state, and restoring one.

The engine's auth state is SQLite files in ``STORAGE_DIR/sessions/<id>/`` that a
running session process may be writing: each ``*.db`` is copied with SQLite's
online backup API (a consistent image, never a copy of a live file); other plain
files are copied as they are. Journals (``-wal``, ``-shm``, ``-journal``) are
left out (the backup image is complete without them) and so are directories
(incoming media lives in the media bucket, not in backups).
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path

_JOURNAL_SUFFIXES = ("-wal", "-shm", "-journal")
SQLITE_TIMEOUT = 10.0


def auth_files(session_dir: Path) -> list[Path]:
    """The files of a session dir that make up its auth state."""
    if not session_dir.is_dir():
        return []
    return sorted(
        p
        for p in session_dir.iterdir()
        if p.is_file() and not p.name.endswith(_JOURNAL_SUFFIXES) and not p.name.startswith(".")
    )


def fingerprint(session_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every file of the auth state, write-ahead logs included
    (an engine's writes land there first); changes whenever the engine wrote. Blocking."""
    if not session_dir.is_dir():
        return ()
    out = []
    for p in session_dir.iterdir():
        # -shm is SQLite's shared-memory index: reading the database (a snapshot does) touches it.
        if p.name.startswith(".") or p.name.endswith("-shm"):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:  # a journal the engine removed meanwhile
            continue
        if p.is_file():
            out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def has_auth_state(session_dir: Path) -> bool:
    """True when the session dir holds an engine database (``*.db``)."""
    return any(p.suffix == ".db" for p in auth_files(session_dir))


def _sqlite_image(source: Path, target: Path) -> None:
    # Read-only: the snapshot must never write to the engine's live database.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def snapshot(session_dir: Path) -> bytes:
    """A tar archive of the session's auth state (blocking: call in a thread)."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="wa-snapshot-") as tmp, tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in auth_files(session_dir):
            if path.suffix == ".db":
                image = Path(tmp) / path.name
                _sqlite_image(path, image)
                tar.add(image, arcname=path.name, recursive=False)
            else:
                tar.add(path, arcname=path.name, recursive=False)
    return buffer.getvalue()


RESTORE_PREFIX = ".restore-"


def sweep_restores(sessions_dir: Path) -> int:
    """Remove the staging directories of restores a crash interrupted (blocking); how many."""
    if not sessions_dir.is_dir():
        return 0
    stale = [p for p in sessions_dir.iterdir() if p.name.startswith(RESTORE_PREFIX) and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def restore(archive: bytes, session_dir: Path) -> list[str]:
    """Unpack a snapshot into ``session_dir`` (blocking); returns the file names restored.

    Unpacked next to the target first and moved in file by file with rename, so a
    broken archive leaves the session dir as it was.
    """
    session_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=RESTORE_PREFIX, dir=session_dir.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            members = tar.getmembers()
            for member in members:
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    raise ValueError(f"unexpected entry {member.name!r} in a session backup")
            # The "data" filter also refuses links, absolute paths and device files.
            tar.extractall(staging, members=members, filter="data")
        names = [m.name for m in members]
        for name in names:
            for suffix in _JOURNAL_SUFFIXES:
                (session_dir / f"{name}{suffix}").unlink(missing_ok=True)
            os.replace(staging / name, session_dir / name)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)

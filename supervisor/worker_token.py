"""The worker's API token: WORKER_AUTH_TOKEN, else one generated once and kept in the data directory.

The worker never runs open: with no token configured it makes one on first
start, stores it readable by its owner only, and prints it once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "worker-token"


def token_path(storage_dir: Path) -> Path:
    return storage_dir / TOKEN_FILE


def read_stored(storage_dir: Path) -> str | None:
    """The generated token, if one was generated before."""
    try:
        token = token_path(storage_dir).read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


def resolve(configured: str | None, storage_dir: Path) -> tuple[str, bool]:
    """The token to require, and whether it was generated just now (so the caller prints it once)."""
    if configured:
        return configured, False
    stored = read_stored(storage_dir)
    if stored:
        return stored, False
    storage_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path = token_path(storage_dir)
    # O_EXCL: two workers racing on one directory never overwrite each other's token.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True

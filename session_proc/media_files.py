"""Received media on disk: a session process writes each attachment here for the supervisor to pick up."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from common.media_names import MEDIA_DIR, media_stem

__all__ = ["MEDIA_DIR", "write_media"]


def write_media(directory: Path, message_id: str, mimetype: str | None, data: bytes) -> Path:
    """Write received media atomically (temp file, then rename) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    base_type = mimetype.split(";", 1)[0].strip() if mimetype else None
    extension = (mimetypes.guess_extension(base_type) if base_type else None) or ".bin"
    path = directory / (media_stem(message_id) + extension)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path

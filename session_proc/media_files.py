"""Received media on disk: a session process writes each attachment here for the supervisor to pick up."""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path

# The folder under a session's directory that holds received media.
MEDIA_DIR = "media"
# Message ids come from the network: nothing in one may reach outside the media folder.
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def write_media(directory: Path, message_id: str, mimetype: str | None, data: bytes) -> Path:
    """Write received media atomically (temp file, then rename) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    base_type = mimetype.split(";", 1)[0].strip() if mimetype else None
    extension = (mimetypes.guess_extension(base_type) if base_type else None) or ".bin"
    path = directory / (_SAFE_NAME.sub("_", message_id) + extension)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path

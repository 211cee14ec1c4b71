"""Where a session process leaves received media, named so both sides find it by message id."""

from __future__ import annotations

import re

# The folder under a session's directory (STORAGE_DIR/sessions/<id>/) that holds received media.
MEDIA_DIR = "media"
# Message ids come from the network: nothing in one may reach outside the media folder.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def media_stem(message_id: str) -> str:
    """The file name (without extension) of a received message's media."""
    return _UNSAFE.sub("_", message_id)

"""How a browser is told to treat a stored media file: shown inline only when it is an image, audio or
video; anything else (a document, or a file a contact labelled as HTML or SVG) is a download, so a media
URL on the worker's or MinIO's origin can never run a contact's script in the viewer's browser."""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

INLINE_KINDS = ("image/", "audio/", "video/")
# Images that are documents with scripts in them.
NEVER_INLINE = frozenset({"image/svg+xml"})


def content_type_of(name: str) -> str:
    """The media type a stored file's name says (``application/octet-stream`` when it says none)."""
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def content_disposition(name: str) -> str:
    """The ``Content-Disposition`` of a stored media file called ``name``."""
    kind = content_type_of(name)
    if kind.startswith(INLINE_KINDS) and kind not in NEVER_INLINE:
        return "inline"
    base = name.rsplit("/", 1)[-1]
    return f"attachment; filename*=UTF-8''{quote(base)}"

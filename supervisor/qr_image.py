"""QR strings rendered as PNG data URLs, the way the seed's API hands them out."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import qrcode
import qrcode.image.pure


@lru_cache(maxsize=256)
def png_data_url(qr: str) -> str:
    """``data:image/png;base64,...`` of ``qr`` (CPU work: call it from a thread)."""
    image = qrcode.make(qr, image_factory=qrcode.image.pure.PyPNGImage, border=2)
    buf = io.BytesIO()
    image.save(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

"""QR strings rendered as PNG data URLs, the way the seed's API hands them out."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import qrcode
import qrcode.image.pure

# Every QR a session shows is rendered once (its qr_ready event carries it), so with many sessions
# waiting for a scan this is the supervisor's busiest work. Six pixels a module (about 370 px for
# WhatsApp's codes) is plenty for a phone's camera, and a fixed mask pattern (any of the eight is
# valid; choosing the best one tries all eight) makes a render about three times cheaper: 11 ms
# instead of 34 ms here.
BOX_SIZE = 6
MASK_PATTERN = 2


@lru_cache(maxsize=256)
def png_data_url(qr: str) -> str:
    """``data:image/png;base64,...`` of ``qr`` (CPU work: call it from a thread)."""
    code = qrcode.QRCode(
        border=2, box_size=BOX_SIZE, mask_pattern=MASK_PATTERN, image_factory=qrcode.image.pure.PyPNGImage
    )
    code.add_data(qr)
    code.make(fit=True)
    buf = io.BytesIO()
    code.make_image().save(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

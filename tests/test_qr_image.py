"""The QR image a session's qr_ready event and GET /session/{id}/qr carry: a PNG of exactly the QR's modules."""

from __future__ import annotations

import base64

import png
import qrcode

from supervisor import qr_image

# Shaped like whatsmeow's QR strings.
QR = (
    "2@"
    + "Ab0+/" * 36
    + ",x8Kq0Wn1tNbVvS5z2Q0pYHqkq3cGfR1mLq0Wn1tNbVvS5=,Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=,AbC="
)


def test_the_png_holds_the_qr_modules_at_six_pixels_each() -> None:
    url = qr_image.png_data_url(QR)
    assert url.startswith("data:image/png;base64,")
    width, height, rows, _ = png.Reader(bytes=base64.b64decode(url.split(",", 1)[1])).read_flat()
    code = qrcode.QRCode(border=2, mask_pattern=qr_image.MASK_PATTERN)
    code.add_data(QR)
    code.make(fit=True)
    modules = code.get_matrix()  # with the border, True = dark
    box = qr_image.BOX_SIZE
    assert width == height == len(modules) * box
    # Sample the middle pixel of every module: dark where the matrix is dark (greyscale or 1-bit).
    pixels = list(rows)
    stride = len(pixels) // height
    for y, row in enumerate(modules):
        for x, dark in enumerate(row):
            value = pixels[(y * box + box // 2) * stride + (x * box + box // 2) * (stride // width)]
            assert (value == 0) == dark, (x, y)

"""Images in and out of the HTTP API: base64 PNG strings, as A1111 sends and accepts them.

Example:
    >>> from PIL import Image
    >>> text = encode_png_b64(Image.new("RGB", (8, 8)), "a cat\\nSteps: 1, Seed: 2, Size: 8x8")
    >>> decode_image("data:image/png;base64," + text).info["parameters"].splitlines()[0]
    'a cat'
"""

from __future__ import annotations

import base64
import binascii
import io

from fastapi import HTTPException
from PIL import Image

from helpers.infotext import png_bytes


def encode_png_b64(image: Image.Image, infotext: str | None = None) -> str:
    """PNG bytes as plain base64 (no ``data:`` prefix, like A1111), with the infotext chunk."""
    return base64.b64encode(png_bytes(image, infotext)).decode("ascii")


def decode_image(encoded: str) -> Image.Image:
    """Decode a base64 image sent by a client; errors are A1111's (reference §3).

    * a ``data:image/png;base64,`` prefix is stripped (browsers and webuiapi send one);
    * an ``http(s)://`` URL is refused: the kit's server never downloads anything;
    * anything that is not a readable image gives 500 "Invalid encoded image", as in A1111.
    """
    encoded = encoded.strip()
    if encoded.startswith(("http://", "https://")):
        raise HTTPException(status_code=500, detail="Requests not allowed (the kit's server does not "
                                                    "download images: send the image as base64)")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        image.load()  # decode now, so a truncated file fails here and not later
        return image
    except (binascii.Error, ValueError, OSError) as error:
        # OSError covers PIL.UnidentifiedImageError and truncated files.
        raise HTTPException(status_code=500, detail="Invalid encoded image") from error

"""Images in and out of the HTTP API: base64 PNG strings, as A1111 sends and accepts them.

Images a client sends are untrusted: a 655 KB PNG can declare 13000x13000 pixels and take 676 MB
once decoded. So ``open_image`` reads only the header and checks the declared size against the
server's limit (``--max-decode-megapixels``) before any pixel is decoded, and ``decode_image``
decodes one image at a time (``DECODE_LOCK``), so that concurrent requests cannot multiply memory.
Only ordinary image formats are read (PNG, JPEG, WebP, BMP, GIF). The decoding and encoding are the
client's own (helpers/images.py); this module adds the lock and the server's answers: A1111's 500
"Invalid encoded image", and a 422 naming the limit and its flag.

Example:
    >>> from PIL import Image
    >>> text = encode_png_b64(Image.new("RGB", (8, 8)), "a cat\\nSteps: 1, Seed: 2, Size: 8x8")
    >>> decode_image("data:image/png;base64," + text).info["parameters"].splitlines()[0]
    'a cat'
"""

from __future__ import annotations

import threading

from fastapi import HTTPException
from PIL import Image

from helpers.images import ImageDataError, encode_b64, load_pixels, open_b64

from .limits import MEGAPIXEL, Limits, limit_error

# One decode at a time in this process, whatever the number of requests.
DECODE_LOCK = threading.Lock()
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # not EPS (runs Ghostscript), TIFF, PSD, ...


def encode_png_b64(image: Image.Image, infotext: str | None = None) -> str:
    """PNG bytes as plain base64 (no ``data:`` prefix, like A1111), with the infotext chunk."""
    return encode_b64(image, infotext)


def _invalid() -> HTTPException:
    # A1111's answer for anything that is not a readable image (its decode_base64_to_image).
    return HTTPException(status_code=500, detail="Invalid encoded image")


def open_image(encoded: str, limits: Limits | None = None, field: str = "image") -> Image.Image:
    """Read a client image's header and check its size; no pixel is decoded yet (PIL opens lazily).

    * a ``data:image/png;base64,`` prefix is stripped (browsers and webuiapi send one);
    * an ``http(s)://`` URL is refused: the kit's server never downloads anything;
    * anything that is not a readable image gives 500 "Invalid encoded image", as in A1111;
    * an image larger than ``limits.max_decode_megapixels`` is a 422 naming the limit and the flag.
    """
    limits = limits or Limits()
    encoded = encoded.strip()
    if encoded.startswith(("http://", "https://")):
        raise HTTPException(status_code=500, detail="Requests not allowed (the kit's server does not "
                                                    "download images: send the image as base64)")
    try:
        # Not strict about the alphabet: A1111's server skips stray characters too.
        image, _ = open_b64(encoded, limits.max_decode_megapixels * MEGAPIXEL, strict=False, formats=FORMATS)
    except ImageDataError as error:
        if error.kind != "too-large":
            raise _invalid() from error
        size = error.size  # None: larger than Pillow opens at all
        what = (f"{size[0]}x{size[1]} pixels ({size[0] * size[1] / MEGAPIXEL:.4g} megapixels, 1 megapixel = "
                "1024x1024)" if size else "larger than Pillow's own limit (about 170 megapixels)")
        raise limit_error(field, f"the image is {what}; the server decodes at most {limits.max_decode_megapixels:g} "
                                 "megapixels per image. Send a smaller image, or start the server with "
                                 "--max-decode-megapixels N") from None
    return image


def decode_image(encoded: str, limits: Limits | None = None, field: str = "image") -> Image.Image:
    """Decode a base64 image sent by a client: :func:`open_image`, then the pixels, one image at a time."""
    image = open_image(encoded, limits, field)
    with DECODE_LOCK:
        try:
            load_pixels(image)  # decode now, so a truncated file fails here and not later
        except ImageDataError as error:  # truncated, corrupt
            raise _invalid() from error
    return image

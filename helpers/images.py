"""Base64 images as A1111's JSON carries them: the one decoder and encoder of the client and the server.

A few hundred KB of PNG can unpack to gigabytes, so the declared size is checked before any pixel is decoded.

    >>> from PIL import Image
    >>> text = encode_b64(Image.new("RGB", (8, 8)))
    >>> image, raw = open_b64("data:image/png;base64," + text, max_pixels=100)
    >>> image.size, raw[:4]
    ((8, 8), b'\\x89PNG')
    >>> open_b64(text, max_pixels=10)
    Traceback (most recent call last):
    ...
    helpers.images.ImageDataError: is 8x8 = 64 pixels, more than the limit of 10
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path

from .errors import KitError
from .infotext import png_bytes


class ImageDataError(KitError, ValueError):
    """Text that is not a usable base64 image; ``message`` reads after the image's name ("images[0] is ...")."""

    def __init__(self, message: str, kind: str, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.kind = kind  # "base64", "image" (unreadable) or "too-large"
        self.size = size  # the (width, height) the header declares, or None


def open_b64(text: str, max_pixels: float, *, strict: bool = True, formats: tuple[str, ...] | None = None):
    """Open a base64 image (``data:`` prefix allowed), reading only its header: ``(PIL image, bytes)``, or
    ImageDataError. ``strict``: only the base64 alphabet; ``formats``: the formats to accept (None: all)."""
    from PIL import Image

    if text.startswith("data:") and "," in text:  # browsers and webuiapi send this prefix
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode(text, validate=strict)
    except (binascii.Error, ValueError):
        raise ImageDataError("is not valid base64", "base64") from None
    try:
        with warnings.catch_warnings():  # Pillow's own size warning: the check below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=formats)
    except Image.DecompressionBombError as err:  # above twice Pillow's own limit
        raise ImageDataError(f"is too large to decode safely ({err})", "too-large") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise _unreadable(raw, err) from err
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDataError(f"is {width}x{height} = {width * height:,} pixels, more than the limit of "
                             f"{max_pixels:,}", "too-large", (width, height))
    return image, raw


def load_pixels(image, raw: bytes = b""):
    """Decode an image from :func:`open_b64` now, so a corrupt file fails here with ImageDataError."""
    try:
        image.load()
    except Exception as err:  # noqa: BLE001 - truncated, corrupt, a bomb that hid its size
        raise _unreadable(raw, err) from err
    return image


def _unreadable(raw: bytes, err: Exception) -> ImageDataError:
    return ImageDataError(f"is not a readable image ({raw[:8]!r}...: {type(err).__name__})", "image")


def encode_b64(image, infotext: str | None = None) -> str:
    """Plain base64 (no ``data:`` prefix, like A1111) of PNG bytes, a PNG file's path, or a PIL image
    (written as a PNG, with ``infotext`` in its ``parameters`` chunk when given)."""
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
    elif isinstance(image, (str, Path)):
        raw = Path(image).read_bytes()
    else:
        raw = png_bytes(image, infotext)
    return base64.b64encode(raw).decode("ascii")


def as_rgb(image):
    """An RGB copy of a PIL image or an image file."""
    from PIL import Image
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    return image.convert("RGB")


def png_thumbnail(image, max_side: int) -> bytes:
    """A PNG of a PIL image or an image file, shrunk to ``max_side`` pixels."""
    image = as_rgb(image)
    image.thumbnail((max_side, max_side))
    return png_bytes(image, None)


def image_data_uri(image, max_side: int = 512) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image or a path, shrunk to ``max_side`` pixels."""
    return "data:image/png;base64," + base64.b64encode(png_thumbnail(image, max_side)).decode("ascii")

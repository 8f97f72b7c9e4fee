"""``Generation``: the result of one txt2img call, with decoded images and the real seeds.

A1111 answers ``{"images": [base64 PNG...], "parameters": {...}, "info": "<JSON string>"}``.
Three traps for a beginner are handled here once:

* ``info`` is JSON inside a string: it must be parsed a second time;
* ``parameters["seed"]`` echoes the request (often -1); the real seeds are in ``info``;
* with ``save_images`` a grid may come first (``info["index_of_first_image"]``).

Example:
    >>> gen = client.txt2img("a red fox", seed=42)   # doctest: +SKIP
    >>> gen.seeds, gen.images[0].size                 # doctest: +SKIP
    ([42], (512, 512))
    >>> gen.save("outputs/fox")                       # doctest: +SKIP
    [PosixPath('outputs/fox/00000-42.png')]
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .infotext import parse_infotext, png_bytes

# The kit's own server marks its images so no placeholder is ever taken for a real result.
PLACEHOLDER_MODEL = "offline-preview"


class ResponseError(ValueError):
    """The server's answer could not be read (bad base64, not an image, no info)."""


def decode_image_b64(data: str):
    """Decode one base64 image (with or without a ``data:...;base64,`` prefix) to ``(PIL image, bytes)``."""
    from PIL import Image, UnidentifiedImageError

    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("an image in the response is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError):
        raise ResponseError(f"an image in the response is not a readable image ({raw[:8]!r}...)") from None
    return image, raw


def encode_image_b64(image) -> str:
    """Base64 of a PIL image, a path or PNG bytes, as A1111's image inputs expect."""
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
    elif isinstance(image, (str, Path)):
        raw = Path(image).read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        raw = buffer.getvalue()
    return base64.b64encode(raw).decode("ascii")


@dataclass
class Generation:
    """Images and metadata of one txt2img call.

    Attributes:
        images: PIL images, grid excluded, one per seed.
        seeds: the real seed of each image (never -1).
        info: the parsed ``info`` dict (A1111's keys: ``all_seeds``, ``infotexts``, ...).
        infotexts: the ``parameters`` text stored in each image.
        parameters: the request as the server echoed it, with its defaults filled in.
        interrupted: True when the generation was stopped early; images may be unfinished.

    Example:
        >>> gen.settings(0)["Sampler"]   # doctest: +SKIP
        'Euler a'
    """

    images: list
    seeds: list[int]
    info: dict[str, Any]
    infotexts: list[str]
    parameters: dict[str, Any]
    png: list[bytes] = field(default_factory=list, repr=False)
    interrupted: bool = False

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> "Generation":
        """Build a Generation from A1111's JSON body; raises ResponseError if it cannot."""
        if not isinstance(body, dict) or "images" not in body:
            raise ResponseError("the response has no 'images' list; is this an A1111 txt2img endpoint?")
        info = body.get("info")
        try:
            info = json.loads(info) if isinstance(info, str) else dict(info or {})
        except ValueError:
            raise ResponseError("the response's 'info' is not valid JSON") from None

        first = int(info.get("index_of_first_image", 0) or 0)
        encoded = (body.get("images") or [])[first:]
        seeds = list(info.get("all_seeds") or ([info["seed"]] if "seed" in info else []))
        if encoded and len(seeds) < len(encoded):
            if "seed" not in info:
                raise ResponseError("the response's 'info' has no seeds, so the images cannot be reproduced")
            seeds = [int(info["seed"]) + i for i in range(len(encoded))]
        # Extra images after the samples (e.g. inpainting masks) have no seed of their own.
        encoded = encoded[: len(seeds)] if seeds else encoded
        images, pngs = [], []
        for data in encoded:
            image, raw = decode_image_b64(data)
            images.append(image)
            pngs.append(raw)
        if any(image.format != "PNG" for image in images):
            warnings.warn(
                "The server sent non-PNG images, which keep their settings only in EXIF. "
                "For PNGs with infotext call client.set_options(samples_format='png').",
                stacklevel=3,
            )
        infotexts = list(info.get("infotexts") or [])[: len(images)]
        return cls(
            images=images,
            seeds=[int(s) for s in seeds[: len(images)]],
            info=info,
            infotexts=infotexts,
            parameters=dict(body.get("parameters") or {}),
            png=pngs,
            interrupted=False,
        )

    @property
    def image(self):
        """The first image (most calls make just one)."""
        return self.images[0]

    @property
    def is_placeholder(self) -> bool:
        """True when the images come from the kit's offline preview engine, not a real model."""
        return str(self.info.get("sd_model_name") or "").startswith(PLACEHOLDER_MODEL)

    def settings(self, index: int = 0) -> dict[str, str]:
        """The parsed infotext of image ``index`` (Prompt, Steps, Sampler, Seed, Size-1, ...)."""
        return parse_infotext(self.infotexts[index]) if index < len(self.infotexts) else {}

    def save(self, directory: str | Path, prefix: str = "") -> list[Path]:
        """Write every image as a PNG that keeps A1111's ``parameters`` text; returns the paths.

        Files are never overwritten: numbering continues after the files already there.

        >>> gen.save("outputs/first-steps")   # doctest: +SKIP
        [PosixPath('outputs/first-steps/00000-1234.png')]
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        number = len(list(directory.glob(f"{prefix}*.png")))
        paths = []
        for i, image in enumerate(self.images):
            infotext = self.infotexts[i] if i < len(self.infotexts) else None
            raw = self.png[i] if i < len(self.png) and image.format == "PNG" else png_bytes(image, infotext)
            while True:
                path = directory / f"{prefix}{number:05d}-{self.seeds[i]}.png"
                number += 1
                if not path.exists():
                    break
            path.write_bytes(raw)
            paths.append(path)
        return paths

    def __repr__(self) -> str:
        kind = ", PLACEHOLDER images (offline preview engine)" if self.is_placeholder else ""
        stopped = ", interrupted" if self.interrupted else ""
        size = f"{self.images[0].width}x{self.images[0].height}" if self.images else "-"
        return f"<Generation {len(self.images)} image(s) {size}, seeds={self.seeds}{kind}{stopped}>"

    def _repr_html_(self) -> str:
        # Shown when a notebook cell ends with a Generation: thumbnails plus the honest label.
        from html import escape

        label = "<b style='color:#b00'>Placeholder images from the kit's offline preview engine</b><br>" if self.is_placeholder else ""
        thumbs = "".join(
            f"<figure style='display:inline-block;margin:4px'><img width=160 src='data:image/png;base64,"
            f"{base64.b64encode(self.png[i] if i < len(self.png) else png_bytes(img, None)).decode()}'>"
            f"<figcaption>seed {self.seeds[i]}</figcaption></figure>"
            for i, img in enumerate(self.images)
        )
        return f"<div>{label}{thumbs}<br><small>{escape(repr(self))}</small></div>"

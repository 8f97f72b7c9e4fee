"""``Generation``: the result of one txt2img call, with decoded images and the real seeds.

Three traps of A1111's answer are handled here once: ``info`` is JSON inside a string (parse it
again); ``parameters["seed"]`` echoes the request (often -1), the real seeds are in ``info``; and with
``save_images`` a grid may come first (``info["index_of_first_image"]``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import KitError
from .images import ImageDataError, encode_b64, load_pixels, open_b64
from .infotext import png_bytes

# The kit's own server marks its images so no placeholder is ever taken for a real result.
PLACEHOLDER_MODEL = "offline-preview"

# The most pixels one image from a server may have (room for upscalers); a PNG that claims more is
# refused before it is decoded. Raise it for larger images, e.g. to 16384 * 16384.
MAX_IMAGE_PIXELS = 8192 * 8192

NOT_A1111 = "Check that SD_URL points at A1111 started with --api (or a compatible server such as `make serve`)."
CUT_OFF = ("The reply was probably cut off or altered on the way: check the server's console/log and the "
           "network or proxy between you, then try again.")
_PIXELS_FIX = ("If you asked for an image this large, raise the client's limit, e.g. "
               "helpers.generation.MAX_IMAGE_PIXELS = 16384 * 16384; otherwise the server sent something it "
               "should not (check SD_URL).")


class ResponseError(KitError, ValueError):
    """The server's answer could not be read (bad base64, not an image, wrong types, no info)."""

    def __init__(self, message: str, fix: str = NOT_A1111, partial: Generation | None = None):
        super().__init__(message, fix)
        self.partial = partial  # a Generation with the answer's good images, or None when none were good


def _kind(value) -> str:
    """``'x'`` for short strings and numbers, the type name otherwise: for error messages."""
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 20):
        return repr(value)
    return type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_image_b64(data: str, what: str = "an image in the response"):
    """Decode one base64 image to ``(PIL image, its bytes)``; ResponseError unless readable and within MAX_IMAGE_PIXELS.

    >>> decode_image_b64("%%%")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    helpers.generation.ResponseError: an image in the response is not valid base64
    Fix: The reply was probably cut off or altered on the way: ...
    """
    if not isinstance(data, str):
        raise ResponseError(f"{what} is {type(data).__name__}, not a base64 string")
    try:
        image, raw = open_b64(data, MAX_IMAGE_PIXELS)
        return load_pixels(image, raw), raw
    except ImageDataError as err:
        if err.kind != "too-large":
            raise ResponseError(f"{what} {err.message}", fix=CUT_OFF) from None
        # No size: above twice PIL's own limit, which must be raised too.
        fix = _PIXELS_FIX if err.size else _PIXELS_FIX.replace(
            "raise the client's limit", "raise PIL.Image.MAX_IMAGE_PIXELS and the client's limit")
        raise ResponseError(f"{what} {err.message} (helpers.generation.MAX_IMAGE_PIXELS)", fix=fix) from None


def _read_info(info) -> dict[str, Any]:
    """``info`` is JSON inside a string (A1111) or already an object; anything else is refused."""
    if info is None:
        return {}  # absent: the seed check says what that means for the images
    if isinstance(info, dict):
        return dict(info)
    if not isinstance(info, str):
        raise ResponseError(f"'info' is {type(info).__name__}, not a JSON object string")
    try:
        info = json.loads(info)
    except (ValueError, RecursionError):
        raise ResponseError(f"'info' is not valid JSON ({info[:40]!r})", fix=CUT_OFF) from None
    if not isinstance(info, dict):
        kind = "null" if info is None else {list: "list", str: "string"}.get(type(info), type(info).__name__)
        raise ResponseError(f"'info' is a JSON {kind}, not an object")
    return info


def _list_in(info: dict[str, Any], key: str, ok, items: str, item: str, describe=lambda v: type(v).__name__) -> list:
    """``info[key]``, a list whose every value passes ``ok`` ([] when absent), else ResponseError naming it."""
    values = info.get(key)
    if values is not None and not isinstance(values, list):
        raise ResponseError(f"'{key}' is {type(values).__name__}, not a list of {items}")
    for i, value in enumerate(values or []):
        if not ok(value):
            raise ResponseError(f"{key}[{i}] is {describe(value)}, not {item}")
    return values or []


def _read_seeds(info: dict[str, Any], count: int) -> list[int]:
    """The real seed of each of ``count`` images: ``all_seeds``, else ``seed``, ``seed + 1``, ..."""
    seeds = list(_list_in(info, "all_seeds", _is_int, "seeds", "a whole number", _kind))
    seed = info.get("seed")
    if seed is not None and not _is_int(seed):
        raise ResponseError(f"'seed' is {_kind(seed)}, not a whole number")
    if count and len(seeds) < count:
        if seed is None:
            raise ResponseError("the reply's 'info' has no seeds, so the images cannot be reproduced")
        if not seeds:
            seeds = [seed + i for i in range(count)]
    return seeds


@dataclass
class Generation:
    """Images and metadata of one txt2img call."""

    images: list  # PIL images, grid excluded, one per seed
    seeds: list[int]  # the real seed of each image (never -1)
    info: dict[str, Any]  # the parsed ``info`` (A1111's keys: all_seeds, infotexts, sd_model_name, ...)
    infotexts: list[str]  # the ``parameters`` text stored in each image
    parameters: dict[str, Any]  # the request as the server echoed it, with its defaults filled in
    png: list[bytes] = field(default_factory=list, repr=False)  # the images' bytes as received
    interrupted: bool = False  # stopped early: the images may be unfinished

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Generation:
        """Build a Generation from A1111's JSON body; ResponseError names a wrong field (``err.partial``: the
        good images when only some are bad).

        >>> Generation.from_response({"images": [], "info": "[1, 2]"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        helpers.generation.ResponseError: 'info' is a JSON list, not an object
        Fix: Check that SD_URL points at A1111 started with --api ...
        """
        if not isinstance(body, dict):
            raise ResponseError(f"the reply is {type(body).__name__}, not an object with 'images' and 'info'")
        if "images" not in body:
            raise ResponseError("the reply has no 'images' list")
        encoded = body["images"]
        if not isinstance(encoded, list):
            raise ResponseError(f"'images' is {type(encoded).__name__}, not a list")
        info = _read_info(body.get("info"))
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise ResponseError(f"'parameters' is {type(parameters).__name__}, not an object")

        first = info.get("index_of_first_image", 0) or 0
        if not _is_int(first) or not 0 <= first <= len(encoded):
            raise ResponseError(f"'index_of_first_image' is {_kind(first)}, not an index into the "
                                f"{len(encoded)} images")
        encoded = encoded[first:]
        seeds = _read_seeds(info, len(encoded))
        # Extra images after the samples (e.g. inpainting masks) have no seed of their own.
        encoded = encoded[: len(seeds)] if seeds else encoded
        infotexts = _list_in(info, "infotexts", lambda text: isinstance(text, str), "strings", "a string")

        kept, problems = [], []
        for i, data in enumerate(encoded):
            try:
                kept.append((i, *decode_image_b64(data, what=f"images[{i + first}]")))
            except ResponseError as err:
                problems.append(err)
        generation = cls(images=[image for _, image, _ in kept], seeds=[seeds[i] for i, _, _ in kept], info=info,
                         infotexts=[infotexts[i] for i, _, _ in kept if i < len(infotexts)],
                         parameters=dict(parameters or {}), png=[raw for _, _, raw in kept])
        if problems:
            more = f" (and {len(problems) - 1} more bad image(s))" if len(problems) > 1 else ""
            kept_text = f"; {len(kept)} good image(s) kept" if kept else ""
            raise ResponseError(f"{problems[0]}{more}{kept_text}", fix=problems[0].fix,
                                partial=generation if kept else None)
        if any(image.format != "PNG" for image in generation.images):
            warnings.warn("The server sent non-PNG images, which keep their settings only in EXIF. For PNGs "
                          "with infotext call client.set_options(samples_format='png').", stacklevel=3)
        return generation

    @property
    def image(self):
        """The first image (most calls make just one)."""
        return self.images[0]

    @property
    def is_placeholder(self) -> bool:
        """True when the images come from the kit's offline preview engine, not a real model."""
        return str(self.info.get("sd_model_name") or "").startswith(PLACEHOLDER_MODEL)

    def png_data(self, index: int) -> bytes:
        """Image ``index`` as PNG bytes with its infotext (the bytes as received when the server sent a PNG)."""
        if index < len(self.png) and self.images[index].format == "PNG":
            return self.png[index]
        return png_bytes(self.images[index], self.infotexts[index] if index < len(self.infotexts) else None)

    def save(self, directory: str | Path) -> list[Path]:
        """Write every image as a PNG that keeps its infotext, never overwriting a file; returns the paths.

        >>> gen.save("outputs/first-steps")   # doctest: +SKIP
        [PosixPath('outputs/first-steps/00000-1234.png')]
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        number = len(list(directory.glob("*.png")))
        paths = []
        for i in range(len(self.images)):
            while True:
                path = directory / f"{number:05d}-{self.seeds[i]}.png"
                number += 1
                if not path.exists():
                    break
            path.write_bytes(self.png_data(i))
            paths.append(path)
        return paths

    def __repr__(self) -> str:
        kind = ", PLACEHOLDER images (offline preview engine)" if self.is_placeholder else ""
        stopped = ", interrupted" if self.interrupted else ""
        size = f"{self.images[0].width}x{self.images[0].height}" if self.images else "-"
        return f"<Generation {len(self.images)} image(s) {size}, seeds={self.seeds}{kind}{stopped}>"

    def _repr_html_(self) -> str:  # a notebook cell ending with a Generation: thumbnails, honest label
        from html import escape

        label = ("<b style='color:#b00'>Placeholder images from the kit's offline preview engine</b><br>"
                 if self.is_placeholder else "")
        thumbs = "".join(f"<figure style='display:inline-block;margin:4px'><img width=160 src='data:image/png;base64,"
                         f"{encode_b64(self.png_data(i))}'><figcaption>seed {self.seeds[i]}</figcaption></figure>"
                         for i in range(len(self.images)))
        return f"<div>{label}{thumbs}<br><small>{escape(repr(self))}</small></div>"

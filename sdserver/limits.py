"""What one request may cost the server, and the checks that keep a shared server answering.

A1111 accepts any request and fails later (out of memory, a frozen GPU, a 500). The kit's server is
often shared by a class, so it refuses, up front and with a 422, what would make it unusable for
everyone else. Each refusal names the limit, what the request asked for, and the flag that changes
it (for an instructor's own server):

| flag | default | what it bounds |
|---|---|---|
| ``--max-images`` | 64 | images per request (batch_size x n_iter) |
| ``--max-megapixels`` | 16 | pixels of all the images of a request (memory: they are all returned) |
| ``--max-cost`` | 800 | megapixel-steps: width x height x images x steps, hires second pass included (time) |
| ``--max-prompt-chars`` | 10000 | characters of each prompt, negative prompt, hires prompt and infotext |
| ``--max-decode-megapixels`` | 16 | pixels of each image a client sends (4096x4096), checked before decoding |
| ``--max-body-mb`` | 50 | bytes of a request body (base64 images included), checked while it arrives |

One megapixel is 1024x1024 pixels here, so the defaults read easily: 8 images of 1024x1024 with 50
steps cost 400 megapixel-steps; 64 images of 512x512 (or 16 of 1024x1024) are 16 megapixels.

Example:
    >>> from sdserver.models import Txt2ImgRequest
    >>> request_cost(Txt2ImgRequest(width=1024, height=1024, batch_size=8, steps=50))
    (8, 8.0, 400.0)
    >>> check_request_cost(Txt2ImgRequest(width=2048, height=2048, batch_size=16, n_iter=100, steps=1), Limits())
    Traceback (most recent call last):
    ...
    fastapi.exceptions.RequestValidationError: ...
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

MEGAPIXEL = 1024 * 1024
# The seeds torch.Generator.manual_seed accepts (A1111 hands its seeds to torch as they are).
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class Limits:
    """The server's limits per request (see the module docstring for what each bounds).

    >>> Limits(max_images=8).max_images
    8
    """

    max_cost: float = 800  # megapixel-steps
    max_images: int = 64
    max_megapixels: float = 16
    max_prompt_chars: int = 10_000
    max_decode_megapixels: float = 16
    max_body_mb: float = 50

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number (got {value!r}); flag --{name.replace('_', '-')}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1_000_000)

    def as_flags(self) -> dict[str, Any]:
        """The limits as GET /cmd-flags shows them (so that a client can read them)."""
        return asdict(self)


# --- 422s in FastAPI's shape, so that a client sees which field and why ---------------------------


def limit_error(field: str, message: str):
    """A 422 ``{"detail": [{"loc": ["body", field], "msg": message, ...}]}`` to raise."""
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError([{"type": "limit_exceeded", "loc": ("body", field), "msg": message,
                                    "input": None}])


def _mp(pixels: float) -> str:
    return f"{pixels / MEGAPIXEL:.4g}"


# --- txt2img: text, seeds, cost --------------------------------------------------------------------

TEXT_FIELDS = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt", "infotext")


def check_text_lengths(req, limits: Limits) -> None:
    """Each prompt-like field holds at most ``max_prompt_chars`` characters (CLIP reads 75 tokens per
    chunk: 10000 characters is far more than any prompt needs, and keeps the reply small)."""
    for field in TEXT_FIELDS:
        text = getattr(req, field, None)
        if isinstance(text, str) and len(text) > limits.max_prompt_chars:
            raise limit_error(field, f"{field} has {len(text)} characters; the server accepts at most "
                                     f"{limits.max_prompt_chars}. Shorten it, or start the server with "
                                     "--max-prompt-chars N")


def request_cost(req) -> tuple[int, float, float]:
    """(images, megapixels of all returned images, megapixel-steps) of a txt2img request.

    With hires fix each image is first drawn at width x height, then again at the target size with
    ``hr_second_pass_steps`` steps (0: as many as the first pass, as in A1111).
    """
    images = req.value("batch_size") * req.value("n_iter")
    width, height, steps = req.value("width"), req.value("height"), req.value("steps")
    per_image = width * height * steps
    out_pixels = width * height
    if req.value("enable_hr"):
        target_w, target_h = req.hires_target_size()
        per_image += target_w * target_h * (req.value("hr_second_pass_steps") or steps)
        out_pixels = target_w * target_h
    return images, images * out_pixels / MEGAPIXEL, images * per_image / MEGAPIXEL


def check_request_cost(req, limits: Limits) -> None:
    """Refuse a request whose images, pixels or total work exceed the limits (a 422 naming the flag)."""
    images, megapixels, cost = request_cost(req)
    size = f"{req.value('width')}x{req.value('height')}"
    asked = f"{req.value('batch_size')} x {req.value('n_iter')} (batch_size x n_iter)"
    if images > limits.max_images:
        raise limit_error("n_iter", f"this request asks for {images} images = {asked}; the server makes at most "
                                    f"{limits.max_images} per request. Ask for fewer (and loop in your code), or "
                                    "start the server with --max-images N")
    if megapixels > limits.max_megapixels:
        shown = size if not req.value("enable_hr") else "the hires size"
        raise limit_error("width", f"this request asks for {images} images of {shown}"
                                   f" = {megapixels:.4g} megapixels (1 megapixel = 1024x1024 pixels); the server "
                                   f"returns at most {limits.max_megapixels:g} megapixels per request. Ask for fewer "
                                   "or smaller images, or start the server with --max-megapixels N")
    if cost > limits.max_cost:
        hires = " plus the hires second pass" if req.value("enable_hr") else ""
        raise limit_error("steps", f"this request costs {cost:.4g} megapixel-steps ({images} images of {size} x "
                                   f"{req.value('steps')} steps{hires}; 1 megapixel = 1024x1024 pixels); the server "
                                   f"allows at most {limits.max_cost:g} per request. Use fewer steps, fewer or "
                                   "smaller images, or start the server with --max-cost N")


def check_seeds(req, count: int) -> None:
    """Every seed of the request (seed + i for i < count) must be one torch accepts."""
    for field in ("seed", "subseed"):
        seed = req.value(field)
        if seed != -1 and seed + count - 1 > SEED_MAX:
            raise limit_error(field, f"{field} {seed} + {count - 1} (one more per image) is larger than "
                                     f"{SEED_MAX}; seeds go from {SEED_MIN} to {SEED_MAX} (-1: random)")


# --- text that cannot be encoded -------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_problem(value: Any, where: str = "") -> str | None:
    """Describe the first lone surrogate in ``value`` (a string, or lists/dicts of them), else None.

    JSON may carry ``"\\ud83d"`` (half of an emoji's UTF-16 pair); Python reads it as a character
    that no UTF-8 text can hold, so the PNG chunk and the JSON reply could not be written.

    >>> surrogate_problem({"a": ["ok", "\\ud83d lighthouse"]})  # doctest: +ELLIPSIS
    "['a'][1] contains a lone surrogate U+D83D at position 0 (half of a UTF-16 pair, e.g. a cut emoji), ..."
    >>> surrogate_problem("\\U0001F30A lighthouse") is None
    True
    """
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found is None:
            return None
        return (f"{where or 'text'} contains a lone surrogate U+{ord(found.group()):04X} at position {found.start()} "
                "(half of a UTF-16 pair, e.g. a cut emoji), which is not valid Unicode text: send the whole "
                "character, or remove it")
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        problem = surrogate_problem(key, f"{where}[key {key!r}]") if isinstance(key, str) else None
        problem = problem or surrogate_problem(item, f"{where}[{key!r}]")
        if problem:
            return problem
    return None


# --- what error messages may say -------------------------------------------------------------------

# Absolute paths (POSIX, home-relative or Windows), which a client has no business seeing. The
# server's own URL paths (/sdapi/...) and Hugging Face ids (owner/name) are left alone.
_PATH = re.compile(r"(?<![\w.:/-])(?:~[\\/]|/(?!sdapi/)(?=[\w.~-])|[A-Za-z]:[\\/])[^\s'\",;:)]*")


def hide_paths(text: str) -> str:
    """Replace file paths in an error message by ``<path on the server>``.

    >>> hide_paths("could not load /home/ann/.cache/huggingface/hub/x: OSError")
    'could not load <path on the server>: OSError'
    >>> hide_paths("model 'stabilityai/sd-turbo' not found; see GET /sdapi/v1/sd-models")
    "model 'stabilityai/sd-turbo' not found; see GET /sdapi/v1/sd-models"
    """
    return _PATH.sub("<path on the server>", text)

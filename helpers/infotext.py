"""A1111's "infotext" in the ``parameters`` chunk of every PNG it writes: the prompt, an optional
``Negative prompt:`` line, then one line of ``Key: value`` pairs. The one writer and parser of the client
and the kit's server, so they cannot drift.

    >>> text = format_infotext("a cat", "blurry", {"Steps": 20, "Seed": 1, "Size": "512x512"})
    >>> print(text)
    a cat
    Negative prompt: blurry
    Steps: 20, Seed: 1, Size: 512x512
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

# A1111's own pattern (modules/infotext_utils.py), so pairs split exactly as there: a key is a word
# followed by words, spaces, dashes or slashes; a value is a JSON string or anything up to the next comma.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")

PNG_KEY = "parameters"

# Keys A1111 fills in when an infotext does not mention them (infotext_utils.py).
_PARSE_DEFAULTS = {"Clip skip": "1", "Hires resize-1": "0", "Hires resize-2": "0", "Hires sampler": "Use same sampler",
                   "Hires checkpoint": "Use same checkpoint", "RNG": "GPU", "Schedule type": "Automatic"}


def quote(value: Any) -> str:
    """Write one value as A1111 does: JSON-quoted only if it holds ``,``, ``:`` or a newline.

    >>> quote("Euler a"), quote("a, b")
    ('Euler a', '"a, b"')
    """
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def unquote(text: str) -> str:
    """Undo :func:`quote`; text that is not a valid JSON string is returned unchanged."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_infotext(prompt: str, negative_prompt: str = "", params: dict[str, Any] | None = None) -> str:
    """The infotext of one image in A1111's layout: ``params`` in order, None values left out, a pair whose
    key equals its value written as the bare key (A1111's rule).

    >>> format_infotext("a fox", params={"Steps": 4, "Sampler": "Euler", "Tiling": None})
    'a fox\\nSteps: 4, Sampler: Euler'
    """
    pairs = ", ".join(key if key == value else f"{key}: {quote(value)}"
                      for key, value in (params or {}).items() if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{pairs}".strip()


def parse_infotext(text: str) -> dict[str, str]:
    """Parse an infotext as A1111's ``/sdapi/v1/png-info`` does: ``Prompt``, ``Negative prompt`` and each pair
    as text, ``512x512`` values split into ``Key-1`` and ``Key-2``, keys A1111 assumes when missing filled in.

    >>> p = parse_infotext('a cat\\nSteps: 20, Sampler: Euler a, Size: 512x768')
    >>> p["Prompt"], p["Steps"], p["Size-1"], p["Size-2"]
    ('a cat', '20', '512', '768')
    """
    *lines, last = text.strip().split("\n")
    # The last line only counts as parameters if it holds at least 3 pairs (A1111's rule).
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)

    result = {"Prompt": "\n".join(prompt_lines), "Negative prompt": "\n".join(negative_lines)}
    for key, value in _PARAM.findall(last):
        value = unquote(value)
        size = _IMAGE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    for key, value in _PARSE_DEFAULTS.items():
        result.setdefault(key, value)
    return result


# Infotext key -> (txt2img field, type). Used to turn a saved image back into a request.
_FIELDS = {"Prompt": ("prompt", str), "Negative prompt": ("negative_prompt", str), "Steps": ("steps", int),
           "Sampler": ("sampler_name", str), "Schedule type": ("scheduler", str), "CFG scale": ("cfg_scale", float),
           "Seed": ("seed", int), "Size-1": ("width", int), "Size-2": ("height", int),
           "Variation seed": ("subseed", int), "Variation seed strength": ("subseed_strength", float),
           "Denoising strength": ("denoising_strength", float)}


def infotext_to_fields(parsed: dict[str, str] | str) -> dict[str, Any]:
    """The txt2img fields that reproduce an image, from its infotext (text or parsed).

    >>> infotext_to_fields("a cat\\nSteps: 20, Sampler: Euler a, Seed: 7, Size: 512x768")["height"]
    768
    """
    if isinstance(parsed, str):
        parsed = parse_infotext(parsed)
    fields: dict[str, Any] = {}
    for key, (field, kind) in _FIELDS.items():
        if key in parsed and parsed[key] != "":
            try:
                fields[field] = kind(parsed[key])
            except ValueError:
                continue  # a value we cannot read is left for the server's default
        elif key in ("Prompt", "Negative prompt"):
            fields[field] = ""
    clip_skip = parsed.get("Clip skip", "1")
    if clip_skip.isdigit() and int(clip_skip) > 1:
        fields["override_settings"] = {"CLIP_stop_at_last_layers": int(clip_skip)}
    return fields


def png_bytes(image, infotext: str | None) -> bytes:
    """Encode a PIL image as PNG bytes carrying ``infotext`` in its ``parameters`` chunk.

    >>> from PIL import Image
    >>> read_infotext(png_bytes(Image.new("RGB", (8, 8)), "a cat\\nSteps: 1, Seed: 2, Size: 8x8"))[:5]
    'a cat'
    """
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if infotext:
        meta.add_text(PNG_KEY, infotext)  # tEXt as A1111 writes it; Pillow makes it iTXt beyond Latin-1
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return buffer.getvalue()


def read_infotext(source) -> str | None:
    """Read the ``parameters`` text from a PNG (a path, bytes, or a PIL image); None if absent.

    >>> read_infotext("outputs/cand-00.png")  # doctest: +SKIP
    'a cat\\nSteps: 20, ...'
    """
    from PIL import Image

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    if isinstance(source, (str, Path, io.BytesIO)):
        with Image.open(source) as image:
            return image.info.get(PNG_KEY)
    return getattr(source, "info", {}).get(PNG_KEY)

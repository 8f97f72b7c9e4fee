"""The writer of A1111's "infotext" (the ``parameters`` text in every PNG the server makes).

The reader is the client's, ``helpers/infotext.py``; tests/test_infotext.py writes with this module and reads
with that one, so the two cannot drift apart.

    >>> print(format_infotext("a cat", "blurry", {"Steps": 20, "Seed": 1, "Size": "512x512"}))
    a cat
    Negative prompt: blurry
    Steps: 20, Seed: 1, Size: 512x512
"""

from __future__ import annotations

import json
from typing import Any


def quote(value: Any) -> str:
    """Write one value as A1111 does: JSON-quoted only if it holds ``,``, ``:`` or a newline
    (``helpers.infotext.unquote`` undoes it).

    >>> quote("Euler a"), quote("a, b")
    ('Euler a', '"a, b"')
    """
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


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

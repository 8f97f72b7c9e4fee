"""The start every course notebook shares, in one call: a client, an output folder, and the notes
that keep a placeholder image or a meaningless score from being taken for a real result.

Example (the setup cell of notebook 04):
    >>> from helpers.notebook import setup
    >>> nb = setup("04")                                                # doctest: +SKIP
    <A1111Client http://127.0.0.1:7860 ...>
    Placeholder images (kit's preview server): True
    This notebook writes to outputs/04
    >>> client, out_dir, NOTE, SMALL = nb.client, nb.out_dir, nb.note, nb.small   # doctest: +SKIP

Scores get the same care once a CLIP scorer is loaded:
    >>> caveat = ScoreCaveat(scorer)        # doctest: +SKIP
    >>> caveat()                            # prints a warning when the scorer is the tiny test model   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import connect_a1111
from .config import Settings, load_settings
from .plots import PLACEHOLDER_NOTE

MEANINGLESS = "TINY RANDOM TEST MODEL — scores are meaningless"


@dataclass
class NotebookSetup:
    """What :func:`setup` made: ``client`` (an A1111Client, or None), ``out_dir`` (the notebook's
    output folder), ``note`` (a line for figure titles: says the images are placeholders, or is
    ""), ``small`` (txt2img fields for quick images: 256x256 and the loaded model's quick step
    count) and ``settings`` (helpers.config's Settings)."""

    out_dir: Path
    settings: Settings
    client: Any = None
    note: str = ""
    small: dict = field(default_factory=dict)


def placeholder_note(client) -> str:
    """A line for figure titles when ``client`` draws placeholders ("" for a real model).

    It starts with a line break, so ``title=f"Same seed{NOTE}"`` puts it under the title.
    """
    return f"\n{PLACEHOLDER_NOTE}" if getattr(client, "placeholder", False) else ""


def setup(name: str, a1111: bool = True) -> NotebookSetup:
    """Make the output folder ``<OUTPUT_DIR>/<name>`` and, with ``a1111``, connect to A1111
    (``connect_a1111()``: the kit starts its own server when none answers); say what it uses.

    >>> nb = setup("02", a1111=False)      # doctest: +SKIP
    This notebook writes to outputs/02
    """
    settings = load_settings()
    out_dir = settings.output_dir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    made = NotebookSetup(out_dir=out_dir, settings=settings)
    if a1111:
        made.client = connect_a1111()
        print(made.client)
        print("Placeholder images (kit's preview server):", made.client.placeholder)
        made.note = placeholder_note(made.client)
        # Small and quick. connect_a1111() looked at the loaded model: client.hints says which steps suit
        # it (e.g. 8 for the preview, 10 for SD 1.5, 1 for sd-turbo); use client.hints.size on a GPU.
        made.small = {"width": 256, "height": 256, "steps": made.client.hints.quick_steps}
    print("This notebook writes to", out_dir)
    return made


class ScoreCaveat:
    """What to say next to CLIP scores: nothing for real weights, a warning for the tiny random
    test model (``scorer.meaningful`` is False), whose numbers must never be read as results.

    ``caveat.title`` is a line for figure titles ("" for real weights); ``caveat()`` prints the
    warning (nothing for real weights).
    """

    def __init__(self, scorer):
        self.meaningful = bool(scorer.meaningful)
        self.title = "" if self.meaningful else f"\n{MEANINGLESS}"

    def __call__(self) -> None:
        if not self.meaningful:
            print(f"!! {MEANINGLESS} (no real CLIP weights here; run `make models` online for real scores)")

"""The start of every course notebook in one call: a client, an output folder, and the notes that keep a
placeholder image or a meaningless score from being taken for a real result.

Example (the setup cell of notebook 04):
    >>> nb = setup("04")                                                # doctest: +SKIP
    <A1111Client http://127.0.0.1:7860 ...>
    Placeholder images (kit's preview server): True
    This notebook writes to outputs/04
    >>> client, out_dir, NOTE, SMALL = nb.client, nb.out_dir, nb.note, nb.small   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.backends import connect_a1111
from helpers.config import Settings, load_settings

# What placeholder_note() adds to a figure's title when the images come from the preview engine.
PLACEHOLDER_NOTE = "PLACEHOLDER images from the kit's offline preview engine, not a real model"

MEANINGLESS = "TINY RANDOM TEST MODEL — scores are meaningless"


@dataclass
class NotebookSetup:
    """What :func:`setup` made. ``note`` is a line for figure titles ("" for a real model);
    ``small`` holds txt2img fields for quick images (256x256, the model's quick step count)."""

    out_dir: Path
    settings: Settings
    client: Any = None
    note: str = ""
    small: dict = field(default_factory=dict)


def placeholder_note(client) -> str:
    """A line for figure titles when ``client`` draws placeholders ("" for a real model).

    >>> plt.title(f"Same seed{placeholder_note(client)}")   # the note goes under the title   # doctest: +SKIP
    """
    return f"\n{PLACEHOLDER_NOTE}" if getattr(client, "placeholder", False) else ""


def setup(name: str, a1111: bool = True) -> NotebookSetup:
    """Make the output folder ``<OUTPUT_DIR>/<name>`` and, with ``a1111``, connect to A1111 (or the kit's
    own server); say what it uses.

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
        made.small = {"width": 256, "height": 256, "steps": made.client.hints.quick_steps}
    print("This notebook writes to", out_dir)
    return made


class ScoreCaveat:
    """What to say next to CLIP scores: nothing for real weights, a warning for the tiny random test model.
    ``.title`` is a line for figure titles.

    >>> ScoreCaveat(scorer)()   # prints the warning, or nothing   # doctest: +SKIP
    """

    def __init__(self, scorer):
        self.meaningful = bool(scorer.meaningful)
        self.title = "" if self.meaningful else f"\n{MEANINGLESS}"

    def __call__(self) -> None:
        if not self.meaningful:
            print(f"!! {MEANINGLESS} (no real CLIP weights here; run `make models` online for real scores)")

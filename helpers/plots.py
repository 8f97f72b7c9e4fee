"""Pictures of results: image grids and parameter sweeps (matplotlib).

Example:
    >>> fig = image_grid(gen.images, labels=[f"seed {s}" for s in gen.seeds])   # doctest: +SKIP
    >>> fig, gens = sweep(client, "a lighthouse at dusk", "steps", [1, 5, 10, 20], seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

PLACEHOLDER_NOTE = "PLACEHOLDER images from the kit's offline preview engine, not a real model"


def image_grid(images: Sequence, labels: Sequence[str] | None = None, ncols: int | None = None,
               title: str | None = None, size: float = 3.0):
    """Show images in a grid with a label under each; returns the matplotlib Figure.

    >>> from PIL import Image
    >>> fig = image_grid([Image.new("RGB", (64, 64), c) for c in ("red", "blue")], labels=["a", "b"])
    >>> len(fig.axes)
    2
    """
    import matplotlib.pyplot as plt
    if not images:
        raise ValueError("image_grid needs at least one image")
    ncols = ncols or min(len(images), 5)
    nrows = math.ceil(len(images) / ncols)
    # "constrained" layout leaves room for multi-line titles (tight_layout does not)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.5 if title else 0)),
                             squeeze=False, layout="constrained")
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            fig.delaxes(ax)
            continue
        ax.axis("off")
        ax.imshow(images[index])
        if labels is not None and index < len(labels):
            ax.set_title(str(labels[index]), fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def sweep(client, prompt: str, field: str, values: Sequence[Any], *, ncols: int | None = None,
          **fields) -> tuple[Any, list]:
    """Generate ``prompt`` once per value of ``field`` (all else fixed, ``seed`` too) and show a grid;
    returns ``(figure, generations)``. Each label shows the seconds it took, so the cost is visible.

    >>> fig, gens = sweep(client, "a red fox", "cfg_scale", [1, 4, 7, 12], seed=3, steps=20)   # doctest: +SKIP
    """
    if field in fields:
        raise ValueError(f"'{field}' is the swept field; do not pass it in **fields as well")
    fields.setdefault("seed", 1)
    generations, labels = [], []
    for value in values:
        started = time.perf_counter()
        generations.append(client.txt2img(prompt, **{field: value}, **fields))
        labels.append(f"{field}={value}  ({time.perf_counter() - started:.1f} s)")
    title = f"{prompt!r}, seed {fields['seed']}"
    if any(g.is_placeholder for g in generations):
        title += f"\n{PLACEHOLDER_NOTE}"
    return image_grid([g.images[0] for g in generations], labels=labels, ncols=ncols, title=title), generations

"""Pictures of results: an image grid with a label under each image (matplotlib).

    >>> fig = image_grid(gen.images, labels=[f"seed {s}" for s in gen.seeds])   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Sequence


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
            ax.set_title(str(labels[index]), fontsize=10, parse_math=False)  # a "$" in a prompt is no formula
    if title:
        fig.suptitle(title, parse_math=False)
    return fig


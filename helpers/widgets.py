"""Showing results to a person: text and image side by side.

``side_by_side`` returns plain HTML with the image embedded, so it shows in JupyterLab, survives
``nbconvert --to html`` and Moodle's HTML view, and needs no running kernel.
``Inspector`` (in helpers/inspector.py, importable from here) browses and rates a run's candidates.

Example:
    >>> from helpers.widgets import side_by_side
    >>> side_by_side("A red fox sleeps in the snow.", gen.image, score=0.31, prompt=gen.settings()["Prompt"])   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path


def image_data_uri(image, max_side: int = 512) -> str:
    """A ``data:image/png;base64,...`` URI of a PIL image or a path, shrunk to ``max_side`` pixels."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            image = opened.convert("RGB")
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def side_by_side_html(text: str, image, score: float | None = None, prompt: str | None = None,
                      title: str | None = None, placeholder: bool = False, max_side: int = 384,
                      score_note: str | None = None) -> str:
    """The HTML of :func:`side_by_side`, for writing into a report file."""
    rows = [f"<h4 style='margin:0 0 6px 0'>{escape(title)}</h4>" if title else ""]
    rows.append(f"<p style='white-space:pre-wrap;margin:0 0 8px 0'>{escape(str(text))}</p>")
    if prompt:
        rows.append(f"<p style='margin:0 0 8px 0'><b>Image prompt:</b> <code>{escape(prompt)}</code></p>")
    if score is not None:
        note = f" <span style='color:#b00'>({escape(score_note)})</span>" if score_note else ""
        rows.append(f"<p style='margin:0'><b>CLIP score:</b> {score:.3f}{note}</p>")
    if placeholder:
        rows.append("<p style='color:#b00;margin:8px 0 0 0'><b>Placeholder image</b> from the kit's offline "
                    "preview engine, not a real model.</p>")
    return (
        "<div style='display:flex;gap:16px;align-items:flex-start;border:1px solid #ccc;padding:8px;"
        "margin:4px 0;max-width:960px'>"
        f"<div style='flex:1;min-width:200px;font-family:sans-serif;font-size:14px'>{''.join(rows)}</div>"
        f"<img src='{image_data_uri(image, max_side)}' style='max-width:{max_side}px;flex:none' alt='generated image'>"
        "</div>"
    )


def side_by_side(text: str, image, score: float | None = None, prompt: str | None = None,
                 title: str | None = None, placeholder: bool = False, score_note: str | None = None):
    """Show a text next to an image (with an optional score and image prompt) in a notebook.

    ``score_note`` says what the score is, e.g. "cosine, ViT-B-32" or "test model: meaningless".
    Returns an ``IPython.display.HTML`` object: put it last in a cell, or pass it to ``display()``.
    """
    from IPython.display import HTML

    return HTML(side_by_side_html(text, image, score, prompt, title, placeholder, score_note=score_note))


def __getattr__(name: str):
    """``from helpers.widgets import Inspector`` works; the Inspector lives in helpers/inspector.py.

    It is imported on first use (the same as ``from .inspector import Inspector``) so that
    ``side_by_side`` and the HTML report stay light: ipywidgets takes a third of a second to import.
    """
    if name == "Inspector":
        from .inspector import Inspector

        return Inspector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

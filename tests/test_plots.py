"""Figures that show model-written text: an LLM's text or a prompt may hold "$", which matplotlib reads as
the start of a formula (two make math, a stray one is a ValueError when the figure is drawn)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from PIL import Image  # noqa: E402

from helpers.plots import image_grid  # noqa: E402


def test_labels_and_title_with_dollar_signs_are_drawn_as_text(tmp_path):
    # the second is what a tiny random LLM wrote: two "$" around text that is no formula
    labels = ["a $5 lamp", 'pDtoP$l"ingqit0zthe bs($V mLB&Fes6u=[}-;']
    fig = image_grid([Image.new("RGB", (16, 16))] * 2, labels=labels, title="from $3 to $4 (")
    fig.savefig(tmp_path / "grid.png")  # draws the text: a formula parse would raise here
    assert [ax.get_title() for ax in fig.axes] == labels

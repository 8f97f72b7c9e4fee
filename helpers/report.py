"""A static HTML report of a pipeline run: text, prompt, every candidate with its score.

Self-contained (thumbnails embedded), so it opens from any folder and can be uploaded.

Example:
    >>> write_report(run)          # or run.report()   # doctest: +SKIP
    PosixPath('outputs/runs/20261124-101500-lighthouse-storm/report.html')
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .display import card_html, text_side_html, write_page


def write_report(run, path: str | Path | None = None) -> Path:
    """Write the report of ``run`` to ``path`` (default: report.html in the run folder); returns the path."""
    cards = "".join(card_html(run, c) for c in run.candidates)
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in run.timings.items())
    body = (f"<h1>Pipeline run: {escape(run.user_input)}</h1>\n{text_side_html(run)}\n"
            f"<h2>Candidates ({len(run.candidates)}, mode {escape(run.mode)})</h2>{cards}\n"
            f"<p><small>Timings: {escape(timings)}. Folder: {escape(str(run.path))}</small></p>")
    return write_page(path or run.path / "report.html", f"Run {run.path.name}", body)

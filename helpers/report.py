"""A static HTML report of a pipeline run: text, prompt, every candidate with its score.

Self-contained (thumbnails embedded), so it opens from any folder and can be uploaded. It is
built from the pieces in helpers/display.py, which the Inspector's static export uses too.

Example:
    >>> from helpers.report import write_report
    >>> write_report(run)          # or run.report()   # doctest: +SKIP
    PosixPath('outputs/runs/20261124-101500-lighthouse-storm/report.html')
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .display import card_html, text_side_html, write_page

PAGE_STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto} figure{display:inline-block;"
              "margin:6px;padding:4px;text-align:center;vertical-align:top} figure.best{border:3px solid #2a2} "
              ".warn{color:#b00;font-weight:bold} code{background:#f4f4f4}")


def report_html(run) -> str:
    """The body of a run's report page."""
    cards = "".join(card_html(run, c) for c in run.candidates)
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in run.timings.items())
    return (f"<h1>Pipeline run: {escape(run.user_input)}</h1>\n{text_side_html(run)}\n"
            f"<h2>Candidates ({len(run.candidates)}, mode {escape(run.mode)})</h2>{cards}\n"
            f"<p><small>Timings: {escape(timings)}. Folder: {escape(str(run.path))}</small></p>")


def write_report(run, path: str | Path | None = None) -> Path:
    """Write the report of ``run`` (a PipelineRun) to ``path`` (default: report.html in the run
    folder) and return the path."""
    return write_page(path or run.path / "report.html", f"Run {run.path.name}", report_html(run), PAGE_STYLE)

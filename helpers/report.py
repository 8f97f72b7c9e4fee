"""A static HTML report of a pipeline run: text, prompt, every candidate with its score.

Self-contained (thumbnails embedded), so it opens from any folder and can be uploaded.

Example:
    >>> run.report()          # doctest: +SKIP
    PosixPath('outputs/runs/20261124-101500-lighthouse-storm/report.html')
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .widgets import image_data_uri


def report_html(run) -> str:
    """The HTML of a run's report."""
    best = run.best
    warnings = []
    if run.placeholder:
        warnings.append("The images are PLACEHOLDERS from the kit's offline preview engine, not a real model.")
    if run.scorer is None:
        warnings.append("The candidates are unscored: no CLIP weights were available (run `make models` while online).")
    elif not run.scorer.get("meaningful", True):
        warnings.append("The scores come from a tiny random test model and are MEANINGLESS.")
    cards = []
    for c in run.candidates:
        score = "unscored" if c.score is None else f"score {c.score:.3f}"
        mark = " style='border:3px solid #2a2'" if best is not None and c.index == best.index else ""
        image = image_data_uri(c.path, 256) if c.path.exists() else ""
        cards.append(f"<figure{mark}><img src='{image}' width=200 alt='candidate {c.index}'>"
                     f"<figcaption>#{c.index} seed {c.seed}<br>{score}, round {c.round}"
                     f"{' <b>best</b>' if best is not None and c.index == best.index else ''}</figcaption></figure>")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in run.timings.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run {escape(run.path.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} figure{{display:inline-block;margin:6px;
padding:4px;text-align:center}} .warn{{color:#b00;font-weight:bold}} code{{background:#f4f4f4}}</style></head>
<body><h1>Pipeline run: {escape(run.user_input)}</h1>
{''.join(f"<p class='warn'>{escape(w)}</p>" for w in warnings)}
<p><b>Status:</b> {escape(run.status)} {escape(run.message)}</p>
<h2>Text ({escape(run.text.get('source', '?'))})</h2><p>{escape(run.text.get('text', ''))}</p>
<h2>Image prompt ({escape(run.prompt.get('source', '?'))})</h2>
<p><code>{escape(run.prompt.get('prompt', ''))}</code><br>Negative: <code>{escape(run.prompt.get('negative_prompt', ''))}</code></p>
<h2>Candidates ({len(run.candidates)}, mode {escape(run.mode)})</h2>{''.join(cards)}
<p><small>Timings: {escape(timings)}. Folder: {escape(str(run.path))}</small></p></body></html>
"""


def write_report(run, path: Path) -> Path:
    """Write the report to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(run), encoding="utf-8")
    return path

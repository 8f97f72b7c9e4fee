"""A static HTML report of a pipeline run: text, prompt, every candidate with its score.

Self-contained (thumbnails embedded), so it opens from any folder and can be uploaded. The
pieces (warnings, text side, candidate cards) are shared with the Inspector's static export.

Example:
    >>> run.report()          # doctest: +SKIP
    PosixPath('outputs/runs/20261124-101500-lighthouse-storm/report.html')
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .widgets import image_data_uri

PAGE_STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto} figure{display:inline-block;"
              "margin:6px;padding:4px;text-align:center;vertical-align:top} figure.best{border:3px solid #2a2} "
              ".warn{color:#b00;font-weight:bold} code{background:#f4f4f4}")


def score_text(score: float | None) -> str:
    return "unscored" if score is None else f"{score:.3f}"


def run_warnings(run) -> list[str]:
    """What a viewer must know before trusting the images or the scores."""
    warnings = []
    if run.placeholder:
        warnings.append("PLACEHOLDER images from the kit's offline preview engine, not a real model.")
    if run.scorer is None:
        warnings.append("Unscored: no CLIP scores in this run (no CLIP weights were available).")
    elif not run.scorer.get("meaningful", True):
        warnings.append("Scores are MEANINGLESS: they come from a tiny random test model.")
    return warnings


def text_side_html(run) -> str:
    """The left side: keywords, text, image prompt, status and warnings of a run, as HTML."""
    from .prompts import ImagePrompt

    text, prompt = run.text, run.prompt or ImagePrompt("", "", "?")
    title = f" — <i>{escape(text['title'])}</i>" if text.get("title") else ""
    model = f", model {escape(text['model'])}" if text.get("model") else ""
    lines = [f"<p class='warn' style='color:#b00;font-weight:bold'>⚠ {escape(w)}</p>" for w in run_warnings(run)]
    lines += [
        f"<p><b>Keywords:</b> {escape(run.user_input)}</p>",
        f"<p><b>Text</b> (source: {escape(str(text.get('source', '?')))}{model}){title}<br>"
        f"<span style='white-space:pre-wrap'>{escape(text.get('text', ''))}</span></p>",
        f"<p><b>Image prompt</b> (source: {escape(prompt.source)}):<br><code>{escape(prompt.prompt)}</code></p>",
        f"<p><b>Negative prompt:</b> <code>{escape(prompt.negative_prompt)}</code></p>",
        f"<p><b>Status:</b> {escape(run.status)}"
        + (f" <small>({escape(run.message)})</small>" if run.message else "") + "</p>",
    ]
    return f"<div style='font-size:14px;line-height:1.35'>{''.join(lines)}</div>"


def card_html(run, candidate, record: dict | None = None) -> str:
    """One candidate of the static copy: embedded thumbnail, seed, score, best mark, rating and note."""
    best = run.best
    is_best = best is not None and candidate.index == best.index
    # Only files inside the run folder are read, so a report never embeds a file that a
    # hand-edited run.json points to elsewhere.
    image = f"<p class='warn'>{escape(candidate.image_problem())}</p>"
    if not candidate.image_problem():
        image = f"<img src='{image_data_uri(candidate.path, 256)}' width='200' alt='candidate {candidate.index}'>"
    rating = (f"rating <b>{escape(str(record['rating']))}</b> {escape(record.get('note', ''))}"
              if record else "not rated")
    return (f"<figure class='{'best' if is_best else ''}'>{image}<figcaption>#{candidate.index}"
            f"{' <b>★ best</b>' if is_best else ''}<br>seed {candidate.seed}, round {candidate.round}"
            f"<br>CLIP {escape(score_text(candidate.score))}<br>{rating}</figcaption></figure>")


def report_html(run) -> str:
    """The HTML of a run's report."""
    cards = "".join(card_html(run, c) for c in run.candidates)
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in run.timings.items())
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>Run {escape(run.path.name)}</title>"
            f"<style>{PAGE_STYLE}</style></head>\n<body><h1>Pipeline run: {escape(run.user_input)}</h1>\n"
            f"{text_side_html(run)}\n<h2>Candidates ({len(run.candidates)}, mode {escape(run.mode)})</h2>{cards}\n"
            f"<p><small>Timings: {escape(timings)}. Folder: {escape(str(run.path))}</small></p></body></html>\n")


def write_report(run, path: Path) -> Path:
    """Write the report to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(run), encoding="utf-8")
    return path

"""Showing results as HTML: text and image side by side, a run's static report, and the pieces of both.

Plain HTML with the images embedded, so it shows in JupyterLab, survives ``nbconvert --to html`` and
Moodle, and needs no kernel. The Inspector's static copy uses the same pieces.

Example:
    >>> side_by_side("A red fox sleeps in the snow.", gen.image, score=0.31)   # doctest: +SKIP
    >>> write_report(run)          # or run.report()                           # doctest: +SKIP
    >>> score_text(0.31234), score_text(None)
    ('0.312', 'unscored')
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .images import image_data_uri

PAGE_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto} section{border-top:2px solid #ccc}"
              "figure{display:inline-block;vertical-align:top;margin:6px;padding:4px;border:1px solid #ddd}"
              "figure.best{border:3px solid #2a2} .warn{color:#b00;font-weight:bold} code{background:#f4f4f4}")


def side_by_side_html(text: str, image, score: float | None = None, prompt: str | None = None,
                      title: str | None = None, placeholder: bool = False, max_side: int = 384,
                      score_note: str | None = None) -> str:
    """The HTML of :func:`side_by_side`, for a file."""
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
    return ("<div style='display:flex;gap:16px;align-items:flex-start;border:1px solid #ccc;padding:8px;"
            "margin:4px 0;max-width:960px'>"
            f"<div style='flex:1;min-width:200px;font-family:sans-serif;font-size:14px'>{''.join(rows)}</div>"
            f"<img src='{image_data_uri(image, max_side)}' style='max-width:{max_side}px;flex:none' "
            "alt='generated image'></div>")


def side_by_side(text: str, image, score: float | None = None, prompt: str | None = None,
                 title: str | None = None, placeholder: bool = False, score_note: str | None = None):
    """Show a text next to an image (with an optional score and image prompt) in a notebook; ``score_note``
    says what the score is, e.g. "test model: meaningless". Put it last in a cell, or pass it to ``display()``.

    >>> side_by_side(text.text, image, score=0.31, prompt=prompt.prompt, title="Image 0")   # doctest: +SKIP
    """
    from IPython.display import HTML
    return HTML(side_by_side_html(text, image, score, prompt, title, placeholder, score_note=score_note))


# ----- a run's page (report and Inspector) -------------------------------------------------------

def score_text(score: float | None) -> str:
    return "unscored" if score is None else f"{score:.3f}"


def text_side_html(run) -> str:
    """The left side: warnings, keywords, text, image prompt and status of a run, as HTML."""
    from .prompts import ImagePrompt
    text, prompt = run.text, run.prompt or ImagePrompt("", "", "?")
    title = f" — <i>{escape(text['title'])}</i>" if text.get("title") else ""
    model = f", model {escape(text['model'])}" if text.get("model") else ""
    warnings = []  # what a viewer must know before trusting the images or the scores
    if run.placeholder:
        warnings.append("PLACEHOLDER images from the kit's offline preview engine, not a real model.")
    if run.scorer is None:
        warnings.append("Unscored: no CLIP scores in this run (no CLIP weights were available).")
    elif not run.scorer.get("meaningful", True):
        warnings.append("Scores are MEANINGLESS: they come from a tiny random test model.")
    lines = [f"<p class='warn' style='color:#b00;font-weight:bold'>⚠ {escape(w)}</p>" for w in warnings]
    lines += [
        f"<p><b>Keywords:</b> {escape(run.user_input)}</p>",
        (f"<p><b>Text</b> (source: {escape(str(text.get('source', '?')))}{model}){title}<br>"
         f"<span style='white-space:pre-wrap'>{escape(text.get('text', ''))}</span></p>"),
        f"<p><b>Image prompt</b> (source: {escape(prompt.source)}):<br><code>{escape(prompt.prompt)}</code></p>",
        f"<p><b>Negative prompt:</b> <code>{escape(prompt.negative_prompt)}</code></p>",
        f"<p><b>Status:</b> {escape(run.status)}"
        + (f" <small>({escape(run.message)})</small>" if run.message else "") + "</p>",
    ]
    return f"<div style='font-size:14px;line-height:1.35'>{''.join(lines)}</div>"


def card_html(run, candidate, record: dict | None = None) -> str:
    """One candidate: embedded thumbnail, seed, score, best mark, and the rating ``record``."""
    is_best = run.is_best(candidate)
    # image_problem() refuses a file outside the run folder: a hand-edited run.json cannot embed any file.
    problem = candidate.image_problem()
    image = (f"<p class='warn'>{escape(problem)}</p>" if problem
             else f"<img src='{image_data_uri(candidate.path, 256)}' width='200' alt='candidate {candidate.index}'>")
    rating = (f"rating <b>{escape(str(record['rating']))}</b> {escape(record.get('note', ''))}"
              if record else "not rated")
    score = f"{rater_name(run)} {score_text(candidate.score)}".strip()
    return (f"<figure class='{'best' if is_best else ''}'>{image}<figcaption>#{candidate.index}"
            f"{' <b>★ best</b>' if is_best else ''}<br>seed {candidate.seed}, round {candidate.round}"
            f"<br>{escape(score)}<br>{rating}</figcaption></figure>")


def rater_name(run) -> str:
    """The rater that scored ``run`` ("" when unscored); a record without one was scored by CLIP (notebook 06's
    own pipeline writes the model only)."""
    scorer = run.scorer or {}
    return scorer.get("rater") or (f"clip:{scorer['model']}" if scorer.get("model") else "CLIP" if scorer else "")


def write_page(path: str | Path, title: str, body: str) -> Path:
    """Write a self-contained HTML page (``body`` under ``title``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
                    f"<style>{PAGE_STYLE}</style></head>\n<body>{body}</body></html>\n", encoding="utf-8")
    return path


def write_report(run, path: str | Path | None = None) -> Path:
    """Write the report of ``run`` to ``path`` (default: report.html in the run folder); returns the path."""
    cards = "".join(card_html(run, c) for c in run.candidates)
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in run.timings.items())
    body = (f"<h1>Pipeline run: {escape(run.user_input)}</h1>\n{text_side_html(run)}\n"
            f"<h2>Candidates ({len(run.candidates)}, mode {escape(run.mode)})</h2>{cards}\n"
            f"<p><small>Timings: {escape(timings)}. Folder: {escape(str(run.path))}</small></p>")
    return write_page(path or run.path / "report.html", f"Run {run.path.name}", body)

"""The Inspector: browse a pipeline run's candidates next to its text, and rate them by hand (core
ipywidgets only, so it works in any JupyterLab or Notebook without extensions).

Example (in a notebook, as the last line of a cell):
    >>> Inspector(list_runs()[-3:])              # the last three runs, with a run selector   # doctest: +SKIP
    >>> Inspector(runs, raters=[clip_rater(scorer)]).agreement()   # which rater orders them as you do  # doctest: +SKIP
    >>> Inspector(run).export_html("inspector.html")   # a static copy that needs no kernel  # doctest: +SKIP
"""

from __future__ import annotations

import json
import traceback
from datetime import datetime
from html import escape
from pathlib import Path

import ipywidgets as widgets

from helpers.config import load_settings
from helpers.display import card_html, rater_name, score_text, text_side_html, write_page
from helpers.images import png_thumbnail
from helpers.records import Candidate, PipelineRun, load_run

from .ratings import RATINGS_FILE, append_rating, read_ratings, remove_rating_line, spearman

THUMB_SIDE = 96  # pixels of a thumbnail in the strip
IMAGE_WIDTH = "384px"  # the selected image; small test images are scaled up to this


class Inspector:
    """Text and image side by side, candidate by candidate, with manual ratings saved to a file.

    ``run_or_runs`` is a PipelineRun, a run folder, or a list of either (a drop-down selects the run).
    Each "Save rating" appends the ``scale`` label clicked to ``ratings_path`` (default
    ``<OUTPUT_DIR>/ratings.jsonl``) at once; the latest line per candidate counts, a new Inspector resumes
    from the file, and "Undo" removes the last line THIS Inspector wrote. "Which rater agrees with me?" compares
    your ratings with the runs' scores and ``raters``' (``agreement()``). A button's error shows in the red box
    under the widget (``.output``). Every button is a method too: ``select(i)``, ``rate(value, note)``, ...

    >>> Inspector(runs, scale=("bad", "ok", "good"))         # doctest: +SKIP
    """

    def __init__(self, run_or_runs, ratings_path: str | Path | None = None,
                 scale=("1", "2", "3", "4", "5"), raters=()):
        items = [run_or_runs] if isinstance(run_or_runs, (PipelineRun, str, Path)) else list(run_or_runs)
        self.runs = [item if isinstance(item, PipelineRun) else load_run(item) for item in items]
        if not self.runs:
            raise ValueError("Inspector needs at least one run, e.g. Inspector(list_runs()[-1]).")
        self.ratings_path = Path(ratings_path) if ratings_path else load_settings().output_dir / RATINGS_FILE
        self.scale = tuple(str(value) for value in scale)
        self.raters = list(raters)  # for the agreement button
        self.ratings, skipped = read_ratings(self.ratings_path)
        self._written: list[str] = []  # the exact lines this Inspector appended, for undo
        self.run_index = 0
        self.index = 0  # position in self.run.candidates

        self.run_selector = None
        if len(self.runs) > 1:
            self.run_selector = widgets.Dropdown(
                options=[(f"{run.path.name} ({len(run.candidates)} images)", i) for i, run in enumerate(self.runs)],
                value=0, description="Run:", layout=widgets.Layout(width="480px"))
            self.run_selector.observe(self._guard(self._on_run_chosen, "Run"), names="value")
        self.text_html = widgets.HTML(layout=widgets.Layout(width="45%", padding="0 12px 0 0"))
        self.caption = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=IMAGE_WIDTH))
        self.thumbnails: list[widgets.Button] = []
        self.strip = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.prev_button = widgets.Button(description="◀ Previous")
        self.next_button = widgets.Button(description="Next ▶")
        self.position = widgets.Label()
        self.rating_buttons = widgets.ToggleButtons(options=self.scale, value=None, description="Rating:",
                                                    style={"button_width": "48px"})
        self.note_box = widgets.Textarea(placeholder="Note (optional): why this rating?",
                                         layout=widgets.Layout(width="100%", height="48px"))
        self.save_button = widgets.Button(description="Save rating", button_style="success", icon="check")
        self.undo_button = widgets.Button(description="Undo last rating", icon="undo")
        self.message = widgets.Label()  # what the last action did
        self.agreement_button = widgets.Button(description="Which rater agrees with me?", layout={"width": "auto"})
        self.agreement_box = widgets.HTML()
        # Callbacks run outside any cell (JupyterLab shows their errors nowhere): _guard writes them here.
        self.output = widgets.Output()  # framed in red only while it shows an error

        self.prev_button.on_click(self._guard(self.previous, "Previous"))
        self.next_button.on_click(self._guard(self.next, "Next"))
        self.save_button.on_click(self._guard(
            lambda: self.rate(self.rating_buttons.value, self.note_box.value), "Save rating"))
        self.undo_button.on_click(self._guard(self.undo, "Undo"))
        self.agreement_button.on_click(self._guard(self.show_agreement, "Agreement"))

        right = widgets.VBox([
            self.caption, self.image,
            widgets.HBox([self.prev_button, self.position, self.next_button]),
            self.strip, self.rating_buttons, self.note_box,
            widgets.HBox([self.save_button, self.undo_button]), self.message, self.agreement_button,
            self.agreement_box], layout=widgets.Layout(width="55%"))
        top = [self.run_selector] if self.run_selector else []
        self.widget = widgets.VBox(top + [widgets.HBox([self.text_html, right]), self.output])

        if skipped:
            self.message.value = (f"Skipped {skipped} unreadable line(s) in {self.ratings_path} (not UTF-8, not "
                                  "JSON, or a field missing or of the wrong type); they stay in the file.")
        # Show the first candidate; a missing image file is reported in .output, not raised.
        self._guard(lambda: self.select(0), "Show")()

    @property
    def run(self) -> PipelineRun:
        """The run shown now."""
        return self.runs[self.run_index]

    @property
    def current(self) -> Candidate | None:
        """The candidate shown now (None for a run without images)."""
        candidates = self.run.candidates
        return candidates[self.index] if candidates else None

    def select(self, index: int, run: int | str | None = None) -> Candidate | None:
        """Show candidate ``index`` of the current run, or of ``run`` (a position or a run folder name)."""
        if run is not None:
            self._switch_run(run)
        count = len(self.run.candidates)
        if count and not 0 <= index < count:
            raise IndexError(f"There is no candidate {index}: this run has {count} (0 to {count - 1}).")
        self.index = index if count else 0
        self._show()
        return self.current

    def next(self) -> Candidate | None:
        """Show the next candidate; after the last one comes the first."""
        return self.select((self.index + 1) % max(len(self.run.candidates), 1))

    def previous(self) -> Candidate | None:
        """Show the previous candidate; before the first one comes the last."""
        return self.select((self.index - 1) % max(len(self.run.candidates), 1))

    def _switch_run(self, run: int | str) -> None:
        names = [r.path.name for r in self.runs]
        position = names.index(run) if isinstance(run, str) and run in names else run
        if not isinstance(position, int) or not 0 <= position < len(self.runs):
            raise ValueError(f"No run {run!r} in this Inspector; it has {names}.")
        if position != self.run_index:
            self.run_index = position
            self._build_strip()
        if self.run_selector is not None:
            self.run_selector.value = position  # its observer sees run_index == position: no-op

    def _on_run_chosen(self) -> None:
        if self.run_selector.value != self.run_index:
            self.select(0, run=self.run_selector.value)

    def _build_strip(self) -> None:
        """One small image and one button per candidate of the current run."""
        self.thumbnails, cells = [], []
        for position, candidate in enumerate(self.run.candidates):
            button = widgets.Button(layout=widgets.Layout(width="auto"), tooltip=f"seed {candidate.seed}")
            button.on_click(self._guard(lambda position=position: self.select(position), "Select"))
            small = widgets.Image(value=_thumbnail_png(candidate), format="png",
                                  layout=widgets.Layout(width=f"{THUMB_SIDE}px"))
            self.thumbnails.append(button)
            cells.append(widgets.VBox([small, button], layout=widgets.Layout(margin="2px", align_items="center")))
        self.strip.children = cells

    def _show(self) -> None:
        """Bring every widget in line with run_index, index and the ratings."""
        if not self.thumbnails and self.run.candidates:
            self._build_strip()
        run, current = self.run, self.current
        self.text_html.value = text_side_html(run)
        for position, (button, candidate) in enumerate(zip(self.thumbnails, run.candidates)):
            button.description = self._label(candidate)
            button.button_style = "info" if position == self.index else ""
        if current is None:
            self.position.value = "no images in this run"
            self.caption.value = "<p><b>This run has no images.</b> See its status on the left.</p>"
            self.image.value = b""
            return
        self.position.value = f"{self.index + 1} / {len(run.candidates)}"
        record = self.ratings.get((run.path.name, current.index))
        # Preselect the saved rating (or nothing) so the scale shows what the file holds.
        saved = record["rating"] if record else None
        self.rating_buttons.value = saved if saved in self.scale else None
        self.note_box.value = record.get("note", "") if record else ""
        self.caption.value = self._caption(current, record)
        self.image.value = b""  # never leave the previous image under a new caption
        # current.path refuses a file outside the run folder (PipelineError, shown in .output).
        if not current.path.is_file():
            raise FileNotFoundError(f"The image file {current.path} is missing (deleted or moved?). "
                                    f"Its seed {current.seed} and infotext are still in run.json, "
                                    "so it can be made again with the same settings.")
        self.image.value = current.path.read_bytes()

    def _label(self, candidate: Candidate) -> str:
        """The text of a thumbnail button: index, score, best mark, rating."""
        record = self.ratings.get((self.run.path.name, candidate.index))
        parts = [f"#{candidate.index}", score_text(candidate.score), "★ best" if self.run.is_best(candidate) else "",
                 f"rated {record['rating']}" if record else ""]
        return " · ".join(part for part in parts if part)

    def _caption(self, candidate: Candidate, record: dict | None) -> str:
        score = score_text(candidate.score)
        if candidate.score is not None and self.run.scorer and not self.run.scorer.get("meaningful", True):
            score += " (MEANINGLESS: tiny test model)"
        mark = " <b style='color:#2a2'>★ best</b>" if self.run.is_best(candidate) else ""
        rating = (f"<br>Your rating: <b>{escape(str(record['rating']))}</b> {escape(record.get('note', ''))}"
                  if record else "<br>Not rated yet.")
        return (f"<b>Candidate #{candidate.index}</b>{mark} · seed {candidate.seed} · round {candidate.round}"
                f" · {escape(f'{rater_name(self.run)} {score}'.strip())}{rating}")

    def rate(self, value, note: str = "") -> dict:
        """Rate the shown candidate: append one line to the ratings file now, and show it."""
        candidate = self.current
        if candidate is None:
            raise ValueError("This run has no images to rate.")
        if value is None or str(value) not in self.scale:
            raise ValueError(f"Choose a rating on the scale {list(self.scale)} first (got {value!r}).")
        record = {"time": datetime.now().isoformat(timespec="seconds"), "run": self.run.path.name,
                  "candidate": candidate.index, "seed": candidate.seed, "rating": str(value),
                  "note": str(note or ""), "score": candidate.score}
        line = append_rating(self.ratings_path, record)
        self._written.append(line)
        self.ratings[(record["run"], record["candidate"])] = record
        self._show()
        self.message.value = f"Saved rating {value} for #{candidate.index} to {self.ratings_path.name}."
        return record

    def undo(self) -> dict | None:
        """Remove the last rating this Inspector saved from the file (in one step; other lines stay byte for
        byte); returns it (None: nothing to undo)."""
        if not self._written:
            self.message.value = "Nothing to undo: no rating was saved in this Inspector."
            return None
        line = self._written.pop()  # even when it is no longer in the file: the next undo goes further back
        record = json.loads(line)
        if not remove_rating_line(self.ratings_path, line):
            raise RuntimeError(f"Cannot undo: the rating line is no longer in {self.ratings_path} "
                               f"(edited by hand?). The file was not changed. Line: {line}")
        self.ratings, _ = read_ratings(self.ratings_path)  # an earlier rating may count again
        done = f"Undid rating {record['rating']} for #{record['candidate']} of {record['run']}"
        self.message.value = done + "."
        try:  # show the candidate whose rating was undone; the undo is done even if that fails
            run = [r.path.name for r in self.runs].index(record["run"])
            self.select([c.index for c in self.runs[run].candidates].index(record["candidate"]), run=run)
        except Exception as error:  # noqa: BLE001 - shown, and the undo stands
            self._show_error("Showing the candidate after the undo", error)
            self.message.value = f"{done}; showing it failed: {error}"
        return record

    def agreement(self, raters=None) -> dict[str, dict]:
        """Spearman's rho (ratings.spearman) of your ratings (their place on the scale) with the runs' own scores and
        with each of ``raters`` (default: the Inspector's), which score each rated image against its run's text
        now; ``n``: images compared; NaN with the ``reason`` when a rater fails. ``insp.agreement([clip_rater()])``"""
        rated, pairs = self._rated(), {}
        for run, candidate, mine in rated:
            if run.scorer and candidate.score is not None:
                pairs.setdefault(f"{rater_name(run)} (in the runs)", []).append((mine, candidate.score))
        for rater in self.raters if raters is None else raters:
            try:  # the text the run's images were scored against
                pairs[rater.name] = [(mine, float(rater.score(run.text.get("text", ""), [candidate.path])[0]))
                                     for run, candidate, mine in rated]
            except Exception as error:  # noqa: BLE001 - a failing rater is reported, the others still count
                pairs[rater.name] = f"{type(error).__name__}: {error}"
        return {name: _agreement(found) for name, found in pairs.items()}

    def _rated(self) -> list[tuple[PipelineRun, Candidate, int]]:
        """(run, candidate, place of its rating on the scale) for each candidate rated on this scale."""
        return [(run, c, self.scale.index(record["rating"])) for run in self.runs for c in run.candidates
                if (record := self.ratings.get((run.path.name, c.index))) and record["rating"] in self.scale]

    def show_agreement(self) -> dict[str, dict]:
        """The button: :meth:`agreement` as bars under it (the raters score nothing before 3 images are rated)."""
        rated = self._rated()
        doubtful = any(run.placeholder or not (run.scorer or {}).get("meaningful", True) for run, _, _ in rated)
        result = self.agreement() if len(rated) >= 3 else {}
        self.agreement_box.value = agreement_html(result, len(rated), doubtful or any(
            not getattr(rater, "meaningful", True) for rater in self.raters))
        return result

    def _guard(self, action, what: str):
        """Wrap a callback so that an exception is shown in ``self.output`` instead of being lost."""
        def callback(*_ignored):  # buttons pass themselves, observers pass a change: not needed
            self.output.outputs = ()  # the box shows the error of the last action only
            self.output.layout.border = ""
            try:
                action()
            except Exception as error:  # noqa: BLE001 - shown to the user, not swallowed
                self._show_error(what, error)
                self.message.value = f"{what} failed: {error}"
        return callback

    def _show_error(self, what: str, error: BaseException) -> None:
        """Write an error and its traceback into the red box under the widget."""
        self.output.layout.border = "1px solid #e99"
        self.output.append_stderr(f"{what} failed: {type(error).__name__}: {error}\n\n"
                                  + "".join(traceback.format_exception(error)))

    def _repr_mimebundle_(self, **kwargs):  # shown as its root widget when last in a cell
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<Inspector of {len(self.runs)} run(s), ratings in {self.ratings_path}>"

    def export_html(self, path: str | Path) -> Path:
        """Write every run with its candidates, scores and ratings to one HTML file that opens without a kernel,
        e.g. ``insp.export_html(out_dir / "inspector.html")``."""
        sections = []
        for run in self.runs:
            cards = [card_html(run, c, self.ratings.get((run.path.name, c.index))) for c in run.candidates]
            sections.append(f"<section><h2>{escape(run.path.name)}</h2>{text_side_html(run)}"
                            f"<div>{''.join(cards) or '<p>No images in this run.</p>'}</div></section>")
        return write_page(path, "Inspector", f"<h1>Inspector: {len(self.runs)} run(s)</h1>{''.join(sections)}")


def agreement_html(result: dict[str, dict], rated: int, doubtful: bool = False) -> str:
    """Inspector.agreement's ``result`` (``rated``: how many images you rated) as a table with a bar per rater:
    green when it orders the images as you do, red the other way round. ``doubtful``: placeholders or a test model."""
    if rated < 3:
        return f"<p><b>Rate at least 3 images first</b> ({rated} rated so far): a rank correlation needs 3 or more.</p>"
    rows = []
    for name, entry in result.items():
        rho, known = entry["rho"], entry["rho"] == entry["rho"]  # NaN: no rho (the reason says why)
        color = "#2a2" if rho >= 0 else "#c22"
        bar = f"<span style='color:{color}'>{'█' * round(abs(rho) * 20)}</span>" if known else ""
        rows.append(f"<tr><td>{escape(name)}</td><td style='min-width:170px'>{bar}</td>"
                    f"<td>{f'{rho:+.2f}' if known else '—'}</td><td>n={entry['n']}</td>"
                    f"<td><small>{escape(entry['reason'])}</small></td></tr>")
    warning = ("<p class='warn' style='color:#b00'>⚠ PLACEHOLDER images or a tiny test model's MEANINGLESS scores: "
               "this agreement says nothing about real raters.</p>" if doubtful else "")
    table = (f"<table>{''.join(rows)}</table>" if rows
             else "<p>No scores to compare with: the runs are unscored and no rater was given.</p>")
    return (f"<div><b>Which rater agrees with you?</b> Spearman's rho of each rater's scores with your {rated} ratings:"
            f" +1 your order, 0 none, -1 the reverse, — none (see why).{warning}{table}</div>")


def _agreement(pairs: list[tuple[int, float]] | str) -> dict:
    """rho, n and why rho is NaN ("" when it is not) of (rating, score) pairs, or of a rater's error."""
    if isinstance(pairs, str):
        return {"rho": float("nan"), "n": 0, "reason": pairs}
    n, rho = sum(s == s for _, s in pairs), spearman([m for m, _ in pairs], [s for _, s in pairs])  # NaN: not judged
    reason = "" if rho == rho else "rate 3 or more images" if n < 3 else "no order: ratings or scores all equal"
    return {"rho": rho, "n": n, "reason": reason}


def _thumbnail_png(candidate: Candidate) -> bytes:
    """A small PNG of a candidate's image; empty when it cannot be shown (selecting it says why)."""
    from PIL import Image
    if candidate.image_problem():
        return b""
    try:
        return png_thumbnail(candidate.path, THUMB_SIDE)
    except (OSError, ValueError, Image.DecompressionBombError):
        return b""

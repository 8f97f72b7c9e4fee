"""The full pipeline: keywords -> text -> image prompt -> N images -> CLIP scores -> best image.

    get_text(user_input) -> text
    write_image_prompt(text) -> image prompt
    repeat: generate images -> save each -> score each
    return the best-rated image (or stop as soon as one reaches a threshold)

Nothing generated is lost: every image is written to the run's folder as soon as it arrives,
with A1111's infotext inside, and ``run.json`` is rewritten after every candidate, so a crash,
a server error or Ctrl-C leaves a valid record. ``load_run`` reopens a run.

Example:
    >>> from helpers.pipeline import run_pipeline, load_run
    >>> run = run_pipeline("lighthouse, storm", n=4)        # doctest: +SKIP
    >>> run.best.score, run.best.path                        # doctest: +SKIP
    (0.31, PosixPath('outputs/runs/20261124-101500-lighthouse-storm/cand-02.png'))
    >>> load_run(run.path).best.seed == run.best.seed        # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import load_settings
from .prompts import ImagePrompt

MODES = ("best", "threshold")
RUN_FILE = "run.json"


class PipelineError(RuntimeError):
    """The pipeline stopped on an error; ``.run`` holds the record of everything made so far."""

    def __init__(self, message: str, run: "PipelineRun"):
        self.run = run
        super().__init__(f"{message}\nEverything made so far is saved in {run.path}")


@dataclass
class Candidate:
    """One generated image: its seed, CLIP score (None if unscored), file and refinement round."""

    index: int
    seed: int
    file: str  # relative to the run folder
    round: int = 0
    score: float | None = None
    infotext: str = ""
    run_path: Path | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return (self.run_path or Path(".")) / self.file

    @property
    def image(self):
        """The image, read from disk (so a reopened run shows the same thing)."""
        from PIL import Image

        with Image.open(self.path) as image:
            return image.convert("RGB")

    def fields(self) -> dict[str, Any]:
        """The txt2img fields that regenerate this image (from its infotext)."""
        from .infotext import infotext_to_fields

        return infotext_to_fields(self.infotext)


@dataclass
class PipelineRun:
    """Everything about one pipeline run; mirrored in ``run.json`` in the run folder."""

    user_input: str
    path: Path
    mode: str = "best"
    n: int = 5
    threshold: float | None = None
    max_images: int = 20
    refine: bool = False
    status: str = "running"
    message: str = ""
    created: str = ""
    text: dict[str, Any] = field(default_factory=dict)
    prompt: ImagePrompt | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    scorer: dict[str, Any] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        """The candidate with the highest score; None when nothing was scored."""
        scored = [c for c in self.candidates if c.score is not None]
        return max(scored, key=lambda c: c.score) if scored else None

    @property
    def placeholder(self) -> bool:
        """True when the images came from the kit's offline preview engine."""
        return bool(self.server.get("placeholder"))

    def summary(self) -> str:
        """A few lines for a terminal or a notebook: status, text source, prompt, best, placeholders."""
        best = self.best
        lines = [f"Run {self.path.name}: {self.status}" + (f" ({self.message})" if self.message else ""),
                 f"  text ({self.text.get('source', '?')}): {_shorten(self.text.get('text', ''), 100)}",
                 f"  prompt ({self.prompt.source if self.prompt else '?'}): {self.prompt or ''}",
                 f"  {len(self.candidates)} candidate(s); best: "
                 + (f"#{best.index} seed {best.seed} score {best.score:.3f}" if best else "none (unscored)")]
        if self.placeholder:
            lines.append("  images: PLACEHOLDERS from the kit's offline preview engine")
        if self.scorer and not self.scorer.get("meaningful", True):
            lines.append("  scores: from a tiny random test model, MEANINGLESS")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["candidates"] = [{k: v for k, v in asdict(c).items() if k != "run_path"} for c in self.candidates]
        data["best"] = self.best.index if self.best else None
        return data

    def save(self) -> Path:
        """Write run.json atomically (a temporary file renamed over the old one)."""
        target = self.path / RUN_FILE
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, target)
        return target

    def report(self, path: str | Path | None = None) -> Path:
        """Write a static HTML report (text, prompt, thumbnails with scores); returns its path."""
        from .report import write_report

        return write_report(self, Path(path) if path else self.path / "report.html")

    def __repr__(self) -> str:
        return f"<PipelineRun {self.path.name} {self.status}, {len(self.candidates)} candidate(s)>"


def load_run(path: str | Path) -> PipelineRun:
    """Reopen a run from its folder (or its run.json).

    >>> run = load_run("outputs/runs/20261124-101500-lighthouse-storm")   # doctest: +SKIP
    """
    path = Path(path)
    folder = path.parent if path.name == RUN_FILE else path
    if not (folder / RUN_FILE).is_file():
        raise FileNotFoundError(f"No {RUN_FILE} in {folder}. Pass a folder from outputs/runs/.")
    data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    # Keys this version does not know (a newer kit wrote the file) are ignored, not fatal.
    known_run = {f.name for f in fields(PipelineRun)}
    known_candidate = {f.name for f in fields(Candidate)} - {"run_path"}
    candidates = [Candidate(**{k: v for k, v in c.items() if k in known_candidate}, run_path=folder)
                  for c in data.get("candidates", [])]
    values = {k: v for k, v in data.items() if k in known_run and k not in ("candidates", "path")}
    if isinstance(values.get("prompt"), dict):
        known_prompt = {f.name for f in fields(ImagePrompt)}
        values["prompt"] = ImagePrompt(**{k: v for k, v in values["prompt"].items() if k in known_prompt})
    return PipelineRun(**values, path=folder, candidates=candidates)


def list_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under ``outputs/runs`` (or ``root``), oldest first."""
    root = Path(root) if root else load_settings().output_dir / "runs"
    return sorted(p for p in root.glob("*") if (p / RUN_FILE).is_file())


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length].rstrip() + "..."


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


def new_run_folder(user_input: str, out_dir: str | Path | None = None) -> Path:
    root = Path(out_dir) if out_dir else load_settings().output_dir / "runs"
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{_slug(user_input)}"
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = root / (base if number == 1 else f"{base}-{number}")
        try:
            folder.mkdir()  # fails if another run took the name in the same second
            return folder
        except FileExistsError:
            number += 1


def run_pipeline(user_input: str, n: int = 5, mode: str = "best", threshold: float | None = None,
                 max_images: int = 20, text_source: str = "auto", refine: bool = False,
                 out_dir: str | Path | None = None, progress: bool = True, *, client=None, llm=None,
                 scorer=None, **generation_fields) -> PipelineRun:
    """Run keywords -> text -> prompt -> images -> scores, and pick the best image.

    Args:
        user_input: a few keywords, e.g. "lighthouse, storm".
        n: candidates in "best" mode (made in as few A1111 calls as the batch size allows).
        mode: "best" (make n, keep the best) or "threshold" (make small batches until one
            reaches ``threshold`` or ``max_images`` are spent).
        text_source: "auto", "llm", "corpus" or "rag" (see helpers.text.get_text).
        refine: in threshold mode, let the LLM revise the prompt after a round below the threshold.
        client, llm, scorer: backends to use (default: from the settings; see the module doc);
            ``scorer=False`` turns scoring off.
        **generation_fields: txt2img fields, e.g. steps=20, width=512, cfg_scale=7, seed=1, batch_size=2.

    Without an LLM the text comes from retrieval and the prompt from the baseline; without CLIP
    weights the candidates are kept unscored (``run.best`` is None). Both are said in the run.
    """
    from .runner import PipelineRunner

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} must be 'best' or 'threshold'")
    if mode == "threshold" and threshold is None:
        raise ValueError("mode='threshold' needs a threshold, e.g. threshold=0.3 (a CLIP cosine similarity)")
    if n < 1 or max_images < 1:
        raise ValueError("n and max_images must be at least 1")
    if "prompt" in generation_fields:
        raise ValueError("the prompt is written by the pipeline; pass keywords as user_input instead")
    runner = PipelineRunner(user_input, n=n, mode=mode, threshold=threshold, max_images=max_images,
                            text_source=text_source, refine=refine, out_dir=out_dir, progress=progress,
                            client=client, llm=llm, scorer=scorer, fields=generation_fields)
    return runner.run()

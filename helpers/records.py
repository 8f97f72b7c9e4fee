"""The record of a pipeline run (helpers/pipeline.py makes it), written to disk and read back:

    outputs/runs/<YYYYmmdd-HHMMSS>-<slug>/run.json       inputs, text, prompt, settings, candidates, status
    outputs/runs/<YYYYmmdd-HHMMSS>-<slug>/cand-00.png    each image, with A1111's infotext inside

    >>> print(load_run(list_runs()[-1]).summary())           # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import configured_secrets, load_settings, mask
from .display import write_report
from .errors import KitError
from .images import as_rgb
from .prompts import ImagePrompt

RUN_FILE = "run.json"


class PipelineError(KitError, RuntimeError):
    """The pipeline stopped on an error; ``.run`` records all made so far (None without a run, e.g. a bad run.json)."""

    def __init__(self, message: str, run: PipelineRun | None = None):
        self.run = run
        super().__init__(f"{message}\nEverything made so far is saved in {run.path}" if run is not None else message)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` through a temporary file renamed over ``path``: never half a file, no leftover."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # only left over when writing or renaming failed
    return path


def file_in_folder(folder: str | Path, name: str) -> Path:
    """``folder / name`` when it stays inside ``folder`` (after symlinks), else PipelineError: anyone may edit
    run.json, and unchecked a report or the Inspector would embed any file it names.

    >>> file_in_folder("outputs/runs/r1", "../private-photo.png")    # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    helpers.records.PipelineError: The file '../private-photo.png' ... is outside the run folder ... Fix: keep ...
    """
    folder = Path(folder)
    relative = Path(name)
    path = folder / relative
    try:
        inside = (name.strip() != "" and not relative.anchor and ".." not in relative.parts
                  and path.resolve().is_relative_to(folder.resolve()))
    except (OSError, ValueError, RuntimeError):  # a NUL byte in the name, a symlink loop
        inside = False
    if not inside:
        raise PipelineError(f"The file {name!r} named in {folder / RUN_FILE} is outside the run folder (or no file "
                            'name), so it is not read. Fix: keep the images in the run folder and name them there, '
                            'e.g. "cand-00.png".')
    return path


@dataclass
class Candidate:
    """One generated image: its seed, score (None if unscored), file, refinement round, and ``rating``: how the
    rater judged it (e.g. a caption, or the answers to question checks and what is ``missing``)."""

    index: int
    seed: int
    file: str  # relative to the run folder
    round: int = 0
    score: float | None = None
    infotext: str = ""
    rating: dict[str, Any] = field(default_factory=dict)
    run_path: Path | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The image file, always inside the run folder (PipelineError if ``file`` leads out of it)."""
        return file_in_folder(self.run_path or Path("."), self.file)

    def image_problem(self) -> str:
        """Why the image cannot be shown ("" when it can)."""
        try:
            return "" if self.path.is_file() else f"image file missing: {self.file}"
        except PipelineError:
            return f"image not shown: {self.file!r:.80} is outside the run folder"

    @property
    def image(self):
        """The image, read from disk (so a reopened run shows the same thing)."""
        return as_rgb(self.path)

    def fields(self) -> dict[str, Any]:
        """The txt2img fields that remake this image: ``f = cand.fields(); client.txt2img(f.pop("prompt"), **f)``."""
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

    def is_best(self, candidate: Candidate) -> bool:
        return self.best is not None and candidate.index == self.best.index

    @property
    def placeholder(self) -> bool:
        """True when the images came from the kit's offline preview engine."""
        return bool(self.server.get("placeholder"))

    def summary(self) -> str:
        """A few lines for a terminal or a notebook: status, sources, best, warnings; ``print(run.summary())``."""
        best = self.best
        text = self.text.get("text", "")
        text = text if len(text) <= 100 else text[:100].rstrip() + "..."
        lines = [f"Run {self.path.name}: {self.status}" + (f" ({self.message})" if self.message else ""),
                 f"  text ({self.text.get('source', '?')}): {text}",
                 f"  prompt ({self.prompt.source if self.prompt else '?'}): {self.prompt or ''}",
                 f"  {len(self.candidates)} candidate(s); best: "
                 + (f"#{best.index} seed {best.seed} score {best.score:.3f}" if best else "none (unscored)")]
        if self.placeholder:
            lines.append("  images: PLACEHOLDERS from the kit's offline preview engine")
        if self.scorer and not self.scorer.get("meaningful", True):
            lines.append("  scores: from a tiny random test model, MEANINGLESS")
        return "\n".join(lines)

    def save(self) -> Path:
        """Write run.json atomically. It also records a crash, so it must not fail: unknown values become text."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["candidates"] = [{k: v for k, v in asdict(c).items() if k != "run_path"} for c in self.candidates]
        data["best"] = self.best.index if self.best else None
        data = _masked(data, configured_secrets())  # the last guard: errors and notes mask at their source
        try:
            raw = json.dumps(data, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:  # readable UTF-8 when possible, \uXXXX escapes when not
            raw = json.dumps(data, indent=2, ensure_ascii=True, default=str).encode("ascii")
        return write_atomic(self.path / RUN_FILE, raw)

    def report(self, path: str | Path | None = None) -> Path:
        """Write a static HTML report, by default ``run.path / "report.html"``; returns its path."""
        written = write_report(self, path)
        secrets = configured_secrets()
        if secrets:  # the same last guard as run.json's, for the secrets as the page writes them too
            import html
            page = written.read_text(encoding="utf-8")
            masked = mask(page, secrets + [html.escape(secret) for secret in secrets])
            if masked != page:
                write_atomic(written, masked.encode("utf-8"))
        return written

    def __repr__(self) -> str:
        return f"<PipelineRun {self.path.name} {self.status}, {len(self.candidates)} candidate(s)>"


def _masked(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-like data) with each secret masked in every string, keys included."""
    if not secrets:
        return value
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, dict):
        return {_masked(k, secrets): _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item, secrets) for item in value]
    return value


def load_run(path: str | Path) -> PipelineRun:
    """Reopen a run from its folder (or its run.json), e.g. ``load_run(run.path)``. A run.json that cannot be
    read raises PipelineError naming the file; a candidate whose file is outside the folder gets a warning."""
    path = Path(path)
    folder = path.parent if path.name == RUN_FILE else path
    record_file = folder / RUN_FILE
    if not record_file.is_file():
        raise FileNotFoundError(f"No {RUN_FILE} in {folder}. Pass a folder from outputs/runs/.")
    data = _read_record(record_file)
    candidates = []
    for number, item in enumerate(data.get("candidates", [])):
        _check_fields(item, CANDIDATE_TYPES, record_file, f"candidates[{number}]", ("index", "seed", "file"))
        # Keys this version does not know (a newer kit wrote the file) are ignored, not fatal.
        candidate = Candidate(**{k: v for k, v in item.items() if k in CANDIDATE_TYPES}, run_path=folder)
        try:
            file_in_folder(folder, candidate.file)
        except PipelineError as err:
            warnings.warn(f"Candidate #{candidate.index}: {err} Its image is not shown.", stacklevel=2)
        candidates.append(candidate)
    values = {k: v for k, v in data.items() if k in RUN_TYPES and k not in ("candidates", "path")}
    if isinstance(values.get("prompt"), dict):
        _check_fields(values["prompt"], PROMPT_TYPES, record_file, "prompt")
        values["prompt"] = ImagePrompt(**{k: v for k, v in values["prompt"].items() if k in PROMPT_TYPES})
    return PipelineRun(**values, path=folder, candidates=candidates)


# The JSON types of run.json's fields, checked on loading: a damaged file fails here with its name, not
# later with a puzzling TypeError.
_NUMBER, _TEXT, _INT, _NONE = (int, float), (str,), (int,), (type(None),)
RUN_TYPES = {"user_input": _TEXT, "path": _TEXT, "mode": _TEXT, "n": _INT, "threshold": _NUMBER + _NONE,
             "max_images": _INT, "refine": (bool,), "status": _TEXT, "message": _TEXT, "created": _TEXT,
             "text": (dict,), "prompt": (dict, type(None)), "rounds": (list,), "generation": (dict,),
             "server": (dict,), "scorer": (dict, type(None)), "candidates": (list,), "timings": (dict,)}
# CANDIDATE_TYPES names every field of Candidate that run.json holds (all but run_path).
CANDIDATE_TYPES = {"index": _INT, "seed": _INT, "file": _TEXT, "round": _INT, "score": _NUMBER + _NONE,
                   "infotext": _TEXT, "rating": (dict,)}
PROMPT_TYPES = {"prompt": _TEXT, "negative_prompt": _TEXT, "source": _TEXT, "tokens": _INT, "note": _TEXT}
TEXT_TYPES = {"text": _TEXT, "source": _TEXT, "title": _TEXT + _NONE, "model": _TEXT + _NONE, "note": _TEXT + _NONE}


def _read_record(record_file: Path) -> dict[str, Any]:
    """run.json as a dict with fields of the right types, or PipelineError naming the file."""
    try:
        data = json.loads(record_file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _damaged(record_file, f"it is not valid JSON ({err})") from None
    _check_fields(data, RUN_TYPES, record_file, "the record", ("user_input",))
    _check_fields(data.get("text", {}), TEXT_TYPES, record_file, "text")
    if not all(isinstance(v, (int, float)) for v in data.get("timings", {}).values()):
        raise _damaged(record_file, "a value of 'timings' is not a number")
    return data


def _check_fields(data: Any, types: dict[str, tuple], record_file: Path, where: str, required=()) -> None:
    if not isinstance(data, dict):
        raise _damaged(record_file, f"{where} is a JSON {type(data).__name__}, not an object")
    for name in required:
        if name not in data:
            raise _damaged(record_file, f"{where} has no field {name!r}")
    for name, allowed in types.items():
        value = data.get(name)
        # JSON's true/false are Python ints too; a count or seed of true is still wrong.
        if name in data and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            raise _damaged(record_file, f"{where}: field {name!r} is {value!r:.60}, not of type "
                                        f"{' or '.join(t.__name__ for t in allowed)}")


def _damaged(record_file: Path, cause: str) -> PipelineError:
    return PipelineError(f"Cannot read {record_file}: {cause}. Fix: restore the file (it is rewritten after "
                         "every image, so a copy from before the edit works), or delete the run folder "
                         "to leave it out; its images are still there.")


def list_runs(root: str | Path | None = None) -> list[Path]:
    """Run folders under ``outputs/runs`` (or ``root``), oldest first, e.g. ``list_runs()[-3:]``."""
    root = Path(root) if root else load_settings().output_dir / "runs"
    return sorted(p for p in root.glob("*") if (p / RUN_FILE).is_file())


def new_run_folder(user_input: str, out_dir: str | Path | None = None) -> Path:
    """A new, empty folder ``<out_dir or outputs/runs>/<YYYYmmdd-HHMMSS>-<slug of the input>``."""
    root = Path(out_dir) if out_dir else load_settings().output_dir / "runs"
    slug = re.sub(r"[^a-z0-9]+", "-", user_input.lower()).strip("-")[:40] or "run"
    base = f"{datetime.now():%Y%m%d-%H%M%S}-{slug}"
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = root / (base if number == 1 else f"{base}-{number}")
        try:
            folder.mkdir()  # fails if another run took the name in the same second
            return folder
        except FileExistsError:
            number += 1

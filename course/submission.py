"""Moodle submission: check notebooks, keep secrets out, shrink them, write .ipynb + .html, zipped.

Moodle cannot show notebooks and limits upload sizes (often 1-2 MB), so a submission is each
notebook plus a self-contained HTML export, zipped. :func:`submit_all` puts every ``NN_*.ipynb`` of
the student's folder into one zip with a SUMMARY.md (per notebook: ran cleanly, exercises and written
answers done, sizes); :func:`submit` does one notebook. Before writing anything each notebook is checked:

* no secret anywhere in it (an API key, the A1111 password, a bearer token, a private key...): sources,
  outputs of every type, metadata at every level, attachments, and the text chunks / EXIF inside images
  are all scanned, with detect-secrets' detectors plus the kit's own patterns and configured secrets.
  A finding names the place and the kind of secret, never the secret or the line that holds it;
* it ran top to bottom (execution counts in order, no error outputs), or ``execute=True`` runs it;
* a file that is not a notebook is refused in one line that names it and shows nothing of its content
  (it may be a symlinked .env), and file names are shown with control characters escaped;
* PNG/JPEG images are re-encoded without their metadata; then they are shrunk to JPEG thumbnails and
  widget state is dropped until it fits the budget.

Example (from a terminal: ``make submission NAME=ann``, or ``make submission NB=notebooks/06_full_pipeline.ipynb
NAME=ann`` for one notebook):
    >>> from course.submission import submit_all
    >>> submit_all("dist/student", name="ann").zip_path                     # doctest: +SKIP
    PosixPath('submission/ann_notebooks.zip')
    >>> from course.submission import submit
    >>> result = submit("notebooks/06_full_pipeline.ipynb", name="ann")     # doctest: +SKIP
    >>> result.zip_path                                                        # doctest: +SKIP
    PosixPath('submission/ann_06_full_pipeline.zip')
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from course.secret_scan import SubmissionError, decode_image, find_secrets, holds_secret, place_name, read_exif
from helpers.config import KIT_ROOT

IMAGE_STEPS = [(768, 85), (512, 80), (384, 70), (256, 60), (160, 50)]  # (max side, JPEG quality), tried in order
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STRIPPED_MIMES = ("image/png", "image/jpeg")  # re-encoded without metadata; other images are only scanned
SECRETS_FIX = ("\nFix: put keys and passwords in the .env file (never in a cell), clear the outputs that show "
               "them (for image metadata: clear that output), run the notebook again and save.")
CLEAR_OUTPUT_FIX = ("Fix: clear that output (right-click the cell > Clear Cell Output), run the notebook again "
                    "and save.")


@dataclass
class SubmissionResult:
    notebook_path: Path
    html_path: Path
    zip_path: Path
    changes: list[str] = field(default_factory=list)
    budget_bytes: int = 0

    def sizes(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in (self.notebook_path, self.html_path, self.zip_path)}

    def report(self) -> str:
        lines = [f"{name}: {size / 1e6:.2f} MB" for name, size in self.sizes().items()]
        zip_size = self.zip_path.stat().st_size
        verdict = "within" if zip_size <= self.budget_bytes else "OVER"
        lines.append(f"zip is {verdict} the budget of {self.budget_bytes / 1e6:.1f} MB")
        return "\n".join(self.changes + lines)


def printable(text: str) -> str:
    r"""``text`` with each character a terminal would act on escaped (control characters, ANSI escape sequences,
    right-to-left overrides), so a file name a student chose cannot clear or rewrite the instructor's screen.

    >>> print(printable("01_\x1b[2Jfox\u202e.ipynb"))
    01_\x1b[2Jfox\u202e.ipynb
    """
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


# --- A notebook at all ------------------------------------------------------------------------------

def shown(path: Path) -> str:
    """A file's name for messages: escape sequences in it cannot act on the terminal that prints it."""
    return printable(Path(path).name)


def read_notebook(path: Path):
    """The notebook at ``path`` (nbformat 4), or a one-line SubmissionError naming the file and why.

    Nothing of the file is quoted (nbformat's own errors quote its first characters, and a file named like a
    notebook may be a symlink to .env), and no traceback follows.
    """
    import json
    import warnings

    import nbformat

    fix = "Fix: submit the .ipynb file Jupyter saved (File > Save Notebook), or move this file out of the folder."
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise SubmissionError(f"{shown(path)} cannot be read ({type(err).__name__}), so nothing was submitted. "
                              f"{fix}") from None
    try:
        json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        why = "not UTF-8 text"
    except (ValueError, RecursionError):
        why = "not JSON"
    else:
        why = ""
    if not why:
        try:
            with warnings.catch_warnings():  # "missing cell id" and the like: nbformat repairs them itself
                warnings.simplefilter("ignore")
                nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
                nbformat.validate(nb)
            return nb
        except Exception:  # noqa: BLE001 - nbformat raises many kinds here, all meaning "not a notebook"
            why = "JSON, but not a Jupyter notebook"
    raise SubmissionError(f"{shown(path)} is not a notebook ({why}), so nothing was submitted. {fix}")


# --- Ran top to bottom -----------------------------------------------------------------------------

def _cell_label(number: int, cell) -> str:
    # The first line helps find the cell, unless that line holds a secret: then the number alone.
    first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    if not first:
        return f"cell {number} (empty)"
    return f"cell {number}" if holds_secret(first) else f"cell {number} ({first[:50]!r})"


def run_problems(nb) -> list[str]:
    """What keeps ``nb`` from counting as run top to bottom: cells not run, out of order, or ending in an error."""
    problems, last = [], 0
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        count = cell.get("execution_count")
        if count is None:
            problems.append(f"{_cell_label(number, cell)} was not run")
        elif count <= last:
            problems.append(f"{_cell_label(number, cell)} ran out of order (count {count} after {last})")
        else:
            last = count
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{_cell_label(number, cell)} ends with an error: {output.get('ename')}")
    return problems


def check_ran_cleanly(nb) -> None:
    """Raise SubmissionError unless every code cell ran, in order, without an error output."""
    problems = run_problems(nb)
    if problems:
        raise SubmissionError("The notebook did not run top to bottom:\n  " + "\n  ".join(problems) +
                              "\nFix: in Jupyter choose Kernel > Restart Kernel and Run All Cells, fix any error, "
                              "save, and submit again (or pass --execute to run it here).")


# --- Images: no metadata, and small enough ---------------------------------------------------------

def _image_slots(nb):
    """Yield (where, bundle, mime) for each PNG/JPEG in an output or an attachment, wherever it sits."""
    def visit(node, path):
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if key in STRIPPED_MIMES and isinstance(value, str) and "metadata" not in path:
                    yield place_name(path + (key,)), node, key
                else:
                    yield from visit(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from visit(value, path + (index,))
    yield from visit(nb, ())


def _open_image(data: str, where: str, mime: str):
    try:
        return decode_image(base64.b64decode(data))
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a broken file; all mean the same here
        raise SubmissionError(f"{where}: its {mime} data is not a readable image ({type(err).__name__}), so it "
                              f"cannot be checked and shrunk. {CLEAR_OUTPUT_FIX}") from None


def _without_metadata(data: str, mime: str, where: str) -> str:
    """Re-encode an image without text chunks, EXIF, comments or ICC profile; the pixels stay."""
    image = _open_image(data, where, mime)
    try:
        return base64.b64encode(_reencode(image, mime)).decode("ascii")
    except Exception as err:  # noqa: BLE001 - an image PIL reads but cannot write back (odd mode or data)
        raise SubmissionError(f"{where}: its {mime} image cannot be re-encoded without its metadata "
                              f"({type(err).__name__}). {CLEAR_OUTPUT_FIX}") from None


def _reencode(image, mime: str) -> bytes:
    from PIL import ImageOps

    buffer = io.BytesIO()
    if mime == "image/png":
        transparency = image.info.get("transparency")
        image.info.clear()  # PIL writes some info keys back (ICC profile, comments) unless cleared
        image.save(buffer, format="PNG", **({} if transparency is None else {"transparency": transparency}))
    elif image.format == "JPEG" and read_exif(image).get(0x0112, 1) == 1:
        image.info.clear()
        # "keep": the same quantisation tables and subsampling, so the pixels do not degrade
        image.save(buffer, format="JPEG", quality="keep", subsampling="keep")
    else:
        # A photo turned by its EXIF orientation (the tag goes, so the pixels turn), or data of another format.
        upright = ImageOps.exif_transpose(image) if read_exif(image) else image
        upright = upright if upright.mode in ("RGB", "L", "CMYK") else upright.convert("RGB")
        upright.info.clear()
        upright.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def strip_image_metadata(nb) -> tuple[object, list[str]]:
    """A copy of ``nb`` whose PNG/JPEG images (outputs and attachments) carry pixels only.

    PNG text chunks (A1111's ``parameters``), EXIF and comments are not needed on Moodle and may hold
    more than the student meant to share. Raises SubmissionError naming the cell for a broken image.
    """
    import copy

    nb = copy.deepcopy(nb)
    slots = list(_image_slots(nb))
    for where, bundle, mime in slots:
        bundle[mime] = _without_metadata(bundle[mime], mime, where)
    if not slots:
        return nb, []
    change = (f"re-encoded {len(slots)} image(s) without their metadata (PNG text chunks such as A1111's "
              "parameters, EXIF, comments); the pixels are kept")
    return nb, [change]


def _shrink_image(data: str, max_side: int, quality: int, where: str = "an image", mime: str = "image") -> str:
    image = _open_image(data, where, mime).convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _drop_widgets(nb) -> list[str]:
    """Remove saved widget state and live widget views from ``nb`` (in place); returns what was done."""
    changes = []
    if nb.metadata.pop("widgets", None) is not None:
        changes.append("dropped the saved widget state (widgets do not show in Moodle anyway)")
    widget_outputs = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if WIDGET_MIME in output.get("data", {}):
                output["data"].pop(WIDGET_MIME)
                widget_outputs += 1
    if widget_outputs:
        changes.append(f"removed {widget_outputs} live widget view(s); attach the inspector's export_html file instead")
    return changes


def _image_outputs(nb) -> list[list]:
    """[output, mime now, where, original data, original mime] for each PNG/JPEG output of ``nb``."""
    return [[output, mime, f"cell {c} output {o}", output["data"][mime], mime]
            for c, cell in enumerate(nb.cells, start=1) for o, output in enumerate(cell.get("outputs", []), start=1)
            for mime in STRIPPED_MIMES if mime in output.get("data", {})]


def _to_thumbnails(images: list[list], max_side: int, quality: int) -> None:
    """Replace each image output by a JPEG thumbnail of its original data (in place)."""
    for image in images:
        output, mime, where, data, original_mime = image
        output["data"].pop(mime, None)
        output["data"]["image/jpeg"] = _shrink_image(data, max_side, quality, where, original_mime)
        output.get("metadata", {}).pop(original_mime, None)
        image[1] = "image/jpeg"


def shrink(nb, budget_bytes: int) -> tuple[object, list[str]]:
    """Drop widget state and turn image outputs into JPEG thumbnails, smaller until the notebook fits."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    changes = _drop_widgets(nb)
    images = _image_outputs(nb)
    if len(nbformat.writes(nb).encode()) <= budget_bytes or not images:
        return nb, changes
    for max_side, quality in IMAGE_STEPS:
        _to_thumbnails(images, max_side, quality)
        if len(nbformat.writes(nb).encode()) <= budget_bytes:
            break
    changes.append(f"turned {len(images)} image output(s) into JPEG thumbnails of at most {max_side} px")
    return nb, changes


def _export_html(nb) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    return body


def _execute(nb, path: Path, timeout: int) -> None:
    """Run ``nb`` top to bottom in a fresh kernel, in its own folder; errors stay in the outputs."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "student"


def submit(notebook: str | Path, name: str | None = None, max_mb: float = 2.0, execute: bool = False,
           out_dir: str | Path | None = None, timeout: int = 900) -> SubmissionResult:
    """Check a notebook and write ``<name>_<notebook>.ipynb``, ``.html`` and ``.zip`` for Moodle.

    Raises SubmissionError (naming the cells) when the notebook did not run cleanly or holds a secret.
    """
    import getpass

    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise SubmissionError(f"No notebook at {printable(path)}. Pass the path of your .ipynb file.")
    nb = read_notebook(path)
    if execute:
        _execute(nb, path, timeout)
    # Secrets first: the other checks' messages may describe cells, and these cells must not be quoted.
    secrets = find_secrets(nb)
    if secrets:
        raise SubmissionError("The notebook contains secrets, so it was not submitted (they are not shown here):\n  "
                              + "\n  ".join(secrets) + SECRETS_FIX)
    check_ran_cleanly(nb)
    budget = int(max_mb * 1_000_000)
    nb, changes = strip_image_metadata(nb)  # before anything is written: a broken image stops here
    nb, shrunk = shrink(nb, budget)
    changes += shrunk
    student = _safe_name(name or getpass.getuser())
    out = Path(out_dir) if out_dir else KIT_ROOT / "submission"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{student}_{path.stem}"
    notebook_path, html_path, zip_path = out / f"{stem}.ipynb", out / f"{stem}.html", out / f"{stem}.zip"
    nbformat.write(nb, notebook_path)
    html_path.write_text(_export_html(nb), encoding="utf-8")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(notebook_path, notebook_path.name)
        archive.write(html_path, html_path.name)
    return SubmissionResult(notebook_path, html_path, zip_path, changes, budget)


# --- All notebooks in one zip ----------------------------------------------------------------------

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
CODE_STUB, ANSWER_STUB = "raise NotImplementedError()", "YOUR ANSWER HERE"  # what course/student.py leaves
BEGIN_SOLUTION = "### BEGIN SOLUTION"
CHECKS_LINE = re.compile(r"^Exercises: (\d+) of (\d+) done$", re.M)  # what course.exercises.report() prints
MAX_PROBLEMS = 5  # per notebook in a message: the first few are the ones to fix first


@dataclass
class NotebookSummary:
    """One notebook of an all-notebooks submission: did it run cleanly, how much of it is done, its sizes."""
    name: str
    problems: list[str]
    exercises: tuple[int, int]  # (done, total)
    answers: tuple[int, int]
    checks: tuple[int, int] | None = None  # (passed, total) as the notebook's last report() printed it
    ipynb_bytes: int = 0
    html_bytes: int = 0

    @property
    def ran_cleanly(self) -> bool:
        return not self.problems


@dataclass
class BundleResult:
    """What :func:`submit_all` wrote: one zip with every notebook, its HTML export and SUMMARY.md."""
    zip_path: Path
    notebooks: list[NotebookSummary]
    summary: str
    budget_bytes: int

    def report(self) -> str:
        size = self.zip_path.stat().st_size
        verdict = "within" if size <= self.budget_bytes else "OVER"
        return (f"{self.summary}\n{self.zip_path.name}: {_size(size)}, {verdict} the budget of "
                f"{self.budget_bytes / 1e6:.1f} MB")


def _is_solution_cell(cell) -> bool:
    # nbgrader's metadata (kept in student versions) or its marker (solution versions)
    return bool(cell.metadata.get("nbgrader", {}).get("solution")) or BEGIN_SOLUTION in cell.source


def _has_code_stub(cell) -> bool:
    return any(line.strip() == CODE_STUB for line in cell.source.splitlines())


def count_progress(nb, reference=None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((exercises done, exercises), (written answers done, written answers)) of a notebook.

    An exercise is a code cell that is a solution cell (nbgrader metadata or marker) or still holds the stub
    ``raise NotImplementedError()``; it is done once the stub is gone. A written answer is a Markdown solution
    cell or one that still says ``YOUR ANSWER HERE``; it is done once that text is gone. A copy that lost
    nbgrader's metadata still counts right when ``reference`` (the kit's solution version) gives the totals.

    >>> import nbformat
    >>> stub = nbformat.v4.new_code_cell("def f():\\n    # YOUR CODE HERE\\n    raise NotImplementedError()")
    >>> answer = nbformat.v4.new_markdown_cell("**Your answer:** the seed fixes the noise.")
    >>> answer.metadata["nbgrader"] = {"solution": True}
    >>> count_progress(nbformat.v4.new_notebook(cells=[stub, answer]))
    ((0, 1), (1, 1))
    """
    code = [c for c in nb.cells if c.cell_type == "code" and (_is_solution_cell(c) or _has_code_stub(c))]
    text = [c for c in nb.cells if c.cell_type == "markdown" and (_is_solution_cell(c) or ANSWER_STUB in c.source)]
    code_todo = sum(_has_code_stub(c) for c in code)
    text_todo = sum(ANSWER_STUB in c.source for c in text)
    code_total, text_total = len(code), len(text)
    if reference is not None:
        code_total = max(code_total, sum(c.cell_type == "code" and _is_solution_cell(c) for c in reference.cells))
        text_total = max(text_total, sum(c.cell_type == "markdown" and _is_solution_cell(c) for c in reference.cells))
    return (code_total - code_todo, code_total), (text_total - text_todo, text_total)


def checks_passed(nb) -> tuple[int, int] | None:
    """(passed, total) from the last "Exercises: N of M done" that ``course.exercises.report()`` printed in
    the notebook's outputs; None when it never ran. Unlike :func:`count_progress` (is the stub gone?), this
    says whether the exercises passed their checks.

    >>> import nbformat
    >>> cell = nbformat.v4.new_code_cell("report()")
    >>> cell.outputs = [nbformat.v4.new_output("stream", text="Exercises: 2 of 3 done\\n  [x] rate\\n")]
    >>> checks_passed(nbformat.v4.new_notebook(cells=[cell]))
    (2, 3)
    """
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            for match in CHECKS_LINE.finditer(str(output.get("text", ""))):
                found = (int(match.group(1)), int(match.group(2)))
    return found


def _short(problems: list[str], nb) -> list[str]:
    """A notebook's problems for a message: one line when nothing ran, else the first few."""
    code_cells = sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells)
    if code_cells and sum("was not run" in p for p in problems) == len(problems) == code_cells:
        return [f"not run (none of its {code_cells} code cells ran)"]
    more = len(problems) - MAX_PROBLEMS
    return problems[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else [])


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _fraction(pair: tuple[int, int]) -> str:
    return f"{pair[0]}/{pair[1]}" if pair[1] else "-"


def summary_text(student: str, folder: Path, rows: list[NotebookSummary], changes: list[str], budget: int) -> str:
    """SUMMARY.md of an all-notebooks submission: one table row per notebook, then problems and changes."""
    lines = [f"# Submission of {student}", "",
             f"{len(rows)} notebook(s) from {printable(folder.name)}/, size budget {budget / 1e6:.1f} MB for the "
             "zip.", "",
             "| notebook | ran cleanly | exercises written | checks passed | written answers done | .ipynb | .html |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.name} | {'yes' if r.ran_cleanly else 'no'} | {_fraction(r.exercises)} "
              f"| {_fraction(r.checks) if r.checks else 'not run'} | {_fraction(r.answers)} "
              f"| {_size(r.ipynb_bytes)} | {_size(r.html_bytes)} |" for r in rows]
    unclean = [r for r in rows if not r.ran_cleanly]
    if unclean:
        lines += ["", "Did not run cleanly (run with --execute; the outputs show how far each got):"]
        lines += [f"- {r.name}: {problem}" for r in unclean for problem in r.problems]
    if changes:
        lines += ["", "Changes made for Moodle:"] + [f"- {change}" for change in changes]
    return "\n".join(lines) + "\n"


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _read_all(folder: Path, execute: bool, timeout: int, log) -> dict:
    paths = sorted(folder.glob(NOTEBOOK_GLOB)) if folder.is_dir() else []
    if not paths:
        raise SubmissionError(f"No notebooks named NN_*.ipynb in {printable(folder)}. Fix: pass the folder you "
                              "work in, e.g. --dir dist/student (make submission NAME=you DIR=dist/student), or name "
                              "one notebook (make submission NB=notebooks/06_full_pipeline.ipynb NAME=you).")
    notebooks = {}
    for path in paths:
        nb = read_notebook(path)
        if execute:
            log(f"running {shown(path)} top to bottom ...")
            _execute(nb, path, timeout)
        notebooks[path] = nb
    return notebooks


def submit_all(folder: str | Path | None = None, name: str | None = None, max_mb: float = 2.0,
               execute: bool = False, out_dir: str | Path | None = None, timeout: int = 900,
               log=lambda message: None) -> BundleResult:
    """Check every ``NN_*.ipynb`` in ``folder`` (default notebooks/) and write one zip for Moodle.

    The zip ``<name>_notebooks.zip`` holds each notebook, its HTML export and SUMMARY.md (per notebook: ran
    cleanly, exercises and written answers done, sizes). A secret in any notebook refuses the whole submission,
    and so does a notebook that did not run top to bottom, unless ``execute=True``: then each notebook is run
    here and submitted as it ran, the summary naming the cells that failed. Nothing is written when refused.
    Images lose their metadata, and all notebooks' images shrink together until the zip fits ``max_mb``.
    """
    import getpass

    import nbformat

    folder = Path(folder) if folder else KIT_ROOT / "notebooks"
    notebooks = _read_all(folder, execute, timeout, log)
    secrets = [f"{shown(path)}, {line}" for path, nb in notebooks.items() for line in find_secrets(nb)]
    if secrets:
        raise SubmissionError("Your notebooks contain secrets, so nothing was submitted (they are not shown here):\n  "
                              + "\n  ".join(secrets) + SECRETS_FIX)
    problems = {path: run_problems(nb) for path, nb in notebooks.items()}
    if not execute and any(problems.values()):
        lines = [f"{shown(path)}: {line}" for path, found in problems.items()
                 for line in _short(found, notebooks[path])]
        raise SubmissionError("Some notebooks did not run top to bottom, so nothing was submitted:\n  "
                              + "\n  ".join(lines) +
                              "\nFix: open each notebook named, choose Kernel > Restart Kernel and Run All Cells, fix "
                              "any error, save, and submit again (or pass --execute, EXECUTE=1 with make, to run them "
                              "all here: a notebook with an error, such as an unfinished exercise, is then submitted "
                              "as it ran and marked in the summary).")
    changes, rows, images = [], [], {}
    for path, nb in notebooks.items():
        reference = KIT_ROOT / "notebooks" / path.name
        done = count_progress(nb, nbformat.read(reference, as_version=4) if reference.is_file() else None)
        rows.append(NotebookSummary(printable(path.stem), _short(problems[path], nb) if problems[path] else [], *done,
                                    checks=checks_passed(nb)))
        try:
            notebooks[path], stripped = strip_image_metadata(nb)  # a broken image stops here, before any writing
        except SubmissionError as err:
            raise SubmissionError(f"{shown(path)}, {err}") from None
        changes += [f"{shown(path)}: {change}" for change in stripped + _drop_widgets(notebooks[path])]
        images[path] = _image_outputs(notebooks[path])
    student = _safe_name(name or getpass.getuser())
    budget = int(max_mb * 1_000_000)
    html = {path: _export_html(nb) for path, nb in notebooks.items()}

    def pack(notes: list[str]) -> tuple[bytes, str]:
        files = {}
        for row, (path, nb) in zip(rows, notebooks.items()):
            files[f"{student}_{path.stem}.ipynb"] = nbformat.writes(nb).encode()
            files[f"{student}_{path.stem}.html"] = html[path].encode()
            row.ipynb_bytes, row.html_bytes = len(files[f"{student}_{path.stem}.ipynb"]), len(html[path].encode())
        summary = summary_text(student, folder, rows, notes, budget)
        return _zip_bytes({"SUMMARY.md": summary.encode(), **files}), summary

    archive, summary = pack(changes)
    if len(archive) > budget and any(images.values()):
        for max_side, quality in IMAGE_STEPS:
            for path, found in images.items():
                if found:
                    _to_thumbnails(found, max_side, quality)
                    html[path] = _export_html(notebooks[path])
            count = sum(len(found) for found in images.values())
            archive, summary = pack(changes + [f"turned {count} image output(s) into JPEG thumbnails of at most "
                                               f"{max_side} px, so that the zip fits the budget"])
            if len(archive) <= budget:
                break
    out = Path(out_dir) if out_dir else KIT_ROOT / "submission"
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"{student}_notebooks.zip"
    zip_path.write_bytes(archive)
    return BundleResult(zip_path, rows, summary, budget)

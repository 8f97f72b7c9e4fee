"""Moodle submission: check a notebook, keep secrets out, shrink it, write .ipynb + .html + .zip.

Moodle cannot show notebooks and limits upload sizes (often 1-2 MB), so a submission is the
notebook plus a self-contained HTML export, zipped. Before writing anything the notebook is checked:

* no secret anywhere in it (an API key, the A1111 password, a bearer token, a private key...): sources,
  outputs of every type, metadata at every level, attachments, and the text chunks / EXIF inside images
  are all scanned, with detect-secrets' detectors plus the kit's own patterns and configured secrets.
  A finding names the place and the kind of secret, never the secret or the line that holds it;
* it ran top to bottom (execution counts in order, no error outputs), or ``execute=True`` runs it;
* PNG/JPEG images are re-encoded without their metadata; then they are shrunk to JPEG thumbnails and
  widget state is dropped until it fits the budget.

Example (from a terminal: ``make submission NB=notebooks/06_full_pipeline.ipynb NAME=ann``):
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


# --- Ran top to bottom -----------------------------------------------------------------------------

def _cell_label(number: int, cell) -> str:
    # The first line helps find the cell, unless that line holds a secret: then the number alone.
    first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    if not first:
        return f"cell {number} (empty)"
    return f"cell {number}" if holds_secret(first) else f"cell {number} ({first[:50]!r})"


def check_ran_cleanly(nb) -> None:
    """Raise SubmissionError unless every code cell ran, in order, without an error output."""
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


def shrink(nb, budget_bytes: int) -> tuple[object, list[str]]:
    """Drop widget state and turn image outputs into JPEG thumbnails, smaller until the notebook fits."""
    import copy

    import nbformat

    changes = []
    nb = copy.deepcopy(nb)
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
    images = [(output, mime, f"cell {c} output {o}") for c, cell in enumerate(nb.cells, start=1)
              for o, output in enumerate(cell.get("outputs", []), start=1)
              for mime in STRIPPED_MIMES if mime in output.get("data", {})]
    if len(nbformat.writes(nb).encode()) <= budget_bytes or not images:
        return nb, changes
    pristine = {id(o): (o["data"][m], m) for o, m, _ in images}
    for max_side, quality in IMAGE_STEPS:
        for output, mime, where in images:
            data, original_mime = pristine[id(output)]
            output["data"].pop(mime, None)
            output["data"]["image/jpeg"] = _shrink_image(data, max_side, quality, where, original_mime)
            output.get("metadata", {}).pop(original_mime, None)
        images = [(o, "image/jpeg", where) for o, _, where in images]
        if len(nbformat.writes(nb).encode()) <= budget_bytes:
            break
    changes.append(f"turned {len(images)} image output(s) into JPEG thumbnails of at most {max_side} px")
    return nb, changes


def _export_html(nb) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb)
    return body


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
        raise SubmissionError(f"No notebook at {path}. Pass the path of your .ipynb file.")
    nb = nbformat.read(path, as_version=4)
    if execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    # Secrets first: the other checks' messages may describe cells, and these cells must not be quoted.
    secrets = find_secrets(nb)
    if secrets:
        raise SubmissionError("The notebook contains secrets, so it was not submitted (they are not shown here):\n  "
                              + "\n  ".join(secrets) +
                              "\nFix: put keys and passwords in the .env file (never in a cell), clear the outputs "
                              "that show them (for image metadata: clear that output), run the notebook again and "
                              "save.")
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

"""Moodle submission: check a notebook, keep secrets out, shrink it, write .ipynb + .html + .zip.

Moodle cannot show notebooks and limits upload sizes (often 1-2 MB), so a submission is the
notebook plus a self-contained HTML export, zipped. Before writing anything the notebook is checked:

* it ran top to bottom (execution counts in order, no error outputs), or ``execute=True`` runs it;
* no cell or output holds a secret (an API key, the A1111 password, a bearer token);
* images are shrunk to JPEG thumbnails and widget state is dropped until it fits the budget.

Example (from a terminal: ``make submission NB=notebooks/06_full_pipeline.ipynb NAME=ann``):
    >>> from helpers.submission import submit
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

from .config import KIT_ROOT, LOCAL_API_KEY, load_settings

# Patterns of secrets that must never reach Moodle. Each match is reported masked.
SECRET_PATTERNS = [
    ("an OpenAI-style API key", re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9_\-\.=]{12,}", re.I)),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{20,}")),
]
IMAGE_STEPS = [(768, 85), (512, 80), (384, 70), (256, 60), (160, 50)]  # (max side, JPEG quality), tried in order
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class SubmissionError(ValueError):
    """The notebook cannot be submitted as it is; the message names the cells and the fix."""


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


def _cell_label(number: int, cell) -> str:
    first = cell.source.strip().splitlines()[0][:50] if cell.source.strip() else "(empty)"
    return f"cell {number} ({first!r})"


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


def _known_secrets() -> list[tuple[str, str]]:
    settings = load_settings()
    secrets = []
    key = settings.llm_api_key.reveal()
    if key and key != LOCAL_API_KEY and len(key) >= 6:
        secrets.append(("the configured LLM_API_KEY", key))
    if settings.sd_auth:
        password = settings.sd_auth.reveal().partition(":")[2]
        if len(password) >= 4:
            secrets.append(("the configured A1111 password (SD_AUTH)", password))
    return secrets


def _texts_of(cell) -> list[str]:
    texts = [cell.source]
    for output in cell.get("outputs", []):
        texts.append(str(output.get("text", "")))
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json") or mime == "application/javascript":
                texts.append(str(value))
    return texts


def find_secrets(nb) -> list[str]:
    """Where secrets appear, as lines like "cell 3 ('import os'): an OpenAI-style API key sk-a...".

    The secret itself is never printed in full.
    """
    known = _known_secrets()
    found = []
    for number, cell in enumerate(nb.cells, start=1):
        for text in _texts_of(cell):
            for what, pattern in SECRET_PATTERNS:
                for match in pattern.finditer(text):
                    found.append(f"{_cell_label(number, cell)}: {what} {match.group(0)[:6]}...")
            for what, secret in known:
                if secret in text:
                    found.append(f"{_cell_label(number, cell)}: {what}")
    return sorted(set(found))


def _shrink_image(data: str, max_side: int, quality: int) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        image = image.convert("RGB")
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
    images = [(output, mime) for cell in nb.cells for output in cell.get("outputs", [])
              for mime in ("image/png", "image/jpeg") if mime in output.get("data", {})]
    if len(nbformat.writes(nb).encode()) <= budget_bytes or not images:
        return nb, changes
    pristine = {id(o): (o["data"][m], m) for o, m in images}
    for max_side, quality in IMAGE_STEPS:
        for output, mime in images:
            data, original_mime = pristine[id(output)]
            output["data"].pop(mime, None)
            output["data"]["image/jpeg"] = _shrink_image(data, max_side, quality)
            output.get("metadata", {}).pop(original_mime, None)
        images = [(o, "image/jpeg") for o, _ in images]
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
    check_ran_cleanly(nb)
    secrets = find_secrets(nb)
    if secrets:
        raise SubmissionError("The notebook contains secrets, so it was not submitted:\n  " + "\n  ".join(secrets) +
                              "\nFix: put keys and passwords in the .env file (never in a cell), clear the outputs "
                              "that show them, run the notebook again and save.")
    budget = int(max_mb * 1_000_000)
    nb, changes = shrink(nb, budget)
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

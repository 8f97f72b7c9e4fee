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

from helpers.config import KIT_ROOT, LOCAL_API_KEY, load_settings
from helpers.errors import KitError

# The kit's own patterns, for what detect-secrets misses: keys of any shape after "sk-" (detect-secrets only
# knows keys with OpenAI's T3BlbkFJ marker), keys glued to a word ("apikey_sk-..."), bearer tokens and
# Hugging Face tokens. A key is never printed, not even in part: a finding names the place and the kind.
SECRET_PATTERNS = [
    # "sk-" not inside a word (so run folder slugs like "...-dusk-landscape-..." pass) ...
    ("an OpenAI-style API key", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{16,}")),
    # ... or glued to one, when it looks random (upper and lower case and a digit), as real keys do.
    ("an OpenAI-style API key", re.compile(r"sk-(?=[\w\-]*[0-9])(?=[\w\-]*[A-Z])(?=[\w\-]*[a-z])[A-Za-z0-9_\-]{20,}")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9_\-\.=~+/]{12,}", re.IGNORECASE)),
    ("a Hugging Face token", re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{20,}")),
]
# detect-secrets (Yelp) plugins: regexes for well-known token formats and "password = '...'"-style
# assignments. Base64HighEntropyString runs separately, on code only: outputs hold image data and hashes.
DETECT_SECRETS_PLUGINS = [
    "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "GitHubTokenDetector", "GitLabTokenDetector",
    "JwtTokenDetector", "KeywordDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector",
    "SlackDetector", "StripeDetector",
]
# Its false-positive filters; not its allowlist comment ("# pragma: allowlist secret"), which would let
# a cell wave its own key through.
DETECT_SECRETS_FILTERS = [
    f"detect_secrets.filters.heuristic.{name}" for name in (
        "is_sequential_string", "is_potential_uuid", "is_likely_id_string", "is_templated_secret",
        "is_prefixed_with_dollar_sign", "is_indirect_reference", "is_not_alphanumeric_string")
]
HIGH_ENTROPY_LIMIT = 4.5  # detect-secrets' default for base64-like string literals
# Tokens are tens of characters long; longer base64 literals in code are data (an inlined image, a file).
HIGH_ENTROPY_MAX_LENGTH = 200
# detect-secrets' keyword regex slows down with the square of a run of word characters, so its input loses
# long base64 runs (image data, scanned as images instead) and long lines are cut into overlapping pieces.
LONG_RUN = re.compile(r"[A-Za-z0-9+/=_\-]{500,}")
PIECE, OVERLAP = 2000, 300
# Values local LLM servers' docs tell students to pass as the key; they are not secrets.
DUMMY_KEYS = {LOCAL_API_KEY, "lm-studio", "ollama", "empty", "sk-no-key-required", "no-key", "none", "dummy"}
SHORT_SECRET = 4  # configured secrets shorter than this are matched as whole tokens, not as any substring
IMAGE_STEPS = [(768, 85), (512, 80), (384, 70), (256, 60), (160, 50)]  # (max side, JPEG quality), tried in order
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
STRIPPED_MIMES = ("image/png", "image/jpeg")  # re-encoded without metadata; other images are only scanned
DATA_URI = re.compile(r"data:(image/[a-z+.\-]+);base64,([A-Za-z0-9+/=\s]+)")
CLEAR_OUTPUT_FIX = ("Fix: clear that output (right-click the cell > Clear Cell Output), run the notebook again "
                    "and save.")


class SubmissionError(KitError, ValueError):
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


# --- Where a notebook holds text -------------------------------------------------------------------

def _where(path: tuple) -> str:
    """A place in the notebook JSON, for people: ("cells", 2, "outputs", 0, "metadata") -> "cell 3 output 1 metadata"."""
    if len(path) < 2 or path[0] != "cells" or not isinstance(path[1], int):
        return "notebook metadata" if path[:1] == ("metadata",) else "notebook"
    where, rest = f"cell {path[1] + 1}", path[2:]
    if rest[:1] == ("outputs",) and len(rest) > 1 and isinstance(rest[1], int):
        where, rest = f"{where} output {rest[1] + 1}", rest[2:]
    if rest[:1] == ("attachments",):
        return f"{where} attachment"
    return f"{where} metadata" if rest[:1] == ("metadata",) else where


def _walk(node, path: tuple = ()):
    """Yield (path, text) for every string, key and number in a JSON tree: no place is left out by name."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key)
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,))
    elif node is not None:
        yield path, str(node)


def _is_image_data(path: tuple) -> bool:
    # Base64 data of a bitmap in an output or an attachment (SVG is text and is scanned as text).
    mime = path[-1] if path else None
    return isinstance(mime, str) and mime.startswith("image/") and mime != "image/svg+xml" and "metadata" not in path


def _decode_image(raw: bytes):
    """The PIL image in ``raw``; raises whatever PIL raises for bytes that are not one."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()  # decode now, so a truncated file fails here and not later
    return image


def _exif(image) -> dict:
    try:
        return dict(image.getexif())
    except Exception:  # noqa: BLE001 - a damaged EXIF block is dropped anyway; its bytes are scanned as text
        return {}


def _image_texts(data: str) -> list[str] | None:
    """The texts an image carries besides its pixels, or None when ``data`` is not an image."""
    try:
        raw = base64.b64decode(data)
        image = _decode_image(raw)
    except Exception:  # noqa: BLE001 - any undecodable data is "not an image" here; its text is scanned instead
        return None
    # Readable runs of the file itself: PNG tEXt and unknown chunks, EXIF (all IFDs), JPEG comments, XMP.
    # Joined into one line: thousands of short runs of random bytes would cost a detect-secrets call each.
    texts = [" ".join(run.decode("ascii") for run in re.findall(rb"[\x20-\x7e]{8,}", raw))]
    # PIL's view adds what is stored compressed (PNG zTXt / iTXt chunks).
    texts += [f"{key}: {value}" for key, value in image.info.items()]
    texts += [str(value) for value in _exif(image).values()]
    return texts


def _places(nb):
    """Yield (where, text, is_code) for every piece of text in the notebook, images' metadata included."""
    cells = nb.get("cells", [])
    for path, text in _walk(nb):
        if _is_image_data(path) and (texts := _image_texts(text)) is not None:
            for inner in texts:
                yield f"{_where(path)} image metadata", inner, False
            continue
        is_code = (len(path) >= 3 and path[0] == "cells" and path[2] == "source"
                   and cells[path[1]].get("cell_type") == "code")
        yield _where(path), text, is_code
        # Images inlined in HTML or Markdown (data: URIs) carry metadata too.
        for match in DATA_URI.finditer(text) if "data:image/" in text else ():
            for inner in _image_texts(match.group(2)) or []:
                yield f"{_where(path)} image metadata", inner, False


# --- What counts as a secret -----------------------------------------------------------------------

def _configured_rules() -> list[tuple[str, re.Pattern]]:
    """Exact matches for the kit's own configured secrets (LLM_API_KEY, the SD_AUTH password)."""
    settings = load_settings()
    rules = []
    key = settings.llm_api_key.reveal()
    if key and key != LOCAL_API_KEY:
        rules.append(("the configured LLM_API_KEY", _exact(key)))
    if settings.sd_auth:
        user, _, password = settings.sd_auth.reveal().partition(":")
        if password:
            rules.append(("the configured A1111 password (SD_AUTH)", _exact(password, user)))
    return rules


def _exact(secret: str, user: str = "") -> re.Pattern:
    """A pattern for one configured secret.

    Long ones match anywhere, even inside a word. Short ones ("q7") would match ordinary text, so they
    match only where a secret is written: a string literal, after ":" or "Bearer", or next to the user name.

    >>> bool(_exact("q7", "ann").search("auth = ('ann', 'q7')")), bool(_exact("q7", "ann").search("q7x and aq7"))
    (True, False)
    """
    quoted = re.escape(secret)
    if len(secret) >= SHORT_SECRET:
        return re.compile(quoted)
    token = rf"{quoted}(?![A-Za-z0-9])"
    forms = [rf"(['\"]){quoted}\1", rf"(?:^|[\s:]|Bearer\s+){token}" if not user else rf"\bBearer\s+{token}"]
    if user:
        forms.append(rf"(?<![A-Za-z0-9]){re.escape(user)}(?:\W{{1,6}}){token}")
    return re.compile("|".join(f"(?:{form})" for form in forms), re.MULTILINE)


def _detect_secrets_config() -> dict:
    return {"plugins_used": [{"name": name} for name in DETECT_SECRETS_PLUGINS],
            "filters_used": [{"path": path} for path in DETECT_SECRETS_FILTERS]}


class _Scanner:
    """Finds the kinds of secret in a text: the kit's patterns, the configured secrets, detect-secrets.

    Use it as a context manager (detect-secrets' settings are global; they are restored on exit).
    """

    def __init__(self):
        try:
            from detect_secrets.core.scan import scan_line
            from detect_secrets.filters import heuristic
            from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
            from detect_secrets.settings import transient_settings
        except ImportError:
            raise SubmissionError("The secret scanner detect-secrets is not installed, so the notebook cannot be "
                                  "checked. Fix: pip install 'detect-secrets>=1.5,<2' (or run make setup).") from None
        self._scan_line, self._heuristic = scan_line, heuristic
        self._entropy = Base64HighEntropyString(limit=HIGH_ENTROPY_LIMIT)
        self._settings = transient_settings(_detect_secrets_config())
        self._rules = SECRET_PATTERNS + _configured_rules()

    def __enter__(self):
        self._settings.__enter__()
        return self

    def __exit__(self, *exc):
        return self._settings.__exit__(*exc)

    def kinds(self, text: str, is_code: bool = False) -> set[str]:
        found = {what for what, pattern in self._rules
                 if any(m.group(0).lower() not in DUMMY_KEYS for m in pattern.finditer(text))}
        for line in _pieces(text):
            found |= {f"a possible secret (detect-secrets: {secret.type})" for secret in self._scan_line(line)
                      if (secret.secret_value or "").lower() not in DUMMY_KEYS}
            if is_code:
                found |= self._high_entropy(line)
        return found

    def _high_entropy(self, line: str) -> set[str]:
        # Quoted base64-like literals in code only, through detect-secrets' false-positive filters for a
        # value (not is_indirect_reference: in Client("...") the literal itself is the secret).
        h = self._heuristic
        return {f"a possible secret (detect-secrets: {secret.type})"
                for secret in self._entropy.analyze_line(filename="cell.py", line=line)
                if len(secret.secret_value) <= HIGH_ENTROPY_MAX_LENGTH
                and not (h.is_sequential_string(secret.secret_value) or h.is_potential_uuid(secret.secret_value)
                         or h.is_likely_id_string(secret.secret_value, line))}


def _pieces(text: str):
    """The lines detect-secrets reads: without long base64 runs, each at most PIECE characters."""
    for line in LONG_RUN.sub(" ", text).splitlines():
        for start in range(0, max(len(line) - OVERLAP, 1), PIECE - OVERLAP):
            yield line[start:start + PIECE]


def _holds_secret(text: str) -> bool:
    with _Scanner() as scanner:
        return bool(scanner.kinds(text, is_code=True))


def _natural(line: str) -> list:
    # "cell 2" before "cell 10"
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", line)]


def find_secrets(nb) -> list[str]:
    """Where secrets appear, as lines like "cell 3: an OpenAI-style API key" or "notebook metadata: ...".

    Every place is scanned: sources, outputs of every type, metadata at every level, attachments and the
    metadata inside images. The secret itself is never shown, not even in part.

    >>> import nbformat
    >>> cell = nbformat.v4.new_code_cell('client = OpenAI(api_key="sk-proj-' + 'Ab3x' * 6 + '")')
    >>> for line in find_secrets(nbformat.v4.new_notebook(cells=[cell])):
    ...     print(line)
    cell 1: a possible secret (detect-secrets: Secret Keyword)
    cell 1: an OpenAI-style API key
    """
    found = set()
    with _Scanner() as scanner:
        for where, text, is_code in _places(nb):
            found |= {f"{where}: {kind}" for kind in scanner.kinds(text, is_code)}
    return sorted(found, key=_natural)


# --- Ran top to bottom -----------------------------------------------------------------------------

def _cell_label(number: int, cell) -> str:
    # The first line helps find the cell, unless that line holds a secret: then the number alone.
    first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    if not first:
        return f"cell {number} (empty)"
    return f"cell {number}" if _holds_secret(first) else f"cell {number} ({first[:50]!r})"


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
                    yield _where(path + (key,)), node, key
                else:
                    yield from visit(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from visit(value, path + (index,))
    yield from visit(nb, ())


def _open_image(data: str, where: str, mime: str):
    try:
        return _decode_image(base64.b64decode(data))
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
    elif image.format == "JPEG" and _exif(image).get(0x0112, 1) == 1:
        image.info.clear()
        # "keep": the same quantisation tables and subsampling, so the pixels do not degrade
        image.save(buffer, format="JPEG", quality="keep", subsampling="keep")
    else:
        # A photo turned by its EXIF orientation (the tag goes, so the pixels turn), or data of another format.
        upright = ImageOps.exif_transpose(image) if _exif(image) else image
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

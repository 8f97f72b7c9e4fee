"""The secret scan of a notebook, the first check of a Moodle submission (course/submission.py).

No secret may leave in a submission: an API key, the A1111 password, a bearer token, a private key...
Every place in the notebook is scanned: sources, outputs of every type, metadata at every level,
attachments, and the text chunks / EXIF inside images, with detect-secrets' detectors plus the kit's
own patterns and its configured secrets (LLM_API_KEY, the passwords of SD_AUTH, SD_URL and LLM_BASE_URL,
also as an HTTP Basic header). Base64 data (attachments of any type, binary outputs) is decoded and
scanned too. A finding names the place and the kind of secret, never the secret or the line that holds it.

Example:
    >>> import nbformat
    >>> cell = nbformat.v4.new_code_cell("print('no secret here')")
    >>> find_secrets(nbformat.v4.new_notebook(cells=[cell]))
    []
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from urllib.parse import quote

from helpers.config import PLACEHOLDER_KEYS, credentials, load_settings
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
DUMMY_KEYS = PLACEHOLDER_KEYS
# "Authorization: Basic <base64 of user:password>": found by decoding, as the base64 itself looks like nothing.
BASIC_HEADER = re.compile(r"\bBasic\s+([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)
# Output types that are text as they stand; any other output data (application/pdf, ...) is base64.
TEXT_MIME = re.compile(r"^text/|json$|xml$|javascript$|^application/(x-)?latex$")
SHORT_SECRET = 4  # configured secrets shorter than this are matched as whole tokens, not as any substring
DATA_URI = re.compile(r"data:(image/[a-z+.\-]+);base64,([A-Za-z0-9+/=\s]+)")


class SubmissionError(KitError, ValueError):
    """The notebook cannot be submitted as it is; the message names the cells and the fix.

    Defined here, with the first check; course/submission.py raises it for the other checks.
    """


# --- Where a notebook holds text -------------------------------------------------------------------

def place_name(path: tuple) -> str:
    """A place in the notebook JSON, for people.

    ("cells", 2, "outputs", 0, "metadata") -> "cell 3 output 1 metadata".
    """
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


def decode_image(raw: bytes):
    """The PIL image in ``raw``; raises whatever PIL raises for bytes that are not one."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()  # decode now, so a truncated file fails here and not later
    return image


def read_exif(image) -> dict:
    """The EXIF tags of a PIL image as a dict; empty when there are none or the block is damaged."""
    try:
        return dict(image.getexif())
    except Exception:  # noqa: BLE001 - a damaged EXIF block is dropped anyway; its bytes are scanned as text
        return {}


def _is_encoded(path: tuple) -> bool:
    """Whether the string at ``path`` is base64 data: any attachment (a text file too), or a binary output."""
    if len(path) == 5 and path[0] == "cells" and path[2] == "attachments":
        return True
    return (len(path) == 6 and path[0] == "cells" and path[2] == "outputs" and path[4] == "data"
            and isinstance(path[5], str) and not TEXT_MIME.search(path[5]))


def decoded_text(data: str) -> str | None:
    """The text inside base64 ``data`` (its readable runs when it is binary), or None when it is not base64.

    >>> decoded_text(base64.b64encode(b"LLM_API_KEY=sk-123").decode()), decoded_text("not base64!")
    ('LLM_API_KEY=sk-123', None)
    """
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return " ".join(run.decode("ascii") for run in re.findall(rb"[\x20-\x7e]{8,}", raw))


def _image_texts(data: str) -> list[str] | None:
    """The texts an image carries besides its pixels, or None when ``data`` is not an image."""
    try:
        raw = base64.b64decode(data)
        image = decode_image(raw)
    except Exception:  # noqa: BLE001 - any undecodable data is "not an image" here; its text is scanned instead
        return None
    # Readable runs of the file itself: PNG tEXt and unknown chunks, EXIF (all IFDs), JPEG comments, XMP.
    # Joined into one line: thousands of short runs of random bytes would cost a detect-secrets call each.
    texts = [" ".join(run.decode("ascii") for run in re.findall(rb"[\x20-\x7e]{8,}", raw))]
    # PIL's view adds what is stored compressed (PNG zTXt / iTXt chunks).
    texts += [f"{key}: {value}" for key, value in image.info.items()]
    texts += [str(value) for value in read_exif(image).values()]
    return texts


def _places(nb):
    """Yield (where, text, is_code) for every piece of text in the notebook, images' metadata included."""
    cells = nb.get("cells", [])
    for path, text in _walk(nb):
        if _is_image_data(path) and (texts := _image_texts(text)) is not None:
            for inner in texts:
                yield f"{place_name(path)} image metadata", inner, False
            continue
        # Base64 hides a key from every pattern: a text file attached to a Markdown cell is scanned decoded.
        if _is_encoded(path) and (inner := decoded_text(text)):
            yield place_name(path), inner, False
        is_code = (len(path) >= 3 and path[0] == "cells" and path[2] == "source"
                   and cells[path[1]].get("cell_type") == "code")
        yield place_name(path), text, is_code
        # Images inlined in HTML or Markdown (data: URIs) carry metadata too.
        for match in DATA_URI.finditer(text) if "data:image/" in text else ():
            for inner in _image_texts(match.group(2)) or []:
                yield f"{place_name(path)} image metadata", inner, False


# --- What counts as a secret -----------------------------------------------------------------------

def _configured_rules() -> list[tuple[str, re.Pattern]]:
    """Exact matches for the kit's own configured secrets: LLM_API_KEY, and the passwords of SD_AUTH, SD_URL
    and LLM_BASE_URL wherever they are written, URL-encoded or inside an HTTP Basic header."""
    settings = load_settings()
    rules = []
    key = settings.llm_api_key.reveal()
    if key and key.lower() not in PLACEHOLDER_KEYS:
        rules.append(("the configured LLM_API_KEY", _exact(key)))
    sources = (("the configured A1111 password (SD_AUTH)", credentials(settings.sd_auth)),
               ("the password in SD_URL", credentials(urls=[settings.sd_url])),
               ("the password in LLM_BASE_URL", credentials(urls=[settings.llm_base_url])))
    for what, found in sources:
        for user, password in found:
            rules += [(what, _exact(form, user)) for form in {password, quote(password, safe="")}]
            basic = base64.b64encode(f"{user}:{password}".encode()).decode().rstrip("=")  # with or without padding
            rules.append((f"{what} as an HTTP Basic header", _exact(basic)))
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
        if any(_is_basic_credential(m.group(1)) for m in BASIC_HEADER.finditer(text)):
            found.add("an HTTP Basic auth header (a user and password)")
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


def _is_basic_credential(data: str) -> bool:
    """Whether ``data`` is base64 of "user:password", as in an HTTP Basic header."""
    text = decoded_text(data + "=" * (-len(data) % 4))
    user, sep, password = (text or "").partition(":")
    return bool(sep and password) and (text or "").isprintable()


def _pieces(text: str):
    """The lines detect-secrets reads: without long base64 runs, each at most PIECE characters."""
    for line in LONG_RUN.sub(" ", text).splitlines():
        for start in range(0, max(len(line) - OVERLAP, 1), PIECE - OVERLAP):
            yield line[start:start + PIECE]


def holds_secret(text: str) -> bool:
    """Whether ``text`` (read as code) holds anything :func:`find_secrets` would report."""
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

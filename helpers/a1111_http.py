"""The HTTP layer under ``A1111Client``: one session to an A1111 server, and every failure an A1111Error.

A refused connection, a cut-off answer, a 404 (no ``--api``), a 401 (``--api-auth``), a 422 (a typo), a 500:
``A1111Http.request`` turns each into an ``A1111Error`` naming the URL, the cause and the fix, with passwords
masked even when a server echoes them back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from .config import Secret, load_settings, mask, secret_forms
from .errors import KitError
from .generation import NOT_A1111
from .urls import localhost_hint, without_password

START_HINT = ("Start A1111 with the --api flag (on Windows add it to COMMANDLINE_ARGS in webui-user.bat, on "
              "Linux/macOS to COMMANDLINE_ARGS in webui-user.sh), or run `make serve` for the kit's offline server.")


class A1111Error(KitError, RuntimeError):
    """A request to A1111 failed. Also: ``status`` (HTTP status or None), ``url``, ``detail`` (the server's
    text) and ``generation`` (the good images of a partly readable answer, or None)."""

    def __init__(self, message: str, *, fix: str = "", status: int | None = None, url: str = "", detail: str = "",
                 generation=None):
        super().__init__(message, fix)
        self.status, self.url, self.detail, self.generation = status, url, detail, generation


class InvalidRequest(A1111Error, ValueError):
    """Refused before sending: a misspelled field or an impossible value."""


def _short(text, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _cause(err: BaseException) -> str:
    """The innermost readable reason of a requests error, e.g. "IncompleteRead(14 bytes read, ...)".

    >>> _cause(requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer")))
    'ConnectionResetError: [Errno 104] Connection reset by peer'
    """
    inner = err.args[0] if err.args else err
    if isinstance(inner, BaseException) and inner.args and isinstance(inner.args[-1], BaseException):
        inner = inner.args[-1]  # urllib3's ProtocolError("Connection broken", <the real cause>)
    text = str(inner)
    if isinstance(inner, BaseException) and type(inner).__name__ not in text:
        text = f"{type(inner).__name__}: {text}"
    return _short(text)


def _refused(err: requests.exceptions.ConnectionError) -> bool:
    """True when nothing accepted the connection, False when an open connection broke later."""
    from urllib3.exceptions import NewConnectionError

    reason = err.args[0] if err.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the real cause
    return isinstance(reason, (NewConnectionError, ConnectionRefusedError))


def _auth_tuple(auth) -> tuple[str, str] | None:
    if auth is None or auth == "":
        return None
    if isinstance(auth, Secret):
        auth = auth.reveal()
    if isinstance(auth, str):
        user, sep, password = auth.partition(":")
        if not sep:
            raise InvalidRequest("auth must be 'user:password' or a (user, password) tuple",
                                 fix="Use the same text as A1111's --api-auth, e.g. SD_AUTH=student:secret")
        return user, password
    user, password = auth
    return str(user), password.reveal() if isinstance(password, Secret) else str(password)


# A connection that broke after it was made: (requests' error, what happened, the fix), the first match wins.
_BROKEN = (
    (requests.exceptions.ChunkedEncodingError, "The answer from {shown} was cut off before its end ({cause}).",
     "Check the server's console for a crash (e.g. out of memory) and any proxy between you, then try again."),
    (requests.exceptions.ContentDecodingError, "The answer from {shown} could not be decompressed ({cause}).",
     "The server or a proxy sent a broken compressed reply: check the server's console and any proxy between you."),
    (requests.exceptions.ConnectionError, "{shown} closed the connection before it finished answering ({cause}).",
     "The server may have crashed or restarted (e.g. out of memory): check its console, then try again."),
    (requests.exceptions.RequestException, "The request to {shown} failed: {cause}.",
     "Check SD_URL, e.g. SD_URL=http://127.0.0.1:7860."),
)


class A1111Http:
    """One ``requests.Session`` to ``/sdapi/v1/`` with HTTP basic auth (``auth``: ``"user:password"`` or
    ``(user, password)`` for ``--api-auth``) and two timeouts (``timeout``: a generation's read timeout); left
    out, they come from SD_URL, SD_AUTH, SD_TIMEOUT and SD_CONNECT_TIMEOUT."""

    def __init__(self, base_url: str | None = None, auth=None, timeout: float | None = None,
                 connect_timeout: float | None = None):
        settings = load_settings()
        self.base_url = (base_url or settings.sd_url).rstrip("/")
        self._auth = _auth_tuple(settings.sd_auth if auth is None else auth)
        self.timeout = float(timeout or settings.sd_timeout)
        self.connect_timeout = float(connect_timeout or settings.sd_connect_timeout)
        self.session = self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self._auth
        return session

    def _url(self, path: str) -> str:
        return f"{self.base_url}/sdapi/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, json: Any = None, params=None, timeout: float | None = None,
                session: requests.Session | None = None) -> Any:
        """Send one request to ``/sdapi/v1/<path>`` and return the decoded JSON (or raise A1111Error).

        >>> client.request("GET", "sd-models")   # doctest: +SKIP
        [{'title': 'v1-5-pruned-emaonly.safetensors [6ce0161689]', ...}]
        """
        url = self._url(path)
        shown = without_password(url)
        try:
            response = (session or self.session).request(
                method, url, json=json, params=params, timeout=(self.connect_timeout, timeout or self.timeout))
        except requests.exceptions.ConnectTimeout:
            raise A1111Error(f"No answer from {shown} within {self.connect_timeout:g} s.", url=shown,
                             fix=f"Check that A1111 runs and SD_URL is right. {START_HINT}") from None
        except requests.exceptions.ReadTimeout:
            raise A1111Error(f"{shown} did not answer within {timeout or self.timeout:g} s.", url=shown,
                             fix="The server may still be working (check with client.progress(); stop it with "
                                 "client.interrupt()). Use fewer steps or a smaller size, or raise SD_TIMEOUT."
                             ) from None
        except requests.exceptions.RequestException as err:
            raise self._network_error(err, shown) from None
        return self._decode(response, shown)

    def get(self, path: str, **params) -> Any:
        """GET ``/sdapi/v1/<path>``, e.g. ``client.get("upscalers")``."""
        return self.request("GET", path, params=params or None, timeout=60)

    def post(self, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        """POST JSON to ``/sdapi/v1/<path>``, e.g. ``client.post("refresh-checkpoints")``."""
        return self.request("POST", path, json=payload if payload is not None else {}, timeout=timeout)

    def _network_error(self, err: requests.exceptions.RequestException, shown: str) -> A1111Error:
        if isinstance(err, requests.exceptions.ConnectionError) and _refused(err):
            return A1111Error(f"Cannot connect to {shown}: nothing is listening there.", url=shown,
                              fix=self._connection_hint())
        message, fix = next((message, fix) for kind, message, fix in _BROKEN if isinstance(err, kind))
        return A1111Error(message.format(shown=shown, cause=self._clean(_cause(err))), url=shown, fix=fix)

    def _clean(self, text: str) -> str:
        """``text`` with the passwords of SD_AUTH and SD_URL masked (a server may echo them; config.mask).

        >>> A1111Http("http://127.0.0.1:7860", auth="ann:pa55word")._clean("bad password pa55word")
        'bad password ********'
        """
        return mask(text, secret_forms(auth=":".join(self._auth) if self._auth else None, urls=[self.base_url]))

    def _connection_hint(self) -> str:
        parts = urlsplit(self.base_url)
        hints = [START_HINT]
        if parts.port == 7860:
            hints.append("If A1111 was started with --nowebui, its API listens on port 7861: SD_URL=http://127.0.0.1:7861.")
        if parts.hostname == "localhost":
            hints.append(localhost_hint(self.base_url, "SD_URL") + ".")
        return " ".join(hints)

    def _decode(self, response: requests.Response, shown: str) -> Any:
        status = response.status_code
        is_json = True
        try:
            body = response.json()
        except RecursionError:
            raise A1111Error(f"The answer from {shown} is JSON nested too deeply to read ({status}).", status=status,
                             url=shown, fix=NOT_A1111) from None
        except ValueError:
            body, is_json = None, False
        detail = (body.get("errors") or body.get("detail")) if isinstance(body, dict) else ""
        detail = self._clean(_short(detail or "", 1000))
        text = self._clean(response.text[:200]) if not is_json or status != 200 else ""
        if status == 200:
            if not is_json:
                raise A1111Error(f"{shown} answered 200 but not with JSON ({text[:80]!r}).", status=status,
                                 url=shown, fix="SD_URL may point at another program, or at a proxy's login page.")
            return body
        if status == 401:
            fix = ("The user name or password in SD_AUTH does not match the server's --api-auth." if self._auth
                   else "This server was started with --api-auth: set SD_AUTH=user:password in your .env file.")
            raise A1111Error(f"{shown} refused the request: {detail or 'Not authenticated'} (401).",
                             status=status, url=shown, detail=detail, fix=fix)
        if status == 404 and detail in ("", "Not Found"):
            raise A1111Error(f"{shown} answered 404: the server runs but its API is not enabled.", status=status,
                             url=shown, detail=detail, fix=START_HINT)
        if status == 422:
            problems = self._clean(self._describe_422(body))
            raise A1111Error(f"The server rejected the request: {problems} (422).", status=status,
                             url=shown, detail=problems, fix="Correct the value of the field named above.")
        if status == 500:
            kind = self._clean(_short(body.get("error", ""), 100)) if isinstance(body, dict) else ""
            raise A1111Error(f"A1111 failed while handling the request: {kind}: {detail or text} (500).",
                             status=status, url=shown, detail=detail,
                             fix="Read A1111's console for the full traceback. Common causes: an upscaler or "
                                 "model name it does not know, or enable_hr without denoising_strength.")
        raise A1111Error(f"{shown} answered {status}: {detail or text}", status=status, url=shown,
                         detail=detail, fix="Check SD_URL and the server's console.")

    @staticmethod
    def _describe_422(body) -> str:
        """FastAPI's ``{"detail": [{"loc": [...], "msg": ...}]}`` as one line; other shapes as text."""
        problems = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(problems, list):
            return _short(problems or body, 1000)
        parts = []
        for problem in problems[:10]:
            if not isinstance(problem, dict):
                parts.append(_short(problem))
                continue
            loc = problem.get("loc")
            loc = loc if isinstance(loc, list) else [loc] if loc else []
            where = ".".join(str(p) for p in loc if p != "body") or "?"
            parts.append(f"field '{where}': {_short(problem.get('msg', ''))}")
        return "; ".join(parts)

"""The FastAPI application: A1111's error bodies, X-Process-Time, optional Basic auth.

``build_app`` wires the pieces; the endpoints themselves are in routes.py. The three
behaviours here are A1111's own (its ``modules/api/api.py``), so that a client sees the same answers:

* an ``HTTPException`` becomes ``{"error": "HTTPException", "detail": ..., "body": "", "errors": ""}``;
* any other exception becomes a 500 ``{"error": "<class>", "detail": "", "body": "", "errors": "<message>"}``;
* validation errors keep FastAPI's 422 shape (``{"detail": [{"loc": [...], ...}]}``).

Two of the kit's own, for a server shared by a class: a request body larger than ``--max-body-mb``
is refused while it arrives (``BodyLimit``), and a 500 never shows a client the server's file paths.

Example:
    >>> parse_api_auth("alice:secret,bob:hunter2")["bob"]
    'hunter2'
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from typing import Any, Optional, Union

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.middleware.gzip import GZipMiddleware

from .engines import VERSION, get_engine
from .limits import Limits, hide_paths
from .routes import SdApi
from .webui import add_webui

log = logging.getLogger("sdserver")

DESCRIPTION = """The course kit's own **AUTOMATIC1111-compatible** server (`python -m sdserver`).

It speaks the same `/sdapi/v1/*` protocol as A1111 started with `--api`, so code written against
it works unchanged against a real A1111. With the `preview` engine every image is a clearly
labelled **placeholder**: no model and no GPU are involved.
"""


def parse_api_auth(text: str) -> dict[str, str]:
    """Parse ``--api-auth`` like A1111: ``"user:password,user2:password2"`` -> ``{user: password}``.

    The error message never repeats the value, since it holds passwords.

    >>> parse_api_auth("a:b:c")
    Traceback (most recent call last):
    ...
    ValueError: --api-auth entry 1 is not of the form user:password (passwords cannot contain ':' or ',')
    """
    credentials = {}
    for number, entry in enumerate(text.split(","), start=1):
        parts = entry.split(":")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"--api-auth entry {number} is not of the form user:password "
                             "(passwords cannot contain ':' or ',')")
        credentials[parts[0]] = parts[1]
    return credentials


def make_auth_dependency(credentials: dict[str, str]):
    """A FastAPI dependency that checks HTTP Basic credentials the way A1111 does."""
    basic = HTTPBasic(auto_error=False)  # auto_error off: we raise A1111's own messages below

    def check_auth(given: Optional[HTTPBasicCredentials] = Depends(basic)) -> bool:
        if given is None:
            raise HTTPException(status_code=401, detail="Not authenticated")
        expected = credentials.get(given.username, "")
        # compare_digest takes the same time however many characters match (no timing leak).
        password_ok = secrets.compare_digest(given.password.encode("utf-8"), expected.encode("utf-8"))
        if not (given.username in credentials and password_ok):
            raise HTTPException(status_code=401, detail="Incorrect username or password")
        return True

    return check_auth


def finite(value: Any) -> Any:
    """Replace Infinity and NaN (which Python's JSON parser accepts in requests) by null.

    JSON has no such numbers, so a reply echoing one could not be written: the client would get a
    500 instead of its answer. A1111 writes values it cannot serialise as null too.

    >>> finite({"a": [1.5, float("inf")]})
    {'a': [1.5, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    """Starlette's JSONResponse, with non-finite floats written as null (see :func:`finite`).

    Text that UTF-8 cannot hold (a lone surrogate) is written as a JSON escape (``"\\ud83d"``)
    instead of failing: requests with such text are refused, but a reply must never be a 500.
    """

    def render(self, content: Any) -> bytes:
        content = finite(content)
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def short_inputs(errors: list[dict], limit: int = 200) -> list[dict]:
    """FastAPI's 422 echoes each wrong value as ``input``; cut long ones, so that a 10 MB mistake does
    not come back as a 10 MB reply."""
    for error in errors:
        value = error.get("input")
        if isinstance(value, (str, bytes)) and len(value) > limit:
            error["input"] = f"{value[:limit]!s}... ({len(value)} characters)"
        elif isinstance(value, (dict, list)) and len(json.dumps(value, default=str)) > limit:
            error["input"] = f"({type(value).__name__} of {len(value)} entries, not repeated here)"
    return errors


def error_body(error: Exception) -> dict[str, Any]:
    """A1111's error body for an exception."""
    if isinstance(error, HTTPException):
        return {"error": "HTTPException", "detail": error.detail, "body": "", "errors": ""}
    # An unexpected error's text may name files (a model's cache folder, the home folder): those stay
    # in the server's console; the client gets the rest of the message.
    return {"error": type(error).__name__, "detail": "", "body": "", "errors": hide_paths(str(error))}


def body_too_large(limits: Limits, size: int | None = None) -> HTTPException:
    size_text = f"of {size / 1e6:.3g} MB " if size else ""
    return HTTPException(status_code=422, detail=(
        f"the request body {size_text}is larger than the server's limit of {limits.max_body_mb:g} MB (images are "
        "sent as base64 inside it): send a smaller image, or start the server with --max-body-mb N"))


class BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``limits.max_body_mb`` before they fill memory.

    A declared Content-Length that is too large is refused before anything is read; a body sent in
    chunks is counted as it arrives: at the first byte over the limit the 422 is sent, and the app
    is told that the client went away, so it stops reading (and whatever it answers is dropped).
    """

    def __init__(self, app, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def refuse(self, scope, receive, send, size: int | None = None) -> None:
        error = body_too_large(self.limits, size)
        await SafeJSONResponse(status_code=error.status_code, content=error_body(error))(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self.refuse(scope, receive, send, int(declared))
        received, refused = 0, False

        async def counting_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await self.refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:  # once the 422 is out, the app's own answer is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


def check_step_delay(step_delay: Any) -> float:
    """--step-delay must be a number of seconds from 0 to 10: inf, nan or a negative number would make
    every request fail, and a huge one would hold the queue for ever (a sleep cannot be interrupted).

    >>> check_step_delay(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: step_delay (--step-delay) must be a number of seconds from 0 to 10, got inf
    """
    try:
        seconds = float(step_delay)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 <= seconds <= MAX_STEP_DELAY:  # also False for nan
        raise ValueError(f"step_delay (--step-delay) must be a number of seconds from 0 to {MAX_STEP_DELAY:g}, "
                         f"got {step_delay}")
    return seconds


MAX_STEP_DELAY = 10.0


def build_app(engine: str = "preview", api_auth: Union[str, dict, None] = None, step_delay: float = 0.0,
              cmd_flags: Optional[dict[str, Any]] = None, limits: Optional[Limits] = None,
              webui: bool = True, lora_dir: Optional[str] = None) -> FastAPI:
    """Build the server's FastAPI app (see ``sdserver.create_app``)."""
    step_delay = check_step_delay(step_delay)
    limits = limits or Limits()
    app = FastAPI(title="Course kit: A1111-compatible server", description=DESCRIPTION,
                  version=VERSION, default_response_class=SafeJSONResponse)
    credentials = parse_api_auth(api_auth) if isinstance(api_auth, str) else dict(api_auth or {})
    auth = make_auth_dependency(credentials) if credentials else None
    the_engine = get_engine(engine, step_delay=step_delay)
    flags = {"api": True, "nowebui": not webui, "engine": the_engine.name, "step_delay": step_delay,
             "api_auth": None, **limits.as_flags(), **(cmd_flags or {})}
    flags["api_auth"] = "***" if credentials else None  # never the real value
    api = SdApi(app, the_engine, auth=auth, cmd_flags=flags, limits=limits, lora_dir=lora_dir)
    flags["lora_dir"] = str(api.loras.folder)
    app.state.api = api  # tests and notebooks can reach the engine, the job state and the options
    app.state.engine = the_engine

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        # No WWW-Authenticate header on a 401: like A1111, no browser password prompt.
        return SafeJSONResponse(status_code=error.status_code, content=error_body(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        # FastAPI's own 422 body; an echoed Infinity/NaN input becomes null, a long one is cut.
        return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(short_inputs(error.errors()))})

    @app.middleware("http")
    async def errors_and_timing(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as error:  # anything the handlers did not turn into a response
            # One line per error; the traceback too when the "sdserver" logger is at DEBUG.
            log.error("%s %s -> 500 %s: %s", request.method, request.url.path, type(error).__name__, error,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            response = SafeJSONResponse(status_code=500, content=error_body(error))
        response.headers["X-Process-Time"] = f"{time.perf_counter() - started:.4f}"
        return response

    app.add_middleware(GZipMiddleware, minimum_size=1000)  # A1111 compresses bodies >= 1000 bytes
    app.add_middleware(BodyLimit, limits=limits)  # added last: the outermost, so it sees the body first

    if webui:
        add_webui(app)  # the web UI at / (webui.py; public like A1111's page, the API behind it keeps its auth)
    else:
        @app.get("/", include_in_schema=False)
        def root():  # --nowebui: the API alone, as A1111's; its documentation is the page to see
            return RedirectResponse("/docs")

    return app

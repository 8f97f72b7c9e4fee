"""A small, real OpenAI-compatible chat server on 127.0.0.1 for the kit's tests.

openai 3.x sends through httpx2, which HTTP mocking libraries (respx, responses) do not
intercept, so tests talk to this server over real HTTP instead. It imitates what LM Studio,
Ollama, llama.cpp's llama-server, vLLM and OpenAI answer, including their error bodies
(see shared/reference/llm-servers.md, sections 1 and 2):

>>> with LLMTestServer(models=["test-model"]) as server:            # doctest: +SKIP
...     client = OpenAI(base_url=server.base_url, api_key="lm-studio", max_retries=0)
...     server.mode = "loading"          # llama.cpp's 503 from now on
...     server.hits["/v1/chat/completions"], server.requests[-1]["messages"]

Attributes a test may change at any time: ``models``, ``api_key``, ``mode`` (see MODES),
``delay`` (seconds, for mode "slow") and ``reply`` (``reply(messages, body) -> str``).
Precedence for the answer text: mode "empty"/"not_json"/"too_long" > ``reply`` > default text.
Read-only logs: ``requests`` (JSON bodies of POST /v1/chat/completions), ``schemas`` (the
json_schema ``schema`` objects received in the nested form) and ``hits`` (requests per path).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

MODES = ("ok", "no_models_loaded", "loading", "slow", "empty", "not_json", "too_long", "html")

# Bodies copied from the real servers, so the kit's error handling meets what users will see.
NO_MODELS_BODY = {"error": {"message": "No models loaded. Please load a model in the developer page "
                                       "or use the 'lms load' command."}}           # LM Studio, 400
LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}  # llama.cpp
NOT_JSON_TEXT = "Sure! Here is a prompt: a red fox in snow, watercolor"
HTML_PAGE = "<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"
STOP_WORDS = set("a an the of in on at to and or with for from by is are was be it this that my your "
                 "me i you we please write make give some about into over under very".split())


def _error(status: int, message: str, type_: Optional[str] = None, code=None, param=None) -> JSONResponse:
    """OpenAI's error envelope: ``{"error": {message, type, param, code}}``."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def _text_of(message: dict) -> str:
    """The text of a chat message; content may be a string or a list of parts (vision format)."""
    content = message.get("content") or ""
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9'-]+", text)


def default_text(user_text: str) -> str:
    """A deterministic 3-sentence answer derived from the user's message."""
    head = " ".join(_words(user_text)[:8]) or "nothing"
    return f"A short text about {head}. It was written by the test server. The same input gives the same text."


def default_json(user_text: str, schema: dict) -> str:
    """A JSON object that fills the schema's properties with values derived from the message."""
    nouns = [w.lower() for w in _words(user_text) if w.lower() not in STOP_WORDS][:6] or ["a scene"]
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type", "string")
        if name == "prompt":
            value = f"watercolor painting of {', '.join(nouns)}, soft light, detailed"
        elif name == "negative_prompt":
            value = "blurry, lowres, watermark"
        elif kind == "string":
            value = f"{name.replace('_', ' ')} of {' '.join(nouns)}"
        else:
            value = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(kind)
        if isinstance(value, str) and prop.get("maxLength"):
            value = value[: prop["maxLength"]]           # a grammar-constrained model cannot exceed it
        out[name] = value
    return json.dumps(out)


def long_text(user_text: str, words: int = 150) -> str:
    """At least ``words`` words of comma-separated tags: a chatty model ignoring the length rules."""
    tags = ["highly detailed", "masterpiece", "soft light", "vivid colors", "sharp focus", "8k"]
    base = [w.lower() for w in _words(user_text)[:4]] or ["scene"]
    out: list[str] = []
    while sum(len(t.split()) for t in out) < words:
        i = len(out)
        out.append(f"{tags[i % len(tags)]} {base[i % len(base)]}")
    return ", ".join(out)


class LLMTestServer:
    """An OpenAI-compatible server (FastAPI + uvicorn) in a background thread; see the module doc."""

    def __init__(self, models: Optional[list[str]] = None, *, api_key: Optional[str] = None,
                 mode: str = "ok", delay: float = 5.0,
                 reply: Optional[Callable[[list, dict], str]] = None):
        self._defaults = dict(models=list(models) if models is not None else ["test-model"],
                              api_key=api_key, mode=mode, delay=delay, reply=reply)
        self.reset()
        self.url = self.base_url = ""
        self.port = 0
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._ids = itertools.count(1)
        self.app = self._build_app()

    def reset(self) -> None:
        """Back to the constructor's settings, with empty logs (for a server shared by many tests)."""
        for name, value in self._defaults.items():
            setattr(self, name, list(value) if name == "models" else value)
        self.requests: list[dict] = []
        self.schemas: list[dict] = []
        self.hits: dict[str, int] = {}

    # ----------------------------------------------------------------- life cycle
    def start(self, ready_timeout: float = 15.0) -> "LLMTestServer":
        # Bind the socket ourselves: port 0 lets the OS pick a free port, and we know it at once.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._stopping = False
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name=f"llm-test-server-{self.port}")
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).close()
                return self
            except urllib.error.HTTPError:       # any HTTP answer (e.g. 503 in "loading") means it is up
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"LLMTestServer on {self.url} did not answer within {ready_timeout} s")

    def stop(self) -> None:
        self._stopping = True                    # ends "slow" sleeps, so shutdown does not wait on them
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "LLMTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- the app
    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def count_and_check_key(request: Request, call_next):
            path = request.url.path
            self.hits[path] = self.hits.get(path, 0) + 1
            # Only /v1 is guarded; /health is public, as in llama.cpp.
            if self.api_key is not None and path.startswith("/v1/"):
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {self.api_key}":
                    return self._auth_error(auth)
            if self.mode == "html" and path.startswith("/v1/"):
                return HTMLResponse(HTML_PAGE)   # a base URL that points at some web page
            if self.mode == "loading":
                return JSONResponse(LOADING_BODY, 503)   # llama.cpp answers 503 on every route then
            return await call_next(request)

        @app.get("/health")
        async def health():
            return {"status": "ok"}

        @app.get("/v1/models")
        async def list_models():
            return {"object": "list", "data": [self._model_object(m) for m in self.models]}

        @app.get("/v1/models/{model:path}")
        async def get_model(model: str):
            if model not in self.models:
                return self._unknown_model(model)
            return self._model_object(model)

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._chat(request)

        return app                               # anything else: FastAPI's 404 {"detail": "Not Found"}

    @staticmethod
    def _model_object(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "test"}

    @staticmethod
    def _auth_error(auth: str):
        if not auth.startswith("Bearer ") or not auth[7:]:
            return _error(401, "You didn't provide an API key. You need to provide your API key in an "
                               "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                          "invalid_request_error")
        key = auth[7:]
        masked = key[:3] + "*" * max(len(key) - 7, 3) + key[-4:] if len(key) > 8 else "*" * len(key)
        return _error(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.",
                      "invalid_request_error", code="invalid_api_key")

    @staticmethod
    def _unknown_model(model: str) -> JSONResponse:
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError", code=404)  # vLLM

    async def _chat(self, request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "Missing required parameter: 'messages'.", "invalid_request_error",
                          param="messages")
        self.requests.append(body)
        model = body.get("model")
        if self.mode == "no_models_loaded" or not self.models:
            return JSONResponse(NO_MODELS_BODY, 400)
        if model not in self.models:
            return self._unknown_model(model)
        if self.mode == "slow":
            # Short sleeps that watch the stop flag, so stop() never waits the full delay.
            end = time.monotonic() + self.delay
            while time.monotonic() < end and not self._stopping:
                await asyncio.sleep(0.05)

        # Only the standard nested form carries a schema; the flat form is ignored, as llama.cpp does.
        fmt = body.get("response_format") or {}
        schema = None
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
            schema = fmt["json_schema"].get("schema") or {}
            self.schemas.append(schema)
        users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        user_text = _text_of(users[-1]) if users else ""

        if self.mode == "empty":
            text = ""
        elif self.mode == "not_json" and schema is not None:
            text = NOT_JSON_TEXT
        elif self.mode == "too_long":
            text = json.dumps({"prompt": long_text(user_text), "negative_prompt": "blurry"}) \
                if schema is not None else long_text(user_text, 400)
        elif self.reply is not None:
            text = self.reply(body["messages"], body)
        elif schema is not None:
            text = default_json(user_text, schema)
        else:
            text = default_text(user_text)

        # max_tokens ≈ words: enough for the kit's "answer was cut off" handling.
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and len(text.split()) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"

        prompt_tokens = sum(len(_text_of(m).split()) for m in body["messages"] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        base = {"id": f"chatcmpl-test{next(self._ids)}", "created": int(time.time()), "model": model}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(base, text, finish, usage if include_usage else None),
                                     media_type="text/event-stream")
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage}

    @staticmethod
    async def _sse(base: dict, text: str, finish: str, usage: Optional[dict]):
        """Server-Sent Events as OpenAI sends them: role chunk, content chunks, stop chunk, [DONE]."""
        def event(delta: dict, finish_reason=None, choices=True) -> str:
            chunk = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}] if choices else []}
            if usage is not None:                # with include_usage, OpenAI adds usage: null to each chunk
                chunk["usage"] = None if choices else usage
            return f"data: {json.dumps(chunk)}\n\n"

        # Split before each word that follows whitespace, so the pieces join back to exactly `text`.
        words = re.split(r"(?<=\s)(?=\S)", text) if text else []
        pieces = ["".join(words[i:i + 3]) for i in range(0, len(words), 3)]
        yield event({"role": "assistant", "content": ""})
        for piece in pieces:
            yield event({"content": piece})
            await asyncio.sleep(0)               # let the event loop flush each chunk separately
        yield event({}, finish)
        if usage is not None:
            yield event({}, choices=False)
        yield "data: [DONE]\n\n"

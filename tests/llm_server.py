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
``delay`` (seconds, for mode "slow") and ``reply`` (``reply(messages, body) -> str``; a
"vision model" reads the images of a message with ``images_in(messages)``; None: the default answer).
Precedence for the answer text: mode "empty"/"not_json"/"too_long" > ``reply`` > default text.
Mode "echo_key" answers every /v1 request 400 with the Authorization header it got in the error text, as a
careless proxy or server does: the kit must mask it.

Vision, embeddings and log-probabilities (shared/reference/raters.md, sections 1-3):
``vision`` (False: LM Studio's 400 for an image sent to a text-only model); image parts must be
data URIs (a web URL gets Ollama's 400); without ``reply`` an image is described by its main colour
and a yes/no question about one is answered "Yes". ``embedding_models`` answer POST /v1/embeddings
with a hashed bag of words (L2-normalised, ``EMBED_DIM`` wide; float lists or base64 float32);
a chat model there gets LM Studio's "Model is not embedding", mode "no_embeddings" llama.cpp's
501. ``logprobs`` (True: as OpenAI, Ollama >= 0.12.11 and llama-server; False: as LM Studio,
which accepts the flag and sends none); ``yes_probability`` is P of the answer's first word when
it is yes/no, the rest going to the opposite word.
``imitate="llama-cpp-python"`` answers as llama-cpp-python's server does where the others differ (tested
against the real one in tests/test_real_llm_differential.py): a 500 for ``response_format`` json_schema (it takes
json_object with a ``schema``), for an image to a text model and for embeddings of a model started without
them, and any unknown model name answered by the first model, its name echoed. ``context`` (tokens, counted as
words; None: no limit): a longer request (messages and max_tokens) gets OpenAI's and llama-cpp-python's 400
``context_length_exceeded``. ``{"type": "json_object", "schema": ...}`` is honoured in every flavour.
Read-only logs: ``requests`` (JSON bodies of POST /v1/chat/completions), ``schemas`` (the
json_schema ``schema`` objects received in the nested form) and ``hits`` (requests per path).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import math
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

MODES = ("ok", "no_models_loaded", "loading", "slow", "empty", "not_json", "too_long", "html", "no_embeddings",
         "echo_key")
EMBED_DIM = 64

# Bodies copied from the real servers, so the kit's error handling meets what users will see.
NO_MODELS_BODY = {"error": {"message": "No models loaded. Please load a model in the developer page "
                                       "or use the 'lms load' command."}}           # LM Studio, 400
LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}  # llama.cpp
NOT_JSON_TEXT = "Sure! Here is a prompt: a red fox in snow, watercolor"
NO_VISION_TEXT = "Model does not support images. Please use a model that does."          # LM Studio, 400
IMAGE_URL_TEXT = "image URLs are not currently supported, please use base64 encoded data instead"  # Ollama
NO_EMBEDDINGS_TEXT = "This server does not support embeddings. Start it with `--embeddings`"  # llama.cpp, 501
# llama-cpp-python 0.3.36, 500 (its error handler wraps exceptions; the validation error ends in a traceback)
LCP_JSON_SCHEMA_TEXT = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                        "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
                        "'ctx': {'expected': \"'text' or 'json_object'\"}}\n")
LCP_IMAGE_TEXT = 'can only concatenate str (not "list") to str'  # its Jinja chat template meets a list
LCP_NO_EMBEDDINGS_TEXT = "Llama model must be created with embedding=True to call this method"
LCP = "llama-cpp-python"
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


def _image_urls(messages: list) -> list[str]:
    """The ``image_url`` URLs of all messages (the part's value may be an object or, as Ollama takes it, a string)."""
    urls = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                value = part.get("image_url")
                urls.append(str(value.get("url", "") if isinstance(value, dict) else value))
    return urls


def images_in(messages: list) -> list:
    """The PIL images sent in the messages (data URIs), for a test's ``reply`` function."""
    from PIL import Image
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
            for url in _image_urls(messages)]


def colour_name(image) -> str:
    """The name of the nearest basic colour to an image's mean colour."""
    names = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 60, 200), "yellow": (230, 210, 40),
             "white": (245, 245, 245), "black": (10, 10, 10), "grey": (128, 128, 128)}
    mean = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
    return min(names, key=lambda n: sum((a - b) ** 2 for a, b in zip(names[n], mean)))


def embed_text(text: str) -> list[float]:
    """A deterministic embedding: a hashed bag of lower-case words, L2-normalised (the same words, the same
    vector; shared words, a higher cosine)."""
    vector = [0.0] * EMBED_DIM
    for word in _words(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % EMBED_DIM] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


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
                 reply: Optional[Callable[[list, dict], str]] = None, vision: bool = True,
                 embedding_models: Optional[list[str]] = None, logprobs: bool = True,
                 yes_probability: float = 0.8, imitate: Optional[str] = None, context: Optional[int] = None):
        self._defaults = dict(models=list(models) if models is not None else ["test-model"],
                              api_key=api_key, mode=mode, delay=delay, reply=reply, vision=vision,
                              embedding_models=list(embedding_models or ["test-embed"]), logprobs=logprobs,
                              yes_probability=yes_probability, imitate=imitate, context=context)
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
            setattr(self, name, list(value) if isinstance(value, list) else value)
        self.requests: list[dict] = []
        self.embed_requests: list[dict] = []
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
            if self.mode == "echo_key" and path.startswith("/v1/"):
                return _error(400, f"Rejected credentials: {request.headers.get('authorization', '')}",
                              "invalid_request_error")
            return await call_next(request)

        @app.get("/health")
        async def health():
            return {"status": "ok"}

        @app.get("/v1/models")
        async def list_models():
            # Embedding models are listed too, as LM Studio, Ollama and llama.cpp do; none while no chat model is.
            listed = self.models + [m for m in self.embedding_models if m not in self.models] if self.models else []
            return {"object": "list", "data": [self._model_object(m) for m in listed]}

        @app.get("/v1/models/{model:path}")
        async def get_model(model: str):
            if model not in self.models:
                return self._unknown_model(model)
            return self._model_object(model)

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self._chat(request)

        @app.post("/v1/embeddings")
        async def embeddings(request: Request):
            return await self._embeddings(request)

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
        if model not in self.models and self.imitate != LCP:
            return self._unknown_model(model)
        urls = _image_urls(body["messages"])
        if urls and not self.vision:
            return _error(500, LCP_IMAGE_TEXT, "internal_server_error") if self.imitate == LCP \
                else _error(400, NO_VISION_TEXT)
        if any(not url.startswith("data:") for url in urls):
            return _error(400, IMAGE_URL_TEXT, "invalid_request_error")
        try:
            images = images_in(body["messages"])
        except Exception:  # noqa: BLE001 - any undecodable payload: Ollama's words
            return _error(400, "invalid image input", "invalid_request_error")
        if self.mode == "slow":
            # Short sleeps that watch the stop flag, so stop() never waits the full delay.
            end = time.monotonic() + self.delay
            while time.monotonic() < end and not self._stopping:
                await asyncio.sleep(0.05)

        # Only the standard nested form carries a schema; the flat form is ignored, as llama.cpp does.
        fmt = body.get("response_format") or {}
        schema = None
        if fmt.get("type") == "json_schema" and self.imitate == LCP:
            return _error(500, LCP_JSON_SCHEMA_TEXT, "internal_server_error")
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
            schema = fmt["json_schema"].get("schema") or {}
            self.schemas.append(schema)
        elif fmt.get("type") == "json_object":  # llama.cpp's form: JSON, following a flat "schema" if one is sent
            schema = fmt.get("schema") if isinstance(fmt.get("schema"), dict) else {}
        users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        user_text = _text_of(users[-1]) if users else ""

        if self.mode == "empty":
            text = ""
        elif self.mode == "not_json" and schema is not None:
            text = NOT_JSON_TEXT
        elif self.mode == "too_long":
            text = json.dumps({"prompt": long_text(user_text), "negative_prompt": "blurry"}) \
                if schema is not None else long_text(user_text, 400)
        elif self.reply is not None and (text := self.reply(body["messages"], body)) is not None:
            pass                                 # a reply of None: the default answer below
        elif schema is not None:
            text = default_json(user_text, schema)
        elif images:
            text = ("Yes" if re.search(r"\byes\b", user_text, re.I) else
                    f"A {colour_name(images[0])} square, {images[0].width}x{images[0].height} pixels.")
        else:
            text = default_text(user_text)

        # max_tokens ≈ words: enough for the kit's "answer was cut off" handling.
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and len(text.split()) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"

        prompt_tokens = sum(len(_text_of(m).split()) for m in body["messages"] if isinstance(m, dict))
        wanted = prompt_tokens + (limit if isinstance(limit, int) else 0)
        if self.context is not None and wanted > self.context:
            return _error(400, f"This model's maximum context length is {self.context} tokens. However, you "
                               f"requested {wanted} tokens ({prompt_tokens} in the messages, {wanted - prompt_tokens} "
                               "in the completion). Please reduce the length of the messages or completion.",
                          "invalid_request_error", code="context_length_exceeded", param="messages")
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        base = {"id": f"chatcmpl-test{next(self._ids)}", "created": int(time.time()), "model": model}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(base, text, finish, usage if include_usage else None),
                                     media_type="text/event-stream")
        logprobs = self._logprobs(text, body) if body.get("logprobs") and self.logprobs else None
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": logprobs, "finish_reason": finish}],
                "usage": usage}

    def _logprobs(self, text: str, body: dict) -> dict:
        """OpenAI's ``logprobs`` object: one entry per word-token; the first one's alternatives carry
        ``yes_probability`` when the answer starts with yes or no."""
        tokens = re.split(r"(?<=\s)(?=\S)|(?<=\w)(?=[^\w\s])", text) if text else []
        top = int(body.get("top_logprobs") or 0)
        content = []
        for i, token in enumerate(tokens):
            word = token.strip().lower()
            if i == 0 and word in ("yes", "no"):
                other = ("No" if word == "yes" else "Yes").join(token.split(token.strip()))
                p = min(max(self.yes_probability, 1e-6), 1 - 1e-6)
                alternatives = [(token, math.log(p)), (other, math.log(1 - p))]
            else:
                alternatives = [(token, -0.01), ("the", -5.0)]
            # As many alternatives as asked for (llama.cpp sends them all), the extra ones all but impossible.
            alternatives += [(filler, -20.0 - n) for n, filler in enumerate(("a", "it", "of", "and", "to", "in", "on",
                                                                             "at", "by", "as", "or", "so", "up"))]
            content.append({"token": token, "logprob": alternatives[0][1], "bytes": list(token.encode()),
                            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                             for t, lp in alternatives[:top]]})
        return {"content": content, "refusal": None}

    async def _embeddings(self, request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        self.embed_requests.append(body)
        model, texts = body.get("model"), body.get("input")
        if self.mode == "no_embeddings":
            return _error(501, NO_EMBEDDINGS_TEXT, "not_supported_error", code=501)
        if self.imitate == LCP and model not in self.embedding_models:  # unknown names get its chat model
            return _error(500, LCP_NO_EMBEDDINGS_TEXT, "internal_server_error")
        if model in self.models and model not in self.embedding_models:
            return _error(400, f'Failed to load model "{model}". Error: Model is not embedding.',
                          code="model_not_found")                 # LM Studio
        if model not in self.embedding_models:
            return self._unknown_model(model)
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "'input' field must be a string or an array of strings")   # LM Studio
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

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

"""``LLM``: talk to a local (or remote) OpenAI-compatible chat server with the ``openai`` package.

LM Studio, Ollama, llama.cpp's ``llama-server``, vLLM and OpenAI all speak "chat completions", so one small
wrapper serves them all; every failure becomes an :class:`LLMError` that says what to do. The same API takes
images in a chat message (vision models: ``describe``, ``ask_yes_no``) and makes text embeddings (``embed``).
The key and a password in the base URL never show: errors, reprs and replies mask them, even when a server
echoes them back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .config import Secret, load_settings, mask, masked_url, secret_forms
from .errors import KitError
from .urls import localhost_hint, with_host

START_HINT = ("Start your LLM server: in LM Studio open the Developer tab and press 'Start server' (or run "
              "`lms server start`); for Ollama run `ollama serve`. Then check LLM_BASE_URL "
              "(LM Studio http://127.0.0.1:1234/v1, Ollama http://127.0.0.1:11434/v1).")

VISION_FIX = ("Load a vision model (Qwen2.5-VL, Gemma 3 or LLaVA: in LM Studio one marked 'Vision', for Ollama "
              "e.g. `ollama pull qwen2.5vl:3b`, for llama.cpp the model with its --mmproj file) and set "
              "LLM_VISION_MODEL to its name.")
EMBED_FIX = ("Load an embedding model (LM Studio: text-embedding-nomic-embed-text-v1.5; Ollama: `ollama pull "
             "nomic-embed-text`; llama.cpp: start it with --embeddings) and set LLM_EMBED_MODEL to its name.")
CONTEXT_FIX = ("Send a shorter text (or a smaller max_tokens), or load the model with a longer context (LM Studio: "
               "'Context Length' in its load settings; llama.cpp: --ctx-size; Ollama: OLLAMA_CONTEXT_LENGTH).")
YES_NO = " Please answer yes or no."  # VQAScore's wording [t2v_metrics]


class LLMError(KitError, RuntimeError):
    """A call to the LLM server failed; ``status``: the HTTP status, if any."""

    def __init__(self, message: str, fix: str = "", status: int | None = None):
        super().__init__(message, fix)
        self.status = status


class LLM:
    """A chat model behind an OpenAI-compatible server. The arguments default to ``LLM_BASE_URL`` (ending in
    ``/v1``), ``LLM_MODEL`` (else the server's first model), ``LLM_API_KEY``, ``LLM_TIMEOUT`` (seconds),
    ``LLM_VISION_MODEL`` (for images; else the chat model) and ``LLM_EMBED_MODEL`` (for ``embed``).
    ``base_url`` is the address as shown, a password in it masked; the client uses the real one.

    >>> LLM("http://ann:pw@127.0.0.1:1234/v1", model="qwen2.5-7b-instruct")
    LLM('http://ann:********@127.0.0.1:1234/v1', model='qwen2.5-7b-instruct')
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | Secret | None = None,
                 timeout: float | None = None, max_retries: int = 1, *, vision_model: str | None = None,
                 embed_model: str | None = None):
        settings = load_settings()
        self._url = (base_url or settings.llm_base_url).rstrip("/")
        self._model = model or settings.llm_model
        self._vision_model = vision_model or settings.llm_vision_model
        self.embed_model = embed_model or settings.llm_embed_model
        key = api_key if api_key is not None else settings.llm_api_key
        self._api_key = key if isinstance(key, Secret) else Secret(str(key or settings.llm_api_key.reveal()))
        # What a server may echo back (the key, the URL's password, also as a Basic header): masked everywhere.
        self._secrets = secret_forms(key=self._api_key, urls=[self._url])
        self.timeout = float(timeout or settings.llm_timeout)
        self.max_retries = max_retries
        self._client = None
        self._checked: set[str] = set()  # model names the server listed (see _known)
        self._json_object = False  # True once the server refused response_format json_schema

    def __repr__(self) -> str:
        return f"LLM({self.base_url!r}, model={self._model!r})"

    @property
    def base_url(self) -> str:
        """The server's address for messages and records: a password in LLM_BASE_URL shows as ********."""
        return masked_url(self._url)

    @property
    def client(self):
        """The ``openai.OpenAI`` client, made on first use (importing openai takes time)."""
        if self._client is None:
            from openai import OpenAI
            self._client = OpenAI(base_url=self._url, api_key=self._api_key.reveal(), timeout=self.timeout,
                                  max_retries=self.max_retries)
        return self._client

    def models(self) -> list[str]:
        """Names of the models the server offers, e.g. ``['qwen2.5-7b-instruct', ...]``."""
        try:
            return [model.id for model in self.client.models.list().data]
        except Exception as err:  # noqa: BLE001 - translated into an LLMError with a fix
            raise self._translate(err) from None

    @property
    def model(self) -> str:
        """The model used for chats: LLM_MODEL (once checked against the server's list), or the first one listed
        that is not an embedding model."""
        if self._model is None:
            names = self.models()
            if not names:
                raise LLMError(f"The server at {self.base_url} lists no models.",
                               "Load a model: in LM Studio pick one at the top of the window (or `lms load NAME`); "
                               "for Ollama run `ollama pull llama3.2`.")
            # LM Studio and llama.cpp list embedding models too, perhaps first: they cannot chat
            chat = [name for name in names if name != self.embed_model and "embed" not in name.lower()]
            self._model = (chat or names)[0]
            self._checked.add(self._model)
        return self._known(self._model, "LLM_MODEL")

    def _known(self, name: str, setting: str) -> str:
        """``name``, once the server's list holds it (checked once per name): llama.cpp's servers answer any
        model name with the model they have, so a typo would go unnoticed. Ollama lists "llama3.2:latest"
        for "llama3.2". A server that lists nothing, or fails to, is left to answer the call itself."""
        if name in self._checked:
            return name
        try:
            names = self.models()
        except LLMError:
            names = []
        if names and name not in names and f"{name}:latest" not in names:
            raise LLMError(self._mask(f"The server at {self.base_url} has no model '{name}' ({setting})."),
                           self._mask(f"Set {setting} to one the server has: {', '.join(names)}."))
        self._checked.add(name)
        return name

    def available(self, timeout: float = 3.0) -> bool:
        """True when a server answers at ``base_url`` with at least one model (a quick probe, no retries).

        >>> LLM("http://127.0.0.1:9/v1").available(timeout=1)
        False
        """
        probe = LLM(self._url, self._model, self._api_key, timeout=timeout, max_retries=0)
        try:
            names = probe.models()
        except LLMError:
            return False
        if self._model and names:
            # A configured model must be there too (Ollama lists "llama3.2:latest" for "llama3.2").
            return any(name == self._model or name == f"{self._model}:latest" for name in names)
        return bool(names)

    def chat(self, prompt_or_messages: str | list[dict], system: str | None = None, *,
             temperature: float | None = None, max_tokens: int | None = None, stream: bool = False,
             json_schema: dict | None = None, schema_name: str = "answer") -> str:
        """Send a chat (the user's text, or a list of ``{"role", "content"}`` messages) and return the reply.
        ``stream`` shows it while it arrives; ``json_schema`` asks for JSON following that JSON Schema
        (``response_format`` json_schema, or json_object with the schema where a server refuses that, as
        llama-cpp-python does; the reply is still text, and small models may ignore it).

        >>> llm.chat("Three words about the sea.", system="Answer briefly.", temperature=0)   # doctest: +SKIP
        'Vast, deep, restless.'
        """
        request: dict[str, Any] = {"model": self.model, "messages": self._messages(prompt_or_messages, system)}
        options = {"temperature": temperature, "max_tokens": max_tokens}
        request.update((name, value) for name, value in options.items() if value is not None)
        if json_schema is None:
            return self._complete(request, stream)[0]
        # The nested form is the one LM Studio, Ollama, llama-server and vLLM read (llama-server ignores the
        # flat one). llama-cpp-python's server refuses it with a 500 (it takes json_object with a "schema"),
        # and LM Studio refuses json_object: so json_schema first, json_object after a refusal.
        nested = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": json_schema}}
        if not self._json_object:
            try:
                return self._complete({**request, "response_format": nested}, stream)[0]
            except LLMError as err:
                if "json_object" not in err.message or err.status not in (400, 422, 500):
                    raise  # only where the server names the form it takes, not e.g. a schema it cannot read
                self._json_object = True
        return self._complete({**request, "response_format": {"type": "json_object", "schema": json_schema}},
                              stream)[0]

    def _complete(self, request: dict, stream: bool = False, image: bool = False) -> tuple[str, Any]:
        """The reply's text and its ``logprobs`` (None when the server sent none) for one request."""
        logprobs = None
        try:
            if stream:
                text = self._stream(request)
            else:
                # A web page instead of the API arrives as a str: .choices raises, and _translate says so.
                choices = self.client.chat.completions.create(**request).choices
                text = self._mask((choices[0].message.content or "") if choices else "")
                logprobs = choices[0].logprobs if choices else None
        except Exception as err:  # noqa: BLE001 - translated into an LLMError with a fix
            raise self._translate(err, image) from None
        if not text.strip():
            raise LLMError(f"The model '{request['model']}' returned an empty reply.",
                           "Try again, allow more tokens (max_tokens), or use another model. Reasoning models "
                           "may spend all tokens on hidden thinking: raise max_tokens.")
        return text, logprobs

    @property
    def vision_model(self) -> str:
        """The model that looks at images: LLM_VISION_MODEL, else the chat model."""
        return self._known(self._vision_model, "LLM_VISION_MODEL") if self._vision_model else self.model

    def _ask_image(self, image, question: str, **options) -> tuple[str, Any]:
        from .images import image_data_uri  # Pillow: only when an image is sent
        content = [{"type": "image_url", "image_url": {"url": image_data_uri(image)}},  # image first, as the
                   {"type": "text", "text": question}]                                 # VQAScore papers do
        request = {"model": self.vision_model, "messages": [{"role": "user", "content": content}], **options}
        return self._complete(request, image=True)

    def describe(self, image, prompt: str = "Describe this image in one sentence.", max_tokens: int = 120) -> str:
        """What the vision model sees in ``image`` (a PIL image or a path, sent as a PNG data URI of at most
        512 pixels a side).

        >>> llm.describe(gen.image)   # doctest: +SKIP
        'A lighthouse on a rocky cliff under storm clouds.'
        """
        return self._ask_image(image, prompt, temperature=0, max_tokens=max_tokens)[0]

    def ask_yes_no(self, image, question: str) -> tuple[str, float | None]:
        """Ask the vision model a yes/no question about ``image``: its answer and P("yes") from the first answer
        token's log-probabilities, or None where the server sends none (LM Studio does not).

        >>> llm.ask_yes_no(gen.image, "Is there a lighthouse?")   # doctest: +SKIP
        ('Yes', 0.97)
        """
        text, logprobs = self._ask_image(image, question + YES_NO, temperature=0, max_tokens=8,
                                         logprobs=True, top_logprobs=5)
        return text, yes_probability(logprobs)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embedding vectors of ``texts`` from the server's /v1/embeddings, with ``embed_model``.

        >>> a, b = LLM(embed_model="nomic-embed-text").embed(["a red fox", "a fox, red"])   # doctest: +SKIP
        """
        if not self.embed_model:
            raise LLMError("No embedding model is set.", EMBED_FIX)
        try:  # "float": without it the client asks for base64, which not every local server sends
            data = self.client.embeddings.create(model=self._known(self.embed_model, "LLM_EMBED_MODEL"),
                                                 input=list(texts),
                                                 encoding_format="float").data
        except Exception as err:  # noqa: BLE001 - translated into an LLMError with a fix
            raise self._translate(err) from None
        return [list(item.embedding) for item in sorted(data, key=lambda item: item.index)]

    @staticmethod
    def _messages(prompt_or_messages, system) -> list[dict]:
        if isinstance(prompt_or_messages, str):
            messages = [{"role": "user", "content": prompt_or_messages}]
        elif isinstance(prompt_or_messages, list) and all(isinstance(m, dict) for m in prompt_or_messages):
            messages = list(prompt_or_messages)
        else:
            raise TypeError("chat() takes a string or a list of {'role': ..., 'content': ...} dicts")
        return ([{"role": "system", "content": system}] if system else []) + messages

    def _stream(self, request: dict) -> str:
        """Stream the reply, showing it as it arrives (masked like every reply); returns the whole text."""
        from .progress import in_notebook
        pieces: list[str] = []
        handle = None
        if in_notebook():
            from IPython.display import Markdown, display
            handle = display(Markdown(""), display_id=True)
        # A terminal cannot take back what it printed: the last characters wait until no secret can start there.
        hold = max(map(len, self._secrets), default=1) - 1
        printed = 0
        for chunk in self.client.chat.completions.create(stream=True, **request):
            if not getattr(chunk, "choices", None) or not chunk.choices[0].delta.content:
                continue  # usage-only chunks have no choices
            pieces.append(chunk.choices[0].delta.content)
            shown = self._mask("".join(pieces))
            if handle is not None:
                handle.update(Markdown(shown))
            elif len(shown) - hold > printed:
                print(shown[printed:len(shown) - hold], end="", flush=True)
                printed = len(shown) - hold
        text = self._mask("".join(pieces))
        if handle is None and pieces:
            print(text[printed:])
        return text

    def _mask(self, text: str) -> str:
        """``text`` without this LLM's key and URL password (a server, a proxy or a model may echo them)."""
        return mask(text, self._secrets)

    def _translate(self, err: Exception, image: bool = False) -> LLMError:
        """Turn an openai exception into an LLMError naming the cause and the fix, with secrets masked: servers
        put what they received into their error texts, and these reach the console and run.json."""
        error = err if isinstance(err, LLMError) else self._describe(err, image)
        error.message, error.fix = self._mask(error.message), self._mask(error.fix)
        error.args = (error.message,)
        return error

    def _describe(self, err: Exception, image: bool = False) -> LLMError:
        import openai
        where = self.base_url
        if isinstance(err, openai.APITimeoutError):  # a subclass of APIConnectionError: check it first
            return LLMError(f"{where} did not answer within {self.timeout:g} s.",
                            "Large models on a CPU are slow: use a smaller model, ask for fewer tokens "
                            "(max_tokens), or raise LLM_TIMEOUT.")
        if isinstance(err, openai.APIConnectionError):
            host = urlsplit(where).hostname
            ipv4 = with_host(self._url, host="127.0.0.1")
            if host in ("localhost", "::1") and LLM(ipv4, api_key=self._api_key, timeout=2).available(timeout=2):
                return LLMError(f"Cannot connect to {where}, but {ipv4} answers.",
                                localhost_hint(where, "LLM_BASE_URL") + ".")
            return LLMError(f"Cannot connect to {where}: no LLM server is listening there.", START_HINT)
        if isinstance(err, openai.APIStatusError):
            message = self._error_message(err)
            status = err.status_code
            body = err.body if isinstance(err.body, dict) else {}
            lowered = f"{message} {body.get('code')} {body.get('type')}".lower()
            if any(words in lowered for words in ("support image", "image input", "not a multimodal")):
                return LLMError(f"The model '{self._vision_model or self._model}' is not a vision model: "
                                f"{message} ({status}).", VISION_FIX, status)
            if image and status == 500:  # llama-cpp-python's chat template fails on the image part of a message
                return LLMError(f"The server failed on the image ({status}: {message}): the model "
                                f"'{self._vision_model or self._model}' is probably not a vision model.",
                                VISION_FIX, status)
            if "context_length_exceeded" in lowered or "exceed_context" in lowered or "context length" in lowered:
                return LLMError(f"The text is longer than the model's context: {message} ({status}).", CONTEXT_FIX,
                                status)
            if "not embedding" in lowered or "support embeddings" in lowered or "embeddings api" in lowered \
                    or "embedding=true" in lowered:
                return LLMError(f"The model '{self.embed_model}' is not an embedding model: {message} ({status}).",
                                EMBED_FIX, status)
            if "no models loaded" in lowered:
                return LLMError(f"LM Studio at {where} has no model loaded ({status}).",
                                "Load a model in LM Studio (the model picker at the top, or `lms load NAME`), "
                                "or turn on Just-in-Time model loading in the server settings.", status)
            if status == 401:
                return LLMError(f"{where} rejected the API key (401).",
                                "Set LLM_API_KEY in your .env to the key this server expects (never in a notebook).",
                                status)
            if status == 404:
                if not urlsplit(where).path.rstrip("/").endswith("/v1"):
                    return LLMError(f"{where} answered 404 Not Found.",
                                    f"The base URL must end in /v1: set LLM_BASE_URL={where}/v1.", status)
                if "model" in message.lower():
                    return LLMError(f"The server does not have the model '{self._model}' ({message}).",
                                    self._models_hint(), status)
                return LLMError(f"{where} answered 404: {message}", "Check LLM_BASE_URL.", status)
            if status == 503 or "loading" in message.lower():
                return LLMError(f"The server at {where} is still loading its model ({status}).",
                                "Wait until loading finishes (a few seconds to minutes), then run the cell again.",
                                status)
            return LLMError(f"The LLM server answered {status}: {message}", "Check the server's log window.", status)
        if isinstance(err, AttributeError) and "'str' object" in str(err):
            return LLMError(f"{where} answered with a web page, not the OpenAI API.",
                            "LLM_BASE_URL must be the API address ending in /v1, e.g. http://127.0.0.1:1234/v1.")
        return LLMError(f"The LLM call failed: {type(err).__name__}: {err}", "Check LLM_BASE_URL and the server.")

    @staticmethod
    def _error_message(err) -> str:
        body = getattr(err, "body", None)  # the openai package has already unwrapped {"error": ...}
        if isinstance(body, dict):
            return str(body.get("message") or body.get("detail") or body)
        return str(body or err)

    def _models_hint(self) -> str:
        try:
            names = LLM(self._url, api_key=self._api_key, timeout=5, max_retries=0).models()
        except LLMError:
            names = []
        if names:
            return f"Set LLM_MODEL to one the server has: {', '.join(names)}."
        return "Set LLM_MODEL to a model the server has (see llm.models()), or leave it empty to use the first."


def yes_probability(logprobs) -> float | None:
    """P("yes") from a reply's ``logprobs``: at the first token whose alternatives hold "yes" or "no" (after
    e.g. "**" or a newline), the summed probability of the "yes" spellings ("Yes", " yes", "ĠYes"), else
    1 - that of "no" (t2v_metrics' rule). None when the server sent no log-probabilities or neither word."""
    import math
    for entry in (getattr(logprobs, "content", None) or [])[:4]:
        spelled = {"yes": 0.0, "no": 0.0}
        for alt in entry.top_logprobs or [entry]:
            word = alt.token.strip().lstrip("Ġ▁").strip("*\"'.,!").lower()
            if word in spelled:
                spelled[word] += math.exp(alt.logprob)
        if spelled["yes"] or spelled["no"]:
            return min(spelled["yes"], 1.0) if spelled["yes"] else max(0.0, 1.0 - spelled["no"])
    return None

"""Find a running A1111 (or Forge, SD.Next), or start the kit's own server, and say which one is used.

    >>> client = connect_a1111()          # doctest: +SKIP
    Using A1111 at http://127.0.0.1:7860 (model: v1-5-pruned-emaonly.safetensors [6ce0161689])
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .a1111 import A1111Client, A1111Error
from .config import load_settings
from .generation import PLACEHOLDER_MODEL

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_started = {}  # url -> server handle, so a notebook re-run does not start a second server


def choose_engine(settings=None) -> tuple[str, dict, str]:
    """Which engine the kit's own server starts with when no A1111 answers: ``(name, options, why)``.

    ``SD_ENGINE=auto`` takes the diffusers engine when it is installed and its model (``SD_MODEL``, default
    sd-turbo) is on this machine (after ``make models-sd``), else the preview engine; nothing is loaded to decide.

    >>> from helpers.config import load_settings
    >>> choose_engine(load_settings(env={"SD_ENGINE": "preview"}, dotenv=False))
    ('preview', {}, 'SD_ENGINE=preview')
    """
    import importlib.util

    settings = settings or load_settings()
    if settings.sd_engine == "preview":
        return "preview", {}, "SD_ENGINE=preview"
    if not all(importlib.util.find_spec(name) for name in ("diffusers", "transformers", "torch")):
        return "preview", {}, "the diffusers engine is not installed (pip install -e '.[diffusers]')"
    from sdserver.engines import EngineUnavailable
    from sdserver.engines.diffusers_models import DEFAULT_MODEL, locate

    model = settings.sd_model or DEFAULT_MODEL
    try:
        locate(model)  # looks at files only: no torch, no network
    except EngineUnavailable as error:
        return "preview", {}, f"{error.message} ({error.fix})"
    return "diffusers", {"model": model}, f"its model {model} is on this machine"


def _start_kit_server(port: int, step_delay: float, quiet: bool):
    """Start the kit's server on 127.0.0.1:``port`` with choose_engine()'s engine, falling back to preview."""
    from sdserver import serve_in_thread
    from sdserver.engines import EngineUnavailable

    engine, options, why = choose_engine()
    if engine == "diffusers":
        if not quiet:
            print(f"Loading {options['model']} for the kit's diffusers engine (the first time takes a while)...")
        try:
            return serve_in_thread(host="127.0.0.1", port=port, engine="diffusers", **options), why
        except EngineUnavailable as error:
            why = f"the diffusers engine could not start: {error.message} ({error.fix})"
    return serve_in_thread(host="127.0.0.1", port=port, engine="preview", step_delay=step_delay), why


def connect_a1111(start_server: bool = True, step_delay: float = 0.05, quiet: bool = False) -> A1111Client:
    """Return a client for ``SD_URL``; start the kit's own server there if nothing answers.

    With ``start_server=False`` the connection error is raised instead (see :func:`choose_engine` for the
    engine); ``step_delay`` is the preview engine's seconds per step, so progress can be watched. The client's
    ``.placeholder`` is True for the preview engine; ``.hints`` (a ModelHints) for the loaded model are in
    ``.defaults``.
    """
    client = A1111Client()
    try:
        model = client.options().get("sd_model_checkpoint", "?")
    except A1111Error as err:
        parts = urlsplit(client.base_url)
        if not start_server or err.status is not None or parts.hostname not in _LOCAL_HOSTS:
            raise
        why = "it was started before"
        if client.base_url not in _started:
            _started[client.base_url], why = _start_kit_server(parts.port or 7860, step_delay, quiet)
        server = _started[client.base_url]
        client = A1111Client(server.url)
        model = client.options().get("sd_model_checkpoint", "?")
        if not quiet:
            print(f"No A1111 answered at {parts.scheme}://{parts.netloc}, so the kit started its own "
                  f"A1111-compatible server there.")
            if model.startswith(PLACEHOLDER_MODEL):
                print(f"Its images are PLACEHOLDERS drawn by the offline preview engine, not a real model "
                      f"({why}).\nFor real images start A1111 with --api, or run `make models-sd` once while "
                      f"online (the kit then uses the diffusers engine).")
            else:
                print(f"It runs the diffusers engine: {server.app.state.engine.description}.")
    client.placeholder = model.startswith(PLACEHOLDER_MODEL)
    # Settings that suit the loaded model become the client's defaults (few steps for sd-turbo, ...).
    client.adapt_to_model()
    if not quiet and not client.placeholder:
        print(f"Using A1111 at {client.base_url} (model: {model})")
        if client.hints.family != "sd":
            settings = ", ".join(f"{key}={value!r}" for key, value in client.hints.defaults.items())
            print(f"{client.hints}\nThe client sends {settings} unless you pass other values.")
    return client

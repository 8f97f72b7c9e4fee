"""Find a running A1111 (or Forge, SD.Next), or start the kit's own server, and say which one is used.

    >>> client = connect_a1111()          # doctest: +SKIP
    Using A1111 at http://127.0.0.1:7860 (model: v1-5-pruned-emaonly.safetensors [6ce0161689])
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .a1111 import A1111Client, A1111Error
from .generation import PLACEHOLDER_MODEL
from .urls import without_password

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_started = {}  # url -> server handle, so a notebook re-run does not start a second server


def connect_a1111(start_server: bool = True, step_delay: float = 0.05, quiet: bool = False) -> A1111Client:
    """Return a client for ``SD_URL``; start the kit's own server there if nothing answers (``sdserver.autostart``
    picks its engine), or with ``start_server=False`` raise the connection error. ``step_delay``: the preview
    engine's seconds per step, so progress can be watched. ``client.placeholder`` is True for the preview engine;
    the loaded model's ``client.hints`` (a ModelHints) are in ``client.defaults``."""
    client = A1111Client()
    try:
        model = client.options().get("sd_model_checkpoint", "?")
    except A1111Error as err:
        parts = urlsplit(client.base_url)
        if not start_server or err.status is not None or parts.hostname not in _LOCAL_HOSTS:
            raise
        why = "it was started before"
        if client.base_url not in _started:
            from sdserver.autostart import start_kit_server  # the one import of the server from helpers

            _started[client.base_url], why = start_kit_server(parts.port or 7860, step_delay, quiet)
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
        print(f"Using A1111 at {without_password(client.base_url)} (model: {model})")
        if client.hints.family != "sd":
            settings = ", ".join(f"{key}={value!r}" for key, value in client.hints.defaults.items())
            print(f"{client.hints}\nThe client sends {settings} unless you pass other values.")
    return client

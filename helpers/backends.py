"""Find a running backend, or start the kit's offline stand-in, and say which one is used.

Notebooks and ``make demo`` call :func:`connect_a1111`: it uses A1111 (or Forge, SD.Next) at
``SD_URL`` when one answers; otherwise, for a local address, it starts the kit's own
A1111-compatible server in the background with its ``preview`` engine and says plainly that the
images will be placeholders. It also makes the settings that suit the loaded model the client's
defaults (helpers/model_hints.py: e.g. 1 step at CFG scale 1 for sd-turbo).

Example:
    >>> from helpers.backends import connect_a1111
    >>> client = connect_a1111()          # doctest: +SKIP
    Using A1111 at http://127.0.0.1:7860 (model: v1-5-pruned-emaonly.safetensors [6ce0161689])
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .a1111 import A1111Client, A1111Error

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_started = {}  # url -> server handle, so a notebook re-run does not start a second server


def connect_a1111(start_preview: bool = True, step_delay: float = 0.05, quiet: bool = False) -> A1111Client:
    """Return a client for ``SD_URL``; start the kit's preview server there if nothing answers.

    Args:
        start_preview: when no server answers at a local ``SD_URL``, start the kit's own server
            (placeholder images). With False, raise the connection error instead.
        step_delay: seconds per sampling step of the preview server, so progress can be watched.

    The returned client has ``.placeholder`` set to True when the preview engine is in use, and
    ``.hints`` (a ModelHints) whose steps, cfg_scale and sampler are in ``.defaults``.
    """
    client = A1111Client()
    try:
        model = client.options().get("sd_model_checkpoint", "?")
    except A1111Error as err:
        parts = urlsplit(client.base_url)
        if not start_preview or err.status is not None or parts.hostname not in _LOCAL_HOSTS:
            raise
        from .sdserver import serve_in_thread

        if client.base_url not in _started:
            _started[client.base_url] = serve_in_thread(host="127.0.0.1", port=parts.port or 7860,
                                                        engine="preview", step_delay=step_delay)
        client = A1111Client(_started[client.base_url].url)
        model = client.options().get("sd_model_checkpoint", "?")
        if not quiet:
            print(f"No A1111 answered at {parts.scheme}://{parts.netloc}, so the kit started its own "
                  f"A1111-compatible server there.\nIts images are PLACEHOLDERS drawn by the offline preview "
                  f"engine, not a real model. Start A1111 with --api for real images.")
    client.placeholder = model.startswith("offline-preview")
    # Settings that suit the loaded model become the client's defaults (few steps for sd-turbo, ...).
    client.adapt_to_model()
    if not quiet and not client.placeholder:
        print(f"Using A1111 at {client.base_url} (model: {model})")
        if client.hints.family != "sd":
            settings = ", ".join(f"{key}={value!r}" for key, value in client.hints.defaults.items())
            print(f"{client.hints}\nThe client sends {settings} unless you pass other values.")
    return client

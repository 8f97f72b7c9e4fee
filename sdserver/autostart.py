"""The kit's server as a stand-in for A1111: which engine it starts with, and the start itself.

``helpers.backends.connect_a1111()`` calls :func:`start_kit_server` (the one import of this package from
``helpers``) when no A1111 answers at a local ``SD_URL``.
"""

from __future__ import annotations

import importlib.util

from helpers.config import load_settings

from . import serve_in_thread
from .engines import EngineUnavailable


def choose_engine(settings=None) -> tuple[str, dict, str]:
    """Which engine the kit's own server starts with when no A1111 answers: ``(name, options, why)``.

    ``SD_ENGINE=auto`` takes the diffusers engine when it is installed and its model (``SD_MODEL``, default
    sd-turbo) is on this machine (after ``make models-sd``), else the preview engine; nothing is loaded to decide.
    The diffusers engine's backend is the fastest there is (openvino_backend.choose_backend: CUDA > MPS >
    OpenVINO, installed and the model converted > PyTorch on the CPU); ``why`` says which and why.

    >>> from helpers.config import load_settings
    >>> choose_engine(load_settings(env={"SD_ENGINE": "preview"}, dotenv=False))
    ('preview', {}, 'SD_ENGINE=preview')
    """
    settings = settings or load_settings()
    if settings.sd_engine == "preview":
        return "preview", {}, "SD_ENGINE=preview"
    if not all(importlib.util.find_spec(name) for name in ("diffusers", "transformers", "torch")):
        return "preview", {}, "the diffusers engine is not installed (pip install -e '.[diffusers]')"
    from .engines.diffusers_models import DEFAULT_MODEL, locate

    model = settings.sd_model or DEFAULT_MODEL
    try:
        locate(model)  # looks at files only: no torch, no network
    except EngineUnavailable as error:
        return "preview", {}, f"{error.message} ({error.fix})"
    from .engines.openvino_backend import choose_backend

    backend, because = choose_backend(model)
    why = f"its model {model} is on this machine; {backend}: {because}"
    return "diffusers", {"model": model, "backend": backend}, why


def start_kit_server(port: int, step_delay: float, quiet: bool):
    """Start the server on 127.0.0.1:``port`` with choose_engine()'s engine, falling back to preview;
    returns ``(ServerHandle, why)``."""
    engine, options, why = choose_engine()
    lora_dir = load_settings().sd_lora_dir  # None: the kit's data/loras
    if engine == "diffusers":
        if not quiet:
            print(f"Loading {options['model']} for the kit's diffusers engine ({why}; the first time takes a while)...")
        try:
            return serve_in_thread(host="127.0.0.1", port=port, engine="diffusers", lora_dir=lora_dir,
                                   **options), why
        except EngineUnavailable as error:
            why = f"the diffusers engine could not start: {error.message} ({error.fix})"
    return serve_in_thread(host="127.0.0.1", port=port, engine="preview", step_delay=step_delay,
                           lora_dir=lora_dir), why

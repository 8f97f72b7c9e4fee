"""Image engines of the kit's server, by name (the interface is in base.py).

* ``preview``: labelled placeholder images drawn with Pillow (no model, no GPU);
* ``diffusers``: real images from a Stable Diffusion 1.x/2.x model with Hugging Face diffusers
  (an optional extra: ``pip install -e '.[diffusers]'``). It is imported only when asked for,
  so the preview engine never imports torch or diffusers. ``backend="openvino"`` runs the same engine's
  model with OpenVINO (openvino_backend.py; the ``openvino`` extra and a converted model).

    >>> get_engine("preview").model_name
    'offline-preview'
"""

from __future__ import annotations

from .base import ENGINES, VERSION, Engine, EngineUnavailable, GenerationJob, StepCallback


def get_engine(name="preview", **options) -> Engine:
    """Build the engine called ``name``; ``options`` go to its constructor (e.g. ``step_delay``,
    or ``model``/``decoder``/``dtype``/``device`` for diffusers). An ``Engine`` instance is
    returned as it is (options are then ignored), so a ready engine can be served."""
    if isinstance(name, Engine):
        return name
    if name == "preview":
        from .preview import PreviewEngine

        return PreviewEngine(**options)
    if name == "diffusers":
        backend, int8 = options.pop("backend", "pytorch"), options.pop("int8", False)
        if backend == "auto":
            from .openvino_backend import choose_backend

            backend = choose_backend(options.get("model"), options.get("device", "auto"), int8)[0]
        if backend == "openvino":
            from .openvino_backend import OpenVINOEngine

            return OpenVINOEngine(int8=int8, **options)
        from .diffusers_engine import DiffusersEngine  # light: torch and diffusers are imported inside

        try:
            return DiffusersEngine(**options)
        except ImportError as error:
            raise EngineUnavailable(f"the diffusers engine needs packages that are not installed ({error}).",
                                    fix="pip install -e '.[diffusers]' (diffusers, transformers, accelerate, "
                                        "scipy)") from error
    raise ValueError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")


__all__ = ["Engine", "GenerationJob", "StepCallback", "get_engine", "ENGINES", "EngineUnavailable", "VERSION"]

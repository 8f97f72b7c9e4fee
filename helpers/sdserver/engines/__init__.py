"""Image engines of the kit's server, by name.

    >>> get_engine("preview").model_name
    'offline-preview'
"""

from __future__ import annotations

from .base import Engine, GenerationJob, StepCallback

ENGINES = ("preview",)


def get_engine(name: str = "preview", **options) -> Engine:
    """Build the engine called ``name``; ``options`` go to its constructor (e.g. ``step_delay``)."""
    if name == "preview":
        from .preview import PreviewEngine

        return PreviewEngine(**options)
    raise ValueError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")


__all__ = ["Engine", "GenerationJob", "StepCallback", "get_engine", "ENGINES"]

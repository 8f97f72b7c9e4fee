"""The interface every image engine of the kit's server implements.

The server (routes, seeds, infotext, progress, locking) knows nothing about how pixels are
made; it hands an engine one ``GenerationJob`` per batch and gets PIL images back. Today there
is one engine, ``preview`` (labelled placeholders drawn with Pillow). A real one, e.g. built on
diffusers, only has to fill in the same few methods:

    class DiffusersEngine(Engine):
        name = "diffusers"
        model_title = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
        ...
        def generate(self, job, on_step):
            # call the pipeline with callback_on_step_end=..., and return when on_step says stop
            ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from PIL import Image

# on_step(step, preview) is called after each sampling step (1-based); ``preview`` is a PIL
# image or None. It returns False when the job must stop now (interrupt or skip).
StepCallback = Callable[[int, Optional[Image.Image]], bool]


@dataclass
class GenerationJob:
    """One batch: ``len(seeds)`` images generated together.

    >>> job = GenerationJob(prompt="a cat", seeds=[1, 2], subseeds=[5, 6], width=64, height=64, steps=4)
    >>> job.batch_size
    2
    """

    prompt: str
    seeds: list[int]  # one per image of the batch
    subseeds: list[int]  # one per image; used when subseed_strength > 0 (variations)
    negative_prompt: str = ""
    subseed_strength: float = 0.0
    width: int = 512  # size of the returned images (the hires-fix target when it is on)
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    preview_every: int = 0  # pass a preview image to on_step every N steps; 0: never
    extra: dict = field(default_factory=dict)  # other request fields an engine may want

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


class Engine:
    """Base class of the server's engines. Subclasses set the model attributes and implement
    :meth:`generate` (and, if they can, :meth:`caption`)."""

    name = "base"
    model_title = "model.safetensors [0000000000]"  # what A1111 calls the checkpoint title
    model_name = "model"  # file stem, written as "Model:" in the infotext
    model_hash = "0000000000"  # 10-hex short hash, written as "Model hash:"
    model_sha256: str | None = None
    model_filename = ""
    description = ""  # one line for the start-up message

    def generate(self, job: GenerationJob, on_step: StepCallback) -> list[Image.Image]:
        """Make ``job.batch_size`` images. Call ``on_step`` after every step; when it returns
        False, stop and return the images as they are at that step."""
        raise NotImplementedError

    def caption(self, image: Image.Image) -> str:
        """Describe an image in words (POST /sdapi/v1/interrogate)."""
        raise NotImplementedError(f"the {self.name} engine cannot caption images")

"""The interface every image engine of the kit's server implements, and the engines there are.

The server (routes, seeds, infotext, progress, locking) knows nothing about how pixels are
made; it hands an engine one ``GenerationJob`` per batch and gets PIL images back. There are two
engines (``ENGINES``): ``preview`` (labelled placeholders drawn with Pillow, preview.py) and
``diffusers`` (real images, diffusers_engine.py). Every hook the server calls is a method or
attribute of :class:`Engine` with a default, so a new engine fills in only what it does differently:

    class MyEngine(Engine):
        name = "mine"
        model_title = "my-model.safetensors [0123456789]"
        ...
        def generate(self, job, on_step):
            # make job.batch_size images; call on_step(step, preview) after every step,
            # and return the images as they are when it says stop
            ...

    >>> engine = Engine()
    >>> engine.check_request(None, {}), engine.sampler_names, engine.device, engine.switches_models
    ({}, None, None, False)
    >>> engine.find_model("model")
    >>> engine.find_model("other")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: model 'other' not found: ... model.safetensors [0000000000]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PIL import Image

from helpers.errors import KitError

from ..loras import LoraFile

# The engines ``get_engine`` (engines/__init__.py) builds, by name.
ENGINES = ("preview", "diffusers")

# Written as "Version:" in every infotext and as info["version"] by an engine that does not name its
# own version (the preview engine): honest about what made the image.
VERSION = "kit-preview"

# on_step(step, preview) is called after each sampling step (1-based); ``preview`` is a PIL
# image or None. It returns False when the job must stop now (interrupt or skip).
StepCallback = Callable[[int, Optional[Image.Image]], bool]


class EngineUnavailable(KitError, RuntimeError):
    """An engine cannot start (model not downloaded, package missing, out of memory...).

    ``str(error)`` says what went wrong and, on a second line, how to fix it; ``.fix`` holds the fix.
    The command line prints it and exits with status 1 instead of serving broken images.
    """


def model_not_found(name: Any, titles: list[str], shown: int = 5) -> str:
    """A1111's "model 'x' not found", with the names a client may choose instead (never a path).

    >>> model_not_found("~/.ssh", ["a [0123456789]"])  # doctest: +ELLIPSIS
    "model '~/.ssh' not found: the server loads only the models GET /sdapi/v1/sd-models lists ...: a [0123456789]"
    """
    listed = ", ".join(titles[:shown]) + (f" and {len(titles) - shown} more" if len(titles) > shown else "")
    return (f"model {name!r} not found: the server loads only the models GET /sdapi/v1/sd-models lists "
            f"(by title, model_name or filename): {listed}")


@dataclass
class HiresPass:
    """Hires fix's second pass (txt2img ``enable_hr``), for an engine that runs it (``Engine.hires_passes``).

    The job's ``width`` x ``height`` is the final size; the first pass draws at ``width`` x ``height`` of
    this object, is upscaled by ``upscaler``, then sampled again as img2img: ``steps`` steps of a
    ``schedule_steps`` schedule (A1111 runs exactly the hires steps asked for), with its own prompts and
    sampler (the first pass's unless the request named others).
    """

    width: int  # the first pass's size
    height: int
    steps: int  # steps the second pass runs
    schedule_steps: int
    denoising_strength: float
    upscaler: str  # "Latent" (and its variants), "None", "Lanczos" or "Nearest"
    prompt: str
    negative_prompt: str
    sampler_name: str
    scheduler: str


@dataclass
class GenerationJob:
    """One batch: ``len(seeds)`` images generated together, with the settings that shape them.

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
    tiling: bool = False  # A1111's "Tiling": the picture repeats seamlessly (request, else option "tiling")
    clip_skip: int = 1  # A1111's "Clip skip" (option CLIP_stop_at_last_layers)
    emphasis: str = "Original"  # how (word:1.3) weights are applied (option emphasis)
    comma_padding_backtrack: int = 20  # tokens a 75-token chunk may give back to keep words together
    eta: Optional[float] = None  # the request's eta; None: the engine's default (e.g. option eta_ddim)
    # The server's settings for this request (GET /options with the request's override_settings), for
    # an engine that reads more of them (the diffusers engine: eta_ddim when ``eta`` is None).
    options: dict[str, Any] = field(default_factory=dict)
    # img2img: one init image per image of the batch, already width x height RGB; None for txt2img.
    # ``steps`` are then the steps actually run, the last ``steps`` of a schedule ``schedule_steps``
    # long (A1111's img2img step count: the server works it out from the denoising strength).
    init_images: Optional[list[Image.Image]] = None
    denoising_strength: float = 0.0
    schedule_steps: int = 0
    # Inpainting (sdserver/inpaint.py): white where the engine repaints (L, width x height); the rest of the
    # latents is held at the init images'. ``masked_content``: A1111's inpainting_fill (2 latent noise, 3 zeros
    # in the masked latents; 0 and 1 are done on the pixels). An engine may ignore it: the server lays the
    # results over the init images through the mask anyway.
    latent_mask: Optional[Image.Image] = None
    masked_content: int = 1
    # The prompt's <lora:name:weight> files (sdserver/loras.py), found in the LoRA folder, with their
    # weights; ``prompt`` no longer holds the tags. Empty: the base model alone.
    loras: list[LoraFile] = field(default_factory=list)
    # Hires fix (txt2img enable_hr): the first pass's size and the second pass; None without hires fix.
    # An engine with ``hires_passes = 2`` runs both passes and counts steps across them (on_step gets
    # 1..steps, then steps+1..steps+hires.steps); other engines draw at width x height directly.
    hires: Optional[HiresPass] = None

    @property
    def batch_size(self) -> int:
        return len(self.seeds)


class Engine:
    """Base class of the server's engines. Subclasses set the model attributes and implement
    :meth:`generate` (and, if they can, :meth:`caption`); the other hooks have defaults for an
    engine with one model that runs every A1111 sampler."""

    name = "base"
    model_title = "model.safetensors [0000000000]"  # what A1111 calls the checkpoint title
    model_name = "model"  # file stem, written as "Model:" in the infotext
    model_hash = "0000000000"  # 10-hex short hash, written as "Model hash:"
    model_sha256: str | None = None
    model_filename = ""
    description = ""  # one line for the start-up message
    version = VERSION  # written as "Version:" in the infotext
    device: str | None = None  # the torch device it runs on (GET /memory reports CUDA's); None: no GPU
    # True: switch_model loads another model, and the server calls it only between jobs (queue lock).
    switches_models = False
    # 2: generate() runs hires fix as A1111 does (first pass, upscale, second pass), and the server
    # shows the passes as two jobs in /progress; 1: the engine draws hires images in one pass.
    hires_passes = 1

    def generate(self, job: GenerationJob, on_step: StepCallback) -> list[Image.Image]:
        """Make ``job.batch_size`` images. Call ``on_step`` after every step; when it returns
        False, stop and return the images as they are at that step."""
        raise NotImplementedError

    def caption(self, image: Image.Image) -> str:
        """Describe an image in words (POST /sdapi/v1/interrogate)."""
        raise NotImplementedError(f"the {self.name} engine cannot caption images")

    def load_loras(self, loras: list[LoraFile]) -> dict[str, str]:
        """Called under the queue lock before a request's first batch: load what ``loras`` need (once; an
        engine caches them) and return ``{name: why}`` for each one it cannot apply. The server then
        leaves those out of ``job.loras`` (A1111 skips a LoRA it fails to load). Default: all fine."""
        return {}

    def check_request(self, req, opts: dict[str, Any]) -> dict[str, Any]:
        """Called before a job is queued: raise an HTTPException (a 422) for what this engine cannot do,
        and return the extra infotext entries it will write (A1111's keys). Default: accept, none."""
        return {}

    @property
    def sampler_names(self) -> list[str] | None:
        """The sampler names this engine can run (GET /samplers lists only these); None: all of A1111's."""
        return None

    @property
    def scheduler_names(self) -> list[str] | None:
        """The schedule labels this engine can run (GET /schedulers lists only these); None: all of A1111's."""
        return None

    # --- models -----------------------------------------------------------------------------------

    def model_names(self) -> set:
        """Every name a client may use for the loaded model: title, name, file name, short and full hash."""
        return {self.model_title, self.model_name, f"{self.model_name}.safetensors", self.model_hash,
                self.model_sha256}

    def list_models(self) -> list[dict]:
        """GET /sdapi/v1/sd-models: the models clients may choose (here the one loaded)."""
        return [{"title": self.model_title, "model_name": self.model_name, "hash": self.model_hash,
                 "sha256": self.model_sha256, "filename": self.model_filename, "config": None}]

    def find_model(self, name: Any):
        """Check that ``name`` is a model GET /sd-models lists, else RuntimeError "model 'x' not found"
        (a 500, as in A1111)."""
        if not (isinstance(name, str) and name in self.model_names()):
            raise RuntimeError(model_not_found(name, [self.model_title]))

    def switch_model(self, name: str) -> None:
        """Load the listed model ``name`` (POST /options sd_model_checkpoint). With one model there is
        nothing to load: only the name is checked."""
        self.find_model(name)

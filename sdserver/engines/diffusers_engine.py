"""The ``diffusers`` engine: real images from a Stable Diffusion 1.x/2.x model, on this machine.

    python -m sdserver --engine diffusers                      # stabilityai/sd-turbo
    python -m sdserver --engine diffusers --model /path/to/diffusers-folder

It plugs into the same server as the preview engine, so every /sdapi/v1 request, the infotext,
/progress, /interrupt and /skip work as before; the pixels come from Hugging Face diffusers'
``StableDiffusionPipeline``. What it adds to a plain pipeline call, to behave like A1111:

* **seeds**: one generator per image, so image i depends only on ``all_seeds[i]`` (a batch equals
  single calls); ``subseed_strength`` blends in the subseed's noise as A1111 does (latents.py);
* **samplers**: A1111's names mapped to diffusers schedulers (samplers.py); an unknown name is a
  422 listing the names that work (A1111 1.10 would silently use another sampler);
* **prompts**: A1111's emphasis ``(word:1.3)``, ``BREAK`` and prompts longer than 75 tokens
  (prompt_weights.py), and "Clip skip" (option ``CLIP_stop_at_last_layers``);
* **progress**: after every step the server gets the step number and a cheap preview of the
  model's current guess of the image (latents.py);
* **interrupt / skip**: sampling stops after the current step and the call still returns 200
  with the images as far as they got: the model's current guess, decoded (what A1111 returns);
* **tiling**: A1111's seamless "Tiling" (every convolution wraps around the edges);
* **img2img**: ``StableDiffusionImg2ImgPipeline.from_pipe`` on the loaded model (the same weights,
  no copy); the init images are encoded with the full VAE (its mean: deterministic), noised with the
  seeds' own noise (variations included) to the level where A1111 starts, and sampled for the steps
  A1111 runs (the server works them out: ``GenerationJob.steps`` of ``schedule_steps``);
* **hires fix** (``enable_hr``): first pass, upscale (latent or Pillow), second pass as img2img at the
  denoising strength, as A1111 runs it (hires.py);
* **speed on a CPU**: a tiny decoder (TAESD) instead of the full VAE, and bfloat16 where the CPU
  computes it natively.

What it cannot do is a clear 422 before the job starts: hires fix with a model upscaler (ESRGAN...),
restore_faces, a sampler or schedule diffusers does not have, a size that is not a multiple of 8
(inpainting: the server's 422).

Devices: CUDA, then Apple's MPS, then the CPU. Precision ("auto"): float16 on a GPU, bfloat16 on a
CPU with native bf16 (AVX512-BF16 or AMX), float32 otherwise.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from typing import Any

from PIL import Image

from ..catalog import resolve_sampler
from . import hires
from .base import Engine, EngineUnavailable, GenerationJob, StepCallback, model_not_found
from .devices import pick_device, pick_dtype
from .diffusers_models import (
    DEFAULT_MODEL,
    ModelInfo,
    cached_hub_models,
    dtype_argument,
    folder_models,
    load_pipeline,
    load_tiny_decoder,
    locate,
    locate_config,
)
from .latents import initial_noise, latents_to_preview, watch_predictions
from .lora import LoraAdapters
from .prompt_weights import PromptEncoder
from .samplers import UnknownSampler, available_samplers, available_schedules, make_scheduler, resolve

log = logging.getLogger("sdserver")


class DiffusersEngine(Engine):
    """Stable Diffusion with diffusers. The model is loaded once, when the engine is built.

    ``model``: Hugging Face id, diffusers folder or .safetensors file (default stabilityai/sd-turbo);
    ``decoder``: "auto" (tiny on a CPU, full on a GPU), "tiny", "full", an AutoencoderTiny folder (or object);
    ``dtype``: "auto", "float32", "bfloat16" or "float16"; ``device``: "auto", "cpu", "cuda", "mps";
    ``config``: config folder or id for a single-file checkpoint; ``step_delay``: extra seconds per
    step (for demos of progress and interrupt); ``pipeline``: serve a StableDiffusionPipeline you
    already built instead of loading one; ``ckpt_dir``: a folder of diffusers model folders that
    clients may switch to (besides the Hugging Face cache).

    Clients choose models only among those :meth:`list_models` lists (GET /sd-models): a path sent
    in POST /options is never opened, and errors never tell a client what is on the server's disk.
    """

    name = "diffusers"
    switches_models = True  # switch_model loads another listed model
    hires_passes = 2  # hires fix runs as A1111's two passes (hires.py)

    def __init__(self, model: str | None = None, decoder: str = "auto", dtype: str = "auto", device: str = "auto",
                 config: str | None = None, step_delay: float = 0.0, pipeline=None,
                 ckpt_dir: str | None = None) -> None:
        from importlib.metadata import version

        if pipeline is None:
            # Is the model on this machine at all? Answered from the file system in milliseconds,
            # before the slow imports of torch and diffusers.
            kind, path = locate(model or DEFAULT_MODEL, config)
            if kind == "file":
                locate_config(path, config)
            self.device = pick_device(device)
            self.dtype = pick_dtype(dtype, self.device)
        else:  # serve it as it is: its device and precision
            self.device, self.dtype = str(pipeline.device), pipeline.unet.dtype
        self.decoder_request = decoder
        self.config = config
        self.ckpt_dir = ckpt_dir
        self.step_delay = float(step_delay)
        self.version = f"kit-diffusers-{version('diffusers')}"
        self.notes: list[str] = []  # start-up notes (the fallback to the full VAE is also logged)
        self.pipe = None
        self.info: ModelInfo | None = None
        self._loaded: dict[str, ModelInfo] = {}  # every model loaded in this session, by title
        self._tiny = None  # the tiny decoder, shared by every model
        self.decoder_name = "full"
        if pipeline is not None:
            self._use(pipeline, ModelInfo(source="pipeline", kind="folder", path=_pipeline_path(pipeline),
                                          name="custom-pipeline", sha256="0" * 64))
        else:
            self._use(*load_pipeline(model or DEFAULT_MODEL, dtype=self.dtype, device=self.device, config=config))
        self._set_up_decoder()

    # --- models ---------------------------------------------------------------------------------

    def _use(self, pipe, info: ModelInfo) -> None:
        """Make ``pipe`` the current model and update the names the server reports."""
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self._img2img_pipe = None  # built from this pipe on the first img2img (see _img2img)
        self.info = info
        self.encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder)
        self.lora = LoraAdapters(pipe)  # a new model starts without LoRAs (lora.py)
        self.base_scheduler_config = dict(pipe.scheduler.config)  # every sampler is built from this
        self.full_vae = pipe.vae
        self._loaded[info.title] = info
        self.model_title = info.title
        self.model_name = info.name
        self.model_hash = info.short_hash
        self.model_sha256 = info.sha256
        self.model_filename = str(info.path)

    def _set_up_decoder(self) -> None:
        """Swap in the tiny decoder when asked for (and on a CPU by default)."""
        wanted = self.decoder_request
        if not isinstance(wanted, str):  # an AutoencoderTiny object handed over (e.g. by a benchmark)
            self._tiny, wanted = wanted, "tiny"
        if wanted == "auto":
            wanted = "tiny" if self.device == "cpu" else "full"
        if wanted != "full":
            if self._tiny is None:
                self._tiny, note = load_tiny_decoder(wanted, dtype=self.dtype, device=self.device)
                self.notes.append(note)
                if self._tiny is None:
                    log.warning("Note: %s", note)  # not an error: the server starts with the full VAE
            if self._tiny is not None:
                self.pipe.vae = self._tiny
                self.decoder_name = "tiny"
        dtype = str(self.dtype).replace("torch.", "")
        self.description = (f"real images from {self.model_title} with diffusers on {self.device} ({dtype}, "
                            f"{self.decoder_name} VAE decoder)")

    def listed(self) -> list[ModelInfo]:
        """The models clients may choose: those loaded in this session, the SD models in the Hugging
        Face cache and the diffusers folders in ``ckpt_dir``, each once (by title and by folder)."""
        models = {info.title: info for info in self._loaded.values()}
        paths = {info.path for info in models.values()}
        sources = [cached_hub_models] + ([lambda: folder_models(self.ckpt_dir)] if self.ckpt_dir else [])
        for source in sources:
            try:
                found = source()
            except OSError as error:  # an unreadable cache or folder lists nothing, and says why (server side)
                log.warning("could not list models: %s", error)
                continue
            for info in found:
                if info.path not in paths:
                    models.setdefault(info.title, info)
                    paths.add(info.path)
        return [models[title] for title in sorted(models, key=str.lower)]

    def list_models(self) -> list[dict]:
        """GET /sd-models: the models clients may choose (see :meth:`listed`)."""
        return [info.entry() for info in self.listed()]

    def find_model(self, name) -> ModelInfo:
        """The listed model called ``name`` (title, model_name, filename or hash), else RuntimeError
        "model 'x' not found" with the names that exist: a 500, as in A1111."""
        listed = self.listed()
        for info in [self.info, *listed]:
            if info is not None and isinstance(name, str) and name in info.names():
                return info
        raise RuntimeError(model_not_found(name, [info.title for info in listed]))

    def switch_model(self, name: str) -> None:
        """POST /options {"sd_model_checkpoint": name}: load another model (the server holds the queue
        lock, so no job is running). Not listed or not loadable: RuntimeError, a 500 as in A1111.

        ``name`` is a title, model_name, filename or hash from GET /sd-models. The current model is
        unloaded first (two models may not fit in memory); if the new one fails to load, the previous
        one is loaded again.
        """
        wanted = self.find_model(name)
        if self.info is not None and wanted.title == self.info.title:
            return  # already loaded
        previous = self.info
        self._unload()
        try:
            self._use(*load_pipeline(wanted.source, dtype=self.dtype, device=self.device, config=self.config))
        except EngineUnavailable as error:
            log.warning("could not switch to %s: %s", wanted.source, error)  # the details, on the server only
            if previous is not None and previous.source != "pipeline":
                self._use(*load_pipeline(previous.source, dtype=self.dtype, device=self.device, config=self.config))
                self._set_up_decoder()
            raise RuntimeError(f"model {wanted.title!r} could not be loaded ({error.message.splitlines()[0]}); the "
                               "previous model is loaded again, and the server's console says more") from error
        self._set_up_decoder()

    def _unload(self) -> None:
        import torch

        self.pipe = self.encoder = self.full_vae = self._img2img_pipe = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # --- requests -------------------------------------------------------------------------------

    @property
    def sampler_names(self) -> list[str]:
        """The samplers GET /samplers lists: those this engine can run."""
        return available_samplers()

    @property
    def scheduler_names(self) -> list[str]:
        return available_schedules()

    def check_request(self, req, opts: dict) -> dict[str, Any]:
        """Called by the server before a job is queued: reject what this engine cannot do with a clear
        422, and return the extra infotext entries it will write (A1111's keys)."""
        from fastapi import HTTPException

        try:
            # A1111's names first: an unknown sampler is DPM++ 2M, an unknown schedule Automatic, silently (A1111
            # 1.10 does so; generation.py resolves the same way), so only A1111's samplers that diffusers lacks fail.
            sampler, schedule = resolve(*resolve_sampler(req.sampler_name or req.value("sampler_index"), req.scheduler))
            make_scheduler(sampler, schedule, self.base_scheduler_config)
        except UnknownSampler as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        width, height = req.value("width"), req.value("height")
        if width % 8 or height % 8:
            raise HTTPException(status_code=422, detail=f"width and height must be multiples of 8 for Stable "
                                                        f"Diffusion (got {width}x{height}); e.g. 512x512 or 512x768")
        if req.value("enable_hr"):
            hires.check(req, self.base_scheduler_config)
        # restore_faces is accepted and does nothing, as in an A1111 without the restorer's weights; the server
        # says so in info["comments"] (generation.py).
        extra: dict[str, Any] = {}
        if opts.get("emphasis", "Original") != "Original":
            extra["Emphasis"] = opts["emphasis"]
        if self.decoder_name == "tiny":
            extra["VAE Decoder"] = "TAESD"  # A1111's own key when TAESD decodes the final image
        return extra

    def load_loras(self, loras) -> dict[str, str]:
        """Load the request's LoRA files into the pipeline (once per file; lora.py)."""
        return self.lora.load(loras)

    def generate(self, job: GenerationJob, on_step: StepCallback, output_type: str = "pil", init_latents=None):
        """The job's images (PIL). ``output_type="latent"``: the latents instead; ``init_latents``: img2img
        from these latents (both for hires fix's two passes, hires.py)."""
        import torch

        if job.hires is not None:
            return hires.generate(self, job, on_step, set_tiling)

        pipe = self.pipe
        self.lora.activate(job.loras)  # this job's LoRAs and weights, or the base model (cheap)
        scheduler = make_scheduler(job.sampler_name, job.scheduler, self.base_scheduler_config)
        guesses = watch_predictions(scheduler)
        pipe.scheduler = scheduler

        # Prompts -> CLIP vectors, A1111-style (emphasis, chunks of 75 tokens, Clip skip).
        emphasis, clip_skip, backtrack = job.emphasis, job.clip_skip, job.comma_padding_backtrack
        use_cfg = job.cfg_scale > 1  # diffusers skips the negative prompt at CFG <= 1 (one UNet call per step)
        chunks = self.encoder.chunk_count(job.prompt, emphasis, backtrack)
        if use_cfg:
            chunks = max(chunks, self.encoder.chunk_count(job.negative_prompt, emphasis, backtrack))
        positive = self.encoder.encode(job.prompt, emphasis, clip_skip, backtrack, min_chunks=chunks)
        negative = (self.encoder.encode(job.negative_prompt, emphasis, clip_skip, backtrack, min_chunks=chunks)
                    if use_cfg else None)

        # Starting noise: one generator per image, seeded with all_seeds[i].
        scale = pipe.vae_scale_factor
        shape = (pipe.unet.config.in_channels, job.height // scale, job.width // scale)
        noise, generators = initial_noise(shape, job.seeds, job.subseeds, job.subseed_strength)
        noise = noise.to(device=self.device, dtype=pipe.unet.dtype)

        reported = {"step": 0}

        def on_step_end(p, index: int, timestep, tensors: dict) -> dict:
            total = p.num_timesteps  # 2N-1 for 2nd-order samplers such as Heun: map back to N steps
            step = min(job.steps, max(1, math.ceil((index + 1) * job.steps / total)))
            if self.step_delay > 0:
                time.sleep(self.step_delay)
            guess = guesses.get("x0")
            latest = guess if guess is not None else tensors["latents"]
            preview = None
            if (job.preview_every > 0 and step != reported["step"]
                    and (step % job.preview_every == 0 or step == job.steps)):
                preview = latents_to_preview(latest[:1])[0]
            reported["step"] = step
            if not on_step(step, preview):  # interrupt or skip: stop after this step
                p._interrupt = True  # diffusers' documented way to end the loop early
                if index < total - 1:
                    # Decode the current guess, as A1111 returns it. Schedulers keep it in float32;
                    # the decoder wants the model's dtype (bfloat16/float16).
                    return {"latents": latest.to(tensors["latents"].dtype)}
            return tensors

        eta = float(job.eta) if job.eta is not None else float(job.options.get("eta_ddim", 0.0) or 0.0)
        common = dict(prompt_embeds=positive, negative_prompt_embeds=negative, guidance_scale=job.cfg_scale,
                      num_images_per_prompt=job.batch_size, generator=generators, eta=eta, output_type=output_type,
                      callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
        tiling = job.tiling
        set_tiling(pipe, tiling)
        try:
            with torch.inference_mode():
                if job.init_images or init_latents is not None:
                    result = self._img2img(job, scheduler, noise, common, init_latents)
                else:
                    result = pipe(num_inference_steps=job.steps, width=job.width, height=job.height, latents=noise,
                                  **common)
        finally:
            if tiling:
                set_tiling(pipe, False)
        return list(result.images) if output_type == "pil" else result.images

    def _img2img(self, job: GenerationJob, scheduler, noise, common: dict, latents=None):
        """img2img with the loaded weights: A1111's start (init latent plus the seed's noise at the level of
        the first step run), then the last ``job.steps`` steps of a ``job.schedule_steps`` schedule."""
        from diffusers import StableDiffusionImg2ImgPipeline

        if self._img2img_pipe is None:  # shares every component with self.pipe: no second copy of the weights
            # from_pipe casts every shared component to its dtype argument, float32 unless told otherwise:
            # that would turn the loaded bfloat16/float16 model into a half-float32 one for every later job.
            # None casts nothing.
            self._img2img_pipe = StableDiffusionImg2ImgPipeline.from_pipe(self.pipe, vae=self.full_vae,
                                                                          **dtype_argument(None))
            self._img2img_pipe.set_progress_bar_config(disable=True)
        i2i = self._img2img_pipe
        i2i.scheduler, i2i.vae = scheduler, self.pipe.vae  # this job's sampler; the decoder in use
        if latents is None:  # encode with the full VAE, as A1111 does (also when TAESD decodes)
            vae = self.full_vae
            pixels = self.pipe.image_processor.preprocess(job.init_images).to(device=self.device, dtype=vae.dtype)
            latents = vae.encode(pixels).latent_dist.mean
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            latents = (latents - shift) * vae.config.scaling_factor
        latents = latents.to(device=noise.device, dtype=noise.dtype)
        if job.latent_mask is not None:
            latents, common = self._hold_unmasked(job, scheduler, noise, latents, common)
        # The pipeline would draw its own noise; the seeds' noise (with variations) goes in instead.
        i2i.prepare_latents = lambda image, timestep, *args, **kwargs: scheduler.add_noise(image, noise, timestep)
        schedule = max(job.schedule_steps, job.steps)
        # diffusers runs int(schedule * strength) steps: this strength makes it exactly job.steps.
        strength = min(1.0, (job.steps + 0.5) / schedule)
        return i2i(image=latents, strength=strength, num_inference_steps=schedule, **common)

    @staticmethod
    def _hold_unmasked(job: GenerationJob, scheduler, noise, latents, common: dict):
        """Inpainting with an ordinary model, as A1111 does it: the masked content's start (2: the seed's
        noise, 3: zeros), and after every step the latents outside the mask put back to the init latents,
        noised to the level of the step that comes next (the last step: the init latents themselves)."""
        import numpy as np
        import torch

        height, width = latents.shape[-2:]
        small = np.asarray(job.latent_mask.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255
        repaint = torch.from_numpy(np.around(small)).to(device=latents.device, dtype=latents.dtype)
        keep = 1 - repaint
        if job.masked_content == 2:
            latents = latents * keep + noise * repaint
        elif job.masked_content == 3:
            latents = latents * keep
        init, user_callback = latents, common["callback_on_step_end"]

        def hold(p, index: int, timestep, tensors: dict) -> dict:
            tensors = user_callback(p, index, timestep, tensors)
            timesteps = p.scheduler.timesteps
            upcoming = len(timesteps) - p.num_timesteps + index + 1  # img2img runs the schedule's tail
            held = (init if upcoming >= len(timesteps)
                    else scheduler.add_noise(init, noise, timesteps[upcoming:upcoming + 1]))
            tensors["latents"] = held.to(tensors["latents"].dtype) * keep + tensors["latents"] * repaint
            return tensors

        return latents, {**common, "callback_on_step_end": hold}

    def caption(self, image: Image.Image) -> str:
        """POST /interrogate. A1111 captions with BLIP; this engine has no captioning model, so it
        answers, like the preview engine, with a caption that says so (and never looks at pixels)."""
        return (f"placeholder caption: the kit's diffusers engine has no captioning model and does not look at "
                f"the pixels (image of {image.width}x{image.height}); compare images with texts with "
                "helpers.clipqa.ClipScorer")


# --- helpers --------------------------------------------------------------------------------------


def set_tiling(pipe, on: bool) -> None:
    """A1111's "Tiling": every convolution of the UNet and the decoder wraps around the image edges,
    so the picture repeats seamlessly (A1111 flips the same padding_mode switch)."""
    import torch

    for model in (pipe.unet, pipe.vae):
        for layer in getattr(model, "modules", list)():  # OpenVINO's models (openvino_backend.py) have none
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = "circular" if on else "zeros"


def _pipeline_path(pipeline):
    from pathlib import Path

    return Path(getattr(pipeline.config, "_name_or_path", "") or "pipeline")

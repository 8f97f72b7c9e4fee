"""Hires fix on the diffusers engine, as A1111 runs it (txt2img ``enable_hr``).

1. **first pass**: the job at the first-pass size (``job.hires.width`` x ``height``), kept as latents;
2. **upscale** to the final size (``job.width`` x ``job.height``): the "Latent" upscalers interpolate
   the latents (``torch.nn.functional.interpolate``, A1111's modes); "None", "Lanczos" and "Nearest"
   decode to pixels, resize with Pillow, and the second pass encodes them again with the full VAE.
   When the final size has another aspect ratio (``hr_resize_x`` and ``hr_resize_y`` both set),
   the picture is scaled to cover it and the middle is cut out, as A1111 does;
3. **second pass**: img2img on the upscaled picture at the denoising strength, with fresh noise from
   the **same seeds** at the new size, exactly ``job.hires.steps`` steps, the hires prompts and sampler.

Steps are counted across both passes (``on_step`` gets 1..steps, then steps+1..steps+hires steps;
the server shows them as A1111's two jobs). An interrupt in the first pass returns the first pass's
images (at the first-pass size, as A1111 does); one in the second pass returns the second pass's
current guess at the final size.

A1111's model upscalers (ESRGAN, SwinIR, LDSR, ...) need their weights and code: :func:`check` answers
a 422 naming the upscalers this engine has.

    >>> upscale_plan(64, 64, 128, 128), upscale_plan(64, 64, 128, 64)
    ((128, 128), (128, 128))
"""

from __future__ import annotations

from dataclasses import replace

from ..catalog import A1111_MODEL_UPSCALERS
from .base import GenerationJob, StepCallback

# A1111's latent upscale modes: (torch interpolate mode, antialias).
LATENT_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# Pixel upscalers Pillow does (A1111's "None" resizes with Lanczos too).
PIXEL_MODES = {"None": "LANCZOS", "Lanczos": "LANCZOS", "Nearest": "NEAREST"}
SUPPORTED = [*LATENT_MODES, *PIXEL_MODES]


def check(req, scheduler_config: dict) -> None:
    """Reject, with a 422 before the job is queued, a hires request this engine cannot run: a model
    upscaler, a size that is not a multiple of 8, another checkpoint for the second pass, or a hires
    sampler diffusers does not have (``scheduler_config``: the model's, to build the sampler from)."""
    from fastapi import HTTPException

    from .samplers import UnknownSampler, make_scheduler, resolve

    upscaler = req.hr_upscaler
    # A name A1111 does not know either is left to generation.py's hires_params: A1111's own 500.
    if upscaler in A1111_MODEL_UPSCALERS:
        raise HTTPException(status_code=422, detail=(
            f"hires upscaler {upscaler!r} is not available on the kit's diffusers engine (A1111's model upscalers "
            f"such as ESRGAN need their own weights); use one of: {', '.join(SUPPORTED)}"))
    width, height = req.hires_target_size()
    if width % 8 or height % 8:
        raise HTTPException(status_code=422, detail=(
            f"the hires fix size must be a multiple of 8 for Stable Diffusion (got {width}x{height} from "
            "hr_scale or hr_resize_x/hr_resize_y): e.g. hr_scale 2, or hr_resize_x/hr_resize_y multiples of 8"))
    checkpoint = req.hr_checkpoint_name
    if checkpoint and checkpoint != "Use same checkpoint":
        raise HTTPException(status_code=422, detail=(
            "hr_checkpoint_name (another model for the hires pass) is not supported by the kit's diffusers "
            "engine: leave it out to use the loaded model for both passes"))
    sampler = req.hr_sampler_name if req.hr_sampler_name not in ("", "Use same sampler") else None
    schedule = req.hr_scheduler if req.hr_scheduler not in ("", "Use same scheduler") else None
    if sampler or schedule:
        try:
            name, label = resolve(sampler or req.sampler_name or req.value("sampler_index"), schedule or req.scheduler)
            make_scheduler(name, label, scheduler_config)
        except UnknownSampler as error:
            raise HTTPException(status_code=422, detail=f"hires pass: {error}") from error


def upscale_plan(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """The size the first pass is scaled to: the target when the aspect ratio is the same, else the
    smallest size of the first pass's aspect ratio that covers the target (A1111's ``hr_upscale_to``)."""
    if width * target_h == height * target_w:
        return target_w, target_h
    if width / height < target_w / target_h:
        return target_w, target_w * height // width
    return target_h * width // height, target_h


def _crop_box(cover_w: int, cover_h: int, target_w: int, target_h: int) -> tuple[int, int]:
    """The top-left corner (pixels, multiples of 8) of the central target-sized cut of the cover."""
    return (cover_w - target_w) // 8 // 2 * 8, (cover_h - target_h) // 8 // 2 * 8


def upscale_latents(latents, upscaler: str, target_w: int, target_h: int, first_w: int, first_h: int):
    """Latents of the first pass scaled to the target size (in latent units of 8 pixels)."""
    import torch.nn.functional as F

    mode, antialias = LATENT_MODES[upscaler]
    cover_w, cover_h = upscale_plan(first_w, first_h, target_w, target_h)
    scaled = F.interpolate(latents.float(), size=(cover_h // 8, cover_w // 8), mode=mode, antialias=antialias)
    left, top = _crop_box(cover_w, cover_h, target_w, target_h)
    return scaled[:, :, top // 8:top // 8 + target_h // 8, left // 8:left // 8 + target_w // 8].to(latents.dtype)


def upscale_images(images: list, upscaler: str, target_w: int, target_h: int) -> list:
    """PIL images scaled to cover the target with Pillow, then cut to it."""
    from PIL import Image

    resample = getattr(Image, PIXEL_MODES[upscaler])
    out = []
    for image in images:
        cover_w, cover_h = upscale_plan(image.width, image.height, target_w, target_h)
        left, top = _crop_box(cover_w, cover_h, target_w, target_h)
        out.append(image.resize((cover_w, cover_h), resample).crop((left, top, left + target_w, top + target_h)))
    return out


def decode(engine, latents, tiling: bool, set_tiling) -> list:
    """Latents -> PIL images with the engine's decoder in use (TAESD or the full VAE), as the pipeline does."""
    import torch

    pipe = engine.pipe
    vae = pipe.vae
    set_tiling(pipe, tiling)
    try:
        with torch.inference_mode():
            pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    finally:
        if tiling:
            set_tiling(pipe, False)
    return pipe.image_processor.postprocess(pixels, output_type="pil")


def generate(engine, job: GenerationJob, on_step: StepCallback, set_tiling) -> list:
    """Both passes of hires fix for ``job`` (its ``hires`` set) on the diffusers engine ``engine``;
    ``set_tiling``: its tiling switch (diffusers_engine.set_tiling, handed in: that module imports this one)."""
    hr = job.hires
    stopped = {"first": False}

    def first_step(step: int, preview) -> bool:
        going = on_step(step, preview)
        stopped["first"] = stopped["first"] or not going
        return going

    first = replace(job, width=hr.width, height=hr.height, hires=None)
    latents = engine.generate(first, first_step, output_type="latent")
    if stopped["first"]:  # interrupted (or skipped) in the first pass: A1111 returns the first pass's images
        return decode(engine, latents, job.tiling, set_tiling)

    second = replace(job, hires=None, steps=hr.steps, schedule_steps=hr.schedule_steps,
                     denoising_strength=hr.denoising_strength, prompt=hr.prompt, negative_prompt=hr.negative_prompt,
                     sampler_name=hr.sampler_name, scheduler=hr.scheduler, init_images=None)
    if hr.upscaler in LATENT_MODES:
        init = upscale_latents(latents, hr.upscaler, job.width, job.height, hr.width, hr.height)
        return engine.generate(second, lambda step, preview: on_step(job.steps + step, preview), init_latents=init)
    images = upscale_images(decode(engine, latents, job.tiling, set_tiling), hr.upscaler, job.width, job.height)
    second = replace(second, init_images=images)
    return engine.generate(second, lambda step, preview: on_step(job.steps + step, preview))

"""The ``preview`` engine: clearly labelled placeholder images, drawn with Pillow only.

It lets the whole kit run in class without a GPU and in CI, and it behaves like a real engine
in the ways a client can observe:

* the same inputs (prompt, negative prompt, seed, size, steps, CFG, sampler, scheduler) give
  identical pixels, and another seed gives a visibly different picture;
* a variation seed (``subseed_strength`` > 0) shifts the colours towards the subseed's colours;
* every step takes ``step_delay`` seconds, and a live preview is offered after each step, so
  /progress, /interrupt and /skip can be watched and tried;
* an interrupted image comes back "partly done", marked ``INTERRUPTED at step k/n``;
* img2img: the init image shows through the placeholder pattern, more of it the lower the
  denoising strength (0: the init image, darkened and labelled; 1: the pattern alone);
* LoRAs (``<lora:name:weight>``): each one lays stripes in a colour of its own (from its name) over the
  picture, stronger with a larger weight (weight 0: the pixels without it), and the label names them.
  That is all a LoRA does here: the preview engine has no model for it to change.

Every image says in large letters that it is a placeholder, with its prompt, seed and steps.

Example:
    >>> from sdserver.engines.base import GenerationJob
    >>> job = GenerationJob(prompt="a red fox", seeds=[1], subseeds=[1], width=64, height=64, steps=2)
    >>> [image.size for image in PreviewEngine().generate(job, on_step=lambda step, preview: True)]
    [(64, 64)]
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import textwrap
import time

from PIL import Image, ImageDraw, ImageFont

from .base import Engine, GenerationJob, StepCallback

PREVIEW_MAX_SIDE = 256  # live previews are small, like A1111's cheap latent previews


class PreviewEngine(Engine):
    """Draws placeholders; ``step_delay`` seconds per sampling step (0: as fast as possible)."""

    name = "preview"
    model_title = "offline-preview.safetensors [0000000000]"
    model_name = "offline-preview"
    model_hash = "0000000000"
    model_sha256 = "0" * 64
    # There are no weights: the "model" is this file, which a student can open and read.
    model_filename = __file__
    description = "images are labelled PLACEHOLDERs drawn offline (no model, no GPU)"

    def __init__(self, step_delay: float = 0.0) -> None:
        self.step_delay = float(step_delay)

    def generate(self, job: GenerationJob, on_step: StepCallback) -> list[Image.Image]:
        backgrounds = [draw_background(job, index) for index in range(job.batch_size)]
        if job.init_images:  # img2img: the pattern laid over the init image by the denoising strength
            strength = min(max(job.denoising_strength, 0.0), 1.0)
            backgrounds = [Image.blend(init.convert("RGB").resize(bg.size), bg, strength)
                           for init, bg in zip(job.init_images, backgrounds)]
        backgrounds = [apply_loras(bg, job) for bg in backgrounds]
        for step in range(1, job.steps + 1):
            if self.step_delay > 0:
                time.sleep(self.step_delay)  # stands in for the work of one sampling step
            preview = None
            if job.preview_every > 0 and (step % job.preview_every == 0 or step == job.steps):
                small = backgrounds[0].copy()
                small.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
                preview = draw_label(partly_done(small, step, job.steps), job, 0)
            if not on_step(step, preview):
                # Stopped (interrupt or skip): return the batch as it is now, like A1111 does.
                return [
                    mark_interrupted(draw_label(partly_done(bg, step, job.steps), job, index), step, job.steps)
                    for index, bg in enumerate(backgrounds)
                ]
        return [draw_label(bg, job, index) for index, bg in enumerate(backgrounds)]

    def caption(self, image: Image.Image) -> str:
        """Say what the image is without looking at pixels: the prompt stored in a placeholder
        PNG if there is one."""
        from helpers.infotext import parse_infotext

        infotext = (getattr(image, "info", None) or {}).get("parameters")
        if infotext:
            prompt = parse_infotext(infotext)["Prompt"]
            return f"placeholder image from the kit's offline preview engine (prompt: {prompt})"
        return (f"placeholder caption from the kit's offline preview engine: it does not look at "
                f"pixels (image of {image.width}x{image.height})")


# --- drawing ----------------------------------------------------------------------------------


def _rng(job: GenerationJob, seed: int) -> random.Random:
    """A random generator seeded by every input that should change the picture."""
    key = json.dumps([job.prompt, job.negative_prompt, seed, job.width, job.height, job.steps,
                      job.cfg_scale, job.sampler_name, job.scheduler])
    return random.Random(hashlib.sha256(key.encode("utf-8")).hexdigest())


def _colours(rng: random.Random, count: int) -> list[tuple[int, int, int]]:
    return [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(count)]


def _mix(a: tuple, b: tuple, t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def draw_background(job: GenerationJob, index: int) -> Image.Image:
    """A colour gradient with a few shapes, all chosen from a hash of the inputs and the seed."""
    width, height = job.width, job.height
    rng = _rng(job, job.seeds[index])
    colours = _colours(rng, 2 + 3 * 6)
    strength = min(max(job.subseed_strength, 0.0), 1.0)
    if strength > 0:  # a variation: move the colours towards those of the subseed
        other = _colours(_rng(job, job.subseeds[index]), len(colours))
        colours = [_mix(a, b, strength) for a, b in zip(colours, other)]

    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), colours[0]),
                            Image.new("RGB", (width, height), colours[1]), gradient)
    draw = ImageDraw.Draw(image, "RGBA")
    for shape in range(6):
        colour = colours[2 + 3 * shape]
        x0, y0 = rng.uniform(-0.2, 0.9) * width, rng.uniform(-0.2, 0.9) * height
        x1, y1 = x0 + rng.uniform(0.2, 0.6) * width, y0 + rng.uniform(0.2, 0.6) * height
        draw_shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        draw_shape([x0, y0, x1, y1], fill=colour + (170,))
    return image


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(size, 6))


def _fitted_font(draw: ImageDraw.ImageDraw, text: str, max_width: float, max_size: int):
    """The largest default font (up to ``max_size``) in which ``text`` fits ``max_width``."""
    size = max(int(max_size), 6)
    while size > 6 and draw.textlength(text, font=_font(size)) > max_width:
        size = int(size * 0.9)
    return _font(size)


def apply_loras(image: Image.Image, job: GenerationJob) -> Image.Image:
    """Each LoRA of the job as diagonal stripes in its own colour, blended in by its UNet weight (30% at 1,
    at most 60%); weight 0 leaves the pixels as they are."""
    for item in job.loras:
        amount = min(abs(item.unet), 2.0) * 0.3
        if amount == 0:
            continue
        rng = random.Random(hashlib.sha256(item.name.encode("utf-8")).hexdigest())
        colour = _colours(rng, 1)[0]
        stripes = Image.new("RGB", image.size, colour)
        draw = ImageDraw.Draw(stripes)
        width, height = image.size
        step = max(min(width, height) // 8, 4)
        for x in range(-height, width, 2 * step):  # stripes at 45 degrees, half of the picture covered
            draw.polygon([(x, 0), (x + step, 0), (x + step + height, height), (x + height, height)],
                         fill=tuple(255 - c for c in colour))
        image = Image.blend(image, stripes, amount)
    return image


def lora_label(job: GenerationJob) -> str:
    """``LoRA name:weight, ... (placeholder tint)`` for the LoRAs that change the picture; "" if none."""
    used = [f"{item.mentioned or item.name}:{item.unet:g}" for item in job.loras if item.unet != 0]
    return f"LoRA {', '.join(used)} (placeholder tint)" if used else ""


def draw_label(image: Image.Image, job: GenerationJob, index: int) -> Image.Image:
    """Write PLACEHOLDER, the prompt, the seed and the steps on (a copy of) ``image``."""
    image = image.copy()
    width, height = image.size
    draw = ImageDraw.Draw(image, "RGBA")
    draw.rectangle([0, 0, width, height], fill=(0, 0, 0, 90))  # darken so the text reads on any colour

    title = _fitted_font(draw, "PLACEHOLDER", 0.9 * width, height // 6)
    subtitle = _fitted_font(draw, "(offline preview engine)", 0.9 * width, height // 14)
    small = _font(max(width // 30, 6))
    chars_per_line = max(int(0.9 * width / (0.55 * small.size)), 8)
    prompt_lines = textwrap.wrap(job.prompt, chars_per_line, max_lines=5, placeholder=" …") or ["(empty prompt)"]
    details = f"seed {job.seeds[index]} · {job.steps} steps · {job.sampler_name} · CFG {job.cfg_scale}"
    if job.init_images:
        details = f"img2img, denoising {job.denoising_strength:g} · " + details

    lines = [("PLACEHOLDER", title), ("(offline preview engine)", subtitle)]
    lines += [(line, small) for line in prompt_lines]
    lines += [(details, _fitted_font(draw, details, 0.95 * width, small.size))]
    if lora_label(job):
        lines += [(lora_label(job), _fitted_font(draw, lora_label(job), 0.95 * width, small.size))]
    y = height * 0.08
    for text, font in lines:
        draw.text((width / 2, y), text, font=font, anchor="ma", fill="white",
                  stroke_width=max(font.size // 12, 1), stroke_fill="black")
        y += font.size * 1.25
    return image


def partly_done(image: Image.Image, step: int, steps: int) -> Image.Image:
    """The picture as if only ``step`` of ``steps`` were done: a coarse blur fading into detail."""
    width, height = image.size
    coarse = image.resize((max(width // 16, 1), max(height // 16, 1))).resize((width, height), Image.NEAREST)
    return Image.blend(coarse, image, step / max(steps, 1))


def mark_interrupted(image: Image.Image, step: int, steps: int) -> Image.Image:
    """Stamp a red ``INTERRUPTED at step k/n`` band across the bottom of the image."""
    width, height = image.size
    draw = ImageDraw.Draw(image, "RGBA")
    text = f"INTERRUPTED at step {step}/{steps}"
    font = _fitted_font(draw, text, 0.9 * width, height // 10)
    band = font.size * 1.6
    draw.rectangle([0, height - band, width, height], fill=(200, 0, 0, 220))
    draw.text((width / 2, height - band / 2), text, font=font, anchor="mm", fill="white")
    return image

"""txt2img and img2img, step by step: request -> seeds, sampler, settings -> batches -> A1111's reply.

This is the part of the server that behaves like A1111's ``modules/processing.py`` as seen from
outside: which seeds are used, what the infotext says, what ``info`` holds (A1111 1.10's txt2img answer).
It does not draw anything itself; the engine does (see ``engines/``). img2img is the same path
(:func:`process`) with init images: it adds the decoding and resizing of the init images, A1111's
img2img step count, ``Denoising strength`` in every infotext, and its own job name.

Example (the route in routes.py does exactly this):
    >>> import threading
    >>> from sdserver.engines import get_engine
    >>> from sdserver.models import Txt2ImgRequest
    >>> from sdserver.options import Options
    >>> from sdserver.state import JobState
    >>> engine = get_engine("preview")
    >>> reply = txt2img(Txt2ImgRequest(prompt="a cat", seed=5, batch_size=2, width=64, height=64, steps=2),
    ...                 engine, JobState(), Options(engine), threading.Lock())
    >>> import json; json.loads(reply["info"])["all_seeds"]
    [5, 6]
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from helpers.infotext import format_infotext, infotext_to_fields

from . import inpaint, sd_upscale
from .catalog import LATENT_UPSCALE_MODES, UPSCALERS, resolve_sampler, uses_ensd
from .engines import Engine, GenerationJob
from .engines.base import HiresPass
from .images import decode_image, encode_png_b64, open_image
from .limits import Limits, check_request_cost, check_seeds, check_text_lengths
from .loras import LoraLibrary, hashes_infotext, parse_prompt
from .models import Img2ImgRequest, ProcessingRequest, Txt2ImgRequest
from .options import Options
from .sampler_info import TIMESTEP_SAMPLERS, eta_entry, fallback_notes, schedule_used
from .state import JobState


def random_seed() -> int:
    """A1111's random seed for -1: an int in [0, 4294967294)."""
    return random.randrange(4294967294)


def apply_infotext(req: ProcessingRequest) -> ProcessingRequest:
    """The ``infotext`` field (A1111 1.9+): a pasted infotext fills every field NOT sent explicitly.

    >>> apply_infotext(Txt2ImgRequest(steps=9, infotext="a cat\\nSteps: 20, Seed: 7, Size: 64x32")).model_dump(
    ...     include={"prompt", "steps", "seed", "height"})
    {'prompt': 'a cat', 'seed': 7, 'steps': 9, 'height': 32}
    """
    if not req.infotext:
        return req
    fields = infotext_to_fields(req.infotext)
    data = req.model_dump()
    for name, value in fields.items():
        if name == "override_settings":  # e.g. Clip skip; the request's own overrides win
            data[name] = {**value, **(req.override_settings or {})}
        elif name not in req.model_fields_set:
            data[name] = value
    try:
        return type(req).model_validate(data)
    except ValidationError as error:  # e.g. an infotext with "Size: 9000x9000": a 422, as for the body
        raise RequestValidationError(error.errors()) from error


def check_scripts(req: Txt2ImgRequest) -> None:
    """Naming a script the kit's server lacks is A1111's 422 (with its HTTPException body); it has one, img2img's
    "SD upscale" (sd_upscale.py), which img2img runs before this is asked."""
    if req.script_name:
        raise HTTPException(status_code=422, detail=f"Script '{req.script_name}' not found")
    for name in req.alwayson_scripts or {}:
        raise HTTPException(status_code=422, detail=f"always on script {name} not found")


def hires_params(req: Txt2ImgRequest) -> dict[str, Any]:
    """The infotext entries hires fix adds, with A1111 1.10's checks (both are 500s there too)."""
    if req.denoising_strength is None:
        # A1111 1.10 fails here with a TypeError as well; the message says what to do.
        raise TypeError("enable_hr needs denoising_strength (A1111 1.10 fails the same way): "
                        "send e.g. \"denoising_strength\": 0.5")
    upscaler = req.hr_upscaler
    known = LATENT_UPSCALE_MODES + [u["name"] for u in UPSCALERS]
    if upscaler is not None and upscaler not in known:
        raise Exception(f"could not find upscaler named {upscaler}")
    extra: dict[str, Any] = {"Denoising strength": req.denoising_strength}
    hr_prompt, hr_negative = req.value("hr_prompt"), req.value("hr_negative_prompt")
    if hr_prompt and hr_prompt != req.value("prompt"):
        extra["Hires prompt"] = hr_prompt
    if hr_negative and hr_negative != req.value("negative_prompt"):
        extra["Hires negative prompt"] = hr_negative
    hr_sampler = _hires_choice(req.hr_sampler_name, "Use same sampler")
    if hr_sampler and hr_sampler != (req.sampler_name or req.value("sampler_index")):
        extra["Hires sampler"] = hr_sampler
    hr_scheduler = _hires_choice(req.hr_scheduler, "Use same scheduler")
    if hr_scheduler and hr_scheduler != (req.scheduler or "Automatic"):
        extra["Hires schedule type"] = hr_scheduler
    if req.value("hr_resize_x") == 0 and req.value("hr_resize_y") == 0:
        extra["Hires upscale"] = req.value("hr_scale")
    else:
        extra["Hires resize"] = f"{req.value('hr_resize_x')}x{req.value('hr_resize_y')}"
    if req.value("hr_second_pass_steps"):
        extra["Hires steps"] = req.value("hr_second_pass_steps")
    if upscaler is not None:
        extra["Hires upscaler"] = upscaler
    return extra


def _hires_choice(value: str | None, same: str) -> str | None:
    """A hires-pass sampler or schedule: None for "the first pass's" (None, "" or A1111's "Use same ...")."""
    return None if not value or value == same else value


def hires_pass(req: Txt2ImgRequest, steps: int, sampler: str, scheduler: str, opts: dict[str, Any]) -> HiresPass:
    """Hires fix's second pass as A1111 1.10 sets it up: ``hr_second_pass_steps`` (0: the first pass's
    steps) run exactly, of a schedule steps / denoising strength long; the hires prompts, sampler and
    schedule when given, else the first pass's; upscaler None is A1111's default, "Latent".

    >>> req = Txt2ImgRequest(width=64, height=64, enable_hr=True, denoising_strength=0.5)
    >>> hr = hires_pass(req, 10, "Euler", "Automatic", {})
    >>> hr.steps, hr.schedule_steps, hr.upscaler, (hr.width, hr.height)
    (10, 20, 'Latent', (64, 64))
    """
    strength = float(req.value("denoising_strength"))
    schedule_steps, run_steps = img2img_steps(req.value("hr_second_pass_steps") or steps, strength, True)
    hr_sampler = _hires_choice(req.hr_sampler_name, "Use same sampler")
    hr_scheduler = _hires_choice(req.hr_scheduler, "Use same scheduler")
    if hr_sampler or hr_scheduler:
        sampler, scheduler = resolve_sampler(hr_sampler or sampler, hr_scheduler or scheduler)
    return HiresPass(width=req.value("width"), height=req.value("height"), steps=run_steps,
                     schedule_steps=schedule_steps, denoising_strength=strength,
                     upscaler=req.hr_upscaler or "Latent", prompt=req.value("hr_prompt") or req.value("prompt"),
                     negative_prompt=req.value("hr_negative_prompt") or req.value("negative_prompt"),
                     sampler_name=sampler, scheduler=scheduler)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def preview_every(opts: dict[str, Any]) -> int:
    """Every how many steps to make a live preview (0: none), from A1111's two options."""
    every = _as_int(opts.get("show_progress_every_n_steps"), 1)
    return every if opts.get("live_previews_enable") and every > 0 else 0


def txt2img(req: Txt2ImgRequest, engine: Engine, state: JobState, options: Options,
            queue_lock: threading.Lock, limits: Limits | None = None,
            loras: LoraLibrary | None = None) -> dict[str, Any]:
    """Run one txt2img request and return A1111's reply ``{images, parameters, info}`` (``loras``: the
    LoRA folder that ``<lora:name:weight>`` tags are looked up in; None: none is applied)."""
    return process(req, engine, state, options, queue_lock, limits, loras=loras)


# A1111's resize modes; 3 ("Just resize (latent upscale)") is treated as 0 by the kit's server.
RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize (latent upscale)"}


def img2img(req: Img2ImgRequest, engine: Engine, state: JobState, options: Options,
            queue_lock: threading.Lock, limits: Limits | None = None,
            loras: LoraLibrary | None = None) -> dict[str, Any]:
    """Run one img2img request (A1111's answers for a missing, extra or unreadable init image; with a ``mask``,
    inpainting: sdserver/inpaint.py) and return A1111's reply ``{images, parameters, info}``."""
    limits = limits or Limits()
    for name in ("mask", "latent_mask"):
        if getattr(req, name):
            open_image(getattr(req, name), limits, field=name)  # the header only: a bad one answers at once
    if not req.init_images:
        raise HTTPException(status_code=404, detail="Init image not found")
    if len(req.init_images) > req.value("batch_size"):  # A1111's RuntimeError, a 500
        raise RuntimeError(f"bad number of images passed: {len(req.init_images)}; expecting "
                           f"{req.value('batch_size')} or less")
    for index, encoded in enumerate(req.init_images):  # headers only: bad or too large answers at once
        open_image(encoded, limits, field=f"init_images[{index}]")
    if sd_upscale.is_sd_upscale(req):  # A1111's img2img script: tiles, each an img2img request of its own
        return sd_upscale.run(req, limits, lambda part, extra: process(
            part, engine, state, options, queue_lock, limits, init_images=part.init_images, loras=loras,
            extra_infotext=extra))
    return process(req, engine, state, options, queue_lock, limits, init_images=req.init_images, loras=loras)


def _inpainting(req: Img2ImgRequest, inits: list, limits: Limits, width: int, height: int,
                background: str) -> inpaint.Inpaint | None:
    """The request's mask (and latent_mask) made one channel, resized like the init images, and the
    inpainting they ask for (None: "Only masked" with an empty mask, a plain img2img as in A1111)."""
    settings = inpaint.MaskSettings.of(req)

    def prepared(field: str):
        if not getattr(req, field):
            return None
        mask = inpaint.binary_mask(decode_image(getattr(req, field), limits, field), settings.round)
        return prepare_init_image(mask.convert("RGB"), req.value("resize_mode"), width, height, background).convert("L")

    return inpaint.prepare(inits, prepared("mask"), settings, width, height, prepared("latent_mask"))


def prepare_init_image(image, mode: int, width: int, height: int, background: str = "#ffffff"):
    """An init image as A1111 prepares it: EXIF rotation applied, transparency flattened onto
    ``background`` (option img2img_background_color), resized to width x height by ``mode``
    (0 stretch, 1 crop the centre to the aspect ratio, 2 fit inside and fill the sides with the
    stretched edge pixels; 3 is treated as 0).

    >>> from PIL import Image
    >>> prepare_init_image(Image.new("RGBA", (30, 10)), 2, 16, 16).size
    (16, 16)
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        flat = Image.new("RGBA", image.size, background)
        image = Image.alpha_composite(flat, image)
    image = image.convert("RGB")
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    if mode != 2:
        return image.resize((width, height), Image.LANCZOS)
    scale = min(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    out = Image.new("RGB", (width, height))
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    if inner.width < width:  # fill the sides with the stretched first and last columns
        out.paste(inner.crop((0, 0, 1, inner.height)).resize((left + 1, height)), (0, 0))
        out.paste(inner.crop((inner.width - 1, 0, inner.width, inner.height)).resize((width - left - inner.width + 1,
                                                                                      height)), (left + inner.width, 0))
    if inner.height < height:  # fill top and bottom with the stretched first and last rows
        out.paste(inner.crop((0, 0, inner.width, 1)).resize((width, top + 1)), (0, 0))
        out.paste(inner.crop((0, inner.height - 1, inner.width, inner.height)).resize(
            (width, height - top - inner.height + 1)), (0, top + inner.height))
    out.paste(inner, (left, top))
    return out


def img2img_steps(steps: int, strength: float, fix_steps: bool) -> tuple[int, int]:
    """(schedule length, steps actually run) for img2img, as A1111's ``setup_img2img_steps``: by
    default a schedule of ``steps`` of which ``int(strength * steps) + 1`` run (capped at ``steps``);
    with option img2img_fix_steps exactly ``steps`` run, of a schedule ``steps / strength`` long.

    >>> img2img_steps(20, 0.75, False), img2img_steps(20, 0.5, True), img2img_steps(20, 0.0, False)
    ((20, 16), (40, 20), (20, 1))
    """
    strength = min(max(strength, 0.0), 0.999)
    if fix_steps and strength > 0:
        return min(int(steps / strength), 1000), steps
    return steps, min(int(strength * steps) + 1, steps)


def process(req: ProcessingRequest, engine: Engine, state: JobState, options: Options,
            queue_lock: threading.Lock, limits: Limits | None = None,
            init_images: list[str] | None = None, loras: LoraLibrary | None = None,
            extra_infotext: dict | None = None) -> dict[str, Any]:
    """txt2img, or img2img when ``init_images`` (base64, checked by :func:`img2img`) are given;
    ``extra_infotext``: entries a script adds to the infotext (SD upscale's).

    Everything that can refuse the request (limits, scripts, settings, the engine's checks) runs
    before the queue lock, so a refusal comes at once, even while another job is running.
    """
    limits = limits or Limits()
    check_text_lengths(req, limits)  # before the infotext is parsed: its length is bounded too
    req = apply_infotext(req)
    check_text_lengths(req, limits)
    check_request_cost(req, limits)  # the images are all kept until the reply: this bounds memory
    check_seeds(req, req.value("batch_size") * req.value("n_iter"))
    check_scripts(req)

    # Settings for this request: the server's, plus override_settings (checked like POST /options).
    # An engine that can load models loads an overriding sd_model_checkpoint once the queue is free
    # (below), as A1111 does; other engines accept only the model they have.
    requested = dict(req.override_settings or {})
    other_model = requested.pop("sd_model_checkpoint", None) if engine.switches_models else None
    if other_model is not None:
        engine.find_model(other_model)  # only a listed model; not found: the 500 now, before the queue
    restore = bool(req.value("override_settings_restore_afterwards"))
    overrides = options.checked(requested)
    opts = {**options.as_dict(), **overrides}
    if overrides and not restore:
        options.update(overrides)  # A1111 keeps them when restore_afterwards is false

    # An engine may refuse what it cannot do (a clear 422 before the job is queued) and name the
    # extra infotext entries it will write (the preview engine accepts everything and adds none).
    engine_params = engine.check_request(req, opts)
    version = engine.version

    sampler, scheduler = resolve_sampler(req.sampler_name or req.value("sampler_index"), req.scheduler)
    width, height = req.value("width"), req.value("height")
    steps, cfg_scale = req.value("steps"), float(req.value("cfg_scale"))
    batch_size, n_iter = req.value("batch_size"), req.value("n_iter")
    if init_images and len(init_images) > 1:
        batch_size = len(init_images)  # k init images make batches of k (one image repeats), as in A1111
    run_steps, schedule_steps = steps, steps
    if init_images:
        schedule_steps, run_steps = img2img_steps(steps, float(req.value("denoising_strength")),
                                                  bool(opts.get("img2img_fix_steps")))
    prompt, negative_prompt = req.value("prompt"), req.value("negative_prompt")
    restore_faces = req.restore_faces if req.restore_faces is not None else bool(opts["face_restoration"])
    tiling = req.tiling if req.tiling is not None else bool(opts["tiling"])
    clip_skip = _as_int(opts["CLIP_stop_at_last_layers"], 1)
    ensd = _as_int(opts["eta_noise_seed_delta"], 0)

    # The schedule that runs (DPM++ 2M's "Automatic" is Karras), as A1111's samplers write it (sampler_info.py).
    schedule_shown = schedule_used(sampler, scheduler)
    extra: dict[str, Any] = {}
    if schedule_shown != "Automatic" and sampler not in TIMESTEP_SAMPLERS:
        extra["Schedule type"] = schedule_shown
    out_width, out_height = width, height
    hires, passes = None, 1
    if req.value("enable_hr"):
        extra.update(hires_params(req))
        out_width, out_height = req.hires_target_size()
        hires = hires_pass(req, steps, sampler, scheduler, opts)
        passes = engine.hires_passes  # 2: A1111's /progress, each pass a job of its own
    if init_images:
        extra["Denoising strength"] = req.value("denoising_strength")  # img2img always writes it
    # <lora:name:weight>: the tags leave the text the model reads (the infotext keeps them); names not in
    # the LoRA folder are left out and said in info["comments"] (A1111: "Lora not found", still a 200).
    model_prompt, tags = parse_prompt(prompt)
    if req.disable_extra_networks:
        tags = []  # A1111: the tags are still removed, no LoRA is applied
    lora_files, comments = (loras.resolve(tags) if loras is not None else ([], [tag.name for tag in tags]))
    comments = [f"Lora not found: {', '.join(comments)}"] if comments else []
    comments += fallback_notes(req.sampler_name or req.value("sampler_index"), req.scheduler, sampler)
    if restore_faces:  # the infotext still names the restorer, as A1111's does when its restorer cannot run
        comments.append("Face restoration is not available on the kit's server: the images are not face-restored")
    if lora_files:
        extra["Lora hashes"] = hashes_infotext(lora_files)
    extra.update(eta_entry(sampler, req.eta, opts))
    extra.update(engine_params)
    extra.update(extra_infotext or {})

    # Seeds: -1 means random. With no variation strength each image gets seed + i; with a
    # variation strength the seed stays and the subseeds count up (A1111's processing.py).
    count = batch_size * n_iter
    seed = req.value("seed")
    seed = random_seed() if seed == -1 else seed
    subseed = req.value("subseed")
    subseed = random_seed() if subseed == -1 else subseed
    strength = float(req.value("subseed_strength"))
    all_seeds = [seed + (i if strength == 0 else 0) for i in range(count)]
    all_subseeds = [subseed + i for i in range(count)]
    # The kit's server has no prompt styles, so styles change nothing (A1111 ignores unknown ones).
    all_prompts = [prompt] * count
    all_negative_prompts = [negative_prompt] * count

    resize_w, resize_h = req.value("seed_resize_from_w"), req.value("seed_resize_from_h")

    def infotext(i: int) -> str:
        """A1111's create_infotext for image ``i``: fixed key order, None values left out."""
        params = {
            "Steps": steps,
            "Sampler": sampler,
            "Schedule type": schedule_shown,
            "CFG scale": cfg_scale,
            "Seed": all_seeds[i],
            "Face restoration": opts["face_restoration_model"] if restore_faces else None,
            "Size": f"{width}x{height}",
            "Model hash": model["hash"] if opts["add_model_hash_to_info"] else None,
            "Model": model["name"] if opts["add_model_name_to_info"] else None,
            "Variation seed": None if strength == 0 else all_subseeds[i],
            "Variation seed strength": None if strength == 0 else strength,
            "Seed resize from": None if resize_w <= 0 or resize_h <= 0 else f"{resize_w}x{resize_h}",
            "Denoising strength": extra.get("Denoising strength"),
            "Clip skip": None if clip_skip <= 1 else clip_skip,
            "ENSD": ensd if ensd != 0 and uses_ensd(sampler, req.eta) else None,
            "RNG": opts["randn_source"] if opts["randn_source"] != "GPU" else None,
            "Tiling": "True" if tiling else None,
            **extra,
            "Version": version if opts["add_version_to_infotext"] else None,
        }
        return format_infotext(all_prompts[i], all_negative_prompts[i], params)

    def on_step(step: int, preview) -> bool:
        if passes == 2 and step > run_steps:  # the engine counts on into the hires pass: A1111's next job
            if state.job_no % 2 == 0:
                state.begin_batch(state.job_no + 1, hires.steps)
            step -= run_steps
        state.set_step(step, preview)
        return not state.should_stop()

    images, infotexts = [], []
    # One generation at a time: a second request waits here (it is never rejected), as in A1111.
    with queue_lock:
        previous_model = engine.model_title
        if other_model is not None:
            engine.switch_model(other_model)  # not found or not loadable: RuntimeError, a 500 as in A1111
            if not restore:
                options.update(options.loaded_model())
        model = {"name": engine.model_name, "hash": engine.model_hash}  # what made these images
        failed = engine.load_loras(lora_files) if lora_files else {}  # loaded once, then cached by the engine
        if failed:  # A1111 skips a LoRA it cannot load and makes the image without it
            comments.append("Lora could not be loaded: " + ", ".join(f"{name} ({why})" for name, why in failed.items()))
            lora_files = [item for item in lora_files if item.name not in failed]
            extra["Lora hashes"] = hashes_infotext(lora_files) or None
        state.begin("scripts_img2img" if init_images else "scripts_txt2img", job_count=n_iter * passes)
        job_timestamp = state.job_timestamp
        try:
            inits, inpainting = None, None
            if init_images:  # decoded only now, when it is this request's turn: waiting requests hold no pixels
                background = str(opts.get("img2img_background_color") or "#ffffff")
                inits = [prepare_init_image(decode_image(encoded, limits, f"init_images[{index}]"),
                                            req.value("resize_mode"), out_width, out_height, background)
                         for index, encoded in enumerate(init_images)]
                inits = inits * batch_size if len(inits) == 1 else inits
                if init_images and req.mask:
                    inpainting = _inpainting(req, inits, limits, out_width, out_height, background)
                    if inpainting is None:
                        comments.append(inpaint.EMPTY_MASK)
                    else:
                        extra.update(inpainting.infotext)
                        inits = inpainting.starts
            for n in range(n_iter):
                if state.interrupted:
                    break  # an interrupt skips the remaining batches
                state.begin_batch(n * passes, run_steps, job=f"Batch {n + 1} out of {n_iter}" if n_iter > 1 else None)
                first = n * batch_size
                job = GenerationJob(
                    prompt=model_prompt, negative_prompt=negative_prompt, loras=lora_files,
                    seeds=all_seeds[first:first + batch_size], subseeds=all_subseeds[first:first + batch_size],
                    subseed_strength=strength, width=out_width, height=out_height, steps=run_steps,
                    cfg_scale=cfg_scale, sampler_name=sampler, scheduler=scheduler,
                    preview_every=preview_every(opts), tiling=tiling, clip_skip=clip_skip, eta=req.eta,
                    emphasis=str(opts.get("emphasis", "Original")),
                    comma_padding_backtrack=_as_int(opts.get("comma_padding_backtrack"), 20), options=opts,
                    init_images=inits, denoising_strength=float(req.value("denoising_strength") or 0),
                    schedule_steps=schedule_steps, hires=hires,
                    latent_mask=inpainting.latent_mask if inpainting else None,
                    masked_content=inpainting.fill if inpainting else 1,
                )
                batch = engine.generate(job, on_step)
                if inpainting:  # laid over the init images: what is not masked stays as it was
                    batch = inpainting.finish(batch)
                if opts["live_previews_enable"] and _as_int(opts["show_progress_every_n_steps"], 1) == -1:
                    state.set_preview(batch[0])  # -1: "show the result after each batch"
                for j, image in enumerate(batch):
                    images.append(image)
                    infotexts.append(infotext(first + j))
        finally:
            interrupted = state.interrupted
            state.end()
            if other_model is not None and restore and engine.model_title != previous_model:
                engine.switch_model(previous_model)

    # save_images is accepted and ignored: the kit's server writes no files (clients save what
    # they receive), so there is never a grid and index_of_first_image is always 0.
    encoded = []
    if req.value("send_images"):
        keep_infotext = bool(opts["enable_pnginfo"])
        encoded = [encode_png_b64(image, text if keep_infotext else None) for image, text in zip(images, infotexts)]

    info = {
        "prompt": all_prompts[0],
        "all_prompts": all_prompts,
        "negative_prompt": all_negative_prompts[0],
        "all_negative_prompts": all_negative_prompts,
        "seed": all_seeds[0],
        "all_seeds": all_seeds,
        "subseed": all_subseeds[0],
        "all_subseeds": all_subseeds,
        "subseed_strength": strength,
        "width": width,  # the first-pass size, also with hires fix (as A1111)
        "height": height,
        "sampler_name": sampler,
        "cfg_scale": cfg_scale,
        "steps": steps,
        "batch_size": batch_size,
        "restore_faces": restore_faces,
        "face_restoration_model": opts["face_restoration_model"] if restore_faces else None,
        "sd_model_name": model["name"],
        "sd_model_hash": model["hash"],
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": resize_w,
        "seed_resize_from_h": resize_h,
        "denoising_strength": req.value("denoising_strength"),
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": req.styles or [],
        "job_timestamp": job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": version,
    }
    if comments:  # not in A1111 1.10's API answer (only its web UI shows them): the kit's client warns with it
        info["comments"] = "\n".join(comments)
    if interrupted:  # not in A1111's answer either: the kit's client then needs no extra GET /progress to know
        info["interrupted"] = True
    # parameters echoes the request (seed stays -1); info is a JSON *string*, as in A1111.
    parameters = req.model_dump()
    if init_images and not req.value("include_init_images"):
        parameters.update(init_images=None, mask=None)  # A1111 leaves the (large) images out unless asked
    return {"images": encoded, "parameters": parameters, "info": json.dumps(info, default=lambda o: None)}

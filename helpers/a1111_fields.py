"""The fields of A1111's ``/sdapi/v1/txt2img`` request with A1111 1.10's defaults (sdserver/models.py types
the same fields; a test checks they agree), and the checks the client makes before sending one.

    >>> TXT2IMG_DEFAULTS["steps"], TXT2IMG_DEFAULTS["sampler_index"]
    (50, 'Euler')
"""

from __future__ import annotations

import difflib
from typing import Any

from .a1111_http import InvalidRequest
from .generation import _is_int

# name -> default, in A1111's schema order. The API's defaults are not the UI's: 50 steps, sampler "Euler".
TXT2IMG_DEFAULTS: dict[str, Any] = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0.0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None, "batch_size": 1,
    "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": None, "tiling": None,
    "do_not_save_samples": False, "do_not_save_grid": False, "eta": None, "denoising_strength": None,
    "s_min_uncond": None, "s_churn": None, "s_tmax": None, "s_tmin": None, "s_noise": None, "override_settings": None,
    "override_settings_restore_afterwards": True, "refiner_checkpoint": None, "refiner_switch_at": None,
    "disable_extra_networks": False, "firstpass_image": None, "comments": None, "enable_hr": False,
    "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None,
    "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None, "sampler_index": "Euler", "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {}, "infotext": None,
}

# img2img's fields: txt2img's without hires fix, and its own (sdserver/models.py has A1111's order and defaults).
IMG2IMG_FIELDS = {name for name in TXT2IMG_DEFAULTS if not name.startswith(("enable_hr", "firstphase_", "hr_"))} | {
    "init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x", "mask_blur_y", "mask_blur", "mask_round",
    "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert",
    "initial_noise_multiplier", "latent_mask", "include_init_images"}

# Names people often use from other libraries (diffusers, ComfyUI, OpenAI); suggested in errors.
FIELD_ALIASES: dict[str, str] = {
    "guidance_scale": "cfg_scale", "cfg": "cfg_scale", "num_inference_steps": "steps", "sampling_steps": "steps",
    "sampler": "sampler_name", "num_images": "batch_size", "num_images_per_prompt": "batch_size",
    "n": "batch_size", "negative": "negative_prompt", "size": "width and height",
}


def validate_txt2img(fields: dict[str, Any], endpoint: str = "txt2img") -> None:
    """Check a txt2img (or ``endpoint="img2img"``) request before sending it; raises InvalidRequest with the fix.

    >>> validate_txt2img({"prompt": "a cat", "stepz": 20})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    helpers.a1111_http.InvalidRequest: Unknown txt2img field 'stepz' (did you mean 'steps'?). A1111 would ...
    Fix: Use one of the fields A1111 knows: ...
    """
    known = IMG2IMG_FIELDS if endpoint == "img2img" else TXT2IMG_DEFAULTS
    for name in fields:
        if name not in known:
            guess = FIELD_ALIASES.get(name) or next(iter(difflib.get_close_matches(name, known, n=1)), None)
            hint = f" (did you mean '{guess}'?)" if guess else ""
            raise InvalidRequest(f"Unknown {endpoint} field '{name}'{hint}. A1111 would silently ignore it.",
                                 fix="Use one of the fields A1111 knows: " + ", ".join(sorted(known)))
    strength = fields.get("denoising_strength")
    if endpoint == "img2img" and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                  or not 0 <= strength <= 1):
        raise InvalidRequest(f"denoising_strength={strength!r} must be a number from 0 to 1",
                             fix="Use e.g. denoising_strength=0.5: 0 keeps the start image, 1 replaces it.")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest(f"prompt must be a string, not {type(prompt).__name__}",
                             fix="Pass one prompt as text; for several prompts call txt2img once per prompt.")
    if not prompt.strip():
        raise InvalidRequest("The prompt is empty, so the image would be random noise turned into a random picture.",
                             fix="Pass a prompt such as 'a lighthouse at dusk', or allow_empty_prompt=True if you "
                                 "mean it.")
    for name in ("width", "height"):
        value = fields.get(name)
        if value is not None and (not _is_int(value) or value < 64 or value % 8):
            raise InvalidRequest(f"{name}={value!r} is not usable: Stable Diffusion needs a whole number of pixels "
                                 "that is a multiple of 8 (64 or more)",
                                 fix=f"Use e.g. {name}=512 (SD 1.5) or {name}=1024 (SDXL).")
    for name, example in (("steps", 20), ("batch_size", 1), ("n_iter", 1)):
        value = fields.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise InvalidRequest(f"{name}={value!r} must be a whole number >= 1", fix=f"Use e.g. {name}={example}.")
    cfg = fields.get("cfg_scale")
    if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg <= 30):
        raise InvalidRequest(f"cfg_scale={cfg!r} must be a number from 0 to 30",
                             fix="Use e.g. cfg_scale=7 (SD 1.5/SDXL) or cfg_scale=1 (turbo/LCM models).")
    seed = fields.get("seed")
    if seed is not None and (not _is_int(seed) or not -1 <= seed < 2**32):
        raise InvalidRequest(f"seed={seed!r} must be -1 (random) or a whole number from 0 to 4294967295",
                             fix="Use e.g. seed=42, or seed=-1 for a new random seed.")
    if fields.get("enable_hr") and fields.get("denoising_strength") is None:
        raise InvalidRequest("enable_hr=True needs denoising_strength (A1111 1.10 fails with a 500 without it)",
                             fix="Add e.g. denoising_strength=0.5.")

"""The fields of A1111's ``/sdapi/v1/txt2img`` request, with the server's defaults (A1111 1.10).

The client uses it to catch typos before sending (A1111 silently ignores unknown keys). The kit's
own server declares the same fields again, with their types and bounds, in sdserver/models.py;
tests/test_packaging.py checks that the two lists agree, name by name and default by default.

Example:
    >>> TXT2IMG_DEFAULTS["steps"], TXT2IMG_DEFAULTS["sampler_index"]
    (50, 'Euler')
"""

from __future__ import annotations

from typing import Any

# name -> default, in A1111's schema order. Note the API defaults differ from the UI's:
# steps is 50 here (20 in the UI) and a missing sampler_name means "Euler".
TXT2IMG_DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0.0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": None,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "sampler_index": "Euler",
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
}

# Names people often use from other libraries (diffusers, ComfyUI, OpenAI); suggested in errors.
FIELD_ALIASES: dict[str, str] = {
    "guidance_scale": "cfg_scale",
    "cfg": "cfg_scale",
    "num_inference_steps": "steps",
    "sampling_steps": "steps",
    "sampler": "sampler_name",
    "num_images": "batch_size",
    "num_images_per_prompt": "batch_size",
    "n": "batch_size",
    "negative": "negative_prompt",
    "size": "width and height",
}

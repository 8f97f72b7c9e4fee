"""The fixed lists A1111 1.10 reports (samplers, schedulers, upscalers, ...) and its options (a JSON table).

These are the answers of A1111 1.10's list endpoints (GET /samplers, /schedulers, /upscalers, ...).
Sampler and scheduler names are A1111's own, so a client can send the same names to the kit's
server and to a real A1111; the preview engine only writes them on its placeholder images.

Example:
    >>> resolve_sampler("DPM++ 2M Karras", None)
    ('DPM++ 2M', 'Automatic')
    >>> resolve_sampler("Euler a", "karras")
    ('Euler a', 'Karras')
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources

# (name, aliases, options) in A1111 1.10's order. The first one is the fallback for unknown names.
# Options are strings because A1111's pydantic v1 response model turned True into "True".
SAMPLERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("DPM++ SDE", ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], {"scheduler": "exponential", "brownian_noise": "True"}),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"],
     {"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"}),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"], {"scheduler": "karras", "uses_ensd": "True", "second_order": "True"}),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"],
     {"scheduler": "exponential", "discard_next_to_last_sigma": "True", "brownian_noise": "True"}),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": "True"}),
    ("Euler", ["k_euler"], {}),
    ("LMS", ["k_lms"], {}),
    ("Heun", ["k_heun"], {"second_order": "True"}),
    ("DPM2", ["k_dpm_2"], {"scheduler": "karras", "discard_next_to_last_sigma": "True", "second_order": "True"}),
    ("DPM2 a", ["k_dpm_2_a"], {"scheduler": "karras", "discard_next_to_last_sigma": "True",
                               "uses_ensd": "True", "second_order": "True"}),
    ("DPM fast", ["k_dpm_fast"], {"uses_ensd": "True"}),
    ("DPM adaptive", ["k_dpm_ad"], {"uses_ensd": "True"}),
    ("Restart", ["restart"], {"scheduler": "karras", "second_order": "True"}),
    ("DDIM", ["ddim"], {}),  # A1111 1.10's timestep samplers have no options (sd_samplers_timesteps.py)
    ("DDIM CFG++", ["ddim_cfgpp"], {}),
    ("PLMS", ["plms"], {}),
    ("UniPC", ["unipc"], {}),
    ("LCM", ["k_lcm"], {}),
]

# (name, label, aliases, default_rho, need_inner_model), A1111 1.10's sd_schedulers.py.
SCHEDULERS: list[tuple[str, str, list[str] | None, float, bool]] = [
    ("automatic", "Automatic", None, -1.0, False),
    ("uniform", "Uniform", None, -1.0, True),
    ("karras", "Karras", None, 7.0, False),
    ("exponential", "Exponential", None, -1.0, False),
    ("polyexponential", "Polyexponential", None, 1.0, False),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"], -1.0, True),
    ("kl_optimal", "KL Optimal", None, -1.0, False),
    ("align_your_steps", "Align Your Steps", None, -1.0, False),
    ("simple", "Simple", None, -1.0, True),
    ("normal", "Normal", None, -1.0, True),
    ("ddim", "DDIM", None, -1.0, True),
    ("beta", "Beta", None, -1.0, True),
]

LATENT_UPSCALE_MODES = [
    "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
    "Latent (nearest)", "Latent (nearest-exact)",
]

# Only the upscalers Pillow can do; A1111 also lists ESRGAN, SwinIR, ... when their weights exist.
UPSCALERS = [
    {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
    {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
    {"name": "Nearest", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
]

# The model upscalers A1111 1.10 lists (their weights are downloaded on first use); the kit's server runs none of
# them. Named so that the diffusers engine can tell "A1111 has it, the kit has not" (a 422 that says what to use
# instead) from a name A1111 does not know either (A1111's 500, "could not find upscaler named ...").
A1111_MODEL_UPSCALERS = ["DAT x2", "DAT x3", "DAT x4", "ESRGAN_4x", "LDSR", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B",
                         "ScuNET GAN", "ScuNET PSNR", "SwinIR 4x"]


def sampler_list() -> list[dict]:
    """GET /sdapi/v1/samplers: ``[{name, aliases, options}]``."""
    return [{"name": name, "aliases": aliases, "options": options} for name, aliases, options in SAMPLERS]


def scheduler_list() -> list[dict]:
    """GET /sdapi/v1/schedulers: ``[{name, label, aliases, default_rho, need_inner_model}]``."""
    return [
        {"name": name, "label": label, "aliases": aliases, "default_rho": rho, "need_inner_model": inner}
        for name, label, aliases, rho, inner in SCHEDULERS
    ]


def sampler_options(name: str) -> dict[str, str]:
    """The options of a sampler (``{}`` for an unknown name)."""
    for sampler, _aliases, options in SAMPLERS:
        if sampler == name:
            return options
    return {}


def resolve_sampler(sampler: str | None, scheduler: str | None) -> tuple[str, str]:
    """Turn the requested sampler and scheduler into (sampler name, scheduler label), like A1111 1.10.

    * a trailing scheduler label, name or alias is split off: "DPM++ 2M Karras";
    * an unknown sampler falls back to the first one (DPM++ 2M), silently, as in 1.10;
    * an unknown scheduler becomes "Automatic";
    * a scheduler equal to the sampler's own default is reported as "Automatic".

    >>> resolve_sampler("no such sampler", None)
    ('DPM++ 2M', 'Automatic')
    """
    by_name_or_label = {name: label for name, label, *_ in SCHEDULERS}
    by_name_or_label.update({label: label for _, label, *_ in SCHEDULERS})
    label = by_name_or_label.get(scheduler or "", "Automatic")

    name = sampler or SAMPLERS[0][0]
    for sched_name, sched_label, aliases, *_ in SCHEDULERS:
        suffix = next((option for option in [sched_label, sched_name, *(aliases or [])]
                       if name.endswith(" " + option)), None)
        if suffix:
            label = sched_label
            name = name[: -len(suffix) - 1]
            break

    known = [sampler_name for sampler_name, *_ in SAMPLERS]
    name = name if name in known else known[0]
    # A1111 reverts to "Automatic" when the chosen schedule is the sampler's default anyway.
    default = sampler_options(name).get("scheduler")
    if default and by_name_or_label.get(default) == label:
        label = "Automatic"
    return name, label


def uses_ensd(sampler: str, eta: float | None) -> bool:
    """Whether A1111 writes ``ENSD`` (eta noise seed delta) into the infotext for this sampler."""
    options = sampler_options(sampler)
    if eta is None:
        eta = 0.0 if options.get("default_eta_is_0") else 1.0
    return eta != 0 and options.get("uses_ensd") == "True"


# The options the kit's server reads: changing one of these changes what it makes or writes. Every other
# A1111 option is kept and reported (GET /options) so scripts written for A1111 run, and changes nothing.
KIT_USES = frozenset({
    "sd_model_checkpoint", "sd_checkpoint_hash", "CLIP_stop_at_last_layers", "eta_noise_seed_delta", "randn_source",
    "eta_ddim", "emphasis", "comma_padding_backtrack", "tiling", "face_restoration", "face_restoration_model",
    "live_previews_enable", "show_progress_every_n_steps", "enable_pnginfo", "add_model_hash_to_info",
    "add_model_name_to_info", "add_version_to_infotext",
})
# Where the kit's default differs from A1111's. A1111's live previews cost GPU time (default: every 10
# steps); the preview engine's are nearly free, so the kit shows one per step.
KIT_DEFAULTS = {"show_progress_every_n_steps": 1}


@functools.cache
def a1111_options() -> dict:
    """A1111 1.10.1's option table (sdserver/a1111_options.json, written by sdserver/tools/a1111_options.py):
    ``options`` (key -> default, in GET /options order), ``restricted``, ``api_restricted`` and ``html``.

    >>> table = a1111_options()
    >>> len(table["options"]) > 300, table["options"]["send_seed"], "outdir_samples" in table["restricted"]
    (True, True, True)
    """
    return json.loads(resources.files("sdserver").joinpath("a1111_options.json").read_text(encoding="utf-8"))


def default_options(model_title: str) -> dict:
    """The settings GET /sdapi/v1/options reports: every A1111 1.10 option with its default, the kit's
    own defaults (``KIT_DEFAULTS``) and its loaded model over them.

    >>> options = default_options("tiny")
    >>> options["sd_model_checkpoint"], options["send_seed"], options["show_progress_every_n_steps"]
    ('tiny', True, 1)
    """
    return {**copy.deepcopy(a1111_options()["options"]), **KIT_DEFAULTS, "sd_model_checkpoint": model_title}

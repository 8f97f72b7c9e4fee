"""A1111 sampler and schedule names -> diffusers schedulers, for the diffusers engine.

A1111 names its samplers after k-diffusion ("Euler a", "DPM++ 2M") and, since 1.9, lets a
separate *schedule type* pick the noise levels ("Karras", "Exponential"). diffusers packs both
into one scheduler class with options. This module is the translation table. Every scheduler is
built from the **model's own scheduler config**, so its betas, prediction type and timestep
spacing carry over (SD-Turbo, for instance, needs its "trailing" spacing at 1 step).

Unlike A1111 1.10, which silently falls back to DPM++ 2M for a name it does not know, an
unknown or unavailable name is an error that lists the names that work.

Example:
    >>> resolve("DPM++ 2M Karras", None)
    ('DPM++ 2M', 'Karras')
    >>> resolve("Euler a", "automatic")
    ('Euler a', 'Automatic')
    >>> resolve("Euler A", None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sdserver.engines.samplers.UnknownSampler: sampler 'Euler A' is not known (did you mean 'Euler a'?)...
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
from typing import Any

from helpers.errors import KitError

from ..catalog import SAMPLERS as A1111_SAMPLERS
from ..catalog import SCHEDULERS as A1111_SCHEDULES


class UnknownSampler(KitError, ValueError):
    """A sampler or schedule name the diffusers engine cannot run; the message lists those it can."""


# A1111 sampler name -> (diffusers scheduler class, its options, A1111's default schedule type).
# The default schedule is what A1111 uses for "Automatic" (DPM++ 2M -> Karras).
SAMPLERS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras"),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}, "Karras"),  # needs the torchsde package
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                     "Exponential"),
    "DPM++ 2M SDE Heun": ("DPMSolverMultistepScheduler",
                          {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                          "Exponential"),
    "DPM++ 3M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                     "Exponential"),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, None),
    "Euler": ("EulerDiscreteScheduler", {}, None),
    "LMS": ("LMSDiscreteScheduler", {}, None),  # needs scipy
    "Heun": ("HeunDiscreteScheduler", {}, None),
    "DPM2": ("KDPM2DiscreteScheduler", {}, "Karras"),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}, "Karras"),
    # Latent diffusion never clips x0 to [-1, 1]; DDIM's and PNDM's own defaults would.
    "DDIM": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, None),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": False}, None),
    "UniPC": ("UniPCMultistepScheduler", {}, None),
    "LCM": ("LCMScheduler", {}, None),
}

# A1111 schedule label -> the scheduler option that gives it (None: the model's own config).
SCHEDULES: dict[str, dict[str, Any] | None] = {
    "Automatic": None,
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},  # needs scipy
    "Uniform": {"timestep_spacing": "linspace"},
    "Normal": {"timestep_spacing": "linspace"},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Simple": {"timestep_spacing": "trailing"},
    "DDIM": {"timestep_spacing": "leading"},
}

# Extra packages some schedulers need (import name, pip name).
NEEDS = {"DPMSolverSDEScheduler": ("torchsde", "torchsde"), "LMSDiscreteScheduler": ("scipy", "scipy")}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_samplers() -> list[str]:
    """The sampler names this installation can run, in A1111's order (GET /samplers lists these)."""
    order = [name for name, *_ in A1111_SAMPLERS]
    names = [name for name in order if name in SAMPLERS]
    return [name for name in names if SAMPLERS[name][0] not in NEEDS or _installed(NEEDS[SAMPLERS[name][0]][0])]


def available_schedules() -> list[str]:
    """The schedule labels that work with at least one sampler (GET /schedulers lists these)."""
    return [label for label in SCHEDULES if label != "Beta" or _installed("scipy")]


def _schedule_label(scheduler: str | None) -> str:
    """A1111's schedule name, label or alias -> its label; None/"" -> "Automatic"."""
    if not scheduler:
        return "Automatic"
    for name, label, aliases, *_ in A1111_SCHEDULES:
        if scheduler in (name, label, *(aliases or [])):
            if label not in available_schedules():
                raise UnknownSampler(f"schedule type {label!r} is not available in the diffusers engine; "
                                     f"it has: {', '.join(available_schedules())}")
            return label
    raise UnknownSampler(f"schedule type {scheduler!r} is not known; the diffusers engine has: "
                         f"{', '.join(available_schedules())}")


def resolve(sampler: str | None, scheduler: str | None) -> tuple[str, str]:
    """(sampler name, schedule label) for a request, like A1111 splits "DPM++ 2M Karras", but strict:
    a name this engine cannot run raises :class:`UnknownSampler` naming the ones it can."""
    label = _schedule_label(scheduler)
    name = sampler or "Euler"  # A1111's API default (sampler_index)
    for sched_name, sched_label, aliases, *_ in A1111_SCHEDULES:
        suffix = next((s for s in [sched_label, sched_name, *(aliases or [])] if name.endswith(" " + s)), None)
        if suffix and name[: -len(suffix) - 1] in SAMPLERS:
            name, label = name[: -len(suffix) - 1], _schedule_label(sched_label)
            break
    names = available_samplers()
    if name not in names:
        if name in SAMPLERS:  # known, but a package is missing
            module, package = NEEDS[SAMPLERS[name][0]]
            raise UnknownSampler(f"sampler {name!r} needs the {module} package: pip install {package}")
        known_in_a1111 = any(name == a1111_name for a1111_name, *_ in A1111_SAMPLERS)
        guess = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        why = ("is an A1111 sampler that diffusers does not have" if known_in_a1111
               else "is not known" + (f" (did you mean {guess[0]!r}?)" if guess else ""))
        raise UnknownSampler(f"sampler {name!r} {why}. The diffusers engine has: {', '.join(names)}")
    return name, label


def make_scheduler(sampler: str, schedule: str, base_config: dict):
    """A new diffusers scheduler for (sampler, schedule label), built from the model's scheduler config.

    "Automatic" uses the sampler's A1111 default (Karras for DPM++ 2M) where diffusers has it,
    else the model's own schedule.
    """
    import diffusers

    class_name, options, default_schedule = SAMPLERS[sampler]
    cls = getattr(diffusers, class_name)
    accepted = inspect.signature(cls.__init__).parameters
    label = schedule
    if label == "Automatic" and default_schedule and all(k in accepted for k in SCHEDULES[default_schedule]):
        label = default_schedule
    extra = dict(SCHEDULES[label] or {})
    if any(key not in accepted for key in extra):
        raise UnknownSampler(f"schedule type {schedule!r} cannot be used with sampler {sampler!r} in the "
                             "diffusers engine; use \"Automatic\" or another sampler (e.g. Euler, DPM++ 2M)")
    return cls.from_config(base_config, **options, **extra)

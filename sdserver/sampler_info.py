"""What A1111 1.10's samplers write into the infotext about themselves: the schedule they used and eta.

A1111 decides these while sampling (``sd_samplers_kdiffusion.py``, ``sd_samplers_common.py``,
``sd_samplers_timesteps.py``), not when it reads the request, so a client reading an infotext sees the
schedule that really ran. The kit's server writes the same entries, found by the differential test
against the real A1111 (tests/test_real_differential.py):

* a k-diffusion sampler with schedule "Automatic" runs its own default schedule and says so: DPM++ 2M
  writes ``Schedule type: Karras`` (also in ``extra_generation_params``); Euler a, which has none, keeps
  ``Automatic``. The timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) take no schedule and write the
  request's label;
* a sampler whose function takes ``eta`` writes ``Eta`` (k-diffusion, default 1) or ``Eta DDIM`` (DDIM,
  default 0) when the eta used differs from that default; eta is the request's, else the option
  ``eta_ancestral`` or ``eta_ddim``.

    >>> [schedule_used(*pair) for pair in [("DPM++ 2M", "Automatic"), ("Euler a", "Automatic"), ("DDIM", "Karras")]]
    ['Karras', 'Automatic', 'Karras']
    >>> [eta_entry(name, eta, {}) for name, eta in [("Euler a", 0), ("Euler a", None), ("DDIM", 0.5), ("Euler", 0)]]
    [{'Eta': 0}, {}, {'Eta DDIM': 0.5}, {}]
"""

from __future__ import annotations

from typing import Any

from .catalog import SAMPLERS, SCHEDULERS, sampler_options

# A1111's samplers that are not k-diffusion ones (sd_samplers_timesteps.py): they take no schedule.
TIMESTEP_SAMPLERS = frozenset({"DDIM", "DDIM CFG++", "PLMS", "UniPC"})
# Samplers whose sampling function has an ``eta`` parameter (k-diffusion's sampling.py, A1111's
# sd_samplers_timesteps_impl.py), with A1111's infotext key, the option it falls back to and its default.
ETA_SAMPLERS = {
    **{name: ("Eta", "eta_ancestral", 1.0) for name in (
        "Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE",
        "DPM fast", "DPM adaptive")},
    "DDIM": ("Eta DDIM", "eta_ddim", 0.0),
    "DDIM CFG++": ("Eta DDIM", "eta_ddim", 0.0),
}


def schedule_used(sampler: str, label: str) -> str:
    """The schedule label A1111 writes for ``sampler`` run with schedule ``label`` (see the module doc)."""
    default = sampler_options(sampler).get("scheduler")
    if label != "Automatic" or sampler in TIMESTEP_SAMPLERS or not default:
        return label
    return next(sched_label for name, sched_label, *_ in SCHEDULERS if name == default)


def eta_entry(sampler: str, eta: float | None, opts: dict[str, Any]) -> dict[str, Any]:
    """``{"Eta": eta}`` (or ``Eta DDIM``) when A1111 would write it for this sampler, else ``{}``."""
    if sampler not in ETA_SAMPLERS:
        return {}
    key, option, default = ETA_SAMPLERS[sampler]
    used = eta if eta is not None else opts.get(option, default)
    return {key: used} if used != default else {}


def fallback_notes(requested_sampler: str | None, requested_schedule: str | None, sampler: str) -> list[str]:
    """What A1111 changes without a word, said in ``info["comments"]``: an unknown sampler becomes the first one
    (DPM++ 2M), an unknown schedule Automatic.

    >>> fallback_notes("Euler A", "wobbly", "DPM++ 2M")  # doctest: +NORMALIZE_WHITESPACE
    ["Sampler 'Euler A' is not known (did you mean 'Euler a'?): DPM++ 2M was used, as A1111 does",
     "Schedule type 'wobbly' is not known: Automatic was used, as A1111 does"]
    >>> fallback_notes("DPM++ 2M Karras", "karras", "DPM++ 2M")
    []
    """
    import difflib

    notes = []
    names = [name for name, *_ in SAMPLERS]
    if requested_sampler and requested_sampler != sampler and not requested_sampler.startswith(sampler + " "):
        guess = difflib.get_close_matches(requested_sampler, names, n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        notes.append(f"Sampler {requested_sampler!r} is not known{hint}: {sampler} was used, as A1111 does")
    schedules = {option for name, label, *_ in SCHEDULERS for option in (name, label)}
    if requested_schedule and requested_schedule not in schedules:
        notes.append(f"Schedule type {requested_schedule!r} is not known: Automatic was used, as A1111 does")
    return notes

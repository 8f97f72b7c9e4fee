"""Which settings suit the image model the server has loaded.

Classic Stable Diffusion checkpoints want 20-30 steps at CFG scale 5-9; *distilled* models (sd-turbo, LCM,
Lightning, Hyper-SD) 1-8 steps with little guidance. A1111 does not say which kind it has: we go by the name.

    >>> hints_for("sd_turbo [e4f8c2d1a0]").defaults
    {'steps': 1, 'cfg_scale': 1.0, 'sampler_name': 'Euler a'}
    >>> hints_for("v1-5-pruned-emaonly.safetensors [6ce0161689]").family
    'sd'
    >>> hints_for("sd_xl_base_1.0.safetensors [31e35c80fc]").size
    1024
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelHints:
    """Good settings for one model; ``str(hints)`` says them in a sentence for students."""

    model: str  # the checkpoint title the hints are for
    family: str  # "preview", "sd", "sdxl", "turbo", "lcm" or "lightning"
    steps: int  # a good default
    quick_steps: int  # the fewest steps that still give a usable picture (for quick experiments)
    steps_range: tuple[int, int]
    cfg_scale: float
    cfg_range: tuple[float, float]
    sampler_name: str
    size: int  # the native width and height in pixels
    note: str

    @property
    def defaults(self) -> dict:
        """The txt2img fields to use when you give none: steps, cfg_scale, sampler_name."""
        return {"steps": self.steps, "cfg_scale": self.cfg_scale, "sampler_name": self.sampler_name}

    @property
    def few_step(self) -> bool:
        """True for distilled models that want a handful of steps and almost no guidance."""
        return self.family in ("turbo", "lcm", "lightning")

    def __str__(self) -> str:
        (low, high), (cfg_low, cfg_high) = self.steps_range, self.cfg_range
        return (f"{self.model}: {self.note} Use {low}-{high} steps (default {self.steps}), CFG scale "
                f"{cfg_low:g}-{cfg_high:g} (default {self.cfg_scale:g}), sampler {self.sampler_name!r}, "
                f"{self.size}x{self.size} pixels.")


_SDXL = r"xl(?![a-z])"  # sd_xl_base, sdxl-..., juggernautXL_v9; not "pixelart"
# (family, name pattern) in the order they are tried: "sdxl-turbo" is a turbo model first.
_PATTERNS = [
    ("preview", r"^offline-preview"),
    ("turbo", r"turbo"),
    ("lcm", r"(^|[^a-z])lcm([^a-z]|$)"),
    ("lightning", r"lightning|hyper[-_ ]?sd|(^|[^a-z])hyper([^a-z]|$)"),
    ("sdxl", _SDXL),
]
_FAMILIES = {
    "preview": dict(steps=20, quick_steps=8, steps_range=(1, 150), cfg_scale=7.0, cfg_range=(1, 30),
                    sampler_name="Euler a", size=512,
                    note="the kit's placeholder engine: any setting works and costs almost nothing."),
    "sd": dict(steps=20, quick_steps=10, steps_range=(20, 30), cfg_scale=7.0, cfg_range=(5, 9),
               sampler_name="Euler a", size=512, note="a classic Stable Diffusion model."),
    "sdxl": dict(steps=25, quick_steps=12, steps_range=(20, 40), cfg_scale=7.0, cfg_range=(5, 9),
                 sampler_name="DPM++ 2M", size=1024, note="an SDXL model (trained at 1024x1024)."),
    "turbo": dict(steps=1, quick_steps=1, steps_range=(1, 4), cfg_scale=1.0, cfg_range=(0, 1),
                  sampler_name="Euler a", size=512,
                  note="a distilled few-step model: more steps or a higher CFG scale make it worse, not better."),
    "lcm": dict(steps=6, quick_steps=4, steps_range=(4, 8), cfg_scale=1.5, cfg_range=(1, 2),
                sampler_name="LCM", size=512, note="a latent consistency (LCM) model: few steps, little guidance."),
    "lightning": dict(steps=6, quick_steps=4, steps_range=(4, 8), cfg_scale=1.0, cfg_range=(1, 2),
                      sampler_name="Euler", size=512,
                      note="a distilled few-step (Lightning/Hyper) model: few steps, little guidance."),
}


def hints_for(model: str) -> ModelHints:
    """Hints for a checkpoint title or name, e.g. ``"sd_turbo [e4f8c2d1a0]"`` (see the module doc)."""
    name = str(model or "").rsplit(" [", 1)[0].lower()
    family = next((family for family, pattern in _PATTERNS if re.search(pattern, name)), "sd")
    facts = dict(_FAMILIES[family])
    trained = re.search(r"(\d+)[-_ ]?steps?(?![a-z])", name)  # e.g. sdxl_lightning_4step, Hyper-SD15-8steps
    if family in ("lcm", "lightning") and trained:
        facts.update(steps=int(trained.group(1)), quick_steps=int(trained.group(1)))
    if family == "sd" and "768" in name:  # SD 2.x "v" models were trained at 768x768
        facts["size"] = 768
    if family in ("lcm", "lightning"):  # both exist for SD 1.5 (512) and SDXL (1024)
        facts["size"] = 1024 if re.search(_SDXL, name) else 512
    return ModelHints(model=str(model or "?"), family=family, **facts)


def model_hints(client) -> ModelHints:
    """Hints for the model ``client``'s server has loaded; a sampler it lacks (e.g. "LCM") becomes "Euler a".

    >>> hints = model_hints(client)      # doctest: +SKIP
    >>> print(hints)                     # doctest: +SKIP
    sd_turbo [e4f8c2d1a0]: a distilled few-step model: ... Use 1-4 steps (default 1), CFG scale 0-1 ...
    """
    hints = hints_for(client.options().get("sd_model_checkpoint", "?"))
    if hints.sampler_name not in ("Euler a", "Euler"):
        try:
            offered = client.samplers()
        except Exception:  # an old or unusual server: keep the hint, the request will say if it is wrong
            offered = [hints.sampler_name]
        if hints.sampler_name not in offered:
            hints = replace(hints, sampler_name="Euler a",
                            note=f"{hints.note} (This server has no {hints.sampler_name!r} sampler, so 'Euler a'.)")
    return hints

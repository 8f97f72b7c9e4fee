"""Request and response models of the kit's A1111-compatible server (pydantic v2).

The txt2img request copies A1111 1.10's ``StableDiffusionTxt2ImgProcessingAPI``: the same field
names, the same defaults and the same order (the client's list, helpers/a1111_fields.py, is checked
against it by tests/test_packaging.py). Three A1111 habits are kept on purpose, because clients
written against the kit must also work against a real A1111:

* every field is Optional, so ``null`` is accepted (the server then uses the default);
* unknown keys are silently ignored (``extra="ignore"``), typos included;
* values are converted where pydantic v1 (A1111's version) would: ``"20"`` -> 20, ``20.7`` -> 20,
  ``7`` -> 7.0, ``5`` -> ``"5"``. Values that cannot be converted give FastAPI's standard 422.

One difference: A1111 accepts any size, step count, batch size, seed or text and fails later (a 500
or an out-of-memory error). The kit's server rejects absurd values up front with a 422 naming the
field, so one typo cannot freeze a server shared by a class. The fixed limits are the constants
below; the limits an instructor can change (cost, images, prompt length) are in limits.py. Text
with a lone surrogate (half of an emoji's UTF-16 pair) is a 422 too: it could not be written into
a PNG or a JSON reply.

Example:
    >>> req = Txt2ImgRequest.model_validate({"prompt": "a cat", "steps": "20", "typo": 1})
    >>> req.steps, req.value("cfg_scale"), req.sampler_index
    (20, 7.0, 'Euler')
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .limits import SEED_MAX, SEED_MIN, surrogate_problem

# Limits of the kit's server (A1111 has none; see the module docstring).
MAX_SIDE = 2048  # pixels, for width, height and the hires-fix target size
MAX_STEPS = 1000
MAX_BATCH_SIZE = 16
MAX_N_ITER = 100


def _truncate_float(value: Any) -> Any:
    """pydantic v1 turned 20.7 into 20 for int fields; v2 refuses. Keep v1's behaviour."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    return value


# An int field that accepts 20.7 as 20, like A1111's pydantic v1 did.
Int = Annotated[int, BeforeValidator(_truncate_float)]


def _int(low: int | None = None, high: int | None = None):
    """An optional int field type with bounds (the bounds show up in /docs)."""
    return Optional[Annotated[Int, Field(ge=low, le=high)]]


class A1111Model(BaseModel):
    """Base for request models: A1111's lenient pydantic-v1 habits, written out for v2."""

    model_config = ConfigDict(
        extra="ignore",  # unknown keys are dropped without an error, as in A1111
        coerce_numbers_to_str=True,  # {"prompt": 5} becomes "5", as in pydantic v1
        allow_inf_nan=False,  # Infinity/NaN would make the JSON reply unencodable: 422 instead
    )

    @field_validator("*", mode="after")
    @classmethod
    def _encodable_text(cls, value: Any, info) -> Any:
        """Every string, also inside lists and dicts (styles, override_settings), must be valid Unicode."""
        problem = surrogate_problem(value, info.field_name)
        if problem:
            raise ValueError(problem)
        return value

    def value(self, name: str) -> Any:
        """The field's value, or its default when the client sent ``null``.

        >>> Txt2ImgRequest(steps=None).value("steps")
        50
        """
        current = getattr(self, name)
        if current is None:
            return type(self).model_fields[name].default
        return current


class ProcessingRequest(A1111Model):
    """The fields txt2img and img2img share (A1111's ``StableDiffusionProcessing``), in A1111's order."""

    prompt: Optional[str] = ""
    negative_prompt: Optional[str] = ""
    styles: Optional[list[str]] = None
    seed: _int() = -1  # -1: a random seed, reported in info.seed
    subseed: _int() = -1
    subseed_strength: Optional[float] = 0
    seed_resize_from_h: _int() = -1
    seed_resize_from_w: _int() = -1
    sampler_name: Optional[str] = None
    scheduler: Optional[str] = None
    batch_size: _int(1, MAX_BATCH_SIZE) = 1
    n_iter: _int(1, MAX_N_ITER) = 1
    steps: _int(1, MAX_STEPS) = 50  # the API default is 50; A1111's UI shows 20
    cfg_scale: Optional[float] = 7.0
    width: _int(8, MAX_SIDE) = 512
    height: _int(8, MAX_SIDE) = 512
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: Optional[bool] = False
    do_not_save_grid: Optional[bool] = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = None
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: Optional[bool] = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: Optional[bool] = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None

    @field_validator("seed", "subseed", mode="after")
    @classmethod
    def _seed_torch_accepts(cls, value: Optional[int], info) -> Optional[int]:
        """A1111 hands seeds to torch, which takes -2**63 .. 2**64-1; a larger one would be a 500 later."""
        if value is not None and not SEED_MIN <= value <= SEED_MAX:
            raise ValueError(f"{info.field_name} must be -1 (random) or an integer from {SEED_MIN} to {SEED_MAX} "
                             f"(the seeds torch accepts); got {value}")
        return value


class Txt2ImgRequest(ProcessingRequest):
    """POST /sdapi/v1/txt2img: every field of A1111 1.10, in its order, with its defaults.

    >>> Txt2ImgRequest(prompt="a fox").model_dump()["sampler_index"]
    'Euler'
    """

    enable_hr: Optional[bool] = False
    firstphase_width: _int() = 0
    firstphase_height: _int() = 0
    hr_scale: Optional[Annotated[float, Field(gt=0, le=16)]] = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: _int(0, MAX_STEPS) = 0
    hr_resize_x: _int(0, MAX_SIDE) = 0
    hr_resize_y: _int(0, MAX_SIDE) = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: Optional[str] = ""
    hr_negative_prompt: Optional[str] = ""
    force_task_id: Optional[str] = None
    sampler_index: Optional[str] = "Euler"  # legacy; used when sampler_name is empty
    script_name: Optional[str] = None
    script_args: Optional[list[Any]] = []
    send_images: Optional[bool] = True
    save_images: Optional[bool] = False
    alwayson_scripts: Optional[dict[str, Any]] = {}
    infotext: Optional[str] = None

    def hires_target_size(self) -> tuple[int, int]:
        """The final image size with hires fix, computed as A1111 does.

        >>> Txt2ImgRequest(width=64, height=32, enable_hr=True, hr_scale=2).hires_target_size()
        (128, 64)
        """
        width, height = self.value("width"), self.value("height")
        resize_x, resize_y = self.value("hr_resize_x"), self.value("hr_resize_y")
        if resize_x == 0 and resize_y == 0:
            scale = self.value("hr_scale")
            return int(width * scale), int(height * scale)
        if resize_y == 0:  # keep the aspect ratio of the first pass
            return resize_x, resize_x * height // width
        if resize_x == 0:
            return resize_y * width // height, resize_y
        return resize_x, resize_y

    @model_validator(mode="after")
    def _hires_size_in_range(self):
        """With hires fix the image is drawn at the target size, so that must be in range too."""
        if self.value("enable_hr"):
            width, height = self.hires_target_size()
            if not (8 <= width <= MAX_SIDE and 8 <= height <= MAX_SIDE):
                raise ValueError(
                    f"hires fix target size {width}x{height} is outside 8..{MAX_SIDE} pixels a side "
                    "(lower hr_scale or hr_resize_x/hr_resize_y)"
                )
        return self


class Img2ImgRequest(ProcessingRequest):
    """POST /sdapi/v1/img2img: A1111 1.10's img2img fields, in its order, with its defaults.

    The inpainting fields are accepted so that A1111 clients validate, but the kit's server does not
    inpaint: a ``mask`` is a 422 that names it (generation.py). Fields only txt2img has (hires fix)
    read as None through :meth:`value`, so code shared with txt2img may ask for them.

    >>> req = Img2ImgRequest(init_images=["..."])
    >>> req.value("denoising_strength"), req.value("resize_mode"), req.value("enable_hr")
    (0.75, 0, None)
    """

    denoising_strength: Optional[Annotated[float, Field(ge=0, le=1)]] = 0.75
    init_images: Optional[list[str]] = None
    resize_mode: _int(0, 3) = 0  # 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale (as 0)
    image_cfg_scale: Optional[float] = None
    mask: Optional[str] = None
    mask_blur_x: _int() = 4
    mask_blur_y: _int() = 4
    mask_blur: _int() = None
    mask_round: Optional[bool] = True
    inpainting_fill: _int() = 0
    inpaint_full_res: Optional[bool] = True
    inpaint_full_res_padding: _int() = 0
    inpainting_mask_invert: _int() = 0
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    force_task_id: Optional[str] = None
    sampler_index: Optional[str] = "Euler"  # legacy; used when sampler_name is empty
    include_init_images: Optional[bool] = False
    script_name: Optional[str] = None
    script_args: Optional[list[Any]] = []
    send_images: Optional[bool] = True
    save_images: Optional[bool] = False
    alwayson_scripts: Optional[dict[str, Any]] = {}
    infotext: Optional[str] = None

    def value(self, name: str) -> Any:
        if name not in type(self).model_fields:
            return None  # a txt2img-only field (enable_hr, hr_*): not part of img2img
        return super().value(name)


class TextToImageResponse(BaseModel):
    images: Optional[list[str]] = Field(None, description="base64 PNGs, each with its infotext chunk")
    parameters: dict[str, Any] = Field(description="the request as received, defaults filled in")
    info: str = Field(description="a JSON *string*: real seeds, infotexts, model... (parse it again)")


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float = Field(description="0..1")
    eta_relative: float = Field(description="estimated seconds left")
    state: ProgressState
    current_image: Optional[str] = Field(None, description="base64 PNG live preview, or null")
    textinfo: Optional[str] = None


class PNGInfoRequest(A1111Model):
    image: str = Field(description="base64 PNG, optionally with a data:image/png;base64, prefix")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="the raw infotext, or an empty string")
    items: dict[str, Any] = Field(default_factory=dict, description="other text entries of the image")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the infotext parsed")


class InterrogateRequest(A1111Model):
    image: Optional[str] = Field("", description="base64 image")
    model: Optional[str] = Field("clip", description='"clip" or "deepdanbooru"')


class InterrogateResponse(BaseModel):
    caption: Optional[str] = None

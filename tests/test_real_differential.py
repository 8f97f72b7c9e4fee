"""A differential test of the kit's A1111-compatible server against the real AUTOMATIC1111 v1.10.1.

The same requests go to the real A1111 (tests/real_a1111.py, its tiny random model) and to the kit's
server on each engine (preview, and diffusers on tests/tiny_sd.py's tiny model), and the answers are
compared field by field: status codes, the error body's shape, the keys and value types of
``parameters`` and of the parsed ``info``, the infotext's keys, the seeds, and the shapes of
/options, /samplers, /schedulers, /sd-models and /progress. Images are never compared (the models differ).

The requests are A1111's own API test payloads (its test/test_txt2img.py and test/test_img2img.py, at
64x64 and 2 steps), every kind of request the notebooks and the kit's client send, and bad inputs.
A difference that is meant is named in ``ALLOWED_STATUS`` and the other allow-lists below, each with
its reason (the README's "Differences from A1111" says the same for users); any other one fails.

Runs in the real lane, like tests/test_real_a1111.py; A1111 starts once per module.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from conftest import HAS_DIFFUSERS, REAL_LANE

from helpers.infotext import parse_infotext

pytestmark = [pytest.mark.real, pytest.mark.timeout(900),
              REAL_LANE,
              pytest.mark.skipif(not HAS_DIFFUSERS, reason="the tiny models are built with the diffusers extra")]

TIMEOUT = 120


def _png_b64(image) -> str:
    import base64

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _init_image() -> str:
    """A 64x64 start image (A1111's test uses a photo; any picture keeps the payload's point)."""
    from PIL import Image

    image = Image.new("RGB", (64, 64))
    image.putdata([(4 * x, 4 * y, 128) for y in range(64) for x in range(64)])
    return _png_b64(image)


def _mask() -> str:
    """A white square on black: inpaint the middle."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    return _png_b64(mask)


INIT, MASK = _init_image(), _mask()

# --- A1111's own API test payloads (test/test_txt2img.py, test/test_img2img.py), 2 steps instead of 3 ----------

A1111_TXT2IMG = {
    "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0, "firstphase_height": 0,
    "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "", "prompt": "example prompt",
    "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a",
    "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 2, "styles": [], "subseed": -1,
    "subseed_strength": 0, "tiling": False, "width": 64,
}
A1111_IMG2IMG = {
    "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64, "include_init_images": False,
    "init_images": [INIT], "inpaint_full_res": False, "inpaint_full_res_padding": 0, "inpainting_fill": 0,
    "inpainting_mask_invert": False, "mask": None, "mask_blur": 4, "n_iter": 1, "negative_prompt": "",
    "override_settings": {}, "prompt": "example prompt", "resize_mode": 0, "restore_faces": False, "s_churn": 0,
    "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
    "seed_resize_from_w": -1, "steps": 2, "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False,
    "width": 64,
}


@dataclass(frozen=True)
class Case:
    path: str  # txt2img or img2img
    body: Any  # a dict sent as JSON, or bytes sent as they are
    content_type: str = "application/json"


CASES: dict[str, Case] = {
    # A1111's test_txt2img.py
    "a1111-txt2img-simple": Case("txt2img", A1111_TXT2IMG),
    "a1111-txt2img-negative-prompt": Case("txt2img", {**A1111_TXT2IMG, "negative_prompt": "example negative prompt"}),
    "a1111-txt2img-complex-prompt": Case("txt2img", {
        **A1111_TXT2IMG, "prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"}),
    "a1111-txt2img-not-square": Case("txt2img", {**A1111_TXT2IMG, "height": 128}),
    "a1111-txt2img-hires-fix": Case("txt2img", {**A1111_TXT2IMG, "enable_hr": True}),  # denoising_strength 0
    "a1111-txt2img-tiling": Case("txt2img", {**A1111_TXT2IMG, "tiling": True}),
    "a1111-txt2img-restore-faces": Case("txt2img", {**A1111_TXT2IMG, "restore_faces": True}),
    # 3 steps, as A1111's own payload: A1111's UniPC needs more steps than its order (a 500 at 2)
    "a1111-txt2img-sampler-PLMS": Case("txt2img", {**A1111_TXT2IMG, "sampler_index": "PLMS", "steps": 3}),
    "a1111-txt2img-sampler-DDIM": Case("txt2img", {**A1111_TXT2IMG, "sampler_index": "DDIM", "steps": 3}),
    "a1111-txt2img-sampler-UniPC": Case("txt2img", {**A1111_TXT2IMG, "sampler_index": "UniPC", "steps": 3}),
    "a1111-txt2img-n-iter": Case("txt2img", {**A1111_TXT2IMG, "n_iter": 2}),
    "a1111-txt2img-batch": Case("txt2img", {**A1111_TXT2IMG, "batch_size": 2}),
    # A1111's test_img2img.py
    "a1111-img2img-simple": Case("img2img", A1111_IMG2IMG),
    "a1111-img2img-inpainting": Case("img2img", {**A1111_IMG2IMG, "mask": MASK}),
    "a1111-img2img-inpainting-inverted": Case("img2img", {**A1111_IMG2IMG, "mask": MASK,
                                                          "inpainting_mask_invert": True}),
    "a1111-img2img-sd-upscale": Case("img2img", {**A1111_IMG2IMG, "script_name": "sd upscale",
                                                 "script_args": ["", 8, "Lanczos", 2.0]}),
    # What the notebooks and the kit's client send (helpers/a1111.py's defaults: Euler a, 20 steps, CFG 7,
    # override_settings {} always; notebook 04's generate_image sends the fields as given).
    "client-defaults": Case("txt2img", {"prompt": "a red fox in snow", "sampler_name": "Euler a", "steps": 2,
                                        "cfg_scale": 7.0, "override_settings": {}, "width": 64, "height": 64,
                                        "seed": 7}),
    "notebook-all-fields": Case("txt2img", {
        "prompt": "a lighthouse, (oil painting:1.2)", "negative_prompt": "blurry", "seed": 3, "steps": 2,
        "cfg_scale": 4.5, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "width": 64, "height": 96,
        "batch_size": 2, "n_iter": 2, "override_settings": {}}),
    "notebook-random-seed": Case("txt2img", {"prompt": "a cat", "seed": -1, "steps": 2, "width": 64, "height": 64,
                                             "batch_size": 3}),
    "notebook-no-fields": Case("txt2img", {"prompt": "a cat", "steps": 1, "width": 64, "height": 64}),
    "notebook-clip-skip-override": Case("txt2img", {
        "prompt": "x", "seed": 1, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a",
        "override_settings": {"CLIP_stop_at_last_layers": 2}}),
    "notebook-variation-seed": Case("txt2img", {"prompt": "x", "seed": 5, "subseed": 9, "subseed_strength": 0.5,
                                                "steps": 2, "width": 64, "height": 64, "batch_size": 2}),
    "notebook-lora-tag": Case("txt2img", {"prompt": "a fox <lora:kit-demo:0.5>", "seed": 2, "steps": 2,
                                          "width": 64, "height": 64, "sampler_name": "Euler a"}),
    "notebook-img2img": Case("img2img", {"prompt": "a fox, watercolour", "init_images": [INIT],
                                         "denoising_strength": 0.5, "seed": 2, "steps": 2, "width": 64,
                                         "height": 64, "sampler_name": "Euler a", "cfg_scale": 7.0,
                                         "override_settings": {}}),
    "notebook-hires": Case("txt2img", {"prompt": "a fox", "seed": 1, "steps": 2, "width": 64, "height": 64,
                                       "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}),
    # Bad inputs
    "bad-wrong-type": Case("txt2img", {"prompt": "x", "steps": "many"}),
    "bad-prompt-list": Case("txt2img", {"prompt": ["a", "b"], "steps": 1, "width": 64, "height": 64}),
    "bad-unknown-sampler": Case("txt2img", {"prompt": "x", "sampler_name": "No such sampler", "steps": 1,
                                            "width": 64, "height": 64, "seed": 1}),
    "bad-unknown-scheduler": Case("txt2img", {"prompt": "x", "scheduler": "No such schedule", "steps": 1,
                                              "width": 64, "height": 64, "seed": 1}),
    "bad-unknown-option": Case("txt2img", {"prompt": "x", "override_settings": {"no_such_option": 1}, "steps": 1,
                                           "width": 64, "height": 64}),
    "bad-unknown-field": Case("txt2img", {"prompt": "x", "stepz": 3, "steps": 1, "width": 64, "height": 64,
                                          "seed": 1}),
    "bad-not-json": Case("txt2img", b"prompt=a cat&steps=2", "application/x-www-form-urlencoded"),
    "bad-broken-json": Case("txt2img", b'{"prompt": "a cat",', "application/json"),
    "bad-negative-steps": Case("txt2img", {"prompt": "x", "steps": -1, "width": 64, "height": 64}),
    "bad-zero-steps": Case("txt2img", {"prompt": "x", "steps": 0, "width": 64, "height": 64}),
    "bad-huge-width": Case("txt2img", {"prompt": "x", "steps": 1, "width": 2560, "height": 64}),
    "bad-hires-without-denoising": Case("txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                    "enable_hr": True}),
    "bad-unknown-upscaler": Case("txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                             "enable_hr": True, "denoising_strength": 0.5,
                                             "hr_upscaler": "No such upscaler"}),
    "bad-unknown-script": Case("txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                           "script_name": "no such script"}),
    "bad-img2img-no-image": Case("img2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64}),
    "bad-img2img-bad-base64": Case("img2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                               "init_images": ["not an image"]}),
    "bad-unknown-model-override": Case("txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                   "override_settings": {"sd_model_checkpoint": "no-such-model"}}),
}


@dataclass
class Answer:
    status: int
    body: Any  # the parsed JSON, or the text when it is not JSON


def ask(url: str, case: Case) -> Answer:
    if isinstance(case.body, bytes):
        reply = requests.post(f"{url}/sdapi/v1/{case.path}", data=case.body,
                              headers={"Content-Type": case.content_type}, timeout=TIMEOUT)
    else:
        reply = requests.post(f"{url}/sdapi/v1/{case.path}", json=case.body, timeout=TIMEOUT)
    try:
        return Answer(reply.status_code, reply.json())
    except ValueError:
        return Answer(reply.status_code, reply.text)


# --- the differences that are meant (README: "Differences from A1111"); any other one fails -----------------

# Status codes: case -> {engine ("*": both): (the kit's status, why)}.
ALLOWED_STATUS: dict[str, dict[str, tuple[int, str]]] = {
    # The kit checks sizes and step counts before queueing a job (models.py): a 422 naming the field and its
    # range; A1111 fails inside the sampler (a 500 ZeroDivisionError or RuntimeError) or makes a huge image.
    "bad-negative-steps": {"*": (422, "steps are checked up front")},
    "bad-zero-steps": {"*": (422, "steps are checked up front")},
    "bad-huge-width": {"*": (422, "sizes are limited to 2048 px a side, so one request cannot stall a shared server")},
    # An override_settings sd_model_checkpoint that names no model: A1111 drops it without a word and uses the
    # loaded model; the kit says so with a 500, as both do for the same name in POST /options.
    "bad-unknown-model-override": {"*": (500, "an unknown model is an error, not silently another model")},
}

# pydantic v2 (the kit) adds these to a 422's items; loc, msg and type are in both.
ALLOWED_422_ITEM_EXTRAS = frozenset({"input", "ctx", "url"})
# info keys only the kit writes: "comments" (a LoRA not found, ...: A1111 says it only in its web UI) and
# "interrupted" (the kit's client needs no extra /progress call to know).
ALLOWED_INFO_EXTRAS = frozenset({"comments", "interrupted"})
# Infotext keys A1111 writes that the kit does not.
ALLOWED_MISSING_INFOTEXT_KEYS: frozenset = frozenset()
# The model's own entries differ by construction (another model, the kit's version).
MODEL_INFOTEXT_KEYS = frozenset({"Model", "Model hash", "Version"})


def allowed_infotext_extras(engine: str) -> set:
    """Infotext keys the kit may add: the diffusers engine decodes with TAESD ("VAE Decoder: TAESD", A1111's own
    key when its TAESD decodes the final image)."""
    return {"VAE Decoder"} if engine == "diffusers" else set()


def compare_case(case: Case, real: Answer, kit: Answer, engine: str, name: str) -> list[str]:
    allowed = ALLOWED_STATUS.get(name, {})
    expected = allowed.get(engine, allowed.get("*", (real.status, "")))[0]
    if kit.status != expected:
        return [f"status: A1111 {real.status}, the kit {kit.status} (expected {expected}): {str(kit.body)[:300]}"]
    if expected != real.status:  # one of A1111's two error bodies
        a1111_shapes = ({"error": "", "detail": "", "body": "", "errors": ""},
                        {"detail": [{"loc": ["body"], "msg": "", "type": ""}]})
        return min((compare_errors(shape, kit.body) for shape in a1111_shapes), key=len)
    if real.status != 200:
        return compare_errors(real.body, kit.body)
    return compare_success(case, real.body, kit.body, engine)


# --- comparing answers ---------------------------------------------------------------------------------------


def type_name(value: Any) -> str:
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def shape(value: Any, depth: int = 2) -> Any:
    """The structure of a JSON value: a dict's keys with their shapes, a list's element shapes, else the type."""
    if isinstance(value, dict) and depth:
        return {key: shape(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list) and depth:
        return sorted({json.dumps(shape(item, depth - 1), sort_keys=True) for item in value})
    return type_name(value)


def key_types(real: dict, kit: dict, where: str, ignore: frozenset = frozenset()) -> list[str]:
    """Keys missing on either side, and values of another type (null matches anything: a value A1111 leaves
    unset may be set on the kit's side, and the other way round)."""
    problems = [f"{where}: A1111 has {key!r}, the kit does not" for key in real if key not in kit and key not in ignore]
    problems += [f"{where}: the kit has {key!r}, A1111 does not" for key in kit
                 if key not in real and key not in ignore]
    for key in real.keys() & kit.keys() - ignore:
        a, b = real[key], kit[key]
        if a is not None and b is not None and type_name(a) != type_name(b):
            problems.append(f"{where}[{key!r}]: A1111 {type_name(a)} {a!r:.60}, the kit {type_name(b)} {b!r:.60}")
    return problems


def info_of(body: dict) -> dict:
    return json.loads(body["info"]) if isinstance(body["info"], str) else body["info"]


def compare_errors(real: Any, kit: Any) -> list[str]:
    """The same error body: A1111's ``{error, detail, body, errors}`` with the same types, or FastAPI's 422
    ``{detail: [{loc, msg, type}, ...]}`` (pydantic v2's items add keys, ALLOWED_422_ITEM_EXTRAS)."""
    if not isinstance(real, dict) or not isinstance(kit, dict):
        return [f"error body: A1111 {type_name(real)}, the kit {type_name(kit)}"]
    if isinstance(real.get("detail"), list):
        if not isinstance(kit.get("detail"), list) or set(kit) != {"detail"} or not kit["detail"]:
            return [f"a 422: A1111 answers {{detail: [...]}}, the kit {shape(kit)}"]
        problems = []
        for item in kit["detail"]:
            problems += key_types(real["detail"][0], item, "a 422's detail item", ALLOWED_422_ITEM_EXTRAS)
            if item.get("loc", [None])[0] != "body":
                problems.append(f"a 422's loc does not start with 'body': {item.get('loc')}")
        return problems
    return key_types(real, kit, "error body")


def compare_success(case: Case, real: dict, kit: dict, engine: str) -> list[str]:
    """The same structure of a 200: parameters, info, infotexts, seeds and the number of images."""
    problems = key_types(real, kit, "reply")
    problems += key_types(real["parameters"], kit["parameters"], "parameters")
    real_info, kit_info = info_of(real), info_of(kit)
    problems += key_types(real_info, kit_info, "info", ALLOWED_INFO_EXTRAS)
    if len(real["images"]) != len(kit["images"]):
        problems.append(f"images: A1111 {len(real['images'])}, the kit {len(kit['images'])}")
    problems += compare_seeds(case, real_info, kit_info)
    extra = {key for key, value in real_info["extra_generation_params"].items() if value is not None}
    kit_extra = {key for key, value in kit_info["extra_generation_params"].items() if value is not None}
    allowed = allowed_infotext_extras(engine)
    if extra - kit_extra - ALLOWED_MISSING_INFOTEXT_KEYS:
        problems.append(f"info.extra_generation_params: the kit lacks {sorted(extra - kit_extra)}")
    if kit_extra - extra - allowed:
        problems.append(f"info.extra_generation_params: the kit adds {sorted(kit_extra - extra)}")
    if len(real_info["infotexts"]) != len(kit_info["infotexts"]):
        problems.append(f"infotexts: A1111 {len(real_info['infotexts'])}, the kit {len(kit_info['infotexts'])}")
    for a, b in zip(real_info["infotexts"], kit_info["infotexts"]):
        problems += compare_infotexts(case, parse_infotext(a), parse_infotext(b), allowed)
    return problems


def compare_infotexts(case: Case, real: dict, kit: dict, allowed_extras: set) -> list[str]:
    """The kit's infotext has A1111's keys (ALLOWED_MISSING_INFOTEXT_KEYS aside) and only the allowed extras;
    the values agree, except the model's own (name, hash, version) and random seeds."""
    problems = [f"infotext: A1111 writes {key!r}, the kit does not" for key in real
                if key not in kit and key not in ALLOWED_MISSING_INFOTEXT_KEYS]
    problems += [f"infotext: the kit writes {key!r}, A1111 does not" for key in kit
                 if key not in real and key not in allowed_extras]
    random_seed = case.body.get("seed", -1) == -1
    random_subseed = case.body.get("subseed", -1) == -1
    skip = set(MODEL_INFOTEXT_KEYS) | ({"Seed"} if random_seed else set())
    skip |= {"Variation seed"} if random_subseed else set()
    for key in real.keys() & kit.keys() - skip:
        if real[key] != kit[key]:
            problems.append(f"infotext[{key!r}]: A1111 {real[key]!r}, the kit {kit[key]!r}")
    return problems


def compare_seeds(case: Case, real: dict, kit: dict) -> list[str]:
    """Seeds as A1111 gives them: the one asked for, or a random one in [0, 4294967294) for -1; one per image,
    consecutive unless a variation strength is set (then the subseeds count up instead)."""
    problems = []
    for name in ("seed", "subseed"):
        asked = case.body.get(name, -1)
        values = kit[f"all_{name}s"]
        if asked == -1:
            if not (isinstance(kit[name], int) and 0 <= kit[name] < 4294967294):
                problems.append(f"info.{name}: not a random seed for -1: {kit[name]!r}")
        elif kit[name] != real[name] or kit[name] != asked:
            problems.append(f"info.{name}: A1111 {real[name]}, the kit {kit[name]} (asked {asked})")
        steps = [v - real[f"all_{name}s"][0] for v in real[f"all_{name}s"]]
        if [v - values[0] for v in values] != steps or values[0] != kit[name]:
            problems.append(f"info.all_{name}s: A1111 {real[f'all_{name}s']}, the kit {values}")
    return problems


# --- the servers: one real A1111 per module, the kit's server on each engine ----------------------------------


@pytest.fixture(scope="module")
def a1111(tmp_path_factory):
    from real_a1111 import a1111_source, start_a1111

    if a1111_source() is None:
        pytest.fail("no A1111 to test against: set A1111_DIR, or put ../shared/a1111/ beside the kit")
    server = start_a1111(tmp_path_factory.mktemp("a1111"))
    # A1111 1.10 restores an override_settings entry afterwards only when the option was set before (it saves
    # the values in opts.data, which a fresh config.json lacks): set Clip skip once, so that one request's
    # override does not leak into the next answers. The kit always restores.
    requests.post(f"{server.url}/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1}, timeout=TIMEOUT)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def a1111_answer(a1111):
    """``a1111_answer(name)``: A1111's answer to CASES[name], asked once and shared by both engines' tests."""
    answers: dict[str, Answer] = {}

    def get(name: str) -> Answer:
        if name not in answers:
            answers[name] = ask(a1111.url, CASES[name])
        return answers[name]

    return get


@pytest.fixture(scope="module", params=["preview", "diffusers"])
def kit(request, tmp_path_factory, a1111):
    """The kit's server on one engine (diffusers: tiny_sd's model with its tiny decoder), with an empty LoRA
    folder as A1111's, and a short step delay so that /progress can be watched during a job."""
    from sdserver import serve_in_thread

    options = {}
    if request.param == "diffusers":
        models = request.getfixturevalue("tiny_models")
        options = {"model": str(models["a"]), "decoder": str(models["taesd"])}
    loras = tmp_path_factory.mktemp("no-loras")
    server = serve_in_thread(host="127.0.0.1", port=0, engine=request.param, lora_dir=str(loras), step_delay=0.002,
                             **options)
    server.engine = request.param
    yield server
    server.stop()


# --- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_same_request_gets_the_same_answer(name, kit, a1111_answer):
    """Status, error body, parameters, info, infotexts and seeds as A1111's (the allow-lists aside)."""
    real = a1111_answer(name)
    problems = compare_case(CASES[name], real, ask(kit.url, CASES[name]), kit.engine, name)
    assert not problems, "\n".join(problems)


def test_the_hires_fix_of_a1111s_own_test_answers_200(kit):
    """Issue 25's case: A1111's own hires payload (denoising_strength 0, the API's default) was a 500 on the
    diffusers engine."""
    assert ask(kit.url, CASES["a1111-txt2img-hires-fix"]).status == 200


def get(url: str, path: str) -> Any:
    reply = requests.get(f"{url}/sdapi/v1/{path}", timeout=TIMEOUT)
    assert reply.status_code == 200, (path, reply.text[:300])
    return reply.json()


# Options whose values differ on purpose (keys and types never may).
ALLOWED_OPTION_VALUES = {
    "sd_model_checkpoint": "another model",
    "sd_checkpoint_hash": "another model",
    # The kit's live previews are nearly free, so it makes one every step (A1111: every 10, they cost GPU time).
    "show_progress_every_n_steps": "the kit's default",
}


# Options of the built-in extensions that register them in on_ui_settings (hypertile, LDSR, SwinIR): A1111 has
# them only when it builds its web UI, not with --nowebui as here; the kit always has them.
UI_ONLY_OPTION_PREFIXES = ("hypertile_", "ldsr_", "SWIN_")
# Output folders: A1111's are absolute paths under its data folder, the kit's are A1111's defaults (it saves no
# files, and never lets the API change them).
PATH_OPTION_PREFIX = "outdir_"


def test_options_have_a1111s_keys_types_and_defaults(kit, a1111):
    """GET /options: the kit's table (sdserver/a1111_options.json, generated from A1111's source) against the
    live answer: the same keys in the same order, the same value types, the same defaults."""
    real, mine = get(a1111.url, "options"), get(kit.url, "options")
    mine_here = {key: value for key, value in mine.items() if not key.startswith(UI_ONLY_OPTION_PREFIXES)}
    problems = key_types(real, mine_here, "options")
    problems += [f"options[{key!r}]: A1111 {real[key]!r}, the kit {mine[key]!r}" for key in real.keys() & mine.keys()
                 if real[key] != mine[key] and key not in ALLOWED_OPTION_VALUES
                 and not key.startswith(PATH_OPTION_PREFIX)]
    if not problems and list(real) != list(mine_here):
        problems.append("options: the same keys in another order")
    assert not problems, "\n".join(problems)


def test_samplers_schedulers_models_and_upscalers_have_a1111s_shape(kit, a1111):
    real_samplers = {item["name"]: item for item in get(a1111.url, "samplers")}
    kit_samplers = {item["name"]: item for item in get(kit.url, "samplers")}
    # The diffusers engine lists only the samplers diffusers has (A1111's others would be a 422 there).
    if kit.engine == "preview":
        assert list(kit_samplers) == list(real_samplers)
    assert set(kit_samplers) <= set(real_samplers) and {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= set(kit_samplers)
    for name, item in kit_samplers.items():
        assert item == real_samplers[name], name  # name, aliases, options (strings, as pydantic v1 wrote them)
    real_schedulers = {item["label"]: item for item in get(a1111.url, "schedulers")}
    kit_schedulers = {item["label"]: item for item in get(kit.url, "schedulers")}
    if kit.engine == "preview":
        assert list(kit_schedulers) == list(real_schedulers)
    assert set(kit_schedulers) <= set(real_schedulers) and {"Automatic", "Karras"} <= set(kit_schedulers)
    for label, item in kit_schedulers.items():
        assert item == real_schedulers[label], label
    for real_model, kit_model in zip(get(a1111.url, "sd-models"), get(kit.url, "sd-models")):
        assert not key_types(real_model, kit_model, "sd-models"), (real_model, kit_model)
        assert kit_model["title"] == get(kit.url, "options")["sd_model_checkpoint"]
    real_upscalers = {item["name"]: item for item in get(a1111.url, "upscalers")}
    for item in get(kit.url, "upscalers"):  # A1111 also lists its model upscalers (weights downloaded on use)
        assert not key_types(real_upscalers[item["name"]], item, "upscalers"), item
    assert get(kit.url, "latent-upscale-modes") == get(a1111.url, "latent-upscale-modes")
    assert get(kit.url, "loras") == get(a1111.url, "loras") == []  # both LoRA folders are empty


def progress_during_a_job(url: str) -> tuple[dict, dict, dict]:
    """(/progress while a long job runs, seen from a second thread; the job's reply; /progress after it)."""
    seen: list[dict] = []

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = get(url, "progress?skip_current_image=false")
            if state["state"]["job_count"] and state["state"]["sampling_step"] >= 2:
                seen.append(state)
                requests.post(f"{url}/sdapi/v1/interrupt", timeout=TIMEOUT)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    reply = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a long job", "seed": 5, "steps": 1000,
                                                             "width": 64, "height": 64, "sampler_name": "Euler"},
                          timeout=TIMEOUT)
    watcher.join()
    assert seen and reply.status_code == 200, reply.text[:300]
    return seen[0], reply.json(), get(url, "progress")


@pytest.fixture(scope="module")
def a1111_progress(a1111):
    return progress_during_a_job(a1111.url)


def test_progress_during_and_after_a_job(kit, a1111_progress):
    real_busy, real_reply, real_idle = a1111_progress
    busy, reply, idle = progress_during_a_job(kit.url)
    problems = key_types(real_busy, busy, "busy /progress") + key_types(real_busy["state"], busy["state"], "busy state")
    problems += key_types(real_idle, idle, "idle /progress")
    problems += key_types(real_idle["state"], idle["state"], "idle state")
    for field in ("job", "job_count", "job_no", "sampling_steps", "interrupted", "skipped", "stopping_generation"):
        if real_busy["state"][field] != busy["state"][field]:
            problems.append(f"busy state[{field!r}]: A1111 {real_busy['state'][field]!r}, "
                            f"the kit {busy['state'][field]!r}")
    for field in ("job", "job_count", "job_no", "sampling_step", "sampling_steps", "interrupted", "skipped",
                  "stopping_generation"):
        if real_idle["state"][field] != idle["state"][field]:
            problems.append(f"idle state[{field!r}]: A1111 {real_idle['state'][field]!r}, "
                            f"the kit {idle['state'][field]!r}")
    for name, (real, mine) in {"progress": (real_idle["progress"], idle["progress"]),
                               "eta_relative": (real_idle["eta_relative"], idle["eta_relative"]),
                               "current_image": (real_idle["current_image"], idle["current_image"])}.items():
        if real != mine:
            problems.append(f"idle {name}: A1111 {real!r}, the kit {mine!r}")
    if not 0 < busy["progress"] < 1:
        problems.append(f"busy progress {busy['progress']}")
    if info_of(reply)["job_timestamp"] != busy["state"]["job_timestamp"]:
        problems.append("the reply's job_timestamp is not the one /progress showed")
    if len(reply["images"]) != len(real_reply["images"]):
        problems.append(f"an interrupted job's images: A1111 {len(real_reply['images'])}, "
                        f"the kit {len(reply['images'])}")
    assert not problems, "\n".join(problems)

"""The kit's A1111-compatible server over real HTTP on 127.0.0.1, answering as A1111 1.10 does.

Each server runs in a background thread on a free port (``serve_in_thread``); the tests talk
to it with plain ``requests``, and once with the ``webuiapi`` client, exactly as a notebook would.
The protocol tests run once per engine: the preview engine, and the diffusers engine on a tiny
random-weight model when diffusers is installed (``EXPECTED`` lists where the two may differ).
Tests of the preview engine's own behaviour (its sampler fallback, hires fix, fuzzing, the command
line) take ``preview_server``. Images are 64x64 and steps few, so the file runs in about a minute.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import ENGINES, decode_b64, free_port, same_pixels, txt2img_reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.infotext import parse_infotext
from sdserver import serve_in_thread
from sdserver.models import Txt2ImgRequest

SMALL = {"width": 64, "height": 64, "steps": 3}

# info's keys, in A1111 1.10's order (its processing.Processed.js()).
INFO_KEYS = [
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
    "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
    "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
    "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
    "is_using_inpainting_conditioning", "version",
]

SAMPLERS_1_10 = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
    "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
    "PLMS", "UniPC", "LCM",
]

USERS = "alice:s3cret-pw,bob:other-pw"


# --- fixtures and helpers -----------------------------------------------------------------------


# What differs between the engines: the model's names, the version, the infotext's extra entries
# and the pixel tolerance (a real model's float maths may round a uint8 value differently in a batch).
EXPECTED = {
    "preview": {"model_name": "offline-preview", "title": r"offline-preview\.safetensors \[0{10}\]",
                "version": r"kit-preview", "extra_keys": [], "tolerance": 0},
    "diffusers": {"model_name": "tiny-sd", "title": r"tiny-sd \[[0-9a-f]{10}\]",
                  "version": r"kit-diffusers-[\d.]+", "extra_keys": ["VAE Decoder"], "tolerance": 1},
}


# The OpenVINO backend's protocol is tested in test_client.py and test_openvino.py (its answers differ
# where it refuses with a 422, e.g. Clip skip), so this module runs the engines it has expectations for.
@pytest.fixture(scope="module", params=[engine for engine in ENGINES if engine in EXPECTED])
def engine(request) -> str:
    """The engine of this module's servers; each protocol test runs once per engine."""
    return request.param


@pytest.fixture(scope="module")
def expected(engine) -> dict:
    return EXPECTED[engine]


@pytest.fixture(scope="module")
def server(servers, engine):
    return servers(engine)


@pytest.fixture(scope="module")
def slow_server(servers, engine):
    """Each sampling step takes at least 50 ms, so progress, interrupt and skip can be watched."""
    return servers(engine, step_delay=0.05)


@pytest.fixture(scope="module")
def auth_server(servers, engine):
    return servers(engine, auth=USERS)


@pytest.fixture(scope="module")
def preview_server(servers):
    """The preview engine's server, for tests of that engine's own behaviour."""
    return servers("preview")


def txt2img(server, **payload) -> dict:
    return txt2img_reply(server, {**SMALL, **payload})


def pixels(b64: str) -> bytes:
    return decode_b64(b64).convert("RGB").tobytes()


def in_background(function, *args, **kwargs) -> dict:
    """Run ``function`` in a thread; the returned dict gets "result"/"error" and "elapsed"."""
    box: dict = {}

    def run():
        started = time.monotonic()
        try:
            box["result"] = function(*args, **kwargs)
        except Exception as error:  # reported by the test that reads the box
            box["error"] = error
        box["elapsed"] = time.monotonic() - started

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def wait_for_step(server, minimum: int = 1, timeout: float = 10.0) -> dict:
    """Poll /progress until the running job has done at least ``minimum`` steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = requests.get(f"{server.url}/sdapi/v1/progress", timeout=5).json()
        if progress["state"]["job_count"] > 0 and progress["state"]["sampling_step"] >= minimum:
            return progress
        time.sleep(0.01)
    raise AssertionError("the job never reached the expected step")


# --- txt2img ------------------------------------------------------------------------------------


def test_txt2img_reply_has_a1111_shape_real_seeds_and_infotext_chunks(server, expected):
    reply = txt2img(server, prompt="a cat on a sofa", negative_prompt="blurry", seed=1000, batch_size=2, n_iter=2)

    assert list(reply) == ["images", "parameters", "info"]
    assert isinstance(reply["info"], str)  # a JSON *string*, as in A1111
    info = json.loads(reply["info"])
    assert list(info) == INFO_KEYS
    assert info["seed"] == 1000 and info["all_seeds"] == [1000, 1001, 1002, 1003]
    assert info["all_subseeds"] == [info["subseed"] + i for i in range(4)]
    assert info["all_prompts"] == ["a cat on a sofa"] * 4
    assert info["sampler_name"] == "Euler"  # sampler_index's default
    assert info["index_of_first_image"] == 0 and re.fullmatch(expected["version"], info["version"])
    assert len(reply["images"]) == len(info["infotexts"]) == 4

    for i, b64 in enumerate(reply["images"]):
        image = decode_b64(b64)
        assert image.format == "PNG" and image.size == (64, 64)
        text = image.info["parameters"]
        assert text == info["infotexts"][i]
        lines = text.split("\n")
        assert lines[:2] == ["a cat on a sofa", "Negative prompt: blurry"]
        keys = [pair.split(":")[0] for pair in lines[2].split(", ")]
        assert keys == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                        *expected["extra_keys"], "Version"]
        parsed = parse_infotext(text)
        assert parsed["Seed"] == str(1000 + i)
        assert (parsed["Steps"], parsed["Sampler"], parsed["CFG scale"]) == ("3", "Euler", "7.0")
        assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")
        assert parsed["Model"] == expected["model_name"]


def test_parameters_echo_the_request_with_defaults_and_unknown_keys_are_ignored(server):
    reply = txt2img(server, prompt="x", steps="2", cfg_scale=5, negative_promp="typo", guidance_scale=3)
    params = reply["parameters"]
    assert list(params) == list(Txt2ImgRequest.model_fields)  # every A1111 1.10 txt2img field, in order
    assert "negative_promp" not in params and "guidance_scale" not in params
    assert params["steps"] == 2 and params["cfg_scale"] == 5.0  # "2" and 5 coerced as pydantic v1 did
    assert params["seed"] == -1  # the echo keeps -1; the real seed is in info
    assert params["sampler_index"] == "Euler" and params["sampler_name"] is None
    assert params["denoising_strength"] is None and params["send_images"] is True
    assert params["alwayson_scripts"] == {} and params["script_args"] == []
    assert params["n_iter"] == 1 and params["batch_size"] == 1 and params["hr_scale"] == 2.0
    info = json.loads(reply["info"])
    assert 0 <= info["seed"] < 4294967294 and info["steps"] == 2 and info["cfg_scale"] == 5.0


def test_null_means_the_default():
    request = Txt2ImgRequest.model_validate({"steps": None, "width": None, "prompt": None})
    assert (request.value("steps"), request.value("width"), request.value("prompt")) == (50, 512, "")


@pytest.mark.parametrize("payload, field", [
    ({"steps": "many"}, "steps"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"width": 100000}, "width"),
    ({"send_images": "perhaps"}, "send_images"),
])
def test_values_that_cannot_be_coerced_give_fastapi_422_naming_the_field(server, payload, field):
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json=payload, timeout=30)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert isinstance(detail, list)
    assert any(error["loc"][:2] == ["body", field] for error in detail), detail


def test_same_inputs_give_identical_pixels_and_another_seed_differs(server, expected):
    first = txt2img(server, prompt="a lighthouse", seed=42)["images"][0]
    again = txt2img(server, prompt="a lighthouse", seed=42)["images"][0]
    other = txt2img(server, prompt="a lighthouse", seed=43)["images"][0]
    batch = txt2img(server, prompt="a lighthouse", seed=42, batch_size=2)["images"]
    assert pixels(first) == pixels(again)  # the same request twice: identical on every engine
    assert not same_pixels(first, other, 5)
    # image i of a batch is the image of seed + i, as with A1111
    tolerance = expected["tolerance"]
    assert same_pixels(batch[0], first, tolerance) and same_pixels(batch[1], other, tolerance)


def test_random_seeds_and_variation_seeds(server):
    seeds = {json.loads(txt2img(server, seed=-1)["info"])["seed"] for _ in range(3)}
    assert len(seeds) > 1 and all(0 <= seed < 4294967294 for seed in seeds)

    info = json.loads(txt2img(server, seed=7, subseed=100, subseed_strength=0.3, batch_size=3)["info"])
    assert info["all_seeds"] == [7, 7, 7]  # with a variation strength the seed stays ...
    assert info["all_subseeds"] == [100, 101, 102]  # ... and the subseeds count up
    parsed = parse_infotext(info["infotexts"][1])
    assert parsed["Variation seed"] == "101" and parsed["Variation seed strength"] == "0.3"


@pytest.mark.parametrize("sent, sampler, schedule", [
    ({}, "Euler", "Automatic"),
    # A1111 writes the schedule that ran: DPM++ 2M's "Automatic" is its own default, Karras (sampler_info.py)
    ({"sampler_name": "DPM++ 2M Karras"}, "DPM++ 2M", "Karras"),
    ({"sampler_name": "Euler a", "scheduler": "Karras"}, "Euler a", "Karras"),
    ({"sampler_name": "Euler a Exponential"}, "Euler a", "Exponential"),
    ({"sampler_name": "k_euler_a"}, "DPM++ 2M", "Karras"),  # unknown names fall back, as in 1.10
])
def test_sampler_and_scheduler_resolution(preview_server, sent, sampler, schedule):
    info = json.loads(txt2img(preview_server, **sent)["info"])
    assert info["sampler_name"] == sampler
    parsed = parse_infotext(info["infotexts"][0])
    assert (parsed["Sampler"], parsed["Schedule type"]) == (sampler, schedule)
    expected_extra = {} if schedule == "Automatic" else {"Schedule type": schedule}
    assert info["extra_generation_params"] == expected_extra


def test_send_images_false_returns_no_images_but_full_info(server):
    reply = txt2img(server, send_images=False, batch_size=2)
    assert reply["images"] == []
    assert len(json.loads(reply["info"])["infotexts"]) == 2


def test_infotext_field_fills_only_the_fields_not_sent(server):
    pasted = "a dog\nSteps: 3, Sampler: Euler a, CFG scale: 5.0, Seed: 77, Size: 64x48, Clip skip: 2"
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={"infotext": pasted, "steps": 2}, timeout=30)
    info = json.loads(reply.json()["info"])
    assert (info["prompt"], info["seed"], info["sampler_name"], info["height"]) == ("a dog", 77, "Euler a", 48)
    assert info["steps"] == 2  # sent explicitly: the request wins
    assert info["clip_skip"] == 2


def test_override_settings_apply_to_one_request_and_errors_are_a1111_500s(server):
    info = json.loads(txt2img(server, override_settings={"CLIP_stop_at_last_layers": 2})["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    options = requests.get(f"{server.url}/sdapi/v1/options", timeout=10).json()
    assert options["CLIP_stop_at_last_layers"] == 1  # restored afterwards (the default)

    url = f"{server.url}/sdapi/v1/txt2img"
    reply = requests.post(url, json={**SMALL, "override_settings": {"no_such_option": 1}}, timeout=10)
    assert reply.status_code == 500
    assert reply.json() == {"error": "KeyError", "detail": "", "body": "", "errors": "'no_such_option'"}
    reply = requests.post(url, json={**SMALL, "override_settings": {"sd_model_checkpoint": "nope"}}, timeout=10)
    assert reply.status_code == 500
    body = reply.json()  # the diffusers engine adds where it looked
    assert {**body, "errors": ""} == {"error": "RuntimeError", "detail": "", "body": "", "errors": ""}
    assert body["errors"].startswith("model 'nope' not found")


def test_hires_fix_draws_at_the_target_size_and_needs_denoising_strength(preview_server):
    server = preview_server  # one pass at the target size; the diffusers engine runs two (test_hires.py)
    reply = txt2img(server, enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_upscaler="Latent")
    info = json.loads(reply["info"])
    assert decode_b64(reply["images"][0]).size == (128, 128)
    assert (info["width"], info["height"]) == (64, 64)  # info reports the first pass, as A1111
    parsed = parse_infotext(info["infotexts"][0])
    assert (parsed["Denoising strength"], parsed["Hires upscale"], parsed["Hires upscaler"]) == ("0.5", "2.0", "Latent")

    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True}, timeout=10)
    assert reply.status_code == 500 and reply.json()["error"] == "TypeError"
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img",
                          json={**SMALL, "enable_hr": True, "denoising_strength": 0.5, "hr_upscaler": "Magic"},
                          timeout=10)
    assert reply.status_code == 500 and reply.json()["errors"] == "could not find upscaler named Magic"


def test_unknown_script_is_a1111s_422(server):
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**SMALL, "script_name": "X/Y/Z plot"},
                          timeout=10)
    assert reply.status_code == 422
    assert reply.json() == {"error": "HTTPException", "detail": "Script 'X/Y/Z plot' not found", "body": "",
                            "errors": ""}


# --- progress, interrupt, skip, one job at a time -------------------------------------------------


def test_progress_when_idle(server):
    reply = requests.get(f"{server.url}/sdapi/v1/progress", params={"skip_current_image": "false"}, timeout=10)
    assert reply.status_code == 200 and "X-Process-Time" in reply.headers
    progress = reply.json()
    assert list(progress) == ["progress", "eta_relative", "state", "current_image", "textinfo"]
    assert progress["progress"] == 0 and progress["eta_relative"] == 0 and progress["current_image"] is None
    assert list(progress["state"]) == ["skipped", "interrupted", "stopping_generation", "job", "job_count",
                                       "job_timestamp", "job_no", "sampling_step", "sampling_steps"]
    assert progress["state"]["job"] == "" and progress["state"]["job_count"] == 0


def test_progress_during_a_generation(slow_server):
    job = in_background(txt2img, slow_server, steps=20)
    seen = []
    first = wait_for_step(slow_server)
    while job["thread"].is_alive():
        progress = requests.get(f"{slow_server.url}/sdapi/v1/progress", timeout=5).json()
        if progress["state"]["job_count"] > 0:
            seen.append(progress)
        time.sleep(0.05)
    job["thread"].join()
    assert "result" in job, job.get("error")

    assert first["state"]["job"] == "scripts_txt2img" and first["state"]["sampling_steps"] == 20
    steps = [p["state"]["sampling_step"] for p in seen]
    assert steps == sorted(steps) and steps[-1] > steps[0]  # the step count advances
    for p in seen:
        state = p["state"]
        expected = 0.01 + state["job_no"] / state["job_count"] + state["sampling_step"] / 20 / state["job_count"]
        assert p["progress"] == pytest.approx(min(expected, 1.0))
        # A1111's ETA uses the uncapped progress, so it dips just below 0 on the very last step.
        assert p["eta_relative"] >= 0 or state["sampling_step"] == state["sampling_steps"]
    assert decode_b64(first["current_image"]).format == "PNG"  # a live preview after each step

    # skip_current_image leaves the preview out; after the job, /progress is idle again
    job = in_background(txt2img, slow_server, steps=10)
    wait_for_step(slow_server)
    skipped = requests.get(f"{slow_server.url}/sdapi/v1/progress", params={"skip_current_image": True}).json()
    assert skipped["current_image"] is None
    job["thread"].join()
    assert requests.get(f"{slow_server.url}/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_interrupt_returns_200_with_the_partial_images_quickly(slow_server):
    # 3 batches x 100 steps x 50 ms would take 15 s
    job = in_background(txt2img, slow_server, steps=100, n_iter=3, seed=9)
    progress = wait_for_step(slow_server, minimum=2)
    assert progress["state"]["job"] == "Batch 1 out of 3" and progress["state"]["job_count"] == 3
    reply = requests.post(f"{slow_server.url}/sdapi/v1/interrupt", timeout=5)
    assert reply.status_code == 200 and reply.json() == {}
    job["thread"].join(5)
    assert "result" in job, job.get("error")
    assert job["elapsed"] < 5
    assert len(job["result"]["images"]) == 1  # the current batch, partly done; the others are skipped
    assert json.loads(job["result"]["info"])["all_seeds"] == [9, 10, 11]
    state = requests.get(f"{slow_server.url}/sdapi/v1/progress").json()["state"]
    assert state["interrupted"] is True  # visible until the next job starts

    # the flag is reset by the next job, which runs to the end
    reply = txt2img(slow_server, steps=2, n_iter=2)
    assert len(reply["images"]) == 2


def test_skip_abandons_only_the_current_batch(slow_server, server, expected):
    job = in_background(txt2img, slow_server, steps=40, n_iter=2, seed=5)
    wait_for_step(slow_server, minimum=2)
    reply = requests.post(f"{slow_server.url}/sdapi/v1/skip", timeout=5)
    assert reply.status_code == 200 and reply.json() is None
    job["thread"].join(10)
    images = job["result"]["images"]
    assert len(images) == 2  # the skipped batch comes back partly done, the next one complete
    full = txt2img(server, steps=40, n_iter=2, seed=5)["images"]
    assert not same_pixels(images[0], full[0], 2)
    assert same_pixels(images[1], full[1], expected["tolerance"])


def test_generations_run_one_at_a_time_and_none_is_rejected():
    with serve_in_thread(step_delay=0.05) as handle:
        engine = handle.app.state.engine
        original = engine.generate
        active, most_active, intervals = [0], [0], []
        guard = threading.Lock()

        def counting_generate(job, on_step):
            with guard:
                active[0] += 1
                most_active[0] = max(most_active[0], active[0])
            started = time.monotonic()
            try:
                return original(job, on_step)
            finally:
                with guard:
                    active[0] -= 1
                    intervals.append((started, time.monotonic()))

        engine.generate = counting_generate
        jobs = [in_background(txt2img, handle, steps=10, prompt=f"job {i}") for i in range(3)]
        for job in jobs:
            job["thread"].join(30)
            assert "result" in job, job.get("error")
            assert len(job["result"]["images"]) == 1
        assert most_active[0] == 1
        intervals.sort()
        assert all(earlier[1] <= later[0] for earlier, later in zip(intervals, intervals[1:]))


# --- auth ---------------------------------------------------------------------------------------


def test_api_auth_protects_every_sdapi_route_with_a1111_bodies(auth_server):
    url = auth_server.url
    missing = requests.get(f"{url}/sdapi/v1/sd-models", timeout=10)
    assert missing.status_code == 401
    assert missing.json() == {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}
    assert "WWW-Authenticate" not in missing.headers  # no browser password prompt, as in A1111

    wrong = requests.get(f"{url}/sdapi/v1/sd-models", auth=("alice", "nope"), timeout=10)
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "HTTPException", "detail": "Incorrect username or password", "body": "",
                            "errors": ""}
    assert requests.get(f"{url}/sdapi/v1/sd-models", auth=("mallory", "s3cret-pw")).status_code == 401

    assert requests.get(f"{url}/sdapi/v1/progress", timeout=10).status_code == 401  # progress too
    assert requests.post(f"{url}/sdapi/v1/txt2img", json=SMALL, timeout=10).status_code == 401
    assert requests.get(f"{url}/sdapi/v1/progress", auth=("bob", "other-pw"), timeout=10).status_code == 200
    reply = requests.post(f"{url}/sdapi/v1/txt2img", json=SMALL, auth=("alice", "s3cret-pw"), timeout=30)
    assert reply.status_code == 200 and len(reply.json()["images"]) == 1

    # open, as in A1111: the docs, the schema, and the Lora extension's routes
    assert requests.get(f"{url}/docs", timeout=10).status_code == 200
    assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 200
    assert [item["name"] for item in requests.get(f"{url}/sdapi/v1/loras", timeout=10).json()] == ["kit-demo"]


def test_cmd_flags_never_reveal_credentials(auth_server):
    reply = requests.get(f"{auth_server.url}/sdapi/v1/cmd-flags", auth=("alice", "s3cret-pw"), timeout=10)
    assert reply.status_code == 200
    assert reply.json()["api_auth"] in (None, "***")
    assert "s3cret-pw" not in reply.text and "other-pw" not in reply.text


# --- settings, lists, images in -----------------------------------------------------------------


def test_options_round_trip(server, expected):
    url = f"{server.url}/sdapi/v1/options"
    options = requests.get(url, timeout=10).json()
    title = options["sd_model_checkpoint"]
    assert re.fullmatch(expected["title"], title)
    assert options["samples_format"] == "png" and options["enable_pnginfo"] is True
    for key in ("CLIP_stop_at_last_layers", "show_progress_every_n_steps", "live_previews_enable",
                "eta_noise_seed_delta", "sd_vae"):
        assert key in options

    reply = requests.post(url, json={"eta_noise_seed_delta": 31337}, timeout=10)
    assert reply.status_code == 200 and reply.json() is None
    assert requests.get(url, timeout=10).json()["eta_noise_seed_delta"] == 31337
    info = json.loads(txt2img(server, sampler_name="Euler a", seed=3)["info"])
    assert "ENSD: 31337" in info["infotexts"][0]  # used by ancestral samplers, as in A1111
    requests.post(url, json={"eta_noise_seed_delta": 0}, timeout=10)

    # a checkpoint may be named by its short name; the option then holds the title
    assert requests.post(url, json={"sd_model_checkpoint": expected["model_name"]}, timeout=10).status_code == 200
    assert requests.get(url).json()["sd_model_checkpoint"] == title

    unknown = requests.post(url, json={"no_such_option": 1}, timeout=10)
    assert unknown.status_code == 500
    assert unknown.json() == {"error": "KeyError", "detail": "", "body": "", "errors": "'no_such_option'"}
    model = requests.post(url, json={"sd_model_checkpoint": "sdxl.safetensors"}, timeout=10)
    assert model.status_code == 500
    assert model.json()["error"] == "RuntimeError"
    assert model.json()["errors"].startswith("model 'sdxl.safetensors' not found")
    assert requests.get(url).json()["sd_model_checkpoint"] == title  # unchanged


def test_list_endpoints_have_a1111_shapes(server, engine, expected):
    def get(path):
        reply = requests.get(f"{server.url}/sdapi/v1/{path}", timeout=10)
        assert reply.status_code == 200, path
        return reply.json()

    samplers = get("samplers")
    names = [s["name"] for s in samplers]
    if engine == "preview":
        assert names == SAMPLERS_1_10
    else:  # the samplers diffusers has, in A1111's order
        assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC", "LMS", "Heun"} <= set(names)
        assert names == [name for name in SAMPLERS_1_10 if name in names]
    assert samplers[0] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    schedulers = get("schedulers")
    assert schedulers[0] == {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1.0,
                             "need_inner_model": False}
    assert {s["label"]: s["default_rho"] for s in schedulers}["Karras"] == 7.0
    models = get("sd-models")
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert models[0]["model_name"] == expected["model_name"] and re.fullmatch(expected["title"], models[0]["title"])
    assert all(set(u) == {"name", "model_name", "model_path", "model_url", "scale"} for u in get("upscalers"))
    assert {"name": "Latent"} in get("latent-upscale-modes")
    assert get("scripts") == {"txt2img": [], "img2img": ["sd upscale"]}
    assert get("embeddings") == {"loaded": {}, "skipped": {}}
    memory = get("memory")
    assert set(memory["ram"]) == {"free", "used", "total"} and "error" in memory["cuda"]
    for path in ("sd-vae", "hypernetworks", "face-restorers", "realesrgan-models", "prompt-styles",
                 "script-info", "extensions"):
        assert get(path) == []
    assert all(set(item) == {"name", "alias", "path", "metadata"} for item in get("loras"))  # data/loras by default
    assert requests.post(f"{server.url}/sdapi/v1/refresh-checkpoints", timeout=10).json() is None
    assert requests.get(server.url, timeout=10).headers["content-type"].startswith("text/html")  # the web UI
    assert get("cmd-flags")["nowebui"] is False
    assert "A1111-compatible" in requests.get(f"{server.url}/openapi.json", timeout=10).json()["info"]["title"]


def test_png_info_round_trip_and_bad_base64(server):
    reply = txt2img(server, prompt="a fox, at dawn", negative_prompt="ugly", seed=11)
    infotext = json.loads(reply["info"])["infotexts"][0]
    for image in (reply["images"][0], "data:image/png;base64," + reply["images"][0]):
        result = requests.post(f"{server.url}/sdapi/v1/png-info", json={"image": image}, timeout=10).json()
        assert result["info"] == infotext
        assert result["parameters"]["Prompt"] == "a fox, at dawn"
        assert result["parameters"]["Negative prompt"] == "ugly"
        assert result["parameters"]["Seed"] == "11"
        assert result["items"] == {}

    bad = requests.post(f"{server.url}/sdapi/v1/png-info", json={"image": "this is not an image"}, timeout=10)
    assert bad.status_code == 500
    assert bad.json() == {"error": "HTTPException", "detail": "Invalid encoded image", "body": "", "errors": ""}


def test_interrogate_says_it_is_a_placeholder(server, engine):
    image = txt2img(server, prompt="a blue bicycle")["images"][0]
    reply = requests.post(f"{server.url}/sdapi/v1/interrogate", json={"image": image, "model": "clip"}, timeout=10)
    assert reply.status_code == 200
    caption = reply.json()["caption"]
    assert "placeholder" in caption  # neither engine has a captioning model, and both say so
    assert ("a blue bicycle" in caption) == (engine == "preview")  # the preview reads its own infotext
    reply = requests.post(f"{server.url}/sdapi/v1/interrogate", json={"image": image, "model": "blip9"})
    assert reply.status_code == 404 and reply.json()["detail"] == "Model not found"


def test_extras_say_clearly_that_they_are_not_supported(server):  # img2img: tests/test_img2img.py
    reply = requests.post(f"{server.url}/sdapi/v1/extra-single-image", json={"image": ""}, timeout=10)
    assert reply.status_code == 501
    assert reply.json()["error"] == "HTTPException" and "not supported" in reply.json()["detail"]


# --- the webuiapi client, unchanged -------------------------------------------------------------


def test_webuiapi_client_works_unchanged(server, auth_server, expected):
    webuiapi = pytest.importorskip("webuiapi")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=4)
    result = api.txt2img(prompt="a cat", width=64, height=64, seed=3, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["all_seeds"] == [3, 4] and result.info["sampler_name"] == "Euler a"
    assert result.images[0].info["parameters"].startswith("a cat\nSteps: 4, Sampler: Euler a")
    title, = api.util_get_model_names()
    assert re.fullmatch(expected["title"], title)
    api.util_set_model(expected["model_name"])  # fuzzy match on the title, then POST /options
    assert api.util_get_current_model() == title
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert api.get_sd_models()[0]["model_name"] == expected["model_name"]
    assert api.get_progress()["state"]["job_count"] == 0
    assert api.interrupt() == {}
    assert api.png_info(result.images[0]).info == result.info["infotexts"][0]

    locked = webuiapi.WebUIApi(host="127.0.0.1", port=auth_server.port, sampler="Euler a", steps=4)
    with pytest.raises(RuntimeError):
        locked.txt2img(prompt="a cat", width=64, height=64)
    locked.set_auth("alice", "s3cret-pw")
    assert locked.txt2img(prompt="a cat", width=64, height=64).info["steps"] == 4


# --- fuzzing the request model over HTTP --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 80) | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
fuzzed_fields = ["prompt", "negative_prompt", "seed", "steps", "width", "height", "cfg_scale", "batch_size",
                 "n_iter", "sampler_name", "scheduler", "subseed_strength", "send_images", "restore_faces",
                 "styles", "tiling", "seed_resize_from_w"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.dictionaries(st.sampled_from(fuzzed_fields), json_values, max_size=5))
def test_fuzzed_requests_give_200_or_422_never_500(preview_server, payload):
    # Small defaults; the fuzzed values replace them. Sizes up to 80 px and 80 steps stay fast.
    body = {"width": 32, "height": 32, "steps": 2, **payload}
    reply = requests.post(f"{preview_server.url}/sdapi/v1/txt2img", data=json.dumps(body),
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code in (200, 422), (body, reply.status_code, reply.text[:500])
    if reply.status_code == 422:
        detail = reply.json()["detail"]
        assert isinstance(detail, list) and all(error["loc"][0] == "body" for error in detail)
    else:
        result = reply.json()
        info = json.loads(result["info"])
        count = info["batch_size"] * (result["parameters"]["n_iter"] or 1)  # null means the default, 1
        assert len(info["infotexts"]) == count
        assert len(result["images"]) == (count if result["parameters"]["send_images"] is not False else 0)
        for b64 in result["images"]:
            assert decode_b64(b64).format == "PNG"


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.subprocess
def test_command_line_starts_a_server_and_says_images_are_placeholders():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sdserver", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "PLACEHOLDER" in line.upper()
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        assert reply.json()[0]["model_name"] == "offline-preview"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.subprocess
def test_malformed_api_auth_is_a_clear_error_that_does_not_echo_the_password():
    result = subprocess.run([sys.executable, "-m", "sdserver", "--api-auth", "alice:pa:ss"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "user:password" in result.stderr and "pa:ss" not in result.stderr


def test_nowebui_serves_the_api_alone():
    """--nowebui, as A1111's: no page at / (it points to the API docs), the API unchanged."""
    from sdserver import serve_in_thread

    with serve_in_thread(engine="preview", webui=False) as alone:
        assert requests.get(alone.url, timeout=10, allow_redirects=False).headers["location"] == "/docs"
        assert requests.get(f"{alone.url}/webui/app.js", timeout=10).status_code == 404
        assert requests.get(f"{alone.url}/sdapi/v1/cmd-flags", timeout=10).json()["nowebui"] is True
        assert requests.get(f"{alone.url}/sdapi/v1/samplers", timeout=10).status_code == 200

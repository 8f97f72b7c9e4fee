"""Hires fix (txt2img ``enable_hr``) on the diffusers engine, over real HTTP with tests/tiny_sd.py's model.

The final size (hr_scale, hr_resize_x/y), A1111's infotext fields, seeds, the second pass's own step count
(run exactly, as A1111 does), its prompt and sampler, the upscalers (latent and Pillow; a model upscaler is a
422 naming the ones there are), progress as A1111's two jobs, interrupt in either pass, and the client.
The preview engine's hires behaviour (one pass, drawn at the target size) is in tests/test_sdserver.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import requests  # noqa: E402
from conftest import decode_b64, pixel_array, same_pixels  # noqa: E402
from PIL import Image  # noqa: E402

from helpers.a1111 import A1111Client  # noqa: E402
from helpers.infotext import parse_infotext  # noqa: E402
from sdserver import serve_in_thread  # noqa: E402
from sdserver.engines import GenerationJob, get_engine  # noqa: E402
from sdserver.engines.base import HiresPass  # noqa: E402
from sdserver.engines.hires import upscale_plan  # noqa: E402
from sdserver.generation import img2img_steps  # noqa: E402

SMALL = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "sampler_name": "Euler"}
HIRES = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_models):
    return get_engine("diffusers", model=str(tiny_models["a"]), decoder=str(tiny_models["taesd"]), dtype="float32")


@pytest.fixture(scope="module")
def server(engine):
    with serve_in_thread(engine=engine) as handle:
        yield handle


@pytest.fixture(scope="module")
def slow(tiny_models):
    """The same model with 0.05 s per step, to watch progress and interrupt."""
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder=str(tiny_models["taesd"]),
                         step_delay=0.05, dtype="float32") as handle:
        yield handle


def txt2img(server, expect: int = 200, **fields) -> dict:
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**SMALL, **fields}, timeout=120)
    assert reply.status_code == expect, reply.text
    return reply.json()


def sizes(reply: dict) -> set:
    return {decode_b64(image).size for image in reply["images"]}


# --- sizes and infotext -------------------------------------------------------------------------------


def test_hr_scale_gives_the_target_size_and_a1111s_infotext(server):
    reply = txt2img(server, seed=3, hr_second_pass_steps=2, hr_upscaler="Latent", **HIRES)
    info = json.loads(reply["info"])
    assert sizes(reply) == {(128, 128)}
    assert (info["width"], info["height"]) == (64, 64) and info["steps"] == 3  # the first pass, as A1111
    fields = parse_infotext(info["infotexts"][0])
    assert (fields["Size-1"], fields["Size-2"], fields["Steps"]) == ("64", "64", "3")
    assert fields["Denoising strength"] == "0.5"
    assert (fields["Hires upscale"], fields["Hires steps"], fields["Hires upscaler"]) == ("2.0", "2", "Latent")
    assert decode_b64(reply["images"][0]).info["parameters"] == info["infotexts"][0]


@pytest.mark.parametrize("fields, size", [
    ({"hr_resize_x": 96}, (96, 72)),  # one side given: the other keeps the first pass's aspect ratio
    ({"hr_resize_y": 96}, (128, 96)),
    ({"hr_resize_x": 64, "hr_resize_y": 80}, (64, 80)),  # both: scaled to cover, the middle cut out
])
def test_hr_resize_gives_that_size(server, fields, size):
    reply = txt2img(server, seed=4, **{**HIRES, "width": 64, "height": 48, **fields})
    assert sizes(reply) == {size}
    text = json.loads(reply["info"])["infotexts"][0]
    assert f"Hires resize: {fields.get('hr_resize_x', 0)}x{fields.get('hr_resize_y', 0)}," in text


def test_cover_size_is_a1111s():
    assert upscale_plan(64, 48, 64, 80) == (106, 80) and upscale_plan(64, 64, 128, 64) == (128, 128)


# --- seeds, prompts, upscalers ----------------------------------------------------------------------


def test_same_seed_same_pixels_and_a_batch_equals_single_calls(server):
    batch = txt2img(server, seed=10, batch_size=2, **HIRES)
    assert json.loads(batch["info"])["all_seeds"] == [10, 11]
    again = txt2img(server, seed=10, **HIRES)
    second = txt2img(server, seed=11, **HIRES)
    assert same_pixels(pixel_array(batch["images"][0]), pixel_array(again["images"][0]), 1)
    assert same_pixels(pixel_array(batch["images"][1]), pixel_array(second["images"][0]), 1)
    assert not same_pixels(pixel_array(again["images"][0]), pixel_array(second["images"][0]), 2)


def test_hires_is_a_second_pass_not_a_plain_upscale(server):
    plain = decode_b64(txt2img(server, seed=12)["images"][0]).resize((128, 128), Image.LANCZOS)
    for upscaler in ("Latent", "Lanczos"):
        hires = txt2img(server, seed=12, hr_upscaler=upscaler, **HIRES)["images"][0]
        assert not same_pixels(pixel_array(hires), pixel_array(plain), 8), upscaler
    latent = txt2img(server, seed=12, hr_upscaler="Latent (nearest)", **HIRES)["images"][0]
    pixels = txt2img(server, seed=12, hr_upscaler="Nearest", **HIRES)["images"][0]
    assert not same_pixels(pixel_array(latent), pixel_array(pixels), 2)


def test_hires_prompt_and_sampler_change_the_second_pass(server):
    base = txt2img(server, seed=13, **HIRES)
    other = txt2img(server, seed=13, hr_prompt="a blue whale", hr_negative_prompt="fog",
                    hr_sampler_name="DPM++ 2M", **HIRES)
    assert not same_pixels(pixel_array(base["images"][0]), pixel_array(other["images"][0]), 2)
    fields = parse_infotext(json.loads(other["info"])["infotexts"][0])
    assert (fields["Hires prompt"], fields["Hires negative prompt"], fields["Hires sampler"]) == (
        "a blue whale", "fog", "DPM++ 2M")
    same = txt2img(server, seed=13, hr_prompt=SMALL["prompt"], hr_sampler_name="Use same sampler", **HIRES)
    assert "Hires prompt" not in json.loads(same["info"])["infotexts"][0]
    assert same_pixels(pixel_array(base["images"][0]), pixel_array(same["images"][0]), 1)


@pytest.mark.parametrize("fields, words", [
    ({"hr_upscaler": "R-ESRGAN 4x+"}, ["'R-ESRGAN 4x+' is not available", "Latent (bicubic)", "Lanczos", "Nearest"]),
    ({"hr_upscaler": "ESRGAN_4x"}, ["ESRGAN_4x", "use one of: Latent"]),
    ({"hr_scale": 1.1}, ["multiple of 8", "70x70"]),
    ({"hr_sampler_name": "DPM fast"}, ["hires pass", "diffusers does not have"]),
    ({"hr_checkpoint_name": "other.safetensors"}, ["hr_checkpoint_name", "leave it out"]),
])
def test_what_hires_cannot_do_is_a_clear_422(server, fields, words):
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={**SMALL, **HIRES, **fields}, timeout=30)
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert all(word in detail for word in words), detail


# --- steps, progress, interrupt ---------------------------------------------------------------------------


@pytest.mark.parametrize("hr_steps, strength, expected", [(5, 0.5, 5), (0, 0.3, 3), (4, 0.9, 4)])
def test_the_second_pass_runs_exactly_the_hires_steps(engine, hr_steps, strength, expected):
    """A1111 runs the hires steps asked for (0: the first pass's), at any denoising strength; the engine
    reports steps counted across both passes."""
    steps_seen = []
    first_steps = 3
    schedule_steps, run_steps = img2img_steps(hr_steps or first_steps, strength, True)  # as the server sets it up
    assert run_steps == expected
    hires = HiresPass(width=64, height=64, steps=run_steps, schedule_steps=schedule_steps,
                      denoising_strength=strength, upscaler="Latent", prompt="a fox", negative_prompt="",
                      sampler_name="Euler", scheduler="Automatic")
    job = GenerationJob(prompt="a fox", seeds=[1], subseeds=[1], width=128, height=128, steps=first_steps,
                        sampler_name="Euler", hires=hires)
    images = engine.generate(job, lambda step, preview: steps_seen.append(step) or True)
    assert [image.size for image in images] == [(128, 128)]
    assert steps_seen == list(range(1, first_steps + expected + 1))


def _start(server, **fields):
    box: dict = {}

    def run():
        started = time.monotonic()
        box["reply"] = txt2img(server, **fields)
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return box, thread


def _wait_for(server, ready, seen: list | None = None) -> dict:
    deadline = time.monotonic() + 30
    while True:
        state = requests.get(f"{server.url}/sdapi/v1/progress", timeout=5).json()["state"]
        if seen is not None and state["job_count"]:
            seen.append((state["job_no"], state["sampling_steps"], state["sampling_step"], state["job_count"]))
        if ready(state):
            return state
        assert time.monotonic() < deadline, f"never reached: {state}"
        time.sleep(0.01)


def test_progress_shows_both_passes_as_a1111s_two_jobs(slow):
    seen: list = []
    box, thread = _start(slow, seed=5, steps=6, hr_second_pass_steps=8, **HIRES)
    _wait_for(slow, lambda state: state["job_no"] == 1 and state["sampling_step"] >= 7, seen)
    thread.join(30)
    assert sizes(box["reply"]) == {(128, 128)}
    assert {count for *_, count in seen} == {2}  # one job per pass, as A1111's job_count
    assert {steps for job_no, steps, *_ in seen if job_no == 0} == {6}
    assert {steps for job_no, steps, *_ in seen if job_no == 1} == {8}
    assert max(step for job_no, _, step, _ in seen if job_no == 1) >= 7


def test_interrupt_in_the_second_pass_returns_the_hires_images(slow):
    box, thread = _start(slow, seed=6, steps=2, hr_second_pass_steps=200, **HIRES)
    _wait_for(slow, lambda state: state["job_no"] == 1 and state["sampling_step"] >= 2)
    assert requests.post(f"{slow.url}/sdapi/v1/interrupt", timeout=5).json() == {}
    thread.join(30)
    assert box["elapsed"] < 200 * 0.05 / 2  # far less than the whole second pass
    assert sizes(box["reply"]) == {(128, 128)}


def test_interrupt_in_the_first_pass_returns_the_first_pass_images(slow):
    box, thread = _start(slow, seed=7, steps=200, hr_second_pass_steps=2, **HIRES)
    _wait_for(slow, lambda state: state["job_no"] == 0 and state["sampling_step"] >= 2)
    assert requests.post(f"{slow.url}/sdapi/v1/interrupt", timeout=5).json() == {}
    thread.join(30)
    assert box["elapsed"] < 200 * 0.05 / 2
    assert sizes(box["reply"]) == {(64, 64)}  # what exists: A1111 returns the first pass too


# --- the client ---------------------------------------------------------------------------------------------


def test_client_txt2img_with_hires_fix(server):
    client = A1111Client(server.url)
    gen = client.txt2img("a red fox", seed=8, width=64, height=64, steps=3, progress=True, **HIRES)
    assert [image.size for image in gen.images] == [(128, 128)] and gen.seeds == [8]
    assert parse_infotext(gen.infotexts[0])["Hires upscale"] == "2.0"

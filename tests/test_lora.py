"""LoRA on the kit's server, as A1111 reads it, over real HTTP on 127.0.0.1.

``<lora:name:weight>`` in the prompt applies the file ``name`` of the LoRA folder (``lora_dir``,
A1111's ``--lora-dir``); GET /sdapi/v1/loras lists the folder in A1111's shape, POST refresh-loras
rescans it; the infotext carries ``Lora hashes``; an unknown name still makes the image and the
kit's client warns. The diffusers engine runs tests/tiny_sd.py's random model with LoRAs made by
peft on it (tiny_sd.build_tiny_lora), in diffusers' format and in A1111/kohya's; the preview engine
lists the kit's demo LoRA and tints its placeholder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import ENGINES, decode_b64, png_b64

from helpers.a1111 import A1111Client
from helpers.infotext import parse_infotext
from sdserver import serve_in_thread
from sdserver.loras import DEFAULT_LORA_DIR, LoraTag, parse_prompt

SMALL = {"width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "sampler_name": "Euler", "seed": 4}
DEMO = Path(DEFAULT_LORA_DIR) / "kit-demo.safetensors"
needs_diffusers = pytest.mark.skipif("diffusers" not in ENGINES, reason="needs the diffusers extra")


def pixels(server, prompt: str, path: str = "txt2img", **fields) -> tuple[np.ndarray, dict]:
    """One image (as int16 pixels) and the parsed info, through plain requests."""
    reply = requests.post(f"{server.url}/sdapi/v1/{path}", json={"prompt": prompt, **SMALL, **fields}, timeout=120)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return np.asarray(decode_b64(body["images"][0]), dtype=np.int16), json.loads(body["info"])


def tensor_hash(path: Path) -> str:
    """A1111's LoRA hash, computed here independently: sha256 of what follows the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0]:]).hexdigest()[:12]


# --- prompt tags ----------------------------------------------------------------------------------------


def test_tags_leave_the_prompt_with_a1111s_weights():
    text, tags = parse_prompt("a cat <lora:ink:0.5>, <lora:pixel> <lora:x:0.3:0.9> <lora:y:unet=0.2> <hypernet:h:1>")
    assert text == "a cat ,"  # every extra-network tag leaves the text the model reads
    assert tags == [LoraTag("ink", 0.5, 0.5), LoraTag("pixel", 1.0, 1.0), LoraTag("x", 0.3, 0.9),
                    LoraTag("y", 1.0, 0.2)]
    assert parse_prompt("no tags  here") == ("no tags  here", [])  # untouched without tags


# --- the preview engine ----------------------------------------------------------------------------------


def test_preview_lists_the_demo_lora_and_tints_its_placeholder_by_weight(sd_server):
    listed = requests.get(f"{sd_server.url}/sdapi/v1/loras", timeout=10).json()
    demo = next(item for item in listed if item["name"] == "kit-demo")
    assert set(demo) == {"name", "alias", "path", "metadata"} and demo["alias"] == "kit-demo"
    assert "demo LoRA" in demo["metadata"]["description"]
    base, _ = pixels(sd_server, "a red fox")
    zero, info = pixels(sd_server, "a red fox <lora:kit-demo:0>")
    half, _ = pixels(sd_server, "a red fox <lora:kit-demo:0.5>")
    full, info_full = pixels(sd_server, "a red fox <lora:kit-demo:1>")
    assert np.array_equal(base, zero)  # weight 0: the placeholder without it
    step_half, step_full = np.abs(half - base).mean(), np.abs(full - base).mean()
    assert 2 < step_half < step_full  # the tint follows the weight
    assert f'Lora hashes: "kit-demo: {tensor_hash(DEMO)}"' in info_full["infotexts"][0]
    assert info_full["all_prompts"] == ["a red fox <lora:kit-demo:1>"]  # the infotext keeps the prompt as written
    assert "comments" not in info


def test_preview_unknown_lora_still_makes_the_image_and_the_client_warns(sd_server):
    base, _ = pixels(sd_server, "a red fox")
    other, info = pixels(sd_server, "a red fox <lora:no-such-lora:1>")
    assert np.array_equal(base, other) and info["comments"] == "Lora not found: no-such-lora"
    client = A1111Client(sd_server.url, auth="")
    assert "kit-demo" in client.loras()
    with pytest.warns(UserWarning, match="(?s)Lora not found: no-such-lora.*client.loras"):
        generation = client.txt2img("a red fox <lora:no-such-lora:1>", **SMALL)
    assert generation.images and "Lora hashes" not in generation.infotexts[0]


def test_lora_routes_are_public_as_in_a1111(servers):
    server = servers("preview", auth=True)  # --api-auth covers /sdapi/v1/* but not the Lora extension's routes
    assert requests.get(f"{server.url}/sdapi/v1/loras", timeout=10).status_code == 200
    assert requests.post(f"{server.url}/sdapi/v1/refresh-loras", timeout=10).json() is None


def test_client_warns_from_the_lora_list_when_the_server_says_nothing(sd_server, monkeypatch):
    # A1111's answer has no comments: the client compares the prompt with GET /loras instead.
    client = A1111Client(sd_server.url, auth="")
    original = client._read_generation

    def as_a1111(body, path="txt2img"):
        generation = original(body, path)
        generation.info.pop("comments", None)
        return generation

    monkeypatch.setattr(client, "_read_generation", as_a1111)
    with pytest.warns(UserWarning, match="Lora not found: missing-one"):
        client.txt2img("a fox <lora:kit-demo:1> <lora:missing-one:0.5>", **SMALL)


# --- the diffusers engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_server(tiny_models, tmp_path_factory, one_torch_thread):
    """The diffusers engine on the tiny model, with a LoRA folder: ink (diffusers' format), ink-kohya (the
    same numbers as A1111/kohya keys), styles/pixel (kohya, in a subfolder) and the demo LoRA (SD-sized:
    it does not fit the tiny model)."""
    from tiny_sd import build_tiny_lora

    folder = tmp_path_factory.mktemp("loras")
    build_tiny_lora(tiny_models["a"], folder, "ink", seed=1)
    build_tiny_lora(tiny_models["a"], folder, "ink-kohya", seed=1, kohya=True)
    build_tiny_lora(tiny_models["a"], folder / "styles", "pixel", seed=2, kohya=True)
    shutil.copy(DEMO, folder)
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder=str(tiny_models["taesd"]),
                         dtype="float32", lora_dir=str(folder), ckpt_dir=str(tiny_models["b"].parent)) as server:
        server.folder = folder
        yield server


@needs_diffusers
def test_loras_lists_the_folder_in_a1111s_shape_and_refresh_finds_new_files(lora_server):
    url = lora_server.url
    listed = {item["name"]: item for item in requests.get(f"{url}/sdapi/v1/loras", timeout=10).json()}
    assert set(listed) == {"ink", "ink-kohya", "pixel", "kit-demo"}  # subfolders too, names are file stems
    assert listed["pixel"]["path"].endswith("styles/pixel.safetensors")
    assert listed["ink-kohya"]["metadata"] == {"ss_network_module": "networks.lora"}
    shutil.copy(lora_server.folder / "ink.safetensors", lora_server.folder / "late.safetensors")
    try:
        assert "late" not in {item["name"] for item in requests.get(f"{url}/sdapi/v1/loras", timeout=10).json()}
        assert requests.post(f"{url}/sdapi/v1/refresh-loras", timeout=10).json() is None
        assert "late" in A1111Client(url, auth="").loras()
    finally:
        (lora_server.folder / "late.safetensors").unlink()
        requests.post(f"{url}/sdapi/v1/refresh-loras", timeout=10)


@needs_diffusers
def test_weights_combine_and_the_base_model_comes_back(lora_server):
    base, _ = pixels(lora_server, "a tram")
    zero, _ = pixels(lora_server, "a tram <lora:ink:0>")
    ink, info = pixels(lora_server, "a tram <lora:ink:1>")
    kohya, _ = pixels(lora_server, "a tram <lora:ink-kohya:1>")
    pixel, _ = pixels(lora_server, "a tram <lora:pixel:1>")
    both, both_info = pixels(lora_server, "a tram <lora:ink:1> <lora:pixel:1>")
    unet_only, _ = pixels(lora_server, "a tram <lora:ink:0:1>")
    again, _ = pixels(lora_server, "a tram")
    assert np.array_equal(zero, base)  # weight 0 (and the tag gone from the text): the base model's pixels
    assert np.abs(ink - base).mean() > 0.5 and np.abs(pixel - base).mean() > 0.5
    assert np.abs(kohya - ink).max() <= 1  # the kohya file holds the same numbers: the same image
    assert np.abs(both - ink).mean() > 0.5 and np.abs(both - pixel).mean() > 0.5  # two LoRAs combine
    assert np.abs(unet_only - ink).mean() > 0.5  # <lora:x:te:unet>: the text-encoder weight counts
    assert np.array_equal(again, base)  # no tag: the base model again, nothing reloaded
    assert f'Lora hashes: "ink: {tensor_hash(lora_server.folder / "ink.safetensors")}"' in info["infotexts"][0]
    hashes = parse_infotext(both_info["infotexts"][0])["Lora hashes"]
    assert hashes == f"ink: {tensor_hash(lora_server.folder / 'ink.safetensors')}, " \
                     f"pixel: {tensor_hash(lora_server.folder / 'styles' / 'pixel.safetensors')}"


@needs_diffusers
def test_unknown_or_unfitting_lora_makes_the_base_image_and_says_why(lora_server):
    base, _ = pixels(lora_server, "a tram")
    missing, info = pixels(lora_server, "a tram <lora:nowhere:1>")
    assert np.array_equal(missing, base) and info["comments"] == "Lora not found: nowhere"
    unfitting, info = pixels(lora_server, "a tram <lora:kit-demo:1>")  # SD-sized shapes on the tiny model
    assert np.array_equal(unfitting, base)
    assert info["comments"].startswith("Lora could not be loaded: kit-demo (")
    assert "Lora hashes" not in info["infotexts"][0]
    with pytest.warns(UserWarning, match="could not be loaded: kit-demo"):
        A1111Client(lora_server.url, auth="").txt2img("a tram <lora:kit-demo:1>", **SMALL)


@needs_diffusers
def test_lora_in_img2img_and_a_disabled_extra_network(lora_server):
    from PIL import Image

    init = png_b64(Image.linear_gradient("L").resize((64, 64)).convert("RGB"))
    base, _ = pixels(lora_server, "a tram", "img2img", init_images=[init], denoising_strength=0.6)
    ink, _ = pixels(lora_server, "a tram <lora:ink:1>", "img2img", init_images=[init], denoising_strength=0.6)
    off, info = pixels(lora_server, "a tram <lora:ink:1>", disable_extra_networks=True)
    assert np.abs(ink - base).mean() > 0.5
    assert np.array_equal(off, pixels(lora_server, "a tram")[0]) and "Lora hashes" not in info["infotexts"][0]


@needs_diffusers
def test_lora_in_both_passes_of_hires_fix(lora_server):
    hires = {"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_second_pass_steps": 2,
             "hr_upscaler": "Latent"}
    base, _ = pixels(lora_server, "a tram", **hires)
    zero, _ = pixels(lora_server, "a tram <lora:ink:0>", **hires)
    ink, info = pixels(lora_server, "a tram <lora:ink:1>", **hires)
    assert base.shape[:2] == (128, 128)
    assert np.abs(zero - base).max() <= 2  # weight 0: the base model's image (float rounding over two passes)
    assert np.abs(ink - base).mean() > 0.5 and "Lora hashes" in info["infotexts"][0]
    assert np.array_equal(pixels(lora_server, "a tram", **hires)[0], base)  # the base model again


@needs_diffusers
def test_progress_and_interrupt_work_with_a_lora(lora_server):
    engine = lora_server.app.state.engine
    box: dict = {}
    engine.step_delay = 0.05  # slow steps, so the job can be watched and stopped
    try:
        thread = threading.Thread(target=lambda: box.update(reply=pixels(lora_server, "a tram <lora:ink:1>",
                                                                         steps=200)), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while requests.get(f"{lora_server.url}/sdapi/v1/progress", timeout=5).json()["state"]["sampling_step"] < 2:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        assert requests.post(f"{lora_server.url}/sdapi/v1/interrupt", timeout=5).json() == {}
        thread.join(60)
    finally:
        engine.step_delay = 0.0
    assert "Lora hashes" in box["reply"][1]["infotexts"][0] and box["reply"][1]["steps"] == 200


@needs_diffusers
def test_switching_models_drops_the_loaded_loras(lora_server):
    url, engine = lora_server.url, lora_server.app.state.engine
    base_a, _ = pixels(lora_server, "a tram")
    ink_a, _ = pixels(lora_server, "a tram <lora:ink:1>")
    requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd-b"}, timeout=120).raise_for_status()
    try:
        assert engine.model_name == "tiny-sd-b" and not engine.lora._adapters  # the new model starts without LoRAs
        base_b, _ = pixels(lora_server, "a tram")
        ink_b, _ = pixels(lora_server, "a tram <lora:ink:1>")  # loaded again, into this model
        assert np.abs(ink_b - base_b).mean() > 0.5 and np.abs(base_b - base_a).mean() > 0.5
    finally:
        requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd"}, timeout=120)
    assert np.array_equal(pixels(lora_server, "a tram")[0], base_a)
    assert np.array_equal(pixels(lora_server, "a tram <lora:ink:1>")[0], ink_a)

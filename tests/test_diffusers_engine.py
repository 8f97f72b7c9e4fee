"""The diffusers engine over real HTTP, with a tiny random-weight SD model built from configs.

The model is saved to a folder once per session and loaded the way users load theirs
(``--model /path/to/folder``), so the whole path runs: loading, naming, samplers, seeds,
emphasis, progress, interrupt, model switching and the start-up errors. No model hub is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402
import requests  # noqa: E402
from conftest import pixel_array, same_pixels, txt2img_reply  # noqa: E402

from helpers.a1111 import A1111Client, A1111Error  # noqa: E402
from helpers.images import encode_b64  # noqa: E402
from helpers.infotext import parse_infotext  # noqa: E402
from sdserver import serve_in_thread  # noqa: E402
from sdserver.engines import EngineUnavailable, get_engine  # noqa: E402

SMALL = {"width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "sampler_name": "Euler a"}
ROOT = Path(__file__).resolve().parents[1]

# Tiny models run fastest on one thread (conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def server(tiny_models):
    # float32 on every CPU, so that these checks are the same everywhere ("auto" picks bfloat16 on CPUs
    # that compute it natively; tests/test_client.py runs on "auto", test_bfloat16_... on bfloat16).
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder=str(tiny_models["taesd"]),
                         dtype="float32") as handle:
        yield handle


@pytest.fixture(scope="module")
def slow(tiny_models):
    """The same model with 0.05 s per step, to watch progress and interrupt."""
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", step_delay=0.05,
                         dtype="float32") as handle:
        yield handle


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with nothing in it, and no network at all."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        assert host in ("127.0.0.1", "localhost", "::1"), f"network access attempted: {host}"
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        assert not isinstance(address, tuple) or address[0] in ("127.0.0.1", "::1"), f"network access: {address}"
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return tmp_path / "hub"


def txt2img(server, **fields):
    return txt2img_reply(server, {"prompt": "a red fox", **SMALL, **fields})


# --- images, seeds, infotext ----------------------------------------------------------------------


def test_real_images_with_infotext_through_the_client(server, tiny_models):
    client = A1111Client(server.url, auth="")
    gen = client.txt2img("a lighthouse at dusk", negative_prompt="blurry", seed=7, batch_size=2, **SMALL)
    assert not gen.is_placeholder and "PLACEHOLDER" not in repr(gen)
    assert [image.size for image in gen.images] == [(64, 64)] * 2 and gen.seeds == [7, 8]
    settings = parse_infotext(gen.infotexts[1])
    assert settings["Prompt"] == "a lighthouse at dusk" and settings["Negative prompt"] == "blurry"
    assert [settings[key] for key in ("Seed", "Steps", "Sampler", "CFG scale")] == ["8", "3", "Euler a", "7.0"]
    assert (settings["Size-1"], settings["Size-2"]) == ("64", "64")
    assert settings["Model"] == "tiny-sd" and settings["VAE Decoder"] == "TAESD"
    assert settings["Model hash"] == gen.info["sd_model_hash"] and len(settings["Model hash"]) == 10
    assert settings["Version"].startswith("kit-diffusers-")
    assert client.post("png-info", {"image": encode_b64(gen.png[0])})["info"] == gen.infotexts[0]
    # Real pixels: not a flat image, and the two images of the batch differ.
    first, second = (np.asarray(image, dtype=np.int16) for image in gen.images)
    assert first.std() > 1 and np.abs(first - second).max() > 10


def test_batch_equals_single_calls_and_seeds_reproduce(server):
    for sampler in ("Euler a", "DPM++ 2M"):  # ancestral (noise every step) and multistep
        batch = txt2img(server, seed=100, batch_size=3, sampler_name=sampler)
        assert json.loads(batch["info"])["all_seeds"] == [100, 101, 102]
        for index, seed in enumerate((100, 101, 102)):
            single = txt2img(server, seed=seed, sampler_name=sampler)
            assert same_pixels(pixel_array(batch["images"][index]), pixel_array(single["images"][0])), (sampler, seed)
    again = txt2img(server, seed=100)
    other = txt2img(server, seed=99)
    first = pixel_array(txt2img(server, seed=100)["images"][0])
    assert same_pixels(first, pixel_array(again["images"][0]), 0)
    assert not same_pixels(first, pixel_array(other["images"][0]), 10)


def test_n_iter_and_sizes(server):
    reply = txt2img(server, seed=5, batch_size=2, n_iter=2, width=96, height=64)
    info = json.loads(reply["info"])
    assert info["all_seeds"] == [5, 6, 7, 8] and len(reply["images"]) == 4
    assert {pixel_array(image).shape for image in reply["images"]} == {(64, 96, 3)}
    # Image 3 (second batch, first image) is the same as a single call with its seed.
    assert same_pixels(reply["images"][2], txt2img(server, seed=7, width=96, height=64)["images"][0])


def test_same_pixels_as_a_plain_diffusers_call(tiny_models, server):
    """The engine adds A1111's protocol, not its own sampling: with the model's own scheduler and the
    full VAE, an image equals what StableDiffusionPipeline makes for the same seed."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_models["a"]), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a red fox", negative_prompt="", num_inference_steps=3, guidance_scale=7.0, height=64, width=64,
                    generator=torch.Generator().manual_seed(42), output_type="np").images[0]
    engine = get_engine("diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32")
    with serve_in_thread(engine=engine) as handle:
        reply = txt2img(handle, seed=42, sampler_name="Euler")  # "Euler": the model's own EulerDiscreteScheduler
    assert same_pixels(pixel_array(reply["images"][0]), np.round(expected * 255).astype(np.int16))


def test_variation_seed_blends_towards_the_subseed(server):
    plain = pixel_array(txt2img(server, seed=10, sampler_name="Euler")["images"][0])
    half = txt2img(server, seed=10, subseed=20, subseed_strength=0.5, sampler_name="Euler", batch_size=2)
    info = json.loads(half["info"])
    assert info["all_seeds"] == [10, 10] and info["all_subseeds"] == [20, 21]
    assert parse_infotext(info["infotexts"][1])["Variation seed"] == "21"
    assert not same_pixels(pixel_array(half["images"][0]), plain, 5)
    # Strength 1 is all subseed noise: with a sampler that adds no noise later, it is the subseed's image.
    full = txt2img(server, seed=10, subseed=20, subseed_strength=1.0, sampler_name="Euler")
    assert same_pixels(full["images"][0], txt2img(server, seed=20, sampler_name="Euler")["images"][0])


# --- samplers -------------------------------------------------------------------------------------


def test_every_listed_sampler_runs(server):
    names = [item["name"] for item in requests.get(f"{server.url}/sdapi/v1/samplers", timeout=10).json()]
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "UniPC", "LMS", "Heun"} <= set(names)
    for name in names + ["DPM++ 2M Karras"]:
        reply = txt2img(server, seed=1, steps=2, sampler_name=name)
        assert len(reply["images"]) == 1, name
    karras = txt2img(server, seed=1, sampler_name="DPM++ 2M", scheduler="Karras")
    combined = txt2img(server, seed=1, sampler_name="DPM++ 2M Karras")
    assert same_pixels(pixel_array(karras["images"][0]), pixel_array(combined["images"][0]), 0)
    euler_karras = json.loads(txt2img(server, seed=1, sampler_name="Euler", scheduler="karras")["info"])
    assert "Schedule type: Karras" in euler_karras["infotexts"][0]


@pytest.mark.parametrize("fields, words", [
    ({"sampler_name": "DPM fast"}, ["A1111 sampler that diffusers does not have", "Euler a"]),
    ({"sampler_name": "Euler a", "scheduler": "Karras"}, ["cannot be used with sampler 'Euler a'"]),
    ({"width": 100}, ["multiples of 8"]),
    ({"enable_hr": True, "denoising_strength": 0.5, "hr_upscaler": "SwinIR 4x"}, ["'SwinIR 4x'", "Lanczos"]),
])
def test_what_the_engine_cannot_do_is_a_clear_422(server, fields, words):
    reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **fields}, timeout=30)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert all(word in detail for word in words), detail


@pytest.mark.parametrize("fields, words", [
    ({"sampler_name": "Euler A"}, ["'Euler A' is not known", "did you mean 'Euler a'", "DPM++ 2M was used"]),
    ({"scheduler": "wobbly"}, ["Schedule type 'wobbly' is not known", "Automatic was used"]),
    ({"restore_faces": True}, ["not face-restored"]),
])
def test_what_a1111_lets_pass_passes_with_a_comment(server, fields, words):
    """A1111 1.10 answers these with a 200 (an unknown sampler or schedule falls back, face restoration without
    its weights does nothing): so does the kit's server, and it says what happened (tests/test_real_differential.py)."""
    info = json.loads(txt2img(server, seed=1, **fields)["info"])
    assert all(word in info["comments"] for word in words), info["comments"]


# --- prompts ----------------------------------------------------------------------------------------


def test_tiling_wraps_around_the_edges(server):
    plain = pixel_array(txt2img(server, seed=6, sampler_name="Euler")["images"][0])
    tiled = txt2img(server, seed=6, sampler_name="Euler", tiling=True)
    assert "Tiling: True" in json.loads(tiled["info"])["infotexts"][0]
    assert not same_pixels(pixel_array(tiled["images"][0]), plain, 2)
    assert same_pixels(txt2img(server, seed=6, sampler_name="Euler")["images"][0], plain, 0)  # switched back
    # Seamless: with tiling the UNet sees the image on a torus, so shifting its input sideways (by a
    # multiple of its downsampling) shifts its output the same way, edges included.
    import torch

    from sdserver.engines.diffusers_engine import set_tiling

    unet = server.app.state.engine.pipe.unet
    latents, context = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 16)
    shifted = torch.roll(latents, 4, dims=-1)
    with torch.no_grad():
        for tiling in (True, False):
            set_tiling(server.app.state.engine.pipe, tiling)
            out, out_shifted = (unet(x, 500, encoder_hidden_states=context).sample for x in (latents, shifted))
            assert torch.allclose(torch.roll(out, 4, dims=-1), out_shifted, atol=1e-4) == tiling


def test_emphasis_long_prompts_and_clip_skip(server):
    def image(prompt, **fields):
        return pixel_array(txt2img(server, prompt=prompt, seed=3, sampler_name="Euler", **fields)["images"][0])

    plain = image("a cat on a mat")
    assert not same_pixels(image("a (cat:1.8) on a mat"), plain, 0)  # the weight changes the picture
    ignored = txt2img(server, prompt="a (cat:1.8) on a mat", seed=3, sampler_name="Euler",
                      override_settings={"emphasis": "Ignore"})
    assert same_pixels(pixel_array(ignored["images"][0]), plain, 0)  # brackets parsed away, weights ignored
    assert "Emphasis: Ignore" in json.loads(ignored["info"])["infotexts"][0]
    # Nothing is cut at 75 tokens: words in a second chunk change the picture.
    long = "a cat, " * 40
    assert not same_pixels(image(long + "in a red hat"), image(long + "in a blue box"), 0)
    skipped = txt2img(server, prompt="a cat on a mat", seed=3, sampler_name="Euler",
                      override_settings={"CLIP_stop_at_last_layers": 2})
    assert "Clip skip: 2" in json.loads(skipped["info"])["infotexts"][0]
    assert not same_pixels(pixel_array(skipped["images"][0]), plain, 0)


def test_prompt_chunks_like_a1111(tiny_models):
    from transformers import CLIPTokenizer

    from sdserver.engines.prompt_weights import PromptEncoder

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_models["a"] / "tokenizer"), local_files_only=True)
    encoder = PromptEncoder(tokenizer, text_encoder=None)
    (tokens, weights), = encoder.tokenize_line("a (red:1.5) fox")
    assert len(tokens) == 77 and tokens[0] == tokenizer.bos_token_id and tokens[4] == tokenizer.eos_token_id
    assert weights[:5] == [1.0, 1.0, 1.5, 1.0, 1.0]
    assert len(encoder.tokenize_line("a cat BREAK a dog")) == 2
    assert len(encoder.tokenize_line("word " * 80)) == 2
    chunks = encoder.tokenize_line("red, " * 30 + "a very long description of a cat")  # 60 tokens + 7
    assert len(chunks) == 1
    chunks = encoder.tokenize_line("red, " * 36 + "a b c d e f g h")  # the 76th token does not fit
    assert len(chunks) == 2 and tokenizer.decode(chunks[1][0][1:9]).strip() == "a b c d e f g h"


# --- progress, interrupt, skip ------------------------------------------------------------------------


def test_progress_advances_per_step_with_a_live_preview(slow):
    seen = []

    def watch():
        while not done.is_set():
            state = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=10).json()
            if state["state"]["job_count"]:
                seen.append((state["state"]["sampling_step"], state["state"]["sampling_steps"],
                             state["current_image"] is not None))
            time.sleep(0.02)

    done = threading.Event()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        txt2img(slow, seed=1, steps=8)
    finally:
        done.set()
        watcher.join()
    steps = [step for step, total, _ in seen if total == 8]
    assert steps and steps == sorted(steps) and len(set(steps)) >= 4  # it advanced step by step
    assert any(has_preview for step, _, has_preview in seen if step >= 1)


def at_step(server, step: int, action) -> threading.Thread:
    """Call ``action`` once the running job has reached sampling step ``step`` of its first batch."""
    def wait():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = requests.get(f"{server.url}/sdapi/v1/progress", timeout=10).json()["state"]
            if state["job_count"] and state["job_no"] == 0 and state["sampling_step"] >= step:
                action()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def test_interrupt_returns_200_with_partial_images(slow):
    client = A1111Client(slow.url, auth="")
    full = client.txt2img("a long job", seed=1, **{**SMALL, "steps": 12})
    watcher = at_step(slow, 3, client.interrupt)
    gen = client.txt2img("a long job", seed=1, n_iter=3, **{**SMALL, "steps": 12})
    watcher.join()
    assert len(gen.images) == 1 and gen.interrupted and gen.seeds == [1]  # later batches never ran
    partial, finished = (np.asarray(image, dtype=np.int16) for image in (gen.image, full.image))
    assert partial.std() > 1 and not same_pixels(partial, finished, 2)  # a real, partly done image
    assert not client.txt2img("a short job", **SMALL).interrupted  # the flag does not stick


def test_skip_abandons_the_current_batch_only(slow):
    client = A1111Client(slow.url, auth="")
    watcher = at_step(slow, 3, lambda: requests.post(f"{slow.url}/sdapi/v1/skip", timeout=10))
    gen = client.txt2img("two batches", seed=1, n_iter=2, **{**SMALL, "steps": 10})
    watcher.join()
    assert len(gen.images) == 2 and gen.seeds == [1, 2] and not gen.interrupted
    first, second = (np.asarray(image, dtype=np.int16) for image in gen.images)
    complete = [np.asarray(client.txt2img("two batches", seed=seed, **{**SMALL, "steps": 10}).image, dtype=np.int16)
                for seed in (1, 2)]
    assert not same_pixels(first, complete[0], 2)  # skipped part-way: a partly done image
    assert same_pixels(second, complete[1])  # the next batch ran in full


# --- models and options -------------------------------------------------------------------------------


def test_options_and_sd_models_report_the_model(server):
    models = requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=10).json()
    ours = next(model for model in models if model["model_name"] == "tiny-sd")
    assert ours["title"] == f"tiny-sd [{ours['hash']}]" and ours["sha256"].startswith(ours["hash"])
    options = requests.get(f"{server.url}/sdapi/v1/options", timeout=10).json()
    assert options["sd_model_checkpoint"] == ours["title"] and options["sd_checkpoint_hash"] == ours["sha256"]
    flags = requests.get(f"{server.url}/sdapi/v1/cmd-flags", timeout=10).json()
    assert flags["engine"] == "diffusers"


def test_switch_model_through_options(tiny_models):
    # The models in --ckpt-dir are listed (GET /sd-models) and may be chosen by name; paths are refused
    # (tests/test_server_limits.py).
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32",
                         ckpt_dir=str(tiny_models["b"].parent)) as handle:
        client = A1111Client(handle.url, auth="")
        before = client.txt2img("a tram", seed=4, **SMALL)
        client.set_options(sd_model_checkpoint="tiny-sd-b")
        titles = client.models()
        assert client.options()["sd_model_checkpoint"].startswith("tiny-sd-b [") and len(titles) == 2
        after = client.txt2img("a tram", seed=4, **SMALL)
        assert parse_infotext(after.infotexts[0])["Model"] == "tiny-sd-b"
        assert after.info["sd_model_hash"] != before.info["sd_model_hash"]
        assert not same_pixels(np.asarray(after.image, dtype=np.int16), np.asarray(before.image, dtype=np.int16), 5)
        with pytest.raises(A1111Error) as error:
            client.set_options(sd_model_checkpoint="no-such/model")
        assert error.value.status == 500 and "not found" in str(error.value)
        assert client.options()["sd_model_checkpoint"].startswith("tiny-sd-b [")  # unchanged
        first = next(title for title in titles if title.startswith("tiny-sd ["))
        client.set_options(sd_model_checkpoint=first)  # back, by the title from sd-models
        again = client.txt2img("a tram", seed=4, **SMALL)
        assert same_pixels(np.asarray(again.image, dtype=np.int16), np.asarray(before.image, dtype=np.int16))


def test_override_settings_switch_the_model_for_one_request(tiny_models):
    """As in A1111: override_settings {"sd_model_checkpoint": ...} loads that model for the request,
    and loads the previous one again afterwards unless override_settings_restore_afterwards is false."""
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32",
                         ckpt_dir=str(tiny_models["b"].parent)) as handle:
        client = A1111Client(handle.url, auth="")
        before = client.txt2img("a tram", seed=4, **SMALL)
        titles = client.models()
        other = client.txt2img("a tram", seed=4, override_settings={
            "sd_model_checkpoint": next(title for title in titles if title.startswith("tiny-sd-b ["))}, **SMALL)
        assert parse_infotext(other.infotexts[0])["Model"] == "tiny-sd-b" and other.info["sd_model_name"] == "tiny-sd-b"
        assert client.options()["sd_model_checkpoint"].startswith("tiny-sd [")  # restored
        again = client.txt2img("a tram", seed=4, **SMALL)
        assert parse_infotext(again.infotexts[0])["Model"] == "tiny-sd"
        as_array = lambda gen: np.asarray(gen.image, dtype=np.int16)  # noqa: E731
        assert same_pixels(as_array(again), as_array(before)) and not same_pixels(as_array(other), as_array(before), 5)
        kept = client.txt2img("a tram", seed=4, override_settings={"sd_model_checkpoint": "tiny-sd-b"},
                              override_settings_restore_afterwards=False, **SMALL)
        assert same_pixels(as_array(kept), as_array(other))
        assert client.options()["sd_model_checkpoint"].startswith("tiny-sd-b [")  # kept, as asked
        with pytest.raises(A1111Error) as error:
            client.txt2img("a tram", override_settings={"sd_model_checkpoint": "no-such/model"}, **SMALL)
        assert error.value.status == 500 and "not found" in str(error.value)
        unchanged = client.txt2img("a tram", seed=4, **SMALL)
        assert parse_infotext(unchanged.infotexts[0])["Model"] == "tiny-sd-b"


def test_memory_reports_the_device(server, monkeypatch):
    import torch

    from sdserver.engines.devices import cuda_memory

    memory = requests.get(f"{server.url}/sdapi/v1/memory", timeout=10).json()
    assert memory["ram"]["total"] > 0 and "runs on cpu" in memory["cuda"]["error"]
    # On a CUDA device: torch's figures in A1111's shape. (No GPU here: torch's two calls stand in.)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (6 << 30, 8 << 30))
    monkeypatch.setattr(torch.cuda, "memory_stats",
                        lambda device: {"allocated_bytes.all.current": 5, "allocated_bytes.all.peak": 9, "num_ooms": 1})
    gpu = cuda_memory("cuda:0")
    assert gpu["system"] == {"free": 6 << 30, "used": 2 << 30, "total": 8 << 30}
    assert gpu["allocated"] == {"current": 5, "peak": 9} and gpu["events"] == {"retries": 0, "oom": 1}
    assert set(gpu) == {"system", "active", "allocated", "reserved", "inactive", "events"}


def test_interrogate_says_it_cannot_caption(server):
    client = A1111Client(server.url, auth="")
    caption = client.interrogate(client.txt2img("a cat", seed=1, **SMALL).image)
    assert "placeholder caption" in caption and "does not look at the pixels" in caption


# --- start-up: precision, decoder, missing models -----------------------------------------------------


def test_bfloat16_and_the_tiny_decoder_fallback(tiny_models, empty_hub_cache):
    engine = get_engine("diffusers", model=str(tiny_models["a"]), dtype="bfloat16", decoder="tiny", step_delay=0.05)
    assert "bfloat16" in engine.description and engine.decoder_name == "full"
    assert any("madebyollin/taesd" in note and "make models" in note for note in engine.notes)
    with serve_in_thread(engine=engine) as handle:
        reply = txt2img(handle, seed=2, steps=2)
        assert "VAE Decoder" not in json.loads(reply["info"])["infotexts"][0]
        # An interrupt decodes the scheduler's float32 guess with the bfloat16 decoder.
        client = A1111Client(handle.url, auth="")
        watcher = at_step(handle, 2, client.interrupt)
        gen = client.txt2img("a long job", seed=1, **{**SMALL, "steps": 12})
        watcher.join()
        assert gen.interrupted and np.asarray(gen.image, dtype=np.int16).std() > 1


def test_missing_models_fail_fast_without_network(tiny_models, empty_hub_cache, tmp_path):
    started = time.perf_counter()
    with pytest.raises(EngineUnavailable) as error:
        get_engine("diffusers", model="stabilityai/sd-turbo")
    assert "not on this machine" in str(error.value) and "make models" in error.value.fix
    with pytest.raises(EngineUnavailable, match="model_index.json"):
        get_engine("diffusers", model=str(tmp_path))
    checkpoint = tmp_path / "v1-5-pruned-emaonly.safetensors"
    checkpoint.write_bytes(b"not really")
    with pytest.raises(EngineUnavailable) as error:
        get_engine("diffusers", model=str(checkpoint))
    assert "--config" in error.value.fix
    with pytest.raises(EngineUnavailable) as error:
        get_engine("diffusers", model=str(tiny_models["a"]), decoder=str(tmp_path / "nothing"))
    assert time.perf_counter() - started < 10


@pytest.mark.subprocess
def test_cli_says_what_to_do_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "sdserver", "--engine", "diffusers", "--port", "0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stabilityai/sd-turbo" in result.stderr and "make models" in result.stderr and "--model" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.perf_counter() - started < 60  # imports included; no retries
    from sdserver.__main__ import main

    assert main(["--engine", "diffusers", "--download"]) == 1  # offline (conftest): fails at once, with the fix
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    # Without --model the SD_MODEL setting names the model, as for connect_a1111.
    monkeypatch.setenv("SD_MODEL", str(tmp_path / "my-missing-model"))
    assert main(["--engine", "diffusers", "--port", "0"]) == 1
    assert "my-missing-model" in capsys.readouterr().err


def test_download_picks_one_copy_of_each_weight():
    from sdserver.engines.diffusers_models import pick_download_files

    sd_turbo = ["model_index.json", "sd_turbo.safetensors", "README.md", "scheduler/scheduler_config.json",
                "text_encoder/config.json", "text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors",
                "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json",
                "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"]
    picked = pick_download_files(sd_turbo)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in picked and "text_encoder/model.fp16.safetensors" in picked
    assert "vae/diffusion_pytorch_model.safetensors" in picked  # no fp16 copy: the full one
    assert not {"sd_turbo.safetensors", "unet/diffusion_pytorch_model.safetensors", "README.md",
                "vae/diffusion_pytorch_model.bin"} & set(picked)


@pytest.mark.subprocess
def test_the_preview_engine_never_imports_torch_or_diffusers():
    code = ("import sys; from sdserver import create_app; create_app(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr

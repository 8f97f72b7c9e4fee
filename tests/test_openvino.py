"""The diffusers engine's OpenVINO backend over real HTTP, on tiny_sd's model converted offline.

The client's protocol tests (tests/test_client.py) also run on this backend (conftest's ENGINES has
"openvino" when the extra is installed); here: the same seed gives the PyTorch path's image, progress,
interrupt, img2img, what it refuses, the conversion into the cache, the auto choice and the start-up errors.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("optimum.intel", reason="the openvino extra is not installed (pip install -e "
                                            "'.[diffusers,openvino]'); CI installs it, so these run there")

import numpy as np  # noqa: E402
import requests  # noqa: E402
from conftest import pixel_array, same_pixels, txt2img_reply  # noqa: E402

from helpers.a1111 import A1111Client  # noqa: E402
from helpers.infotext import parse_infotext  # noqa: E402
from sdserver import serve_in_thread  # noqa: E402
from sdserver.engines import EngineUnavailable, get_engine  # noqa: E402

SMALL = {"width": 64, "height": 64, "steps": 3, "cfg_scale": 7.0, "sampler_name": "Euler a"}
# Converting (tiny_sd's model, once per session) imports optimum-intel and traces the model: about a minute.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ov(ov_models):
    with serve_in_thread(engine="diffusers", backend="openvino", model=str(ov_models["a"]),
                         decoder=str(ov_models["taesd"]), dtype="float32") as handle:
        yield handle


@pytest.fixture(scope="module")
def torch_server(tiny_models):
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder=str(tiny_models["taesd"]),
                         dtype="float32") as handle:
        yield handle


def txt2img(server, **fields):
    return txt2img_reply(server, {"prompt": "a red fox", **SMALL, **fields})


def test_same_seed_same_image_as_the_pytorch_path(ov, torch_server):
    for sampler in ("Euler a", "DPM++ 2M", "Euler"):  # ancestral (noise from the generators), multistep, plain
        fields = dict(prompt="a red fox", seed=42, batch_size=2, sampler_name=sampler, negative_prompt="blurry")
        a = txt2img(ov, **fields)
        b = txt2img(torch_server, **fields)
        for ov_image, torch_image in zip(a["images"], b["images"]):
            ov_pixels, torch_pixels = pixel_array(ov_image), pixel_array(torch_image)
            difference = np.abs(ov_pixels.astype(np.int16) - torch_pixels.astype(np.int16))
            assert difference.mean() < 1.0 and difference.max() <= 12, (sampler, difference.mean(), difference.max())
    other = pixel_array(txt2img(ov, seed=43)["images"][0])
    assert not same_pixels(other, pixel_array(txt2img(ov, seed=42)["images"][0]), 10)


def test_infotext_names_the_backend_and_the_same_model(ov, torch_server):
    client = A1111Client(ov.url, auth="")
    gen = client.txt2img("a lighthouse", seed=3, **SMALL)
    settings = parse_infotext(gen.infotexts[0])
    assert not gen.is_placeholder and settings["Backend"] == "OpenVINO CPU" and settings["VAE Decoder"] == "TAESD"
    reference = A1111Client(torch_server.url, auth="").txt2img("a lighthouse", seed=3, **SMALL)
    reference = parse_infotext(reference.infotexts[0])
    assert (settings["Model"], settings["Model hash"]) == (reference["Model"], reference["Model hash"])
    assert "openvino" in settings["Version"]


def test_progress_previews_and_interrupt(ov_models):
    with serve_in_thread(engine="diffusers", backend="openvino", model=str(ov_models["a"]), decoder="full",
                         step_delay=0.05) as slow:
        seen, done = [], threading.Event()

        def watch():
            while not done.is_set():
                state = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=10).json()
                if state["state"]["job_count"]:
                    seen.append((state["state"]["sampling_step"], state["current_image"] is not None))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            full = txt2img(slow, seed=1, steps=10)
        finally:
            done.set()
            watcher.join()
        steps = [step for step, _ in seen]
        assert steps == sorted(steps) and len(set(steps)) >= 4 and any(preview for _, preview in seen)

        client = A1111Client(slow.url, auth="")

        def interrupt_at_step_3():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = requests.get(f"{slow.url}/sdapi/v1/progress", timeout=10).json()["state"]
                if state["job_count"] and state["sampling_step"] >= 3:
                    client.interrupt()
                    return
                time.sleep(0.01)

        interrupter = threading.Thread(target=interrupt_at_step_3)
        interrupter.start()
        gen = client.txt2img("a red fox", seed=1, n_iter=2, **{**SMALL, "steps": 10})
        interrupter.join()
        assert gen.interrupted and len(gen.images) == 1  # the second batch never ran
        partial, finished = np.asarray(gen.image, dtype=np.int16), pixel_array(full["images"][0]).astype(np.int16)
        assert partial.std() > 1 and not same_pixels(partial, finished, 2)


def test_img2img_runs_on_the_converted_model(ov, torch_server):
    import base64
    import io

    from PIL import Image

    init = Image.fromarray((np.indices((64, 64)).sum(0) * 2 % 256).astype(np.uint8)).convert("RGB")
    buffer = io.BytesIO()
    init.save(buffer, format="PNG")
    payload = {"prompt": "a red fox", "init_images": [base64.b64encode(buffer.getvalue()).decode()],
               "denoising_strength": 0.5, "seed": 5, **SMALL, "steps": 4}
    replies = [requests.post(f"{server.url}/sdapi/v1/img2img", json=payload, timeout=120) for server in
               (ov, torch_server)]
    assert [reply.status_code for reply in replies] == [200, 200], replies[0].text
    a, b = (pixel_array(reply.json()["images"][0]).astype(np.int16) for reply in replies)
    assert np.abs(a - b).mean() < 1.5




@pytest.mark.parametrize("fields, words", [
    ({"tiling": True}, "tiling is not supported"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 2}}, "Clip skip"),
    ({"enable_hr": True}, "hires fix"),
    ({"prompt": "a red fox <lora:kit-demo:0.8>"}, "LoRAs (<lora:kit-demo>) are not supported by the OpenVINO"),
])
def test_what_the_backend_cannot_do_is_a_clear_422(ov, fields, words):
    reply = requests.post(f"{ov.url}/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **fields}, timeout=60)
    assert reply.status_code == 422 and words in reply.text


def test_convert_into_the_cache_then_auto_chooses_openvino(tiny_models, tmp_path, monkeypatch, capsys):
    """`--convert-openvino` (what `make models-sd OPENVINO=1` runs) writes the cache; then --backend auto takes it,
    and says why; --int8 makes and serves 8-bit weights."""
    from huggingface_hub import constants

    from sdserver.__main__ import main
    from sdserver.engines.openvino_backend import choose_backend, converted_folder

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = str(tiny_models["a"])
    backend, why = choose_backend(model)
    assert backend == "pytorch" and "--convert-openvino" in why and "OPENVINO=1" in why
    assert main(["--engine", "diffusers", "--model", model, "--convert-openvino", "--int8"]) == 0
    assert "--backend openvino --int8" in capsys.readouterr().out
    folder = converted_folder(model, int8=True)
    assert folder.is_relative_to(tmp_path / "kit-openvino") and (folder / "unet" / "openvino_model.xml").is_file()
    backend, why = choose_backend(model)
    assert backend == "openvino" and str(folder) in why and "no CUDA or MPS GPU" in why
    engine = get_engine("diffusers", backend="auto", model=model, decoder="full")
    assert engine.int8 and engine.model_name == "tiny-sd-int8" and "int8 weights" in engine.description
    with serve_in_thread(engine=engine) as server:
        settings = parse_infotext(A1111Client(server.url, auth="").txt2img("a fox", seed=1, **SMALL).infotexts[0])
    assert settings["Backend"] == "OpenVINO CPU int8" and settings["Model"] == "tiny-sd-int8"


def test_missing_conversion_fails_fast_with_the_fix(tiny_models, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from sdserver.__main__ import main
    from sdserver.engines.openvino_backend import pick_ov_device

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = str(tiny_models["a"])
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("diffusers", backend="openvino", model=model)
    assert "no OpenVINO conversion" in str(caught.value) and "--convert-openvino" in caught.value.fix
    assert main(["--engine", "diffusers", "--backend", "openvino", "--model", model, "--port", "1"]) == 1
    said = capsys.readouterr().err
    assert "no OpenVINO conversion" in said and f"--model {model} --convert-openvino" in said
    with pytest.raises(EngineUnavailable, match="PyTorch device"):
        pick_ov_device("cuda")
    with pytest.raises(EngineUnavailable, match="OpenVINO finds only"):
        pick_ov_device("NPU.7")

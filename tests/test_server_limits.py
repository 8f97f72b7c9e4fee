"""Hardening of the kit's server (issue 11), over real HTTP on 127.0.0.1.

Each test reproduces one way a client could hurt a server shared by a class: a request whose cost
has no bound, a client image that decodes to gigabytes, a body of any size, text that cannot be
encoded, a model "name" that is really a path on the server's disk, a seed torch cannot take, and
command-line values that make every request fail or open the server to the network unannounced.

Memory is never measured here (that is not robust on a shared CI machine); instead each test checks
that the refusal comes quickly, says which limit and which flag, and that the server still answers.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import ENGINES, HAS_DIFFUSERS, png_b64, png_header_only
from PIL import Image

from sdserver import create_app, serve_in_thread
from sdserver.limits import Limits

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(servers, engine):
    """The shared server of conftest (default limits) for each engine."""
    return servers(engine)


@pytest.fixture(scope="module")
def tight():
    """A preview server with small limits, so that each limit can be hit with tiny images."""
    limits = Limits(max_cost=0.05, max_images=4, max_megapixels=0.02, max_prompt_chars=100,
                    max_decode_megapixels=0.01, max_body_mb=0.5)
    with serve_in_thread(engine="preview", limits=limits) as handle:
        yield handle


def post(server, path: str, payload, timeout: float = 60) -> requests.Response:
    return requests.post(f"{server.url}/sdapi/v1/{path}", json=payload, timeout=timeout)


def post_raw(server, path: str, text: str, timeout: float = 60) -> requests.Response:
    """POST a JSON text exactly as written (so that it can hold escapes like \\ud83d)."""
    return requests.post(f"{server.url}/sdapi/v1/{path}", data=text.encode("ascii"),
                         headers={"Content-Type": "application/json"}, timeout=timeout)


def messages(reply: requests.Response) -> str:
    """Every message of a 422 body, in either shape (FastAPI's list or A1111's HTTPException)."""
    detail = reply.json()["detail"]
    if isinstance(detail, list):
        return " | ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in detail)
    return str(detail)


def still_answers(server) -> None:
    reply = requests.get(f"{server.url}/sdapi/v1/progress", timeout=10)
    assert reply.status_code == 200 and reply.json()["state"]["job_count"] == 0


# --- case 5: the cost of one request is bounded ----------------------------------------------------


def test_the_testers_huge_request_is_a_quick_422_naming_the_limit_and_flag(server):
    payload = {"width": 2048, "height": 2048, "batch_size": 16, "n_iter": 100, "steps": 1}
    started = time.monotonic()
    reply = post(server, "txt2img", payload)
    assert reply.status_code == 422, reply.text[:300]
    assert time.monotonic() - started < 5  # refused before any image is drawn
    text = messages(reply)
    assert "1600 images" in text and "--max-images" in text
    still_answers(server)


def test_default_limits_allow_what_a_class_does():
    from sdserver.limits import check_request_cost
    from sdserver.models import Txt2ImgRequest

    limits = Limits()
    for fields in ({"width": 1024, "height": 1024, "batch_size": 8, "steps": 50},
                   {"width": 512, "height": 512, "batch_size": 16, "n_iter": 4, "steps": 30},
                   {"width": 512, "height": 512, "batch_size": 4, "steps": 20, "enable_hr": True, "hr_scale": 2,
                    "denoising_strength": 0.5}):
        check_request_cost(Txt2ImgRequest.model_validate(fields), limits)  # no error


@pytest.mark.parametrize("fields, words", [
    ({"batch_size": 5}, ["5 images", "at most 4", "--max-images"]),
    ({"width": 256, "height": 256, "steps": 1}, ["megapixels", "--max-megapixels"]),
    ({"width": 128, "height": 128, "steps": 40}, ["megapixel-steps", "--max-cost"]),
    # hires fix: the second pass counts too (64x64 x 2 steps is cheap, its 128x128 x 10 steps is not)
    ({"enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5, "hr_second_pass_steps": 10},
     ["megapixel-steps", "hires", "--max-cost"]),
])
def test_each_cost_limit_is_a_422_with_the_cost_the_limit_and_the_flag(tight, fields, words):
    reply = post(tight, "txt2img", {**SMALL, **fields})
    assert reply.status_code == 422, reply.text[:300]
    text = messages(reply)
    assert all(word in text for word in words), text
    assert post(tight, "txt2img", SMALL).status_code == 200  # a small request still passes


def test_a_10_mb_prompt_is_a_422_naming_the_field_with_a_small_reply(server):
    started = time.monotonic()
    reply = post(server, "txt2img", {**SMALL, "prompt": "a lighthouse " * 800_000})
    assert reply.status_code == 422 and time.monotonic() - started < 10
    assert len(reply.content) < 5000  # the prompt is not echoed back
    text = messages(reply)
    assert "prompt" in text and "10000" in text and "--max-prompt-chars" in text
    for field in ("negative_prompt", "hr_prompt", "infotext"):
        reply = post(server, "txt2img", {**SMALL, field: "x" * 10_001})
        assert reply.status_code == 422 and field in messages(reply)
    still_answers(server)


def test_request_bodies_are_bounded_before_they_are_read(tight):
    big = {"image": "A" * 600_000}  # 0.6 MB, over the 0.5 MB limit
    reply = post(tight, "png-info", big)
    assert reply.status_code == 422 and "--max-body-mb" in messages(reply)
    # Sent in chunks, without a Content-Length, the body is counted while it arrives.
    text = json.dumps(big).encode()
    chunks = (text[i:i + 65536] for i in range(0, len(text), 65536))
    reply = requests.post(f"{tight.url}/sdapi/v1/png-info", data=chunks,
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 422 and "--max-body-mb" in messages(reply)
    still_answers(tight)


# --- case 5: every decode of a client image is bounded ------------------------------------------


@pytest.mark.parametrize("path", ["png-info", "interrogate"])
def test_a_13000_px_png_is_refused_from_its_header_before_decoding(server, path):
    encoded = base64.b64encode(png_header_only(13000, 13000)).decode("ascii")
    started = time.monotonic()
    reply = post(server, path, {"image": encoded})
    assert reply.status_code == 422, reply.text[:300]
    assert time.monotonic() - started < 5
    text = messages(reply)
    assert "13000x13000" in text and "--max-decode-megapixels" in text and "image" in text
    still_answers(server)
    # Beyond Pillow's own limit too: still the server's 422, not "Invalid encoded image"
    reply = post(server, path, {"image": base64.b64encode(png_header_only(20000, 20000)).decode("ascii")})
    assert reply.status_code == 422 and "--max-decode-megapixels" in messages(reply)


def test_decode_limit_follows_the_flag(tight):
    small, large = Image.new("RGB", (64, 64)), Image.new("RGB", (200, 200))  # the limit is 0.01 MP
    assert post(tight, "png-info", {"image": png_b64(small)}).status_code == 200
    reply = post(tight, "png-info", {"image": png_b64(large)})
    assert reply.status_code == 422 and "200x200" in messages(reply)


def test_client_images_are_decoded_one_at_a_time(server):
    from sdserver import images

    encoded = png_b64(Image.new("RGB", (32, 32)))
    with images.DECODE_LOCK:  # as if another request were decoding right now
        box = {}
        worker = threading.Thread(target=lambda: box.update(reply=post(server, "png-info", {"image": encoded})))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # it waits for the decode slot...
    worker.join(10)
    assert box["reply"].status_code == 200  # ...and goes on once it is free


def test_only_ordinary_image_formats_are_decoded(server):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="TIFF")
    reply = post(server, "png-info", {"image": base64.b64encode(buffer.getvalue()).decode()})
    assert reply.status_code == 500 and reply.json()["detail"].startswith("Invalid encoded image")


# --- case 6: text that cannot be encoded ------------------------------------------------------------


def test_a_lone_surrogate_is_a_422_naming_the_field_never_a_500(server):
    body = json.dumps({**SMALL, "prompt": "PROMPT"}).replace("PROMPT", "\\ud83d lighthouse")
    reply = post_raw(server, "txt2img", body)
    assert reply.status_code == 422, reply.text[:300]
    text = messages(reply)
    assert "prompt" in text and "surrogate" in text and "U+D83D" in text
    for field, value in (("negative_prompt", '"x\\udc00"'), ("styles", '["\\ud800"]'),
                         ("override_settings", '{"sd_vae": "\\udfff"}')):
        reply = post_raw(server, "txt2img", json.dumps(SMALL)[:-1] + f', "{field}": {value}}}')
        assert reply.status_code == 422 and field in messages(reply), (field, reply.text[:300])
    # A whole emoji (a valid pair) is fine, and so is any other script.
    reply = post_raw(server, "txt2img", json.dumps({**SMALL, "prompt": "\U0001F30A 灯台 منارة"}))
    assert reply.status_code == 200
    assert json.loads(reply.json()["info"])["prompt"] == "\U0001F30A 灯台 منارة"


def test_options_refuse_a_lone_surrogate_and_stay_readable(server):
    reply = post_raw(server, "options", '{"sd_vae": "\\ud83d"}')
    assert reply.status_code == 422 and "sd_vae" in messages(reply)
    assert requests.get(f"{server.url}/sdapi/v1/options", timeout=10).status_code == 200


def test_replies_that_hold_unencodable_text_are_still_valid_json():
    from sdserver.app import SafeJSONResponse

    body = SafeJSONResponse({"a": "\ud83d x"}).body
    assert json.loads(body) == {"a": "\ud83d x"}


# --- case 11: seeds, --step-delay, --host ----------------------------------------------------------


def test_seed_out_of_torchs_range_is_the_same_422_on_every_engine(server):
    for field in ("seed", "subseed"):
        reply = post(server, "txt2img", {**SMALL, field: 2**70})
        assert reply.status_code == 422, reply.text[:300]
        assert field in messages(reply) and "18446744073709551615" in messages(reply)
    # the last seed of the request counts: seed + images - 1 must fit too
    reply = post(server, "txt2img", {**SMALL, "seed": 2**64 - 1, "batch_size": 2})
    assert reply.status_code == 422 and "seed" in messages(reply)
    reply = post(server, "txt2img", {**SMALL, "seed": 2**64 - 1})
    assert reply.status_code == 200 and json.loads(reply.json()["info"])["seed"] == 2**64 - 1


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_step_delay_must_be_a_sensible_number_of_seconds(value, capsys):
    from sdserver.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--step-delay", value])
    assert stop.value.code == 2
    assert "--step-delay" in capsys.readouterr().err
    with pytest.raises(ValueError, match="step_delay"):
        create_app(step_delay=float(value))


@pytest.mark.parametrize("flag", ["--max-cost", "--max-images", "--max-megapixels", "--max-prompt-chars",
                                  "--max-decode-megapixels", "--max-body-mb"])
def test_limit_flags_must_be_positive_numbers(flag, capsys):
    from sdserver.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main([flag, "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and flag in err and "must be above 0" in err  # not "unrecognized arguments"


def run_main_without_serving(monkeypatch, argv: list[str]) -> dict:
    """Run the command line up to uvicorn.run, which is replaced: nothing binds any address."""
    import uvicorn

    from sdserver.__main__ import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    assert main(argv) == 0
    return seen


def test_a_network_address_without_api_auth_prints_a_warning_with_the_fix(monkeypatch, capsys):
    seen = run_main_without_serving(monkeypatch, ["--host", "0.0.0.0", "--port", "7861"])
    assert seen["host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert "WARNING" in err and "0.0.0.0" in err and "--api-auth user:pass" in err
    run_main_without_serving(monkeypatch, ["--host", "0.0.0.0", "--api-auth", "teacher:s3cret-pw"])
    err = capsys.readouterr().err
    assert "WARNING" not in err and "s3cret-pw" not in err
    for host in ("127.0.0.1", "localhost", "::1"):
        run_main_without_serving(monkeypatch, ["--host", host])
        assert "WARNING" not in capsys.readouterr().err


def test_limits_from_the_command_line_reach_the_server(monkeypatch):
    seen = run_main_without_serving(monkeypatch, ["--max-images", "3", "--max-prompt-chars", "50"])
    limits = seen["app"].state.api.limits
    assert limits.max_images == 3 and limits.max_prompt_chars == 50
    flags = seen["app"].state.api.cmd_flags
    assert flags["max_images"] == 3  # GET /cmd-flags shows them, so a client can see the limits


# --- case 7: a model is chosen only from the listed models (diffusers engine) -----------------------


needs_diffusers = pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs the diffusers extra")


@pytest.fixture(scope="module")
def diffusers_server(servers):
    return servers("diffusers")


def assert_reveals_nothing(text: str, *paths) -> None:
    for path in paths:
        assert str(path) not in text, text
    assert "model_index.json" not in text and str(Path.home()) not in text and "huggingface" not in text.lower()


@needs_diffusers
def test_options_refuse_a_path_that_is_not_a_listed_model(diffusers_server, tiny_models, tmp_path):
    from huggingface_hub import constants

    url = f"{diffusers_server.url}/sdapi/v1/options"
    listed = requests.get(f"{diffusers_server.url}/sdapi/v1/sd-models", timeout=10).json()
    before = requests.get(url, timeout=10).json()["sd_model_checkpoint"]
    for name in (str(tmp_path), str(Path.home()), "~/.ssh", constants.HF_HUB_CACHE, str(tiny_models["b"]),
                 "stabilityai/sd-turbo"):
        reply = requests.post(url, json={"sd_model_checkpoint": name}, timeout=60)
        assert reply.status_code == 500 and reply.json()["error"] == "RuntimeError", (name, reply.text)
        errors = reply.json()["errors"]
        assert errors.startswith("model '") and "' not found" in errors  # a path sent is not echoed either
        assert listed[0]["title"] in errors and "sd-models" in errors  # what the client may choose
        assert_reveals_nothing(errors, tmp_path, constants.HF_HUB_CACHE)
    assert requests.get(url, timeout=10).json()["sd_model_checkpoint"] == before


@needs_diffusers
def test_override_settings_refuse_a_path_that_is_not_a_listed_model(diffusers_server, tiny_models, tmp_path):
    for name in (str(tmp_path), str(tiny_models["b"])):
        reply = post(diffusers_server, "txt2img", {**SMALL, "override_settings": {"sd_model_checkpoint": name}})
        assert reply.status_code == 500 and "' not found" in reply.json()["errors"]
        assert_reveals_nothing(reply.json()["errors"], tmp_path, tiny_models["b"])


@needs_diffusers
def test_models_in_ckpt_dir_are_listed_and_can_be_chosen_by_name(tiny_models):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tiny_models["a"].parent
        with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32",
                             ckpt_dir=str(root)) as handle:
            listed = requests.get(f"{handle.url}/sdapi/v1/sd-models", timeout=30).json()
            names = {model["model_name"] for model in listed}
            assert {"tiny-sd", "tiny-sd-b"} <= names and "tiny-taesd" not in names  # no model_index.json
            url = f"{handle.url}/sdapi/v1/options"
            assert requests.post(url, json={"sd_model_checkpoint": "tiny-sd-b"}, timeout=60).status_code == 200
            assert requests.get(url, timeout=10).json()["sd_model_checkpoint"].startswith("tiny-sd-b [")
            # by the filename GET /sd-models lists, as A1111 allows
            first = next(model for model in listed if model["model_name"] == "tiny-sd")
            assert requests.post(url, json={"sd_model_checkpoint": first["filename"]}, timeout=60).status_code == 200
            assert requests.get(url, timeout=10).json()["sd_model_checkpoint"] == first["title"]
    finally:
        torch.set_num_threads(before)


def test_error_bodies_hide_server_paths():
    from sdserver.app import error_body

    home = str(Path.home())
    body = error_body(OSError(f"cannot open {home}/.cache/huggingface/hub/x and C:\\Users\\me\\x.bin"))
    assert home not in body["errors"] and "C:\\Users" not in body["errors"]
    assert "cannot open" in body["errors"]
    assert error_body(ValueError("model 'stabilityai/sd-turbo' not found"))["errors"] == \
        "model 'stabilityai/sd-turbo' not found"

"""The kit's client against the real AUTOMATIC1111 v1.10.1 (the conformance lane: ``make test-real``).

Everything else in tests/ talks to the kit's own A1111-compatible server, which was written from A1111's
source and agrees with the client by construction. Here the same client calls go to the real program,
started from its own folder and venv (tests/real_a1111.py) on a tiny random model the kit builds: the
images are noise, but seeds, infotexts, options, lists, progress, interrupt, errors and auth are A1111's own.

The lane runs with ``KIT_REAL=1`` (``make test-real`` sets it): the first run builds A1111's environment
(about 2 minutes with a warm pip cache), later ones start A1111 in about 10 s.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import HAS_DIFFUSERS

from helpers.a1111 import A1111Client, A1111Error, InvalidRequest
from helpers.images import encode_b64
from helpers.infotext import parse_infotext

pytestmark = [pytest.mark.real, pytest.mark.timeout(900),
              pytest.mark.skipif(os.environ.get("KIT_REAL") != "1",
                                 reason="the real-A1111 lane runs with make test-real (KIT_REAL=1)"),
              pytest.mark.skipif(not HAS_DIFFUSERS, reason="the tiny model is built with the diffusers extra")]

SMALL = {"width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0, "sampler_name": "Euler a"}
AUTH = "student:s3cret-pass"


@pytest.fixture(scope="module")
def a1111(tmp_path_factory):
    from real_a1111 import a1111_source, start_a1111

    if a1111_source() is None:
        pytest.fail("no A1111 to test against: set A1111_DIR, or put ../shared/a1111/ beside the kit")
    server = start_a1111(tmp_path_factory.mktemp("a1111"))
    yield server
    server.stop()


@pytest.fixture
def client(a1111):
    return A1111Client(a1111.url, auth="")


def test_txt2img_gives_real_seeds_and_an_infotext_the_kit_reads(client):
    gen = client.txt2img("a red fox in snow, (oil painting:1.2)", seed=7, batch_size=2, **SMALL)
    assert gen.seeds == [7, 8] and [image.size for image in gen.images] == [(64, 64)] * 2 and not gen.interrupted
    fields = parse_infotext(gen.infotexts[0])
    assert fields["Prompt"] == "a red fox in snow, (oil painting:1.2)"
    assert (fields["Seed"], fields["Steps"], fields["Sampler"], fields["Model"], fields["Version"]) == \
        ("7", "2", "Euler a", "kit-tiny", "1.10.1")
    assert gen.images[0].info["parameters"] == gen.infotexts[0]  # the PNG carries the same text
    again = client.txt2img("a red fox in snow, (oil painting:1.2)", seed=7, **SMALL)
    assert again.images[0].tobytes() == gen.images[0].tobytes()  # a seed reproduces the image


def test_every_field_the_notebooks_send(client):
    gen = client.txt2img("a lighthouse", negative_prompt="blurry", seed=3, n_iter=2, batch_size=1, steps=3,
                         cfg_scale=4.5, sampler_name="DPM++ 2M", scheduler="Karras", width=64, height=96)
    assert gen.seeds == [3, 4] and gen.images[0].size == (64, 96)
    fields = parse_infotext(gen.infotexts[1])
    assert (fields["Negative prompt"], fields["CFG scale"], fields["Sampler"], fields["Schedule type"],
            fields["Seed"]) == ("blurry", "4.5", "DPM++ 2M", "Karras", "4")


def test_img2img_from_the_clients_own_image(client):
    start = client.txt2img("a fox", seed=1, **SMALL).images[0]
    gen = client.img2img(start, "a fox, watercolour", denoising_strength=0.5, seed=2, **SMALL)
    assert gen.seeds == [2] and gen.images[0].size == (64, 64)
    assert parse_infotext(gen.infotexts[0])["Denoising strength"] == "0.5"


def test_lists_and_options_and_override_settings(client):
    assert "Euler a" in client.samplers() and "Karras" in client.schedulers()
    assert client.models() and "kit-tiny" in client.models()[0]
    assert client.options()["sd_model_checkpoint"].startswith("kit-tiny")
    client.set_options(CLIP_stop_at_last_layers=2)
    try:
        assert client.options()["CLIP_stop_at_last_layers"] == 2
        assert parse_infotext(client.txt2img("x", seed=1, **SMALL).infotexts[0])["Clip skip"] == "2"
    finally:
        client.set_options(CLIP_stop_at_last_layers=1)
    once = client.txt2img("x", seed=1, override_settings={"CLIP_stop_at_last_layers": 2}, **SMALL)
    assert parse_infotext(once.infotexts[0])["Clip skip"] == "2"
    assert client.options()["CLIP_stop_at_last_layers"] == 1  # restored afterwards, as A1111 does by default


def test_progress_while_generating_and_an_interrupt_from_someone_else(client, a1111):
    """A1111's answer never says that a job was interrupted: the client asks /progress (its flag and
    job_timestamp) after the call, and must report it, with the images made so far."""
    seen = []

    def interrupt_when_running():
        other = A1111Client(a1111.url, auth="")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = other.progress(skip_current_image=True)
            if state["state"]["job_count"] and state["state"]["sampling_step"] >= 2:
                seen.append(state["progress"])
                other.interrupt()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_running)
    watcher.start()
    gen = client.txt2img("a long job", seed=5, **{**SMALL, "steps": 2000})
    watcher.join()
    assert seen and 0 < seen[0] < 1
    assert gen.interrupted and gen.images and client.last is gen
    assert not client.txt2img("a short job", seed=5, **SMALL).interrupted  # A1111 resets its flag per job


def test_png_info_reads_what_the_client_saved(client):
    gen = client.txt2img("a snowy village", seed=9, **SMALL)
    info = client.post("png-info", {"image": encode_b64(gen.png[0])})
    assert info["info"] == gen.infotexts[0] and str(info["parameters"]["Seed"]) == "9"


def test_a_bad_field_is_caught_before_sending_and_a1111s_own_422_is_read(client):
    with pytest.raises(InvalidRequest):
        client.txt2img("x", stepz=3)  # a misspelt field: the client says so, A1111 would ignore it
    with pytest.raises(A1111Error) as caught:
        client.post("txt2img", {"prompt": "x", "steps": "many"})
    assert caught.value.status == 422 and "steps" in str(caught.value)


def test_api_auth_as_a_shared_server_uses_it(tmp_path):
    from real_a1111 import start_a1111

    server = start_a1111(tmp_path, extra=("--api-auth", AUTH))
    try:
        with pytest.raises(A1111Error) as caught:
            A1111Client(server.url, auth="").options()
        assert caught.value.status == 401 and "SD_AUTH" in caught.value.fix
        assert A1111Client(server.url, auth=AUTH).txt2img("x", seed=1, **SMALL).seeds == [1]
    finally:
        server.stop()

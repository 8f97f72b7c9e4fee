"""The kit's client against the real AUTOMATIC1111 v1.10.1 (the conformance lane: ``make test-real``).

Everything else in tests/ talks to the kit's own A1111-compatible server, which was written from A1111's
source and agrees with the client by construction. Here the same client calls go to the real program,
started from its own folder and venv (tests/real_a1111.py) on a tiny random model the kit builds: the
images are noise, but seeds, infotexts, options, lists, progress, interrupt, errors and auth are A1111's own.

The lane (marker ``real``) runs in ``make test`` when A1111's source is here, and always with
``KIT_REAL=1`` (``make test-real``, CI; conftest.real_lane_skip_reason): the first run builds A1111's environment
(about 2 minutes with a warm pip cache), later ones start A1111 in about 10 s.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import HAS_DIFFUSERS, REAL_LANE

from helpers.a1111 import A1111Client, A1111Error, InvalidRequest
from helpers.images import encode_b64
from helpers.infotext import parse_infotext

pytestmark = [pytest.mark.real, pytest.mark.timeout(900),
              REAL_LANE,
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
    # The same request reproduces the images (not bit for bit across batch sizes: a batch of 1 sums in
    # another order on some CPUs, a difference of 1 in a few pixel values).
    again = client.txt2img("a red fox in snow, (oil painting:1.2)", seed=7, batch_size=2, **SMALL)
    assert [image.tobytes() for image in again.images] == [image.tobytes() for image in gen.images]


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


def while_sampling(url: str, act) -> threading.Thread:
    """A thread in which another client of the server at ``url`` waits until a job has sampled two steps,
    then calls ``act(that client, /progress's answer)`` once (within a minute)."""
    def watch():
        other = A1111Client(url, auth="")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = other.progress(skip_current_image=True)
            if answer["state"]["job_count"] and answer["state"]["sampling_step"] >= 2:
                act(other, answer)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    return watcher


def test_progress_while_generating_and_an_interrupt_from_someone_else(client, a1111):
    """A1111's answer never says that a job was interrupted: the client asks /progress (its flag and
    job_timestamp) after the call, and must report it, with the images made so far."""
    seen = []
    watcher = while_sampling(a1111.url, lambda other, answer: (seen.append(answer["progress"]), other.interrupt()))
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


def test_loras_listed_applied_hashed_and_a_missing_one_warned_about(client, a1111):
    """A LoRA copied into A1111's folder appears after refresh-loras, changes the image, is named with
    A1111's hash in the infotext (the kit's server computes the same hash), and a missing one is warned about."""
    from real_a1111 import write_tiny_lora

    from sdserver.loras import lora_hash

    file = write_tiny_lora(a1111.data / "models" / "Lora", "kit-tiny-lora", seed=3)
    client.refresh_loras()
    assert "kit-tiny-lora" in client.loras()
    plain = client.txt2img("a fox", seed=11, **SMALL)
    with_lora = client.txt2img("a fox <lora:kit-tiny-lora:1>", seed=11, **SMALL)
    fields = parse_infotext(with_lora.infotexts[0])
    assert fields["Lora hashes"] == f"kit-tiny-lora: {lora_hash(file)[:12]}"
    assert fields["Prompt"] == "a fox <lora:kit-tiny-lora:1>"  # the prompt as written, tag included
    assert with_lora.images[0].tobytes() != plain.images[0].tobytes()
    with pytest.warns(UserWarning, match="Lora not found: nope"):
        missing = client.txt2img("a fox <lora:nope:1>", seed=11, **SMALL)
    assert missing.images and "Lora hashes" not in parse_infotext(missing.infotexts[0])


def test_skip_ends_the_current_image_and_the_batch_goes_on(client, a1111):
    """POST /skip (A1111's Skip button) ends the image being sampled; the next one of n_iter is still made,
    and the answer is not an interrupted one."""
    skipped = []
    watcher = while_sampling(a1111.url, lambda other, answer: (other.post("skip", {}),
                                                               skipped.append(answer["state"]["job_no"])))
    gen = client.txt2img("a long first image", seed=21, n_iter=2, **{**SMALL, "steps": 400})
    watcher.join()
    assert skipped == [0], "the first image was skipped while it was sampled"
    assert gen.seeds == [21, 22] and len(gen.images) == 2 and not gen.interrupted


def test_connect_a1111_takes_its_hints_from_the_real_model_name(a1111, monkeypatch, capsys):
    """connect_a1111 on a real A1111: no server started, the model named, and the settings that suit a
    checkpoint by its name become the client's defaults; A1111's own sampler list keeps LCM's sampler."""
    from real_a1111 import add_checkpoint

    from helpers.backends import connect_a1111

    monkeypatch.setenv("SD_URL", a1111.url)
    monkeypatch.setenv("SD_AUTH", "")
    for name in ("kit-tiny-sd-turbo", "kit-tiny-lcm-4step"):
        add_checkpoint(a1111, name)
    client = connect_a1111(start_server=False)
    client.post("refresh-checkpoints", {})
    assert f"Using A1111 at {a1111.url} (model: kit-tiny.safetensors" in capsys.readouterr().out
    assert not client.placeholder and client.hints.family == "sd" and client.defaults["steps"] == 20
    assert {"kit-tiny-sd-turbo", "kit-tiny-lcm-4step"} <= {title.split(".")[0] for title in client.models()}
    try:
        client.set_options(sd_model_checkpoint="kit-tiny-sd-turbo.safetensors")
        turbo = connect_a1111(start_server=False)
        assert (turbo.hints.family, turbo.defaults["steps"], turbo.defaults["cfg_scale"]) == ("turbo", 1, 1.0)
        assert "distilled few-step model" in capsys.readouterr().out
        assert parse_infotext(turbo.txt2img("x", seed=1, width=64, height=64).infotexts[0])["Steps"] == "1"
        client.set_options(sd_model_checkpoint="kit-tiny-lcm-4step.safetensors")
        lcm = connect_a1111(start_server=False)
        assert (lcm.hints.family, lcm.defaults["steps"], lcm.defaults["sampler_name"]) == ("lcm", 4, "LCM")
        assert parse_infotext(lcm.txt2img("x", seed=1, width=64, height=64).infotexts[0])["Sampler"] == "LCM"
    finally:
        client.set_options(sd_model_checkpoint="kit-tiny.safetensors")


def test_interrogate_that_cannot_caption_is_an_error_not_a_caption(client):
    """Offline, A1111 cannot download BLIP and answers 200 with the caption "<error>": the client raises,
    and the caption rater leaves the image unjudged (NaN, the reason in its details) instead of scoring
    the word "<error>" against the text."""
    import math

    from helpers.raters import caption_rater

    image = client.txt2img("a fox", seed=1, **SMALL).images[0]
    with pytest.raises(A1111Error) as caught:
        client.interrogate(image, timeout=120)
    assert "<error>" in str(caught.value) and "BLIP" in caught.value.fix
    rater = caption_rater(None, captioner=client.interrogate)
    assert math.isnan(rater.score("a fox", [image])[0])
    assert "could not caption" in rater.details[0]["caption_error"]


def test_a_model_for_one_request_and_settings_that_outlive_a_restart(client, a1111):
    """What notebook 04 and the instructor guide say: ``override_settings`` switches the model for one
    request and A1111 switches back; ``set_options`` is for everyone, and A1111 writes it to its
    ``config.json``, so it survives a restart of the server (the kit's server keeps settings in memory)."""
    import json

    from real_a1111 import add_checkpoint

    add_checkpoint(a1111, "kit-tiny-once")
    client.post("refresh-checkpoints", {})
    once = client.txt2img("x", seed=1, override_settings={"sd_model_checkpoint": "kit-tiny-once"}, **SMALL)
    assert parse_infotext(once.infotexts[0])["Model"] == "kit-tiny-once"
    assert client.options()["sd_model_checkpoint"].startswith("kit-tiny.safetensors")
    client.set_options(eta_noise_seed_delta=31337)
    try:
        saved = json.loads((a1111.data / "config.json").read_text())
        assert saved["eta_noise_seed_delta"] == 31337
    finally:
        client.set_options(eta_noise_seed_delta=0)


def test_a_sampler_or_scheduler_a1111_does_not_have(client):
    """A1111 makes the image with its first sampler (DPM++ 2M) or the Automatic schedule when it does not
    know the name, silently (200): the client checks names against the server's lists and says so first.
    Names A1111 does read pass: the scheduler's name or label, and the old "sampler schedule" names."""
    import json

    def infotext(sampler: str, scheduler: str) -> dict:  # what A1111 itself does, the client's checks bypassed
        answer = client.post("txt2img", {**SMALL, "prompt": "x", "sampler_name": sampler, "scheduler": scheduler})
        return parse_infotext(json.loads(answer["info"])["infotexts"][0])

    assert infotext("Euler z", "Automatic")["Sampler"] == "DPM++ 2M"
    assert infotext("Euler", "Karas").get("Schedule type") != "Karras"
    for field, value, guess in (("sampler_name", "Euler z", "Euler a"), ("scheduler", "Karas", "Karras")):
        with pytest.raises(InvalidRequest) as caught:
            client.txt2img("x", seed=1, **{**SMALL, field: value})
        assert f"'{value}' (did you mean '{guess}'?)" in str(caught.value) and "silently" in str(caught.value)
    for sampler, scheduler, expected in (("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
                                         ("DPM++ 2M", "karras", ("DPM++ 2M", "Karras"))):
        gen = client.txt2img("x", seed=1, **{**SMALL, "sampler_name": sampler, "scheduler": scheduler})
        fields = parse_infotext(gen.infotexts[0])
        assert (fields["Sampler"], fields["Schedule type"]) == expected

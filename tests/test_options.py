"""A1111 1.10's option keys on the kit's server, over real HTTP: GET /options has them all with A1111's
defaults, POST and override_settings accept them, unknown and restricted keys behave as in A1111.

Each test module gets its own server, so the settings changed here do not leak into other tests.
"""

from __future__ import annotations

import json

import pytest
import requests
from conftest import txt2img_reply

from helpers.a1111 import A1111Client, A1111Error
from sdserver import serve_in_thread
from sdserver.catalog import KIT_DEFAULTS, a1111_options

SMALL = {"width": 64, "height": 64, "steps": 2}
TABLE = a1111_options()
# A sample of A1111 options the kit's engines do not use, with a value other than the default.
SAMPLE = {
    "send_seed": False, "send_size": False, "jpeg_quality": 55, "samples_format": "webp",
    "sd_vae_decode_method": "TAESD", "quicksettings_list": ["sd_model_checkpoint", "sd_vae"],
    "hypertile_enable_unet": True, "lora_in_memory_limit": 3, "img2img_background_color": "#000000",
    "s_noise": 0.9, "upscaler_for_img2img": "Lanczos",
}


@pytest.fixture(scope="module")
def server():
    handle = serve_in_thread(host="127.0.0.1", port=0, engine="preview")
    yield handle
    handle.stop()


def url(server) -> str:
    return f"{server.url}/sdapi/v1/options"


def get(server) -> dict:
    reply = requests.get(url(server), timeout=10)
    assert reply.status_code == 200
    return reply.json()


def post(server, values: dict) -> requests.Response:
    return requests.post(url(server), json=values, timeout=10)


def test_the_table_is_a1111_1_10s():
    options = TABLE["options"]
    assert len(options) >= 320  # 286 core options (3 of them explanations) and 42 of built-in extensions
    assert options["send_seed"] is True and options["show_progress_every_n_steps"] == 10
    assert options["CLIP_stop_at_last_layers"] == 1 and options["sd_vae"] == "Automatic"
    assert options["outdir_txt2img_samples"] == "outputs/txt2img-images" and options["sd_lora"] == "None"
    assert set(TABLE["restricted"] + TABLE["api_restricted"] + TABLE["html"]) <= set(options)
    assert {"outdir_samples", "outdir_save", "temp_dir", "samples_filename_pattern"} <= set(TABLE["restricted"])
    assert set(SAMPLE) <= set(options)


def test_get_has_every_a1111_key_with_its_default_and_the_kits_own_values(server):
    options = get(server)
    assert set(TABLE["options"]) <= set(options) and len(options) >= len(TABLE["options"])
    kit_values = {"sd_model_checkpoint", "sd_checkpoint_hash", *KIT_DEFAULTS}
    different = {key for key, default in TABLE["options"].items() if options[key] != default}
    assert different <= kit_values
    assert options["sd_model_checkpoint"].startswith("offline-preview")
    assert options["show_progress_every_n_steps"] == 1


def test_send_seed_and_other_a1111_keys_round_trip(server):
    reply = post(server, {"send_seed": False})  # a 500 KeyError before A1111's keys were added
    assert reply.status_code == 200 and reply.json() is None
    assert get(server)["send_seed"] is False

    assert post(server, SAMPLE).status_code == 200
    options = get(server)
    assert {key: options[key] for key in SAMPLE} == SAMPLE

    # an option the kit does not use changes nothing in what it makes
    image = txt2img_reply(server, {**SMALL, "prompt": "a lighthouse", "seed": 5})
    assert json.loads(image["info"])["seed"] == 5
    assert post(server, {key: TABLE["options"][key] for key in SAMPLE}).status_code == 200


def test_the_kits_client_sets_and_reads_a1111_keys(server):
    client = A1111Client(server.url)
    client.set_options(send_size=False, ESRGAN_tile=256, canvas_hotkey_zoom="Shift")
    options = client.options()
    assert (options["send_size"], options["ESRGAN_tile"], options["canvas_hotkey_zoom"]) == (False, 256, "Shift")
    client.set_options(send_size=True, ESRGAN_tile=192, canvas_hotkey_zoom="Alt")
    with pytest.raises(A1111Error) as err:
        client.set_options(send_seeds=True)  # a typo is an error, as in A1111
    assert err.value.status == 500 and "send_seeds" in str(err.value)


def test_unknown_keys_are_a1111s_500_and_change_nothing(server):
    before = get(server)
    reply = post(server, {"send_seed": False, "no_such_option": 1})
    assert reply.status_code == 500
    assert reply.json() == {"error": "KeyError", "detail": "", "body": "", "errors": "'no_such_option'"}
    assert get(server) == before  # A1111 would have set send_seed first; the kit sets all or nothing
    # A1111 ignores an unknown key whose value is null (opts.set returns before looking it up)
    assert post(server, {"no_such_option": None}).status_code == 200
    assert "no_such_option" not in get(server)


def test_paths_api_switches_and_explanations_are_silently_unchanged(server):
    before = get(server)
    changes = {"outdir_samples": "/etc", "outdir_txt2img_samples": "/tmp/x", "outdir_save": "/", "temp_dir": "/tmp",
               "samples_filename_pattern": "[seed]", "directories_filename_pattern": "../..",
               "api_enable_requests": False, "api_useragent": "x", "sd_vae_explanation": "<script>"}
    reply = post(server, changes)
    assert reply.status_code == 200 and reply.json() is None
    after = get(server)
    assert {key: after[key] for key in changes} == {key: before[key] for key in changes}
    assert after["outdir_txt2img_samples"] == "outputs/txt2img-images"


def test_override_settings_accept_a1111_keys(server):
    payload = {**SMALL, "prompt": "a bridge", "seed": 7,
               "override_settings": {"send_seed": False, "jpeg_quality": 10, "outdir_samples": "/etc",
                                     "no_such_option": None}}
    assert txt2img_reply(server, payload)["images"]
    assert get(server)["send_seed"] is True  # restored afterwards (override_settings_restore_afterwards)

    kept = {**payload, "override_settings_restore_afterwards": False}
    txt2img_reply(server, kept)
    options = get(server)
    assert (options["send_seed"], options["jpeg_quality"], options["outdir_samples"]) == (False, 10, "")
    assert post(server, {"send_seed": True, "jpeg_quality": 80}).status_code == 200

    reply = requests.post(f"{server.url}/sdapi/v1/txt2img",
                          json={**SMALL, "override_settings": {"send_seeds": False}}, timeout=10)
    assert reply.status_code == 500 and reply.json()["errors"] == "'send_seeds'"

"""Model hints: settings that suit the loaded model become the client's defaults."""

from __future__ import annotations

import shutil

import pytest

from course.doctor import OK, check_a1111
from helpers.a1111 import CLIENT_DEFAULTS, A1111Client
from helpers.backends import connect_a1111
from helpers.infotext import parse_infotext
from helpers.model_hints import hints_for, model_hints


@pytest.mark.parametrize("title, family, steps, cfg, size", [
    ("v1-5-pruned-emaonly.safetensors [6ce0161689]", "sd", 20, 7.0, 512),
    ("dreamshaper_8.safetensors [879db523c3]", "sd", 20, 7.0, 512),
    ("pixelart_v1 [0123456789]", "sd", 20, 7.0, 512),  # "xl" inside a word is not SDXL
    ("v2-1_768-ema-pruned.safetensors [ad2a33c361]", "sd", 20, 7.0, 768),
    ("sd_xl_base_1.0.safetensors [31e35c80fc]", "sdxl", 25, 7.0, 1024),
    ("juggernautXL_v9.safetensors [c9e3e68f89]", "sdxl", 25, 7.0, 1024),
    ("stabilityai/sd-turbo [e4f8c2d1a0]", "turbo", 1, 1.0, 512),
    ("sd_xl_turbo_1.0_fp16.safetensors [e869ac7d69]", "turbo", 1, 1.0, 512),
    ("sdxl_lightning_4step.safetensors [0123456789]", "lightning", 4, 1.0, 1024),
    ("Hyper-SD15-8steps [0123456789]", "lightning", 8, 1.0, 512),
    ("LCM_Dreamshaper_v7 [0123456789]", "lcm", 6, 1.5, 512),
    ("offline-preview [0000000000]", "preview", 20, 7.0, 512),
])
def test_families_from_checkpoint_names(title, family, steps, cfg, size):
    hints = hints_for(title)
    assert (hints.family, hints.steps, hints.cfg_scale, hints.size) == (family, steps, cfg, size)
    low, high = hints.steps_range
    assert 1 <= hints.quick_steps <= hints.steps and low <= hints.steps <= high
    assert hints.few_step == (family in ("turbo", "lcm", "lightning"))
    assert title in str(hints) and f"default {steps})" in str(hints)


def test_a_sampler_the_server_lacks_is_replaced():
    class OldServer:
        def options(self):
            return {"sd_model_checkpoint": "LCM_Dreamshaper_v7 [0123456789]"}

        def samplers(self):
            return ["Euler a", "Euler", "DPM++ 2M"]

    hints = model_hints(OldServer())
    assert hints.sampler_name == "Euler a" and "no 'LCM' sampler" in hints.note


def test_classic_models_keep_the_client_defaults(sd_server, monkeypatch, capsys):
    monkeypatch.setenv("SD_URL", sd_server.url)
    monkeypatch.setenv("SD_AUTH", "")
    client = connect_a1111()
    assert client.placeholder and client.hints.family == "preview"
    assert {key: client.defaults[key] for key in CLIENT_DEFAULTS} == CLIENT_DEFAULTS
    gen = client.txt2img("a lighthouse", width=64, height=64)
    settings = parse_infotext(gen.infotexts[0])
    assert settings["Steps"] == "20" and settings["Sampler"] == "Euler a"


def test_a_turbo_model_gets_few_steps_and_no_guidance(tiny_models, tmp_path, monkeypatch, capsys):
    """A model whose name says turbo (here the tiny model under another name), served by the diffusers
    engine: connect_a1111 says what suits it, and requests without those fields use it."""
    from sdserver import serve_in_thread

    turbo = shutil.copytree(tiny_models["a"], tmp_path / "tiny-sd-turbo")
    with serve_in_thread(engine="diffusers", model=str(turbo), decoder=str(tiny_models["taesd"])) as server:
        monkeypatch.setenv("SD_URL", server.url)
        monkeypatch.setenv("SD_AUTH", "")
        client = connect_a1111()
        said = capsys.readouterr().out
        assert "distilled few-step model" in said and "steps=1, cfg_scale=1.0" in said
        assert client.hints.family == "turbo" and client.defaults["steps"] == 1
        gen = client.txt2img("a lighthouse", width=64, height=64)
        settings = parse_infotext(gen.infotexts[0])
        assert settings["Steps"] == "1" and settings["CFG scale"] == "1.0"
        assert not gen.is_placeholder
        mine = client.txt2img("a lighthouse", width=64, height=64, steps=3, cfg_scale=2)  # your values win
        settings = parse_infotext(mine.infotexts[0])
        assert settings["Steps"] == "3" and settings["CFG scale"] == "2.0"
        # A plain client (not from connect_a1111) keeps the usual defaults.
        assert A1111Client(server.url, auth="").defaults["steps"] == 20
        # make doctor says it too.
        model = check_a1111(server.url, auth="")[1]
        assert model.status == OK and "a turbo model: use 1-4 steps at CFG scale 1" in model.message


def test_the_pipeline_without_a_client_adapts_and_records_what_it_sent(tiny_models, tmp_path, monkeypatch):
    import json

    from conftest import free_url

    from helpers.llm import LLM
    from helpers.pipeline import run_pipeline
    from sdserver import serve_in_thread

    dead = free_url() + "/v1"
    turbo = shutil.copytree(tiny_models["a"], tmp_path / "tiny-sd-turbo")
    with serve_in_thread(engine="diffusers", model=str(turbo), decoder=str(tiny_models["taesd"])) as server:
        monkeypatch.setenv("SD_URL", server.url)
        monkeypatch.setenv("SD_AUTH", "")
        run = run_pipeline("lighthouse, storm", n=2, out_dir=tmp_path / "runs", progress=False, scorer=False,
                           llm=LLM(dead, timeout=2), width=64, height=64, seed=3)
    record = json.loads((run.path / "run.json").read_text())
    assert record["generation"]["steps"] == 1 and record["generation"]["cfg_scale"] == 1.0
    assert record["generation"]["seed"] == 3 and record["generation"]["width"] == 64
    assert all("Steps: 1," in candidate.infotext for candidate in run.candidates)

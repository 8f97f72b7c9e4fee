"""connect_a1111: use the server at SD_URL, or start the kit's own with the right engine (sdserver.autostart)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_url

from helpers import backends
from helpers.a1111 import A1111Error
from helpers.backends import connect_a1111
from helpers.config import load_settings
from helpers.infotext import parse_infotext
from sdserver.autostart import choose_engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dead_sd_url(monkeypatch):
    """SD_URL points at a local port where nothing listens; any server started there is stopped after."""
    url = free_url()
    monkeypatch.setenv("SD_URL", url)
    monkeypatch.setenv("SD_AUTH", "")
    yield url
    server = backends._started.pop(url, None)
    if server is not None:
        server.stop()


def test_a_running_server_is_used_as_it_is(sd_server, monkeypatch, capsys):
    monkeypatch.setenv("SD_URL", sd_server.url)
    monkeypatch.setenv("SD_AUTH", "")
    client = connect_a1111()
    assert client.base_url == sd_server.url and client.placeholder
    assert "started its own" not in capsys.readouterr().out


def test_nothing_there_starts_the_preview_engine_and_says_so(dead_sd_url, capsys):
    client = connect_a1111()
    said = capsys.readouterr().out
    assert client.base_url == dead_sd_url and client.placeholder
    assert "PLACEHOLDERS" in said and "SD_ENGINE=preview" in said and "make models-sd" in said
    assert connect_a1111().base_url == dead_sd_url  # a second call reuses the server


def test_a_remote_address_is_never_replaced(monkeypatch):
    # A shared server that does not answer: no request leaves this machine, the client says so itself.
    def unreachable(self):
        raise A1111Error(f"Cannot connect to {self.base_url}.")

    monkeypatch.setattr(backends.A1111Client, "options", unreachable)
    monkeypatch.setenv("SD_URL", "http://gpu-server.example:7860")
    with pytest.raises(A1111Error, match="gpu-server.example"):
        connect_a1111()
    assert "http://gpu-server.example:7860" not in backends._started
    monkeypatch.undo()
    monkeypatch.setenv("SD_URL", free_url())
    with pytest.raises(A1111Error):
        connect_a1111(start_server=False)


def test_auto_takes_the_diffusers_engine_when_its_model_is_here(tiny_models, dead_sd_url, monkeypatch, capsys):
    monkeypatch.setenv("SD_ENGINE", "auto")
    monkeypatch.setenv("SD_MODEL", str(tiny_models["a"]))
    assert choose_engine()[:2] == ("diffusers", {"model": str(tiny_models["a"]), "backend": "pytorch"})
    client = connect_a1111()
    said = capsys.readouterr().out
    assert not client.placeholder and "diffusers engine" in said and "PLACEHOLDER" not in said
    gen = client.txt2img("a lighthouse", seed=1, width=64, height=64, steps=2)
    assert not gen.is_placeholder and parse_infotext(gen.infotexts[0])["Model"] == "tiny-sd"


def test_auto_falls_back_to_the_preview_engine_and_says_why(tmp_path, dead_sd_url, monkeypatch, capsys):
    monkeypatch.setenv("SD_ENGINE", "auto")
    monkeypatch.setenv("SD_MODEL", str(tmp_path / "not-downloaded"))
    engine, options, why = choose_engine()
    assert (engine, options) == ("preview", {}) and "not-downloaded" in why
    assert connect_a1111().placeholder and "not-downloaded" in capsys.readouterr().out


def test_a_model_that_fails_to_load_falls_back_to_the_preview_engine(tiny_models, tmp_path, dead_sd_url,
                                                                     monkeypatch, capsys):
    import shutil

    broken = shutil.copytree(tiny_models["a"], tmp_path / "broken-sd")
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"half a download")
    monkeypatch.setenv("SD_ENGINE", "auto")
    monkeypatch.setenv("SD_MODEL", str(broken))
    assert choose_engine()[0] == "diffusers"  # the files are there...
    client = connect_a1111()  # ...but do not load: placeholders, and the reason with its fix
    said = capsys.readouterr().out
    assert client.placeholder and "could not start" in said and "broken-sd" in said and "--download" in said


def test_sd_engine_is_checked():
    from helpers.config import SettingsError

    with pytest.raises(SettingsError, match="SD_ENGINE='gpu' is not one of auto, preview, diffusers"):
        load_settings(env={"SD_ENGINE": "gpu"}, dotenv=False)
    settings = load_settings(env={"SD_ENGINE": "Diffusers", "SD_MODEL": " /models/x "}, dotenv=False)
    assert (settings.sd_engine, settings.sd_model) == ("diffusers", "/models/x")


@pytest.mark.subprocess
def test_make_demo_makes_real_images_where_the_model_is_downloaded(tiny_models, tmp_path):
    """`make demo` (python -m helpers demo) with no A1111 and no LLM, but with a diffusers model here."""
    env = {**os.environ, "SD_URL": free_url(), "SD_AUTH": "", "SD_ENGINE": "auto",
           "SD_MODEL": str(tiny_models["a"]), "LLM_BASE_URL": free_url() + "/v1", "HF_HUB_OFFLINE": "1",
           "OUTPUT_DIR": str(tmp_path), "CLIP_PRETRAINED": str(tmp_path / "no-clip.safetensors")}
    result = subprocess.run([sys.executable, "-m", "helpers", "demo"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "diffusers engine" in out and "Model: tiny-sd" not in out  # (the infotext is in the files)
    stand_ins = out.split("Stand-ins used:")[1]
    assert "preview engine" not in stand_ins and "no LLM" in stand_ins
    run_json = next(tmp_path.glob("runs/*/run.json"))
    assert '"placeholder": false' in run_json.read_text()

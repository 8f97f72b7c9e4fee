"""Settings: environment over .env over defaults; secrets never shown."""

from __future__ import annotations

import pytest

from helpers.config import KIT_ROOT, Secret, SettingsError, load_settings


def test_defaults():
    s = load_settings(env={}, dotenv=False)
    assert s.sd_url == "http://127.0.0.1:7860"
    assert s.sd_auth is None
    assert s.sd_timeout == 600 and s.sd_connect_timeout == 5
    assert s.output_dir == KIT_ROOT / "outputs"


def test_environment_wins_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("SD_URL=http://from-dotenv:7860\nSD_TIMEOUT=30\nSD_AUTH=ann:pw\n")
    s = load_settings(env={"SD_URL": "http://from-env:7861/"}, dotenv=dotenv)
    assert s.sd_url == "http://from-env:7861"
    assert s.sd_timeout == 30
    assert s.sd_auth.reveal() == "ann:pw"


def test_dotenv_is_found_from_a_subfolder(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("SD_URL=http://found:1\n")
    sub = tmp_path / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_settings(env={}).sd_url == "http://found:1"


def test_relative_output_dir_is_taken_from_the_kit_root(tmp_path):
    assert load_settings(env={"OUTPUT_DIR": "my-out"}, dotenv=False).output_dir == KIT_ROOT / "my-out"
    assert load_settings(env={"OUTPUT_DIR": str(tmp_path)}, dotenv=False).output_dir == tmp_path


def test_password_never_in_repr_or_str():
    s = load_settings(env={"SD_AUTH": "ann:hunter2"}, dotenv=False)
    for text in (repr(s), str(s), repr(s.sd_auth), str(s.sd_auth), f"{s}"):
        assert "hunter2" not in text
    assert "ann:********" in repr(s)
    assert repr(Secret("sk-abc")) == "Secret('********')"


@pytest.mark.parametrize("env, word", [
    ({"SD_TIMEOUT": "soon"}, "SD_TIMEOUT"),
    ({"SD_TIMEOUT": "-3"}, "SD_TIMEOUT"),
    ({"SD_URL": "127.0.0.1:7860"}, "http://127.0.0.1:7860"),
    ({"SD_AUTH": "justaname"}, "user:password"),
])
def test_bad_values_name_the_variable_and_the_fix(env, word):
    with pytest.raises(SettingsError, match=word):
        load_settings(env=env, dotenv=False)

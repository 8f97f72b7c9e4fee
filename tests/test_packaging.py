"""The kit's packaging: one dependency list, a light `import helpers`, the README's commands exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "open_clip", "openai", "fastapi", "uvicorn", "matplotlib", "ipywidgets")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    pinned = [line for line in pip_block if not line.startswith("-e")]
    assert pinned == project["dependencies"]
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python="))
    assert python == "python=3.11"


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_import_helpers_is_light():
    loaded = _modules_after("import helpers, helpers.config, helpers.infotext")
    assert not loaded & set(HEAVY)


def test_the_client_does_not_pull_in_the_server_or_ml_libraries():
    loaded = _modules_after("import helpers.a1111, course.doctor, helpers.plots, helpers.backends, "
                            "helpers.llm, helpers.text, helpers.prompts")
    assert not loaded & {"torch", "open_clip", "openai", "fastapi", "uvicorn", "matplotlib"}


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, flags=re.M))
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*make ([a-z]+)", quick_start, flags=re.M)
    assert len(commands) == 2, "the quick start has exactly two commands"
    assert set(commands) <= targets
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_gitignore_keeps_secrets_and_outputs_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in (".env", "outputs/", "submission/", ".venv/"):
        assert entry in ignored


def test_server_request_model_matches_the_client_field_list():
    """The client's typo check and the server's request model describe the same txt2img fields."""
    from helpers.a1111_fields import TXT2IMG_DEFAULTS
    from sdserver.models import Txt2ImgRequest

    fields = Txt2ImgRequest.model_fields
    assert list(fields) == list(TXT2IMG_DEFAULTS)
    assert {name: f.default for name, f in fields.items()} == TXT2IMG_DEFAULTS

"""The six solution notebooks top to bottom against the real AUTOMATIC1111 and a real llama.cpp server.

tests/test_notebooks.py runs them against the kit's own servers; here ``SD_URL`` points at A1111 v1.10.1
(tests/real_a1111.py, its tiny random checkpoint, a second copy of it to switch to, and a text-encoder LoRA
under notebook 04's name ``kit-demo``) and ``LLM_BASE_URL`` at llama-cpp-python's server (tests/real_llama.py,
a tiny random chat model and an embedding model). Their text is gibberish and their images noise: what is
checked is that every cell runs, every exercise's check passes on the solutions, and nothing calls A1111's
images placeholders. The pipeline, run from the command line as a student would, is checked the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import HAS_DIFFUSERS, REAL_LANE
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

pytestmark = [pytest.mark.real, pytest.mark.timeout(1200),
              REAL_LANE,
              pytest.mark.skipif(not HAS_DIFFUSERS, reason="the tiny model is built with the diffusers extra")]


@pytest.fixture(scope="module")
def a1111(tmp_path_factory):
    from real_a1111 import a1111_source, add_checkpoint, start_a1111, write_tiny_lora

    if a1111_source() is None:
        pytest.fail("no A1111 to test against: set A1111_DIR, or put ../shared/a1111/ beside the kit")
    server = start_a1111(tmp_path_factory.mktemp("a1111-notebooks"))
    add_checkpoint(server, "kit-tiny-b")  # notebook 04 switches to another model and back
    write_tiny_lora(server.data / "models" / "Lora", "kit-demo", seed=1)  # and sweeps the weight of kit-demo
    import requests

    for refresh in ("refresh-checkpoints", "refresh-loras"):
        requests.post(f"{server.url}/sdapi/v1/{refresh}", timeout=60).raise_for_status()
    yield server
    server.stop()


@pytest.fixture
def real_env(a1111, llama, monkeypatch, tmp_path):
    """The settings a student's .env would hold for these two servers (the kernel inherits them)."""
    from real_llama import CHAT, EMBED

    for name, value in {"SD_URL": a1111.url, "SD_AUTH": "", "LLM_BASE_URL": llama.base_url,
                        "LLM_MODEL": CHAT, "LLM_VISION_MODEL": "", "LLM_EMBED_MODEL": EMBED,
                        "OUTPUT_DIR": str(tmp_path / "outputs")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return tmp_path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_solution_notebook_on_the_real_servers(path, real_env):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if os.environ.get("KIT_EXECUTED_DIR"):  # to read what a student would see: the executed copy
            Path(os.environ["KIT_EXECUTED_DIR"]).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(os.environ["KIT_EXECUTED_DIR"]) / f"{path.stem}-real.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    if "txt2img" in "".join(c.source for c in nb.cells):
        assert "Using A1111 at" in shown and "kit started its own" not in shown, "the notebook uses the real A1111"
        assert not [line for line in shown.splitlines() if "PLACEHOLDER" in line and "caption" not in line]
        assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows its images"
    if path.name.startswith("04"):
        assert "kit-tiny-b" in shown and "LoRAs on the server: ['kit-demo']" in shown
    if path.name[:2] in {"02", "03", "05", "06"}:
        from real_llama import CHAT

        assert CHAT in shown, "the notebook must use the LLM that answers, and name it"
    last = "".join(str(o.get("text", "")) for o in nb.cells[-1].outputs)
    report = re.search(r"Exercises: (\d+) of (\d+) done", last)
    assert report and report.group(1) == report.group(2) != "0", f"the solutions must pass every check: {last!r}"


def test_pipeline_from_the_command_line(real_env, a1111):
    """``python -m helpers pipeline`` as a student runs it: keywords to text (the real LLM and the course's
    texts), prompt, images on A1111 and a best one, with a run record naming the real servers' models."""
    from helpers.clipqa import TINY_MODEL, make_tiny_checkpoint

    out = real_env / "runs"
    clip = {"CLIP_MODEL": TINY_MODEL, "CLIP_PRETRAINED": str(make_tiny_checkpoint(real_env / "clip.safetensors"))}
    result = subprocess.run([sys.executable, "-m", "helpers", "pipeline", "lighthouse, storm", "--n", "2",
                             "--steps", "2", "--size", "64", "--text-source", "rag", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **clip})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    records = sorted(out.rglob("run.json"))
    assert len(records) == 1, result.stdout[-2000:]
    record = json.loads(records[0].read_text())
    text = json.dumps(record)
    assert "kit-tiny" in text and "kit-tiny-chat" in text, text[:2000]
    assert len(list(records[0].parent.rglob("*.png"))) >= 2

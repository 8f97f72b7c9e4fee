"""Every notebook runs top to bottom against the kit's own servers, as CI and a student would."""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path

import nbformat
import pytest
from conftest import HAS_DIFFUSERS, free_url
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:1] == ["01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs; clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercises_carry_solution_markers(path):
    nb = nbformat.read(path, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    begins = sum(s.count("### BEGIN SOLUTION") for s in sources)
    ends = sum(s.count("### END SOLUTION") for s in sources)
    assert begins >= 1 and begins == ends


def test_caption_route_compares_with_the_original_text():
    # The course page compares the caption with the ORIGINAL TEXT, never with the image prompt.
    raters = [line for path in NOTEBOOKS for cell in nbformat.read(path, as_version=4).cells
              if cell.cell_type == "code" and "caption_rater(" in cell.source
              for line in cell.source.splitlines() if ".score(" in line]
    assert raters and all(".score(text.text," in line for line in raters), raters


# Notebooks that use an LLM run twice: against the test LLM server, and with no LLM at all. Those
# that make images run once more on the diffusers engine (tiny random-weight model, real pixels).
LLM_NOTEBOOKS = {"02", "03", "05", "06"}
# Notebooks that switch models and sweep a LoRA: on the diffusers engine their server gets a second model and
# a LoRA named as the notebook's (kit-demo), made to fit the tiny model (the kit's SD-sized demo LoRA does not).
LORA_NOTEBOOKS = {"04"}
# The notebooks that make images (they connect through course.notebook.setup or connect_a1111).
ENGINE_NOTEBOOKS = {p.name[:2] for p in NOTEBOOKS if "txt2img" in p.read_text(encoding="utf-8")}


def vision_stand_in(messages: list, body: dict):
    """The test server's "vision model" for the notebooks: it writes yes/no questions about a text, and
    answers a yes/no question about an image by a hash of both, so raters' scores differ between images
    (None: the server's default answer)."""
    from llm_server import images_in

    content = [m.get("content") for m in messages if m.get("role") == "user"][-1]
    user = " ".join(p.get("text", "") for p in content if isinstance(p, dict)) if isinstance(content, list) \
        else str(content)
    if ((body.get("response_format") or {}).get("json_schema") or {}).get("name") == "questions":
        words = [w for w in re.findall(r"[a-z]{4,}", user.lower()) if w != "text"][:4]
        return json.dumps({"questions": [f"Does the picture show {w}?" for w in words + ["a scene"] * 3][:4]})
    images = images_in(messages)
    if images and "yes or no" in user.lower():
        return "Yes." if zlib.crc32(user.encode() + images[0].tobytes()[:4096]) % 3 else "No."
    return None


def _modes(path: Path) -> tuple[str, ...]:
    modes = ("llm", "no-llm") if path.name[:2] in LLM_NOTEBOOKS else ("-",)
    return modes + (("diffusers",) if path.name[:2] in ENGINE_NOTEBOOKS and HAS_DIFFUSERS else ())


RUNS = [(p, mode) for p in NOTEBOOKS for mode in _modes(p)]


def test_image_notebooks_are_found():
    assert {"01", "04", "06"} <= ENGINE_NOTEBOOKS


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path, mode", RUNS, ids=[f"{p.stem}-{m}" if m != "-" else p.stem for p, m in RUNS])
def test_notebook_runs_top_to_bottom(path, mode, tmp_path, monkeypatch, request):
    from llm_server import LLMTestServer

    from sdserver import serve_in_thread

    if mode == "diffusers":
        # The tiny model under a turbo name, so the notebooks take their few-step branches here
        # (1 step at CFG 1, from client.hints) and the classic ones on the preview engine.
        models = request.getfixturevalue("tiny_models")
        turbo = shutil.copytree(models["a"], tmp_path / "tiny-sd-turbo")
        extra = {}
        if path.name[:2] in LORA_NOTEBOOKS:
            from tiny_sd import build_tiny_lora

            build_tiny_lora(models["a"], tmp_path / "loras", "kit-demo", seed=1)
            shutil.copytree(models["b"], tmp_path / "checkpoints" / "tiny-sd-b")
            extra = {"lora_dir": str(tmp_path / "loras"), "ckpt_dir": str(tmp_path / "checkpoints")}
        server = serve_in_thread(host="127.0.0.1", port=0, engine="diffusers", model=str(turbo),
                                 decoder=str(models["taesd"]), **extra)
    else:
        server = serve_in_thread(host="127.0.0.1", port=0, engine="preview", step_delay=0.02)
    uses_llm = mode == "llm" or (mode == "diffusers" and path.name[:2] in LLM_NOTEBOOKS)
    llm_server = LLMTestServer(models=["test-model"], reply=vision_stand_in).start() if uses_llm else None
    try:
        # The kernel is a child process: it inherits these settings from the environment.
        monkeypatch.setenv("SD_URL", server.url)
        monkeypatch.setenv("SD_AUTH", "")
        monkeypatch.setenv("LLM_BASE_URL", llm_server.base_url if llm_server else free_url() + "/v1")
        monkeypatch.setenv("LLM_MODEL", "")
        # The test server's chat model sees images too; its embedding model serves the caption route.
        monkeypatch.setenv("LLM_VISION_MODEL", "")
        monkeypatch.setenv("LLM_EMBED_MODEL", "test-embed" if uses_llm else "")
        monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outputs"))
        monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend turns figures into image/png
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        server.stop()
        if llm_server:
            llm_server.stop()
        if os.environ.get("KIT_EXECUTED_DIR"):  # to read what a student would see: the executed copy
            Path(os.environ["KIT_EXECUTED_DIR"]).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(os.environ["KIT_EXECUTED_DIR"]) / f"{path.stem}-{mode}.ipynb")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    text = shown.lower()
    if uses_llm:
        assert llm_server.requests, "the notebook must use the LLM when one answers"
    if mode == "no-llm":
        assert "no llm" in text, "without an LLM the notebook must say so"
    makes_images = "txt2img" in "".join(c.source for c in nb.cells)
    if makes_images and mode != "diffusers":
        assert "placeholder" in text, "the notebook must say its images are placeholders"
    if makes_images and mode == "diffusers":
        # Only captions may be placeholders there (the kit's server has no captioning model).
        called = [line for line in shown.splitlines() if "PLACEHOLDER" in line and "caption" not in line]
        assert not called, f"real images must not be called placeholders: {called}"
        assert "distilled few-step model" in shown, "the notebook must say which settings suit a turbo model"
        if path.name[:2] in LORA_NOTEBOOKS:
            assert "tiny-sd-b" in shown and "includes loading the other model" in shown, "the notebook switches models"
            assert "LoRAs on the server: ['kit-demo']" in shown and "not checked" not in shown, \
                "the LoRA sweep runs with a LoRA that fits the model"
    if makes_images:
        assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook shows its images"
    if path.name[:2] == "05":
        # Every available rater is compared with the student's ratings; those that need a vision model
        # run when the server takes images, and are named as skipped when there is none.
        assert "Spearman with you" in shown and "clip:" in shown, "05 must compare the raters with your ratings"
        if uses_llm:
            compared = re.findall(r"^(\w+) +scores .*Spearman with you", shown, re.M)
            assert {"caption", "questions", "vqa"} <= set(compared), compared
            assert "compared by embeddings (test-embed)" in shown, "the caption route uses the server's embeddings"
            assert "answered no:" in shown and any(body.get("logprobs") for body in llm_server.requests)
        else:
            assert "skipped the caption, question and VQA raters, because no LLM answered" in shown
            assert "Question checks skipped: no LLM answered" in shown
    # The solutions pass their own checks: the last cell reports every code exercise done.
    last = "".join(str(o.get("text", "")) for o in nb.cells[-1].outputs)
    report = re.search(r"Exercises: (\d+) of (\d+) done", last)
    assert report and report.group(1) == report.group(2) != "0", f"the solutions must pass every check: {last!r}"

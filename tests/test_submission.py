"""Moodle submissions: clean runs only, no secrets, within the size budget, with an HTML export."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile

import nbformat
import numpy as np
import pytest
from PIL import Image

from helpers.submission import SubmissionError, find_secrets, submit


def _png_b64(side=900, seed=0) -> str:
    noise = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for count, (source, outputs) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = outputs
        nb.cells.append(cell)
    return nb


def _write(tmp_path, nb, name="06_full_pipeline.ipynb"):
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _stream(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def test_clean_notebook_gives_ipynb_html_and_zip(tmp_path):
    path = _write(tmp_path, _notebook([("print('hi')", [_stream("hi\n")])]))
    result = submit(path, name="Ann Lee", out_dir=tmp_path / "out")
    assert result.notebook_path.name == "Ann-Lee_06_full_pipeline.ipynb"
    assert "hi" in result.html_path.read_text()
    assert set(zipfile.ZipFile(result.zip_path).namelist()) == {result.notebook_path.name, result.html_path.name}
    assert "within the budget" in result.report()


def test_planted_key_is_refused_naming_the_cell_without_printing_the_key(tmp_path):
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    nb = _notebook([("x = 1", []), (f"client = OpenAI(api_key='{key}')", [])])
    with pytest.raises(SubmissionError) as err:
        submit(_write(tmp_path, nb), name="a", out_dir=tmp_path / "out")
    assert "cell 2" in str(err.value) and "OpenAI-style API key" in str(err.value)
    assert key not in str(err.value) and ".env" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_configured_password_and_key_in_outputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_AUTH", "ann:tr0ub4dor")
    monkeypatch.setenv("LLM_API_KEY", "lmstudio-token-123")
    nb = _notebook([("print(auth)", [_stream("('ann', 'tr0ub4dor')\n")]),
                    ("headers", [_stream("{'Authorization': 'Bearer abcdefghijklmnop'}\n")]),
                    ("print(key)", [_stream("lmstudio-token-123\n")])])
    found = "\n".join(find_secrets(nb))
    assert "cell 1" in found and "A1111 password" in found
    assert "cell 2" in found and "bearer token" in found
    assert "cell 3" in found and "LLM_API_KEY" in found
    with pytest.raises(SubmissionError):
        submit(_write(tmp_path, nb), name="a", out_dir=tmp_path / "out")


def test_large_images_are_shrunk_under_the_budget_and_still_open(tmp_path):
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png_b64(seed=i), "text/plain": "<img>"})
               for i in range(6)]
    nb = _notebook([("show()", outputs)])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = _write(tmp_path, nb)
    assert path.stat().st_size > 10_000_000
    result = submit(path, name="b", max_mb=2, out_dir=tmp_path / "out")
    assert result.zip_path.stat().st_size <= 2_000_000
    shrunk = nbformat.read(result.notebook_path, as_version=4)
    nbformat.validate(shrunk)
    assert "widgets" not in shrunk.metadata
    images = [o["data"]["image/jpeg"] for o in shrunk.cells[0].outputs]
    assert len(images) == 6 and Image.open(io.BytesIO(base64.b64decode(images[0]))).format == "JPEG"
    assert result.html_path.read_text().count("data:image/jpeg;base64") == 6
    assert any("JPEG thumbnails" in change for change in result.changes)


@pytest.mark.parametrize("cells, words", [
    ([("1/0", [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=[])])],
     "ends with an error: ZeroDivisionError"),
    ([("x = 1", []), ("y = 2", [])], "ran out of order"),
])
def test_error_or_out_of_order_cells_are_refused(tmp_path, cells, words):
    nb = _notebook(cells)
    if "order" in words:
        nb.cells[1].execution_count = 1
    with pytest.raises(SubmissionError, match=words):
        submit(_write(tmp_path, nb), name="c", out_dir=tmp_path / "out")


def test_unrun_notebook_is_refused_and_execute_runs_it(tmp_path):
    nb = _notebook([("print(6 * 7)", [])])
    nb.cells[0].execution_count = None
    path = _write(tmp_path, nb)
    with pytest.raises(SubmissionError, match="was not run"):
        submit(path, name="d", out_dir=tmp_path / "out")
    result = submit(path, name="d", execute=True, out_dir=tmp_path / "out")
    assert "42" in result.html_path.read_text()


def test_command_line(tmp_path):
    path = _write(tmp_path, _notebook([("print('ok')", [_stream("ok\n")])]))
    out = subprocess.run([sys.executable, "-m", "helpers", "submit", str(path), "--name", "eve", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "eve_06_full_pipeline.zip" in out.stdout and "MB" in out.stdout

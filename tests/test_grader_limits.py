"""The grader's own limits: nothing it reads from a student is unbounded (course.grading, course.grading_worker).

A zip bomb in the download, a flood of notebooks, a notebook that prints megabytes: each is cut at a limit
that the feedback names, and what passed before the limit still counts.
"""

from __future__ import annotations

import io
import zipfile

import nbformat
import pytest

import course.grading as grading
from course.grading import MAX_FILES, Limits, find_submissions, run_notebook
from course.grading_worker import OUTPUT_CAP

pytestmark = pytest.mark.grading

FOLDER = "Ann Lee_42_assignsubmission_file_"


def notebook(*sources: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nbformat.writes(nb).encode()


def download(tmp_path, files: dict[str, bytes]):
    path = tmp_path / "download.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_a_zip_bomb_and_a_flood_of_notebooks_are_skipped_and_said(tmp_path):
    bomb = b'{"cells": [], "x": "' + b"0" * 30_000_000 + b'"}'  # 30 MB that packs to about 30 KB
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as nested:
        nested.writestr("big.ipynb", bomb)
    files = {f"{FOLDER}/bomb.ipynb": bomb, f"{FOLDER}/kit.zip": inner.getvalue()}
    files |= {f"{FOLDER}/copy-{i:02}.ipynb": notebook("print(1)") for i in range(MAX_FILES + 5)}
    path = download(tmp_path, files)
    assert path.stat().st_size < 1_000_000
    student = find_submissions(path)["Ann Lee_42"]
    assert len(student["notebooks"]) == MAX_FILES  # the rest are not read into memory
    assert sum(map(len, student["notebooks"].values())) < 1_000_000
    said = "\n".join(student["skipped"])
    assert "bomb.ipynb: not graded (30.0 MB, over the grader's 20 MB)" in said
    assert "kit.zip/big.ipynb: not graded (30.0 MB" in said
    assert said.count(f"past the grader's limit of {MAX_FILES} notebooks") == 5


def test_a_cell_that_prints_megabytes_is_cut_and_the_checks_still_count():
    source = notebook("from course.exercises import check",
                      "print('x' * 3_000_000)\nprint('and more')",
                      "def test_double(f):\n    assert f(2) == 4\n"
                      "double = check('double', lambda x: 2 * x, test_double)")
    result = run_notebook(source, "http://127.0.0.1:9", Limits(cell_timeout=60, notebook_timeout=120),
                          isolate=False)
    assert result["exercises"]["double"] == ["done", ""], result
    assert result["cut"] == f"the output of code cell 2 was cut at the grader's {OUTPUT_CAP // 1000} KB per cell"


def test_a_result_over_the_size_limit_is_not_read_and_says_so(monkeypatch):
    monkeypatch.setattr(grading, "MAX_RESULT_MB", 0)
    result = run_notebook(notebook("print(1)"), "http://127.0.0.1:9", Limits(cell_timeout=60, notebook_timeout=120),
                          isolate=False)
    assert result["exercises"] == {}
    assert result["stopped"] == "its results were over the grader's 0 MB and were not read"

"""Student versions: solutions replaced by stubs, and each runs up to its first exercise."""

from __future__ import annotations

import socket
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course.student import BEGIN, END, check_markers, make_student_versions, student_version

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _solution_lines(nb) -> set[str]:
    """Lines that occur only inside solution blocks (so they must not survive in the student version)."""
    inside, outside = set(), set()
    for cell in nb.cells:
        depth = 0
        for line in cell.source.splitlines():
            text = line.strip()
            if text == BEGIN:
                depth += 1
            elif text == END:
                depth -= 1
            elif len(text) > 12:
                (inside if depth else outside).add(text)
    return inside - outside


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    target = tmp_path_factory.mktemp("student")
    make_student_versions(ROOT / "notebooks", target)
    return target


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_balanced_markers_and_an_exercise(path):
    assert check_markers(nbformat.read(path, as_version=4), path.name) >= 1


@pytest.mark.parametrize("source, words", [
    (f"{BEGIN}\nx = 1\n", "never closed"),
    (f"x = 1\n{END}\n", "without"),
    (f"{BEGIN}\n{BEGIN}\n{END}\n{END}\n", "inside another"),
])
def test_unbalanced_markers_are_named(source, words):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    with pytest.raises(ValueError, match=words):
        check_markers(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_version_contains_no_solution(path, student_dir):
    solution = nbformat.read(path, as_version=4)
    student = nbformat.read(student_dir / path.name, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert BEGIN not in text and END not in text
    student_lines = {line.strip() for line in text.splitlines()}
    leaked = [line for line in _solution_lines(solution) if line in student_lines]
    assert not leaked
    assert text.count("raise NotImplementedError()") + text.count("YOUR ANSWER HERE") >= check_markers(solution)
    assert student.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert len(student.cells) == len(solution.cells)  # nothing else removed


def test_student_version_is_a_copy():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"a = 1\n{BEGIN}\nb = 2\n{END}\n")])
    student_version(nb)
    assert "b = 2" in nb.cells[0].source


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_notebook_runs_up_to_its_first_exercise(path, student_dir, tmp_path, monkeypatch):
    from sdserver import serve_in_thread

    student = nbformat.read(student_dir / path.name, as_version=4)
    first_stub = next(i for i, c in enumerate(student.cells)
                      if c.cell_type == "code" and "raise NotImplementedError()" in c.source)
    student.cells = student.cells[: first_stub + 1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview", step_delay=0.0)
    try:
        monkeypatch.setenv("SD_URL", server.url)
        monkeypatch.setenv("SD_AUTH", "")
        monkeypatch.setenv("LLM_BASE_URL", f"http://127.0.0.1:{dead}/v1")
        monkeypatch.setenv("OUTPUT_DIR", str(tmp_path))
        NotebookClient(student, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        server.stop()
    errors = [(i, o) for i, c in enumerate(student.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert [(i, o.ename) for i, o in errors] == [(first_stub, "NotImplementedError")]

"""Student versions: solutions replaced by stubs, and each runs to its end (Run All) unsolved."""

from __future__ import annotations

import re
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


def test_the_pages_the_notebooks_link_to_come_along(student_dir):
    linked = {m for p in NOTEBOOKS for m in re.findall(r"\(([\w-]+\.md)\)", p.read_text(encoding="utf-8"))}
    assert "install_a1111.md" in linked
    for name in linked:
        assert (student_dir / name).read_bytes() == (ROOT / "notebooks" / name).read_bytes()


def test_student_version_is_a_copy():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"a = 1\n{BEGIN}\nb = 2\n{END}\n")])
    for stem in ("01_example", None):   # None: markers alone are enough
        stubbed = student_version(nb, stem)
        assert "b = 2" in nb.cells[0].source and "b = 2" not in stubbed.cells[0].source
        assert "nbgrader" not in nb.cells[0].metadata and stubbed.cells[0].metadata["nbgrader"]["solution"]


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_notebook_runs_to_the_end(path, student_dir, tmp_path, monkeypatch):
    """Run All on the student version, nothing solved, no LLM: every check says "not done yet", the
    cells after it go on with the kit's reference, and the last cell lists every exercise as not done."""
    from sdserver import serve_in_thread

    student = nbformat.read(student_dir / path.name, as_version=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview", step_delay=0.0)
    try:
        monkeypatch.setenv("SD_URL", server.url)
        monkeypatch.setenv("SD_AUTH", "")
        monkeypatch.setenv("LLM_BASE_URL", f"http://127.0.0.1:{dead}/v1")
        monkeypatch.setenv("OUTPUT_DIR", str(tmp_path))
        monkeypatch.delenv("MPLBACKEND", raising=False)
        NotebookClient(student, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        server.stop()
    errors = [(i + 1, o.ename, o.evalue) for i, c in enumerate(student.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: Run All stopped: {errors}"
    shown = "\n".join(str(o.get("text", "")) for c in student.cells if c.cell_type == "code" for o in c.outputs)
    stubs = sum(c.source.count("raise NotImplementedError()") for c in student.cells if c.cell_type == "code")
    assert shown.count("not done yet") >= stubs, "every unsolved exercise's check says 'not done yet'"
    last = "".join(str(o.get("text", "")) for o in student.cells[-1].outputs)
    assert re.search(r"Exercises: 0 of \d+ done", last), f"the last cell reports the exercises: {last!r}"

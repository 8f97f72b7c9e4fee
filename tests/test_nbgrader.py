"""nbgrader for real: every cell carries nbgrader's metadata, `make student` writes nbgrader's release
version, and nbgrader's own command line grades the notebooks (an unsolved exercise 0, a solved one full
points), because a check raises under a grader."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import free_url

from course import exercises
from course.exercises import ExerciseNotPassed, check
from course.nbgrader_metadata import EDIT_HINTS, with_metadata
from course.student import make_student_versions

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
POINTS = json.loads((ROOT / "data" / "grading" / "points.json").read_text(encoding="utf-8"))
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\w+)["']""")
BEGIN = "### BEGIN SOLUTION"
GRADERS = [{"NBGRADER_EXECUTION": "autograde"}, {"NBGRADER_EXECUTION": "validate"}, {"KIT_GRADING": "1"}]


def _read(path):
    return nbformat.read(path, as_version=4)


def _points(stem: str, name: str) -> float:
    return POINTS["exercises"].get(stem, {}).get(name, POINTS["default"])


# --- The metadata --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_notebook_carries_its_nbgrader_metadata(path):
    from nbgrader.nbgraderformat import MetadataValidator

    nb = _read(path)
    MetadataValidator().validate_nb(nb)   # nbgrader's own check (grade ids, points, markdown answers)
    missing = [i + 1 for i, c in enumerate(nb.cells) if "nbgrader" not in c.metadata]
    assert not missing, f"{path.name}: cells {missing} lack nbgrader's metadata: run python -m course.nbgrader_metadata"
    expected = with_metadata(copy.deepcopy(nb), path.stem)
    stale = [i + 1 for i, (a, b) in enumerate(zip(nb.cells, expected.cells)) if a.metadata != b.metadata]
    assert not stale, f"{path.name}: cells {stale} have stale metadata: run python -m course.nbgrader_metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cells_are_marked_by_what_they_are(path):
    """Solutions are answers, check cells are graded and locked (with points.json's points), written answers
    are graded by hand, the cells students are told to edit stay editable, and every other cell is read-only."""
    nb = _read(path)
    checked = []
    for number, cell in enumerate(nb.cells, start=1):
        meta, where = cell.metadata["nbgrader"], f"{path.name} cell {number}"
        flags = (meta["solution"], meta["grade"], meta["locked"])
        names = CHECK_CALL.findall(cell.source) if cell.cell_type == "code" else []
        if cell.cell_type == "markdown" and BEGIN in cell.source:
            assert flags == (True, True, False) and meta["points"] > 0, f"{where}: a written answer"
        elif BEGIN in cell.source:
            assert flags == (True, False, False), f"{where}: an exercise's solution"
        elif names:
            assert flags == (False, True, True), f"{where}: a check cell is graded and locked"
            assert meta["points"] == sum(_points(path.stem, name) for name in names), f"{where}: points.json"
            checked += names
        elif cell.cell_type == "code" and any(hint in cell.source for hint in EDIT_HINTS):
            assert flags == (False, False, False), f"{where}: the student edits this cell"
        else:
            assert flags == (False, False, True), f"{where}: read-only"
        if any(flags):
            assert re.fullmatch(rf"{path.name[:2]}-[\w-]+", meta["grade_id"]), f"{where}: {meta['grade_id']}"
    listed = POINTS["exercises"].get(path.stem, {})
    assert set(listed) <= set(checked), f"{path.name}: points.json lists exercises no cell checks"
    assert sum(c.metadata["nbgrader"].get("points", 0) for c in nb.cells if c.cell_type == "code") \
        == sum(_points(path.stem, name) for name in checked)


def test_notebook_06s_rechecks_count_nothing_and_its_pipelines_count():
    nb = _read(next(p for p in NOTEBOOKS if p.name.startswith("06")))
    graded = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"] for c in nb.cells
              if c.cell_type == "code" and c.metadata["nbgrader"]["grade"]}
    assert graded["06-check-best_of_n"] == graded["06-check-until_threshold"] == 1
    assert graded["06-check-show_side_by_side-load_clip-rate-pick_best"] == 0


def test_grade_ids_do_not_depend_on_a_cells_position():
    path = NOTEBOOKS[0]
    nb = _read(path)
    before = {c.id: c.metadata["nbgrader"].get("grade_id") for c in nb.cells}
    moved = copy.deepcopy(nb)
    moved.cells.insert(0, nbformat.v4.new_markdown_cell("A new first cell."))
    del moved.cells[5]
    with_metadata(moved, path.stem)
    after = {c.id: c.metadata["nbgrader"].get("grade_id") for c in moved.cells}
    assert all(after[cell_id] == grade_id for cell_id, grade_id in before.items() if cell_id in after)
    assert len(set(before.values()) - {None}) == sum(v is not None for v in before.values()), "grade ids unique"


# --- check() under a grader ----------------------------------------------------------------------------------

def _not_done(f):
    f(1)


CELL = """
def double(x):
    raise NotImplementedError()
def triple(x):
    raise NotImplementedError()
double = check("double", double, test, reference=lambda x: 2 * x, uses="2 * x")
triple = check("triple", triple, test, reference=lambda x: 3 * x, uses="3 * x")
after = double(2) + triple(2)
"""


@pytest.fixture
def student(monkeypatch):
    for name in ("NBGRADER_EXECUTION", "KIT_GRADING"):
        monkeypatch.delenv(name, raising=False)
    exercises.reset()
    yield monkeypatch
    exercises.reset()


def test_for_a_student_a_check_prints_one_line_and_gives_the_reference(student, capsys):
    namespace = {"check": check, "test": _not_done}
    exec(CELL, namespace)
    assert namespace["after"] == 10
    assert capsys.readouterr().out.splitlines()[0] == "[ ] double: not done yet. The cells below use 2 * x instead."
    student.setenv("KIT_GRADING", "0")
    exec(CELL, namespace)   # KIT_GRADING=0 is no grader


@pytest.mark.parametrize("env", GRADERS, ids=lambda env: "=".join(next(iter(env.items()))))
def test_under_a_grader_a_failed_check_raises(student, env, capsys):
    for name, value in env.items():
        student.setenv(name, value)
    namespace = {"check": check, "test": _not_done}
    with pytest.raises(ExerciseNotPassed, match=r"^\[ \] double: not done yet\.$"):
        exec(CELL, namespace)
    assert capsys.readouterr().out.startswith("[ ] double: not done yet. The cells below use 2 * x instead.")
    assert namespace["double"](2) == 4, "the cells after the check still get the kit's reference"
    assert exercises.statuses() == {"double": "not done yet"}
    passed = check("double", lambda x: 2 * x, lambda f: None)
    assert passed(1) == 2 and exercises.statuses() == {"double": "done"}


def test_under_a_grader_a_check_cell_raises_at_its_end(student, capsys):
    """The AST wrapper of a check cell: every check of the cell and every line after them run, the cell
    raises at its end with each failed check's line."""
    student.setenv("NBGRADER_EXECUTION", "autograde")
    tree = exercises._CheckCells().visit(ast.parse(CELL))
    namespace = {"check": check, "test": _not_done}
    with pytest.raises(ExerciseNotPassed) as raised:
        exec(compile(ast.fix_missing_locations(tree), "<cell>", "exec"), namespace)
    assert str(raised.value) == "[ ] double: not done yet.\n[ ] triple: not done yet."
    assert namespace["after"] == 10, "the lines after the checks ran, with the kit's references"
    assert exercises._PENDING is None
    plain = "x = 1\nprint(x)\n"
    assert ast.dump(exercises._CheckCells().visit(ast.parse(plain))) == ast.dump(ast.parse(plain))
    passing = CELL.replace("after = double(2) + triple(2)", "")
    namespace["test"] = lambda f: None
    exec(compile(ast.fix_missing_locations(exercises._CheckCells().visit(ast.parse(passing))), "<cell>", "exec"),
         namespace)   # every check passes: no error, and the cell keeps the student's functions
    assert "done" == exercises.statuses()["triple"] and exercises._PENDING is None


# --- nbgrader's command line ---------------------------------------------------------------------------------

def _nbgrader(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run nbgrader's command line in the course folder ``root`` (nbgrader runs alembic from the venv's bin)."""
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}",
                           "--CourseDirectory.course_id=kit"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, f"nbgrader {args[0]} failed:\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with the notebooks as the assignment "course", released by generate_assignment."""
    root = tmp_path_factory.mktemp("nbgrader")
    source = root / "source" / "course"
    source.mkdir(parents=True)
    for path in (ROOT / "notebooks").glob("*"):
        if path.suffix in (".ipynb", ".md"):
            shutil.copy(path, source / path.name)
    _nbgrader(root, "generate_assignment", "course")
    return root


@pytest.mark.subprocess
def test_make_student_writes_nbgraders_release_version(course, tmp_path):
    written = make_student_versions(ROOT / "notebooks", tmp_path)
    release = course / "release" / "course"
    assert sorted(p.name for p in release.glob("*.ipynb")) == [p.name for p in written]
    for path in written:
        ours, theirs = _read(path), _read(release / path.name)
        assert len(ours.cells) == len(theirs.cells)
        for a, b in zip(ours.cells, theirs.cells):
            assert (a.cell_type, a.id, a.source, a.metadata) == (b.cell_type, b.id, b.source, b.metadata)
        assert path.read_bytes() == (release / path.name).read_bytes(), f"{path.name} differs from nbgrader's"


def _scores(root: Path, student: str) -> dict[str, dict[str, tuple]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "kit") as gradebook:
        return {path.stem: {g.name: (g.cell_type, g.auto_score, g.max_score)
                            for g in gradebook.find_submission_notebook(path.stem, "course", student).grades}
                for path in NOTEBOOKS}


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("solved", [False, True], ids=["unsolved", "solved"])
def test_nbgrader_autograde_scores_the_exercises(course, solved, tmp_path):
    """nbgrader's autograde on all six notebooks, against the kit's preview server and no LLM: the student
    version as released scores 0 on every exercise (each check cell ends in ExerciseNotPassed, and nothing else
    fails); the solution version scores every check cell's full points, its written answers wait for a
    person (nbgrader grades an unchanged answer 0 by itself)."""
    from sdserver import serve_in_thread

    student = "solved" if solved else "unsolved"
    submitted = course / "submitted" / student / "course"
    shutil.copytree(course / ("source" if solved else "release") / "course", submitted)
    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview", step_delay=0.0)
    env = {**os.environ, "SD_URL": server.url, "SD_AUTH": "", "LLM_BASE_URL": free_url() + "/v1",
           "OUTPUT_DIR": str(tmp_path / "outputs")}
    env.pop("MPLBACKEND", None)
    for name in ("NBGRADER_EXECUTION", "KIT_GRADING"):
        env.pop(name, None)
    try:
        _nbgrader(course, "autograde", "course", "--student", student, "--create", "--Execute.timeout=300", env=env)
    finally:
        server.stop()
    scores = _scores(course, student)
    for stem, grades in scores.items():
        code = {name: score for name, (kind, score, _most) in grades.items() if kind == "code"}
        assert code and all(name.startswith(f"{stem[:2]}-check-") for name in code), stem
        most = {name: top for name, (kind, _score, top) in grades.items() if kind == "code"}
        written = [score for kind, score, _most in grades.values() if kind == "markdown"]
        if solved:
            assert code == most, f"{stem}: the solutions must score full points: {code}"
            assert written and all(score is None for score in written), f"{stem}: answers wait for a person"
        else:
            assert set(code.values()) == {0}, f"{stem}: an unsolved exercise must score 0: {code}"
            assert written and set(written) == {0}, f"{stem}: unchanged answers score 0"
        graded = _read(course / "autograded" / student / "course" / f"{stem}.ipynb")
        errors = {c.metadata["nbgrader"]["grade_id"]: o for c in graded.cells if c.cell_type == "code"
                  for o in c.outputs if o.output_type == "error"}
        if solved:
            assert not errors, f"{stem}: {sorted(errors)}"
        else:
            assert set(errors) == set(code), f"{stem}: only the check cells fail: {sorted(errors)}"
            for grade_id, error in errors.items():
                assert error.ename == "ExerciseNotPassed", f"{stem} {grade_id}: {error.ename}: {error.evalue}"
                names = grade_id.split("-check-")[1].split("-")
                assert [f"[ ] {name}: not done yet." for name in names] == error.evalue.splitlines(), \
                    f"{stem} {grade_id}: every check of the cell ran: {error.evalue!r}"
    total = sum(top for grades in scores.values() for kind, _score, top in grades.values() if kind == "code")
    expected = sum(_points(p.stem, name) for p in NOTEBOOKS for c in _read(p).cells if c.cell_type == "code"
                   for name in CHECK_CALL.findall(c.source))
    assert total == expected == 16   # 3 + 3 + 1 + 3 + 4 + 2 (06's re-checks count 0)

"""The notebooks teach by building (issue 13): the shape every notebook keeps.

Each notebook opens with its time and its number of exercises, keeps its reading before "Going further"
within 1,500 words, defines each code exercise in one cell and checks it in the next (so Run All reaches
the end: the check falls back to the kit's reference), ends its main part with recap questions and its
last cell with the progress report. Notebook 06's pipeline is built from the student's own functions.
That the student versions really run to the end is tested in test_student.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from course.student import check_markers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
WORD_BUDGET = 1500
GOING_FURTHER = re.compile(r"^#+\s.*going further", re.I | re.M)
# The functions of 02-05 that notebook 06 carries over, and the two pipelines built from them.
CARRIED = {"get_text_llm", "get_text_retrieval", "get_text_rag", "my_image_prompt", "generate_image",
           "load_clip", "rate", "pick_best"}
PIPELINES = ("best_of_n", "until_threshold")


def _read(path):
    return nbformat.read(path, as_version=4)


def _main_part(nb):
    """The cells before the "Going further" heading (all cells when there is none)."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and GOING_FURTHER.search(cell.source):
            return nb.cells[:index]
    return nb.cells


def _words(cells) -> int:
    return sum(len(re.findall(r"\w+", c.source)) for c in cells if c.cell_type == "markdown")


def _solution_cells(nb, kind):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == kind and "### BEGIN SOLUTION" in c.source]


def _functions(source: str) -> list[ast.FunctionDef]:
    return [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_reading_before_going_further_fits_the_budget(path):
    words = _words(_main_part(_read(path)))
    assert words <= WORD_BUDGET, f"{path.name}: {words} words of markdown before 'Going further'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_its_time_and_number_of_exercises(path):
    nb = _read(path)
    first = nb.cells[0].source
    assert re.search(r"\*\*Time:\*\*\s*about\s+\d+\s+minutes", first), f"{path.name}: say '**Time:** about N minutes'"
    stated = re.search(r"\*\*Exercises:\*\*\s*(\d+)", first)
    assert stated, f"{path.name}: say '**Exercises:** N' in the first cell"
    assert int(stated.group(1)) == check_markers(nb, path.name), \
        f"{path.name}: the first cell says {stated.group(1)} exercises, the notebook has {check_markers(nb)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_each_code_exercise_is_a_function_checked_in_the_next_code_cell(path):
    nb = _read(path)
    exercises = _solution_cells(nb, "code")
    assert exercises, f"{path.name} has no code exercise"
    for index, cell in exercises:
        # In the student version the solution becomes `raise NotImplementedError()`: inside a function
        # that is harmless until the check calls it; at the top of a cell it would stop Run All there.
        markers = [line for line in cell.source.splitlines() if line.strip() == "### BEGIN SOLUTION"]
        assert all(line.startswith(" ") for line in markers), \
            f"{path.name} cell {index + 1}: put the solution inside a function body"
        defined = {f.name for f in _functions(cell.source)}
        called = {n.func.id for n in ast.walk(ast.Module(body=[s for s in ast.parse(cell.source).body
                                                              if not isinstance(s, ast.FunctionDef)]))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert defined and not called & defined, \
            f"{path.name} cell {index + 1}: define the exercise here and call it in the check cell after it"
        following = next(c for c in nb.cells[index + 1:] if c.cell_type == "code")
        for function in _functions(cell.source):
            assert re.search(rf"\bcheck\(\s*[\"']{function.name}[\"']\s*,\s*{function.name}\b", following.source), \
                f"{path.name}: the code cell after cell {index + 1} must run check('{function.name}', ...)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_main_part_ends_with_three_to_five_recap_questions(path):
    main = _main_part(_read(path))
    recap = [i for i, c in enumerate(main) if c.cell_type == "markdown" and re.match(r"##\s+Recap", c.source)]
    assert recap, f"{path.name}: a '## Recap' section before 'Going further'"
    questions = re.findall(r"^\d+\.\s", main[recap[0]].source, re.M)
    assert 3 <= len(questions) <= 5, f"{path.name}: {len(questions)} recap questions (3-5)"
    answer = next((c for c in main[recap[0] + 1:] if c.cell_type == "markdown"), None)
    assert answer is not None and "### BEGIN SOLUTION" in answer.source, \
        f"{path.name}: a written-answer cell after the recap"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_last_cell_reports_which_exercises_are_done(path):
    last = _read(path).cells[-1]
    assert last.cell_type == "code" and "report(" in last.source, f"{path.name}: end with exercises.report(...)"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in ("01", "04")], ids=["01", "04"])
def test_parameter_experiments_ask_for_a_prediction_first(path):
    nb = _read(path)
    predictions = [c for c in _solution_cells(nb, "markdown") if re.search(r"predict", c[1].source, re.I)]
    assert predictions, f"{path.name}: ask for a written prediction before an experiment"


def _notebook(number: str):
    return _read(next(p for p in NOTEBOOKS if p.name.startswith(number)))


def test_the_pipeline_of_06_calls_only_the_students_own_functions():
    nb = _notebook("06")
    functions = {f.name: f for _i, c in _solution_cells(nb, "code") for f in _functions(c.source)}
    assert CARRIED | set(PIPELINES) <= set(functions), f"06 must carry {sorted(CARRIED)} and define {PIPELINES}"
    kit = {alias.asname or alias.name for c in nb.cells if c.cell_type == "code"
           for node in ast.walk(ast.parse(c.source)) if isinstance(node, ast.ImportFrom)
           and (node.module or "").startswith("helpers") for alias in node.names}
    kit |= {"client", "scorer", "llm", "run_pipeline"}
    for name in PIPELINES:
        used = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        assert not used & kit, f"{name} uses the kit's {sorted(used & kit)}: build it from your own functions"
        called = {n.func.id for n in ast.walk(functions[name])
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert called & CARRIED, f"{name} calls none of your functions of 02-05"


def test_each_step_notebook_defines_the_function_06_carries():
    owners = {"02": {"get_text_llm", "get_text_retrieval", "get_text_rag"}, "03": {"my_image_prompt"},
              "04": {"generate_image"}, "05": {"load_clip", "rate", "pick_best"}}
    for number, names in owners.items():
        defined = {f.name for _i, c in _solution_cells(_notebook(number), "code") for f in _functions(c.source)}
        assert names <= defined, f"notebook {number} must have the exercises {sorted(names - defined)}"

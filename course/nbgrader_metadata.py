"""nbgrader's cell metadata for the course notebooks, derived from their markers and data/grading/points.json.

Run ``python -m course.nbgrader_metadata`` after adding or changing an exercise: it writes the metadata into
every ``notebooks/NN_*.ipynb`` (nothing else changes; tests/test_nbgrader.py fails while a notebook lacks it).
Which nbgrader cell each cell becomes:

* a code cell with ``### BEGIN SOLUTION`` is an *autograded answer* (``solution``), id ``NN-<functions>``;
* a code cell that calls ``check("name", ...)`` is an *autograder test* (``grade``, ``locked``), id
  ``NN-check-<names>``, worth the points of its exercises in points.json (0 for notebook 06's re-checks of
  02-05: nbgrader records them, the total does not count them). Running it proves the exercise: its test
  function sits in the same cell, and under a grader ``check`` raises when the exercise fails (see
  course/exercises.py), so nbgrader gives the cell 0;
* a Markdown cell with ``### BEGIN SOLUTION`` is a *manually graded answer* (``solution`` and ``grade``),
  id ``NN-answer-<cell id>``, worth ``WRITTEN_POINTS``;
* a code cell whose comment asks the student to edit it (``EDIT_HINTS``: their ratings, keywords,
  threshold) stays an ordinary editable cell (all three flags false, no id: nbgrader does not track it);
* every other cell is *read-only* (``locked``), id ``NN-cell-<cell id>``.

Ids come from the notebook number and the exercise names or the cell id, never from a position, so adding a
cell changes no other cell's id.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from helpers.config import KIT_ROOT

BEGIN = "### BEGIN SOLUTION"
POINTS_FILE = KIT_ROOT / "data" / "grading" / "points.json"
CHECK_CALL = re.compile(r"""\bcheck\(\s*["'](\w+)["']""")
EDIT_HINTS = ("# edit", "# try your own", "# your choice")
WRITTEN_POINTS = 1
SCHEMA_VERSION = 3


def load_points(path: str | Path = POINTS_FILE) -> tuple[float, dict[str, dict[str, float]]]:
    """(default points, {notebook stem: {exercise: points}}) from points.json."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("default", 1), data.get("exercises", {})


def checked_names(source: str) -> list[str]:
    """The exercises a code cell checks: the names of its ``check("name", ...)`` calls, in order."""
    return CHECK_CALL.findall(source)


def _defined_functions(source: str) -> list[str]:
    try:
        return [n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        return []


def cell_metadata(cell, number: str, points: dict[str, float], default: float = 1) -> dict:
    """The ``nbgrader`` metadata of one cell of notebook ``number`` ("01"); ``points`` maps its exercises
    to their points (the notebook's entry of points.json)."""
    meta = {"grade": False, "locked": False, "solution": False, "schema_version": SCHEMA_VERSION}
    solution = BEGIN in cell.source
    names = checked_names(cell.source) if cell.cell_type == "code" else []
    if solution and names:
        raise ValueError(f"notebook {number}, cell {cell.get('id')}: a solution cell that also runs check(); "
                         f"check the exercise in the next code cell")
    if cell.cell_type == "markdown" and solution:
        meta.update(solution=True, grade=True, grade_id=f"{number}-answer-{cell.id}", points=WRITTEN_POINTS)
    elif solution:
        functions = _defined_functions(cell.source)
        meta.update(solution=True, grade_id=f"{number}-{'-'.join(functions) or cell.id}")
    elif names:
        meta.update(grade=True, locked=True, grade_id=f"{number}-check-{'-'.join(names)}",
                    points=sum(points.get(name, default) for name in names))
    elif cell.cell_type == "code" and any(hint in cell.source for hint in EDIT_HINTS):
        pass   # an ordinary cell: no grade_id, which nbgrader keeps only for the cells it tracks
    else:
        meta.update(locked=True, grade_id=f"{number}-cell-{cell.id}")
    return meta


def with_metadata(nb, stem: str, points_file: str | Path = POINTS_FILE, missing_only: bool = False):
    """``nb`` (changed in place and returned) with every cell's nbgrader metadata; ``stem`` is the notebook's
    file name without .ipynb ("05_clip_quality_check"), which picks its points. ``missing_only``: keep the
    metadata of the cells that have some."""
    default, exercises = load_points(points_file)
    for cell in nb.cells:
        if not (missing_only and "nbgrader" in cell.metadata):
            cell.metadata["nbgrader"] = cell_metadata(cell, stem[:2], exercises.get(stem, {}), default)
    return nb


def write_metadata(folder: str | Path = KIT_ROOT / "notebooks") -> list[Path]:
    """Write the metadata into every ``NN_*.ipynb`` of ``folder``; returns the notebooks that changed."""
    import nbformat

    changed = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        after = nbformat.writes(with_metadata(nb, path.stem))
        if after != before:
            path.write_text(after + "\n", encoding="utf-8")
            changed.append(path)
    return changed


if __name__ == "__main__":
    for changed_path in write_metadata(*sys.argv[1:]):
        print("nbgrader metadata written:", changed_path)

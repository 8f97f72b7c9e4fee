"""Exercises: the check after each one, the kit's reference while it is not done, and your progress.

Every exercise of the course is a function you write in one cell and check in the next:

    def rate(text, images, clip):                  # the exercise cell: your code
        ...
    rate = check("rate", rate, test_rate, reference=kit_rate, uses="the kit's ClipScorer")   # the check cell

``check`` runs ``test(rate)``; the test raises an AssertionError that says what is wrong. When it passes,
``check`` returns your function and the cells after it use your work. When your function is still the
stub (it raises NotImplementedError), fails the test, or raises an error, ``check`` says so in one line
and returns the kit's ``reference`` for that step instead: so Run All always reaches the end of the
notebook, and the later cells still have a working step, labelled as the kit's. ``report()`` in the last
cell lists which exercises are done. ``show_my_code`` prints a function you wrote in another notebook,
to copy into notebook 06.

Example:
    >>> def double(x):
    ...     raise NotImplementedError()
    >>> def test_double(f):
    ...     assert f(2) == 4, "double(2) should be 4"
    >>> double = check("double", double, test_double, reference=lambda x: 2 * x, uses="2 * x")
    [ ] double: not done yet. The cells below use 2 * x instead.
    >>> double(21)
    42
"""

from __future__ import annotations

import ast
import json
import os
import traceback
from pathlib import Path

DONE, NOT_DONE, NOT_RIGHT = "done", "not done yet", "not right yet"
# name -> (status, detail), in the order the checks ran; a re-run check updates its line.
_STATUS: dict[str, tuple[str, str]] = {}


class ExerciseNotPassed(AssertionError):
    """Raised by ``check`` under a grader when the exercise is not done or not right: the check cell fails."""


def grading() -> bool:
    """True while a grader runs the notebook (the kit's ``make grade``: KIT_GRADING=1; nbgrader's autograder)."""
    return os.environ.get("KIT_GRADING") == "1" or "NBGRADER_EXECUTION" in os.environ


def check(name: str, yours, test, reference=None, uses: str = "the kit's reference"):
    """Run ``test(yours)`` and return the function the cells below should use (see the module doc)."""
    where = ""
    try:
        test(yours)
    except NotImplementedError:
        status, detail = NOT_DONE, ""
    except AssertionError as err:
        status, detail = NOT_RIGHT, str(err).rstrip() or "a check failed (see the test above)"
    except Exception as err:  # noqa: BLE001 - a student's code may raise anything; say what and where
        status, detail = NOT_RIGHT, f"your code raised {type(err).__name__}: {err}"
        # The last two frames of the error: where the student's code usually is.
        where = "\n" + "".join(traceback.format_list(traceback.extract_tb(err.__traceback__)[-2:])).rstrip()
    else:
        _STATUS[name] = (DONE, "")
        print(f"[x] {name}: done. The cells below use your function.")
        return yours
    _STATUS[name] = (status, detail)
    line = f"[ ] {name}: {status}" + (f": {detail}" if detail else "")
    line += "" if line.endswith((".", "!", "?")) else "."
    print(line + (f" The cells below use {uses} instead." if reference is not None else "") + where)
    if grading():
        raise ExerciseNotPassed(line)
    return yours if reference is None else reference


def report(expected: list[str] | tuple[str, ...] = ()) -> None:
    """Print which exercises of this notebook are done (returns nothing, so Jupyter shows it once).

    ``expected`` names exercises whose check has not run yet, so they show as "not checked yet".

    >>> report()                     # doctest: +SKIP
    Exercises: 2 of 3 done
      [x] get_text_llm
      [ ] get_text_rag: not done yet
    """
    found = statuses()
    for name in expected:
        found.setdefault(name, "not checked yet")
    done = sum(status == DONE for status in found.values())
    print(f"Exercises: {done} of {len(found)} done")
    for name, status in found.items():
        print(f"  [x] {name}" if status == DONE else f"  [ ] {name}: {status}")
    print("Written answers (predictions, tables, recap) are counted when you submit: make submission NAME=...")


def statuses() -> dict[str, str]:
    """{exercise name: "done" / "not done yet" / "not right yet"} of the checks run so far."""
    return {name: status for name, (status, _detail) in _STATUS.items()}


def reset() -> None:
    """Forget every check (for tests, and for running a notebook again in the same kernel)."""
    _STATUS.clear()


def show_my_code(notebook: str | Path, *names: str) -> str:
    """Print the functions ``names`` as you wrote them in another notebook, to copy into this one.

    Reads the saved ``.ipynb`` file (save it first). Says so when a function is still the stub.

    >>> show_my_code("02_text_generation.ipynb", "get_text_llm")    # doctest: +SKIP
    # from 02_text_generation.ipynb
    def get_text_llm(keywords):
        ...
    """
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"No notebook {path} (run this from the folder of your notebooks, "
                                f"and save that notebook first).")
    found: dict[str, str] = {}
    for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # a cell with IPython magics or an unfinished edit: no function to take from it
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in names:
                found[node.name] = ast.get_source_segment(source, node, padded=True)
    missing = [name for name in names if name not in found]
    if missing:
        raise LookupError(f"{path.name} has no function named {', '.join(missing)}. "
                          f"Check the name, and save the notebook.")
    parts = [f"# from {path.name}"]
    for name in names:
        stub = "raise NotImplementedError" in found[name]
        parts.append(("# still the stub: finish it in " + path.name + "\n" if stub else "") + found[name])
    text = "\n\n".join(parts)
    print(text)
    return text

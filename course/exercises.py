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

Under a grader, a check that does not pass prints the same line, and its cell then ends in an error
(``ExerciseNotPassed``), so the grader gives that exercise 0. A grader is any of: nbgrader's ``autograde`` and
``validate`` (they set ``NBGRADER_EXECUTION`` to "autograde" / "validate" in the environment of the kernel
they start: nbgrader's FAQ, "Can I modify the notebook behavior during autograding or validation?"), or the
kit's grader (``KIT_GRADING=1``, any value but 0). The error comes at the end of the check's
cell, after the cell's other statements ran: the check still returns the kit's ``reference``, so the cells
after it have a working step as in Run All, and one cell's later checks (notebook 06 checks four functions
in one cell) and its other lines (``clip = load_clip(...)``) still run. For that, importing this module
under a grader adds an IPython AST transformer that wraps each cell calling ``check(...)`` in
``_begin_cell()`` / ``try: ... finally: _end_cell()``. In the cell that imports this module the wrapper is
not there yet: a failed check raises at once, and first puts the reference under the exercise's name.

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
import sys
import traceback
from pathlib import Path

DONE, NOT_DONE, NOT_RIGHT = "done", "not done yet", "not right yet"
# name -> (status, detail), in the order the checks ran; a re-run check updates its line.
_STATUS: dict[str, tuple[str, str]] = {}


class ExerciseNotPassed(AssertionError):
    """Raised by :func:`check` under a grader when the exercise is not done or not right (its message: check's
    line): the check cell fails, so nbgrader's autograde and the kit's ``make grade`` score it 0."""


def grading() -> bool:
    """True when a grader runs this notebook: nbgrader's autograde or validate, or the kit's grader."""
    return bool(os.environ.get("NBGRADER_EXECUTION")) or os.environ.get("KIT_GRADING", "") not in ("", "0")


# Under a grader, while a cell that calls check() runs: the lines of its checks that failed (else None).
_PENDING: list[str] | None = None


def _begin_cell() -> None:
    global _PENDING
    _PENDING = []


def _end_cell() -> None:
    global _PENDING
    failed, _PENDING = _PENDING, None
    if failed:
        raise ExerciseNotPassed("\n".join(failed))


def _calls_check(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Call) and (getattr(node.func, "id", None) == "check"
                                               or getattr(node.func, "attr", None) == "check")
               for node in ast.walk(tree))


class _CheckCells(ast.NodeTransformer):
    """IPython AST transformer (under a grader): a cell that calls check() raises the failed checks at its end."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        if not _calls_check(node) or not node.body:
            return node
        call = "__import__('course.exercises', fromlist=['_']).{}()"
        wrapped = ast.parse(f"{call.format('_begin_cell')}\ntry:\n    pass\nfinally:\n    {call.format('_end_cell')}\n")
        wrapped.body[1].body = node.body
        node.body = wrapped.body
        return node


def _install_grader_hook() -> None:
    """Under a grader in IPython, add the transformer of :class:`_CheckCells` (once)."""
    if not grading():
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and not any(isinstance(t, _CheckCells) for t in shell.ast_transformers):
        shell.ast_transformers.append(_CheckCells())


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
        if _PENDING is not None:       # in a wrapped cell: it raises at its end (see the module doc)
            _PENDING.append(line)
        else:
            caller = sys._getframe(1).f_globals
            if reference is not None and caller.get(name) is yours:
                caller[name] = reference   # the cells after this one go on with the kit's step, as in Run All
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


_install_grader_hook()

"""course.exercises: the check after each exercise falls back to the kit's reference, and says why."""

from __future__ import annotations

import json

import pytest

from course import exercises
from course.exercises import check, report, show_my_code, statuses


@pytest.fixture(autouse=True)
def _fresh():
    exercises.reset()
    yield
    exercises.reset()


def _test_double(f):
    # Raised by hand: pytest rewrites `assert` in this file and would add its own explanation to the
    # message, which a notebook's check cell never has.
    if f(2) != 4:
        raise AssertionError("double(2) should be 4")


def reference(x):
    return 2 * x


def test_a_solved_exercise_is_used_and_reported_done(capsys):
    def double(x):
        return x + x
    assert check("double", double, _test_double, reference=reference) is double
    assert "[x] double: done" in capsys.readouterr().out
    assert statuses() == {"double": "done"}
    assert report() is None  # so Jupyter does not show a second copy of the report
    assert "Exercises: 1 of 1 done\n  [x] double" in capsys.readouterr().out


def test_the_stub_falls_back_to_the_reference_and_says_so(capsys):
    def double(x):
        raise NotImplementedError()
    used = check("double", double, _test_double, reference=reference, uses="the kit's doubler")
    assert used is reference
    out = capsys.readouterr().out
    assert "[ ] double: not done yet. The cells below use the kit's doubler instead." in out


def test_a_wrong_answer_names_what_is_wrong(capsys):
    used = check("double", lambda x: x + 1, _test_double, reference=reference)
    assert used is reference
    assert "not right yet: double(2) should be 4. The cells below use the kit's reference instead." \
        in capsys.readouterr().out
    assert statuses()["double"] == "not right yet"


def test_an_error_in_the_students_code_is_shown_with_where_it_happened(capsys):
    def double(x):
        return x / 0
    assert check("double", double, _test_double, reference=reference) is reference
    out = capsys.readouterr().out
    assert "your code raised ZeroDivisionError" in out and "return x / 0" in out


def test_without_a_reference_the_students_function_stays(capsys):
    def double(x):
        raise NotImplementedError()
    assert check("double", double, _test_double) is double
    assert "not done yet." in capsys.readouterr().out


def test_a_rerun_check_updates_its_line_and_report_lists_unchecked_ones(capsys):
    check("double", lambda x: 0, _test_double, reference=reference)
    check("double", lambda x: 2 * x, _test_double, reference=reference)
    report(expected=["double", "triple"])
    out = capsys.readouterr().out
    assert "Exercises: 1 of 2 done\n  [x] double\n  [ ] triple: not checked yet" in out


def test_interrupting_a_check_is_not_swallowed():
    def slow(x):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        check("double", slow, _test_double, reference=reference)


def _notebook(path, *sources):
    cells = [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None}
             for s in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_show_my_code_prints_the_function_from_another_notebook(tmp_path, capsys):
    nb = _notebook(tmp_path / "02_text.ipynb", "%matplotlib inline", "import os\n\n\ndef get_text_llm(keywords):\n"
                   "    return keywords.upper()\n\n\nprint(get_text_llm('a'))",
                   "def stubbed():\n    # YOUR CODE HERE\n    raise NotImplementedError()")
    text = show_my_code(nb, "get_text_llm", "stubbed")
    assert "def get_text_llm(keywords):\n    return keywords.upper()" in text and "print(" not in text
    assert "# still the stub" in text and "# from 02_text.ipynb" in capsys.readouterr().out
    namespace = {}
    exec(text, namespace)  # what is printed runs as it is, once copied
    assert namespace["get_text_llm"]("a") == "A"


def test_show_my_code_names_a_missing_function_or_notebook(tmp_path):
    nb = _notebook(tmp_path / "02_text.ipynb", "x = 1")
    with pytest.raises(LookupError, match="no function named get_text_rag"):
        show_my_code(nb, "get_text_rag")
    with pytest.raises(FileNotFoundError, match="save that notebook first"):
        show_my_code(tmp_path / "nope.ipynb", "f")

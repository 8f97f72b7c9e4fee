"""Checks a student cannot fake (issue 24): a forged notebook earns nothing it did not do, an honest one full
points under every name, over a fake Moodle download graded against a small reference kit."""

from __future__ import annotations

import csv
import json
import zipfile

import nbformat
import pytest

from course import autograde
from course.grading import Limits, StudentResult, _summary, grade
from helpers.config import KIT_ROOT

LIMITS = Limits(cell_timeout=20, notebook_timeout=90, memory_mb=4096)
HEADER = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade", "Grade can be changed",
          "Last modified (submission)", "Last modified (grade)", "Feedback comments"]

DOUBLE_OK = "def double(x):\n    return 2 * x"
TRIPLE_OK = "def triple(x):\n    return 3 * x"
DOUBLE_WRONG = "def double(x):\n    return x + 1"
CHECK_DOUBLE = ('def test_double(f):\n    assert f(2) == 4, f"double(2) should be 4, got {f(2)}"\n'
                '    assert f(5) == 10, "double(5) should be 10"\n\n\n'
                'def kit_double(x):\n    return 2 * x\n\n\n'
                'double = check("double", double, test_double, reference=kit_double, uses="the kit\'s double")')
CHECK_TRIPLE = ('def test_triple(f):\n    assert f(2) == 6, f"triple(2) should be 6, got {f(2)}"\n\n\n'
                'def kit_triple(x):\n    return 3 * x\n\n\n'
                'triple = check("triple", triple, test_triple, reference=kit_triple)\nprint("triple checked")')


def _solution(source: str) -> str:
    head, body = source.split("\n", 1)
    return f"{head}\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION"


KIT = [("intro", "markdown", "# 01 test"), ("setup", "code", "from course.exercises import check, report"),
       ("sol-double", "code", _solution(DOUBLE_OK)), ("chk-double", "code", CHECK_DOUBLE),
       ("sol-triple", "code", _solution(TRIPLE_OK)), ("chk-triple", "code", CHECK_TRIPLE),
       ("report", "code", 'report(["double", "triple"])')]
STUB = {"sol-double": autograde.stub(_solution(DOUBLE_OK)), "sol-triple": autograde.stub(_solution(TRIPLE_OK))}
HONEST = {"sol-double": DOUBLE_OK, "sol-triple": TRIPLE_OK}
POINTS = {"default": 1, "exercises": {"01_test": {"double": 2, "triple": 1}}}
FULL = "3.00"


def _notebook(cells) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell_id, kind, source, *extra in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = cell_id
        if extra:
            cell.metadata.update(extra[0].get("metadata", {}))
            cell["outputs"] = extra[0].get("outputs", [])
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def copy_of_kit(replace=None, added=None, drop=()) -> bytes:
    """A student's file of 01_test: the student version (stubs), cells replaced ({id: source}), code cells added
    after a cell ({id: [source or (source, extras)]}), cells dropped."""
    replace, added = {**STUB, **(replace or {})}, added or {}
    cells = []
    for cell_id, kind, source in KIT:
        if cell_id not in drop:
            cells.append((cell_id, kind, replace.get(cell_id, source)))
        for k, extra in enumerate(added.get(cell_id, [])):
            cells.append((f"{cell_id}-mine-{k}", "code", *(extra if isinstance(extra, tuple) else (extra,))))
    return _notebook(cells)


def printed(*lines: str) -> dict:
    return {"outputs": [nbformat.v4.new_output("stream", name="stdout", text="\n".join(lines) + "\n")]}


FAKE_LINES = ["[x] double: done. The cells below use your function.", "[x] triple: done.",
              *(f"[x] made_up_{i}: done." for i in range(500)), "Exercises: 502 of 502 done"]

# Writes the file the worker would write (every cell "ok") where the grader reads it, then ends the worker.
FORGE_RESULTS = """import json, os, subprocess
record = {str(i): {"status": "ok"} for i in range(40)}
forged = {"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"grading": {"stopped": "", "cells": record}}}
for folder in ("..", "/tmp"):
    try:
        with open(os.path.join(folder, "executed.ipynb"), "w") as handle:
            json.dump(forged, handle)
    except OSError:
        pass
subprocess.run(["kill", "-9", str(os.getppid())])
"""

# Student id -> (name, {file name: content}). Each student is one case.
CASES = {
    "200001": ("Honest Ann", {"01_test.ipynb": copy_of_kit(HONEST)}),
    "200002": ("Renamed Ben", {"01_test (1).ipynb": copy_of_kit(HONEST)}),
    "200003": ("Copy Cleo", {"my work-Copy1.ipynb": copy_of_kit(HONEST, {"chk-double": ["x = double(21)\nx"]})}),
    "200004": ("Printer Pia", {"01_test.ipynb": copy_of_kit(added={"setup": ["print(%r)" % "\n".join(FAKE_LINES)]})}),
    "200005": ("Only Prints", {"02_text_generation.ipynb": _notebook(
        [("p1", "code", "print(%r)" % "\n".join(FAKE_LINES))])}),
    "200006": ("Saved Sam", {"01_test.ipynb": copy_of_kit(added={"setup": [(
        "raise SystemExit", {"metadata": {"tags": ["skip-execution"]}, **printed(*FAKE_LINES)})]})}),
    "200007": ("Editor Ed", {"01_test.ipynb": copy_of_kit(
        {"sol-double": DOUBLE_WRONG, "sol-triple": "def triple(x):\n    return 0",
         "chk-double": 'double = check("double", double, lambda f: None)'}, drop=("chk-triple",))}),
    "200008": ("Wrapper Will", {"01_test.ipynb": copy_of_kit(
        {"sol-double": "def double(x):\n    return kit_double(x)",
         "sol-triple": "def triple(x):\n    return helper(x)"},
        {"chk-double": ["def helper(x):\n    return kit_triple(x)"]})}),
    "200009": ("Many Mo", {
        "01_test.ipynb": copy_of_kit({"sol-double": DOUBLE_OK}),
        "01_test (1).ipynb": copy_of_kit({"sol-triple": TRIPLE_OK}),
        "01_test-Copy1.ipynb": copy_of_kit(HONEST),
        "01_test-Copy2.ipynb": copy_of_kit(HONEST, {"report": ["print('again')"]}),
        "01_test-Copy3.ipynb": copy_of_kit(HONEST, {"report": ["print('and again')"]})}),
    "200010": ("Rebinder Rae", {"01_test.ipynb": copy_of_kit(
        {"sol-double": DOUBLE_WRONG}, {"setup": ["check = lambda name, yours, test, **kwargs: yours"]})}),
    "200011": ("Switch Sue", {"01_test.ipynb": copy_of_kit(
        {"sol-double": DOUBLE_WRONG}, {"setup": ["import os\nos.environ['KIT_GRADING'] = '0'"]})}),
    "200012": ("Sly Sid", {"01_test.ipynb": copy_of_kit(
        {"sol-double": DOUBLE_WRONG},
        {"setup": ["import os\nsettings = os.environ\nsettings.update({'KIT_' + 'GRADING': '0'})"]})}),
    "200014": ("Forger Fay", {"01_test.ipynb": copy_of_kit(added={"setup": [FORGE_RESULTS]})}),
    "200013": ("Own Checker Olga", {"01_test.ipynb": copy_of_kit(
        added={"setup": ['check("bonus", print, lambda f: None)\nreport(["bonus"])']})}),
}


def _download(tmp_path):
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        for sid, (name, files) in CASES.items():
            for filename, content in files.items():
                archive.writestr(f"{name}_{sid}_assignsubmission_file_/{filename}", content)
    worksheet = tmp_path / "worksheet.csv"
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for sid, (name, _files) in CASES.items():
            writer.writerow([f"Participant {sid}", name, "x@example.com", "Submitted for grading", "", "100.00",
                             "Yes", "-", "-", ""])
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "01_test.ipynb").write_bytes(_notebook(KIT))
    (tmp_path / "points.json").write_text(json.dumps(POINTS))
    (tmp_path / "steps.json").write_text(json.dumps({"exercises": {}}))
    return download, worksheet


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("forgery")
    download, worksheet = _download(tmp_path)
    result = grade(download, worksheet, tmp_path / "out", points=tmp_path / "points.json", limits=LIMITS,
                   kit_dir=tmp_path / "kit", kit_steps=tmp_path / "steps.json", isolate=False)
    with open(result.worksheet, newline="", encoding="utf-8") as handle:
        rows = {row[0].split()[-1]: row for row in list(csv.reader(handle))[1:]}
    students = {s.identifier.split()[-1]: s for s in result.students}
    return rows, students, result


def _grade(graded, sid):
    rows, students, _result = graded
    return rows[sid][4], rows[sid][9], students[sid]


@pytest.mark.grading
def test_an_honest_solution_earns_full_points(graded):
    grade_, feedback, student = _grade(graded, "200001")
    assert grade_ == FULL, feedback
    assert student.notebooks["01_test"]["exercises"] == {"double": ["done", ""], "triple": ["done", ""]}


@pytest.mark.grading
@pytest.mark.parametrize("sid", ["200002", "200003"])
def test_a_renamed_copy_earns_the_same(graded, sid):
    grade_, feedback, student = _grade(graded, sid)
    assert grade_ == FULL, feedback
    assert list(student.notebooks) == ["01_test"]


@pytest.mark.grading
def test_printed_done_lines_and_invented_names_earn_nothing(graded):
    grade_, feedback, student = _grade(graded, "200004")
    assert grade_ == "0.00", feedback
    assert set(student.notebooks["01_test"]["exercises"]) == {"double", "triple"}
    assert "made_up_1" not in feedback and "double: not done yet" in feedback


@pytest.mark.grading
def test_a_file_that_is_no_kit_notebook_earns_nothing_and_says_so(graded):
    grade_, feedback, student = _grade(graded, "200005")
    assert grade_ == "0.00" and not student.notebooks
    assert "02_text_generation.ipynb: it matches none of the kit's notebooks" in feedback


@pytest.mark.grading
def test_a_saved_output_in_a_skipped_cell_earns_nothing(graded):
    grade_, feedback, _student = _grade(graded, "200006")
    assert grade_ == "0.00", feedback
    assert "SystemExit" in feedback  # the tag was dropped: the cell ran (and its saved lines were not read)


@pytest.mark.grading
def test_an_edited_or_deleted_check_is_the_kits_again(graded):
    grade_, feedback, student = _grade(graded, "200007")
    assert grade_ == "0.00", feedback
    exercises = student.notebooks["01_test"]["exercises"]
    assert exercises["double"] == ["not right yet", "double(2) should be 4, got 3."]
    assert exercises["triple"] == ["not right yet", "triple(2) should be 6, got 0."]


@pytest.mark.grading
def test_a_wrapper_around_the_kits_version_does_not_pass_and_says_which(graded):
    grade_, feedback, student = _grade(graded, "200008")
    assert grade_ == "0.00", feedback
    exercises = student.notebooks["01_test"]["exercises"]
    assert exercises["double"] == ["not right yet", "it hands its work to the kit's kit_double: write this step "
                                                    "yourself"]
    assert "kit_triple" in exercises["triple"][1]  # through a helper of the student's


@pytest.mark.grading
def test_repeated_copies_count_each_exercise_once(graded):
    grade_, feedback, student = _grade(graded, "200009")
    assert grade_ == FULL, feedback  # not 3 x 3 points
    result = student.notebooks["01_test"]
    assert result["files"] == ["01_test (1).ipynb", "01_test-Copy1.ipynb", "01_test-Copy2.ipynb"]  # by name
    assert result["counted"] == {"double": "01_test-Copy1.ipynb", "triple": "01_test (1).ipynb"}
    assert "a copy of 01_test beyond the first 3: not run" in feedback
    assert "each exercise counts once" in feedback


@pytest.mark.grading
@pytest.mark.parametrize("sid, why", [("200010", "it rebinds `check`"), ("200011", "it changes os.environ")])
def test_tampering_with_the_grading_needs_a_manual_look(graded, sid, why):
    grade_, feedback, student = _grade(graded, sid)
    assert grade_ == "0.00", feedback
    assert why in feedback and "needs a manual look" in feedback
    assert all(status == "needs a manual look" for status, _ in student.notebooks["01_test"]["exercises"].values())


@pytest.mark.grading
def test_a_switch_turned_off_at_run_time_still_fails(graded):
    grade_, feedback, student = _grade(graded, "200012")
    assert grade_ == "0.00", feedback
    assert student.notebooks["01_test"]["exercises"]["double"][0] == "not right yet"


@pytest.mark.grading
def test_a_results_file_written_by_the_students_code_is_not_read(graded):
    grade_, feedback, student = _grade(graded, "200014")
    assert grade_ == "0.00", feedback
    assert "ended before the grader could read its results" in feedback
    assert {s for s, _ in student.notebooks["01_test"]["exercises"].values()} == {"not reached"}


@pytest.mark.grading
def test_a_students_own_check_calls_count_for_nothing(graded):
    grade_, feedback, student = _grade(graded, "200013")
    assert grade_ == "0.00" and "bonus" not in feedback
    assert set(student.notebooks["01_test"]["exercises"]) == {"double", "triple"}


def test_a_dollar_in_an_exercise_name_does_not_break_the_summary(tmp_path):
    student = StudentResult("Participant 1", "A", True, {"01_test": {
        "exercises": {"pay $5": ["done", ""], "half $x": ["done", ""]}, "stopped": "", "error": ""}})
    html, png = _summary([student], __import__("course.grading").grading.Points(), tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and "pay $5" in html.read_text()


# --- Static checks: honest code passes ------------------------------------------------------------------

def test_the_kits_own_solutions_pass_the_static_checks():
    kit = autograde.Kit.load()
    for key, reference in kit.notebooks.items():
        findings = autograde.static_checks(autograde.build(reference, reference), reference, kit.steps)
        assert findings.tampering == [] and findings.handoffs == {}, key


def _with_cells(key: str, replace: dict, added: list[str], after: str):
    kit = autograde.Kit.load()
    reference = kit.notebooks[key]
    nb = nbformat.reads(nbformat.writes(reference), as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.get("id") in replace:
            cell.source = replace[cell["id"]]
        if cell.get("id") == after:
            nb.cells[index + 1:index + 1] = [nbformat.v4.new_code_cell(s) for s in added]
    return autograde.static_checks(autograde.build(reference, nb), reference, kit.steps)


RATE = "9c79e8bb"  # notebook 05's rate cell; 7ce8fd48 is its check


def test_reasonable_honest_code_passes_the_static_checks():
    honest_rate = ("import torch\n\ndef rate(text, images, clip):\n    model, preprocess, tokenizer = clip\n"
                   "    vectors = normalise(model.encode_image(torch.stack([preprocess(i) for i in images])))\n"
                   "    text_vector = normalise(model.encode_text(tokenizer([text])))\n"
                   "    similarity = vectors @ text_vector.T\n    return similarity.flatten().tolist()")
    added = ["import numpy as np\nimport torch\nfrom PIL import Image\n%matplotlib inline\n"
             "from course.notebook import setup\nfrom course.exercises import check",
             "clip = load_clip(CLIP_NAME, CLIP_WEIGHTS)   # as the kit's cell does",
             "def normalise(v):\n    return v / v.norm(dim=-1, keepdim=True)",
             "%timeit pick_best([0.1, 0.2], 0.1)\nmy_scores = [0.3, 0.1]\nprint(sorted(my_scores))"]
    findings = _with_cells("05_clip_quality_check", {RATE: honest_rate}, added, "d9db86e2")
    assert findings.tampering == [] and findings.handoffs == {}


@pytest.mark.parametrize("rate, used", [
    ("def rate(t, i, c):\n    return scorer.similarity(t, i)", "scorer.similarity"),
    ("def rate(t, i, c):\n    return kit_rate(t, i, c)", "kit_rate"),
    ("from helpers.raters import clip_rater as r\n\ndef rate(t, i, c):\n    return r().score(t, i)",
     "helpers.raters.clip_rater"),
    ("def rate(t, i, c):\n    return getattr(s, 'similarity')(t, i)", "s.similarity"),
    ("rate = kit_rate", "kit_rate"),
])
def test_handing_the_step_to_the_kit_is_seen(rate, used):
    findings = _with_cells("05_clip_quality_check", {RATE: rate}, [], "")
    assert findings.handoffs == {"rate": used} and findings.tampering == []


@pytest.mark.parametrize("cell, why", [
    ("isinstance = lambda *args: True", "it rebinds `isinstance`"),
    ("captions = ['x']", "it rebinds `captions`"),
    ("clip = (None, None, None)", "it rebinds `clip`"),
    ("np.allclose = lambda *args, **kwargs: True", "it sets an attribute of `np`"),
    ("globals()['test_rate'] = print", "it writes into globals()"),
    ("import sys\nsys.modules['course.exercises'] = None", "it uses .modules"),
    ("exec('x = 1')", "it uses exec()"),
    ("import course.exercises as e", "it imports course.exercises"),
    ("import builtins", "it imports builtins"),
    ("import os\nos._exit(0)", "it uses ._exit"),
    ("%env KIT_GRADING=0", "it uses the magic %env"),
    ("get_ipython().events", "it uses get_ipython()"),
])
def test_tampering_is_seen(cell, why):
    findings = _with_cells("05_clip_quality_check", {}, [cell], "d9db86e2")
    assert any(why in text for text in findings.tampering), findings.tampering


# --- One real kit notebook, end to end ------------------------------------------------------------------

@pytest.mark.grading
@pytest.mark.slow
def test_notebook_02_end_to_end(tmp_path):
    """The kit's notebook 02: its solution under two names earns 3 of 3; a forged copy (the stubs, printed lines,
    a wrapper around get_text) earns nothing."""
    solution = (KIT_ROOT / "notebooks" / "02_text_generation.ipynb").read_bytes()
    nb = nbformat.reads(solution.decode(), as_version=4)
    from course.student import student_version

    forged = student_version(nb)
    for cell in forged.cells:
        if cell.get("id") == "3efb14c4":
            cell.source = "def get_text_retrieval(keywords):\n    return get_text(keywords, source='corpus').text"
    setup = next(i for i, cell in enumerate(forged.cells) if cell.get("id") == "d19f3257")
    forged.cells.insert(setup + 1, nbformat.v4.new_code_cell(
        'print("[x] get_text_llm: done.\\n[x] get_text_rag: done.\\n[x] bonus: done.")'))
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("Ann_300001_assignsubmission_file_/02_text_generation (1).ipynb", solution)
        archive.writestr("Bob_300002_assignsubmission_file_/whatever.ipynb", solution)
        archive.writestr("Cid_300003_assignsubmission_file_/02_text_generation.ipynb",
                         nbformat.writes(forged).encode())
    worksheet = tmp_path / "worksheet.csv"
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for sid, name in [("300001", "Ann"), ("300002", "Bob"), ("300003", "Cid")]:
            writer.writerow([f"Participant {sid}", name, "x@example.com", "", "", "100.00", "Yes", "-", "-", ""])
    result = grade(download, worksheet, tmp_path / "out", limits=Limits(cell_timeout=60, notebook_timeout=240),
                   isolate=False)
    with open(result.worksheet, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    assert [row[4] for row in rows] == ["3.00", "3.00", "0.00"], [row[9] for row in rows]
    assert "it hands its work to the kit's helpers.text.get_text" in rows[2][9] and "bonus" not in rows[2][9]


# --- check() under a grader ------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["KIT_GRADING", "NBGRADER_EXECUTION"])
def test_check_raises_under_a_grader_and_not_otherwise(monkeypatch, capsys, variable):
    from course.exercises import ExerciseNotPassed, check

    def test_double(f):
        if f(2) != 4:  # not `assert`: pytest would add its own explanation to the message
            raise AssertionError("double(2) should be 4")

    def wrong(x):
        return x

    monkeypatch.delenv("KIT_GRADING", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert check("double", wrong, test_double, reference=abs) is abs
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ExerciseNotPassed, match=r"^\[ \] double: not right yet: double\(2\) should be 4\.$"):
        check("double", wrong, test_double, reference=abs)
    assert check("double", lambda x: 2 * x, test_double, reference=abs)(3) == 6  # a pass does not raise
    assert "[x] double: done." in capsys.readouterr().out


# --- The same verdicts in every layout of Moodle's download ------------------------------------------

LAYOUTS = {  # Moodle's name for a file of student (name, sid): how each version of the download writes it
    "4.1+ with folders": lambda name, sid, file: f"{name}_{sid}_assignsubmission_file/{file}",
    "4.1+ without folders": lambda name, sid, file: f"{name}_{sid}_assignsubmission_file_{file}",
    "up to 4.0": lambda name, sid, file: f"{name}_{sid}_assignsubmission_file_/{file}",
    "blind marking": lambda name, sid, file: f"Participant_{sid}_assignsubmission_file/{file}",
}


@pytest.mark.grading
@pytest.mark.parametrize("layout", [*LAYOUTS, "team"])
def test_honest_full_and_forged_nothing_in_every_layout_of_the_download(tmp_path, layout):
    """An honest file under another name earns full points, a forged one (printed done-lines, a kit wrapper)
    nothing, whatever layout Moodle wrote: with or without folders, up to 4.0, blind marking, teams."""
    cases = {"300001": ("Honest Ann", "my work (1).ipynb", copy_of_kit(HONEST)),
             "300002": ("Forger Bo", "01_test.ipynb", copy_of_kit(
                 {"sol-double": "def double(x):\n    return kit_double(x)"},
                 {"setup": ["print(%r)" % "\n".join(FAKE_LINES)]}))}
    header, rows = list(HEADER), []
    if layout == "team":  # one folder per group, named with the group's id (300002 is also Bo's number)
        header = HEADER[:4] + ["Group"] + HEADER[4:]
        groups = {"300001": ("Team A", "300002"), "300002": ("Team B", "77")}
        files = {f"{groups[sid][0]}_{groups[sid][1]}_assignsubmission_file/{file}": content
                 for sid, (_name, file, content) in cases.items()}
        rows = [[f"Participant {sid}", name, "", "", groups[sid][0], "", "100.00", "Yes", "-", "-", ""]
                for sid, (name, _file, _content) in cases.items()]
        rows.append(["Participant 300003", "Mate Cy", "", "", "Team A", "", "100.00", "Yes", "-", "-", ""])
    else:
        files = {LAYOUTS[layout](name, sid, file): content for sid, (name, file, content) in cases.items()}
        rows = [[f"Participant {sid}", "Participant" if layout == "blind marking" else name, "", "", "", "100.00",
                 "Yes", "-", "-", ""] for sid, (name, _file, _content) in cases.items()]
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    worksheet = tmp_path / "worksheet.csv"
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *rows])
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "01_test.ipynb").write_bytes(_notebook(KIT))
    (tmp_path / "points.json").write_text(json.dumps(POINTS))
    (tmp_path / "steps.json").write_text(json.dumps({"exercises": {}}))
    result = grade(download, worksheet, tmp_path / "out", points=tmp_path / "points.json", limits=LIMITS,
                   kit_dir=tmp_path / "kit", kit_steps=tmp_path / "steps.json", isolate=False)
    with open(result.worksheet, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    grade_column = table[0].index("Grade")
    grades = {row[0].split()[-1]: row[grade_column] for row in table[1:]}
    # Bo's double hands its work to the kit's, his triple is the stub, his printed lines count for nothing.
    expected = {"300001": FULL, "300002": "0.00"}
    if layout == "team":
        expected["300003"] = FULL  # Ann's team mate gets the group's grade; group id 300002 is never Bo
    assert grades == expected, (layout, grades)


@pytest.mark.grading
def test_a_failed_exercise_hands_the_kits_reference_to_the_next_one(tmp_path):
    """Graded on its own: a later exercise that calls an earlier one passes with the kit's reference of the
    earlier one when the student's earlier one failed (course.exercises binds it before the check cell raises)."""
    quad_check = ('def test_quad(f):\n    assert f(3) == 12, f"quad(3) should be 12, got {f(3)}"\n\n\n'
                  'quad = check("quad", quad, test_quad, reference=lambda x: 4 * x)')
    kit = [*KIT[:4], ("sol-quad", "code", _solution("def quad(x):\n    return double(double(x))")),
           ("chk-quad", "code", quad_check)]
    mine = [*kit[:2], ("sol-double", "code", DOUBLE_WRONG), kit[3],
            ("sol-quad", "code", "def quad(x):\n    return double(double(x))"), kit[5]]
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "01_test.ipynb").write_bytes(_notebook(kit))
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("Ann Lee_400001_assignsubmission_file/01_test.ipynb", _notebook(mine))
    worksheet = tmp_path / "worksheet.csv"
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(
            [HEADER, ["Participant 400001", "Ann Lee", "", "", "", "100.00", "Yes", "-", "-", ""]])
    (tmp_path / "steps.json").write_text(json.dumps({"exercises": {}}))
    result = grade(download, worksheet, tmp_path / "out", limits=LIMITS, kit_dir=tmp_path / "kit",
                   kit_steps=tmp_path / "steps.json", isolate=False)
    exercises = result.students[0].notebooks["01_test"]["exercises"]
    assert exercises["double"][0] == "not right yet" and exercises["quad"] == ["done", ""], exercises

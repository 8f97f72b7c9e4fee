"""Grading a class's Moodle download (issue 17): a fake download, the worksheet checked row by row."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile

import nbformat
import pytest

from course.grading import Limits, grade, run_notebook
from course.isolation import available
from helpers.config import KIT_ROOT

SECRET = "instructor-s3cr3t-value-4242"
HEADER = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade", "Grade can be changed",
          "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
STUDENTS = [  # id, full name: what they submitted
    ("100001", "Ann Full"), ("100002", "Bob Part"), ("100003", "Cara None"),
    ("100004", "Dan Loop"), ("100005", "Eve Raise"), ("100006", "Finn Secret"),
]
LIMITS = Limits(cell_timeout=4, notebook_timeout=60, memory_mb=4096)


def kit_of(tmp_path):
    return tmp_path / "kit"

DOUBLE_OK = "def double(x):\n    return 2 * x"
TRIPLE_OK = "def triple(x):\n    return 3 * x"
CHECKS = [
    'def test_double(f):\n    assert f(2) == 4, f"double(2) should be 4, got {f(2)}"\n'
    'double = check("double", double, test_double, reference=lambda x: 2 * x)',
    'def test_triple(f):\n    assert f(2) == 6, f"triple(2) should be 6, got {f(2)}"\n'
    'triple = check("triple", triple, test_triple, reference=lambda x: 3 * x)',
]


def _nb(*sources: str) -> bytes:
    """A plain notebook (no kit reference): what run_notebook runs as it is."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in ("from course.exercises import check, report", *sources)]
    return nbformat.writes(nb).encode()


def _solution(source: str) -> str:
    head, body = source.split("\n", 1)
    return f"{head}\n    ### BEGIN SOLUTION\n{body}\n    ### END SOLUTION"


# The kit's reference notebook "01_test": setup, then for each exercise a solution cell and a check cell.
KIT_CELLS = [("intro", "markdown", "# 01 test"), ("setup", "code", "from course.exercises import check, report"),
             ("sol-double", "code", _solution(DOUBLE_OK)), ("chk-double", "code", CHECKS[0]),
             ("sol-triple", "code", _solution(TRIPLE_OK)), ("chk-triple", "code", CHECKS[1]),
             ("report", "code", 'report(["double", "triple"])')]


def _notebook(cells) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell_id, kind, source in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = cell_id
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


def write_kit(folder):
    """The folder of kit reference notebooks the tests grade against."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "01_test.ipynb").write_bytes(_notebook(KIT_CELLS))
    return folder


def submission(replace=None, added=None, drop=()) -> bytes:
    """A student's copy of 01_test: solution cells replaced ({id: source}), code cells added after a kit cell
    ({id: [sources]}), cells dropped."""
    replace, added = replace or {}, added or {}
    cells = []
    for cell_id, kind, source in KIT_CELLS:
        if cell_id in drop:
            continue
        cells.append((cell_id, kind, replace.get(cell_id, source)))
        cells += [(f"{cell_id}-mine-{k}", "code", extra) for k, extra in enumerate(added.get(cell_id, []))]
    return _notebook(cells)


NOTEBOOKS = {
    "100001": submission({"sol-double": DOUBLE_OK, "sol-triple": TRIPLE_OK}),
    "100002": submission({"sol-double": DOUBLE_OK, "sol-triple": "def triple(x):\n    return x + x"}),
    "100004": submission({"sol-double": DOUBLE_OK, "sol-triple": TRIPLE_OK},
                         {"chk-double": ["while True:\n    pass"]}),
    "100005": submission({"sol-double": "def double(x):\n    return not_a_module_xyz.double(x)"},
                         {"setup": ["import not_a_module_xyz"]}, drop=("sol-triple", "chk-triple", "report")),
    "100006": submission({"sol-double": "import os\ndef double(x):\n"
                                        "    return os.environ.get('GRADING_TEST_SECRET', 'none')"},
                         {"setup": ["import os\nprint(os.environ.get('GRADING_TEST_SECRET', 'no secret here'))"]},
                         drop=("sol-triple", "chk-triple", "report")),
}


def _kit_zip(student: str, notebook: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("SUMMARY.md", "# summary\n")
        archive.writestr(f"{student}_01_test.ipynb", notebook)
        archive.writestr(f"{student}_01_test.html", "<html></html>")
    return buffer.getvalue()


def make_download(tmp_path, ids=None) -> tuple:
    """A Moodle "Download all submissions" zip and its grading worksheet, for the students ``ids``."""
    ids = ids or [sid for sid, _ in STUDENTS]
    download = tmp_path / "download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        for sid, name in STUDENTS:
            if sid not in ids or sid not in NOTEBOOKS:
                continue
            folder = f"{name}_{sid}_assignsubmission_file_"
            if sid == "100001":  # the kit's submission zip
                archive.writestr(f"{folder}/Ann-Full_notebooks.zip", _kit_zip("Ann-Full", NOTEBOOKS[sid]))
            else:  # loose notebooks
                archive.writestr(f"{folder}/{name.split()[0]}_01_test.ipynb", NOTEBOOKS[sid])
        archive.writestr("../evil_1_assignsubmission_file_/x.ipynb", b"{}")  # never written outside
    worksheet = tmp_path / "worksheet.csv"
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for sid, name in STUDENTS:
            if sid in ids:
                writer.writerow([f"Participant {sid}", name, f"{name.split()[0].lower()}@example.com",
                                 "Submitted for grading", "", "10.00", "Yes", "Monday, 30 November 2026, 10:00 AM",
                                 "-", ""])
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"default": 1, "exercises": {"01_test": {"double": 2, "triple": 1}}}))
    write_kit(tmp_path / "kit")
    return download, worksheet, points


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("grading")
    download, worksheet, points = make_download(tmp_path)
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADING_TEST_SECRET", SECRET)
    try:
        result = grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, kit_dir=kit_of(tmp_path))
    finally:
        mp.undo()
    return tmp_path, result


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


@pytest.mark.grading
def test_worksheet_keeps_columns_order_and_untouched_cells(graded):
    tmp_path, result = graded
    before, after = _rows(tmp_path / "worksheet.csv"), _rows(result.worksheet)
    assert after[0] == HEADER and len(after) == len(before)
    changed = {HEADER.index("Grade"), HEADER.index("Feedback comments")}
    for old, new in zip(before[1:], after[1:]):
        assert len(new) == len(HEADER)
        assert [v for i, v in enumerate(old) if i not in changed] == [v for i, v in enumerate(new) if i not in changed]
    raw = result.worksheet.read_text(encoding="utf-8")
    assert raw.startswith(",".join(HEADER) + "\n") and "\r\n" not in raw
    assert '"Monday, 30 November 2026, 10:00 AM"' in raw  # QUOTE_MINIMAL: quoted because of the commas
    assert "\nParticipant 100001,Ann Full," in raw      # and nothing else quoted needlessly


@pytest.mark.grading
def test_grades_and_feedback_row_by_row(graded):
    _tmp, result = graded
    rows = {row[0]: row for row in _rows(result.worksheet)[1:]}
    grade_of = {sid: rows[f"Participant {sid}"][4] for sid, _ in STUDENTS}
    feedback = {sid: rows[f"Participant {sid}"][9] for sid, _ in STUDENTS}
    assert grade_of == {"100001": "3.00", "100002": "2.00", "100003": "", "100004": "2.00", "100005": "0.00",
                        "100006": "0.00"}
    assert "double: passed (2)" in feedback["100001"] and "triple: passed (1)" in feedback["100001"]
    assert "triple: not right yet: triple(2) should be 6, got 4" in feedback["100002"]
    assert "No notebook" in feedback["100003"]
    assert "code cell 4 ran longer than 4 s and was stopped</li>" in feedback["100004"]
    assert "KeyboardInterrupt" not in feedback["100004"]
    assert "name 'not_a_module_xyz' is not defined" in feedback["100005"]
    assert "triple: not reached" in feedback["100004"]
    assert "ModuleNotFoundError" in feedback["100005"] and "your code raised NameError" in feedback["100005"]
    # Appended to the comment already there (empty here), in the kit's own block (course.moodle.add_feedback).
    assert feedback["100001"].startswith('<div class="kit-grading"><p>Grade: 3</p><ul><li>')


@pytest.mark.grading
def test_the_instructors_environment_never_reaches_the_students_code(graded):
    tmp_path, result = graded
    out = tmp_path / "out"
    texts = [result.worksheet.read_text()] + [p.read_text() for p in out.rglob("*") if p.suffix in (".html", ".json")]
    assert not any(SECRET in text for text in texts)
    finn = _rows(result.worksheet)[6][9]
    assert "double(2) should be 4, got none" in finn  # the variable was not there: the clean environment


@pytest.mark.grading
def test_feedback_pages_and_class_summary(graded):
    tmp_path, result = graded
    pages = sorted(p.name for p in (tmp_path / "out" / "feedback").iterdir())
    assert len(pages) == len(STUDENTS) and "Bob_Part_100002.html" in pages
    assert "triple(2) should be 6" in (tmp_path / "out" / "feedback" / "Bob_Part_100002.html").read_text()
    summary = result.summary_html.read_text()
    assert "5 of 6 students submitted" in summary and "<td>double</td><td>3</td><td>5</td>" in summary
    assert result.summary_png.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "evil_1_assignsubmission_file_").exists()


@pytest.mark.grading
def test_second_run_uses_the_cache(graded):
    tmp_path, first = graded
    assert first.executed == 5
    second = grade(tmp_path / "download.zip", tmp_path / "worksheet.csv", tmp_path / "out",
                   points=tmp_path / "points.json", limits=LIMITS, kit_dir=kit_of(tmp_path))
    assert second.executed == 0
    assert second.worksheet.read_bytes() == first.worksheet.read_bytes()


@pytest.mark.grading
def test_interrupted_batch_resumes(tmp_path):
    download, worksheet, points = make_download(tmp_path, ids=["100001", "100002"])

    def interrupt(line):
        if " ran in " in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, log=interrupt,
              kit_dir=kit_of(tmp_path))
    assert not (tmp_path / "out" / "worksheet_graded.csv").exists()
    lines = []
    result = grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, log=lines.append,
                   kit_dir=kit_of(tmp_path))
    assert result.executed == 1 and lines[0] == "Ann Full: 01_test (cached)"
    assert [row[4] for row in _rows(result.worksheet)[1:]] == ["3.00", "2.00"]


@pytest.mark.grading
def test_a_notebook_past_its_time_is_killed(tmp_path):
    result = run_notebook(_nb("while True:\n    pass"), "http://127.0.0.1:9",
                          Limits(cell_timeout=60, notebook_timeout=3))
    assert result["stopped"] == "the notebook ran longer than 3 s and was stopped"
    assert result["seconds"] < 15


@pytest.mark.grading
def test_command_line(tmp_path):
    download, worksheet, points = make_download(tmp_path, ids=["100001", "100003"])
    out = subprocess.run([sys.executable, "-m", "course", "grade", "--submissions", str(download), "--worksheet",
                          str(worksheet), "--out", str(tmp_path / "out"), "--points", str(points),
                          "--kit-dir", str(kit_of(tmp_path))],
                         capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "worksheet_graded.csv" in out.stdout
    grades = {row[0].split()[-1]: row[4] for row in _rows(tmp_path / "out" / "worksheet_graded.csv")[1:]}
    assert grades["100001"] == "3.00" and grades["100003"] == ""  # matched to the reference kit given by --kit-dir


@pytest.mark.grading
def test_memory_limit_and_unreadable_files_are_reported(tmp_path):
    result = run_notebook(_nb("x = bytearray(3 * 1024**3)", "print('after')"), "http://127.0.0.1:9",
                          Limits(cell_timeout=30, notebook_timeout=60, memory_mb=2048))
    assert result["error"] == "code cell 2: MemoryError" and not result["stopped"]
    assert run_notebook(b"not json", "http://127.0.0.1:9", Limits())["stopped"] == "the file is not a readable notebook"


@pytest.mark.grading
def test_maximum_grade_caps_and_a_locked_grade_stays(tmp_path):
    download, worksheet, points = make_download(tmp_path, ids=["100001", "100002"])
    rows = _rows(worksheet)
    rows[1][5] = "2.00"  # Ann earns 3 points, but the assignment gives at most 2
    rows[2][4], rows[2][6] = "7.00", "No"  # Bob's grade is locked in Moodle (e.g. already released)
    with open(worksheet, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    result = grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, kit_dir=kit_of(tmp_path))
    ann, bob = _rows(result.worksheet)[1:]
    assert ann[4] == "2.00"
    assert bob[4] == "7.00" and "triple" in bob[9], "a locked grade stays; the feedback is still written"
    assert "Grade: 2" not in bob[9] and "stays 7.00" in bob[9], "the feedback says the grade Moodle keeps"


# --- Network and file isolation (course.isolation) ------------------------------------------------------

WHY_NOT_ISOLATED = available()
needs_namespaces = pytest.mark.skipif(bool(WHY_NOT_ISOLATED), reason=f"no namespaces here: {WHY_NOT_ISOLATED}")
# What a graded notebook tries: the instructor's server on the host's loopback, the kit's preview server
# (SD_URL), the instructor's files (a fake home, the kit's .env, README, .git, outputs) and the kit's code.
PROBE = """import os, socket, urllib.request
PORT, PATHS = {port}, {paths!r}

def fetch():
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as sock:
        return sock.recv(16)

def models():
    with urllib.request.urlopen(os.environ["SD_URL"] + "/sdapi/v1/sd-models", timeout=10) as answer:
        return answer.status

def peek():
    found = []
    for path in PATHS:
        try:
            with open(path) as handle:
                handle.read(40)
                found.append(os.path.basename(path))
        except OSError:
            pass
    return found

def tamper():
    try:
        with open(os.path.join({kit!r}, "helpers", "_tampered.py"), "w") as handle:
            handle.write("x = 1")
        return "written"
    except OSError as err:
        return type(err).__name__
"""
PROBE_CHECKS = [
    'def test_fetch(f):\n    assert f() == b"hello", "no answer"\ncheck("host_server", fetch, test_fetch)',
    'def test_models(f):\n    assert f() == 200\ncheck("preview_server", models, test_models)',
    'def test_peek(f):\n    assert f() == [], f"read {f()}"\ncheck("files_hidden", peek, test_peek)',
    'def test_tamper(f):\n    assert f() != "written", "wrote into the kit"\n'
    'check("kit_read_only", tamper, test_tamper)',
]


@pytest.fixture
def instructor(tmp_path, monkeypatch):
    """A server on the host's 127.0.0.1 (not the kit's), a fake instructor home with a key, the kit's .env."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    home = tmp_path / "instructor-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    monkeypatch.setenv("HOME", str(home))
    env_file, made_env = KIT_ROOT / ".env", not (KIT_ROOT / ".env").exists()
    if made_env:
        env_file.write_text(f"LLM_API_KEY={SECRET}\n")
    paths = [str(home / ".ssh" / "id_ed25519"), str(env_file), str(KIT_ROOT / "README.md"),
             str(KIT_ROOT / "pyproject.toml"), str(tmp_path / "x")]
    (tmp_path / "x").write_text("another file in /tmp")
    try:
        yield listener.getsockname()[1], paths
    finally:
        stop.set()
        listener.close()
        if made_env:
            env_file.unlink()
        (KIT_ROOT / "helpers" / "_tampered.py").unlink(missing_ok=True)


@pytest.mark.grading
@needs_namespaces
def test_isolated_notebook_reaches_no_network_and_no_instructor_file(instructor):
    port, paths = instructor
    source = _nb(PROBE.format(port=port, paths=paths, kit=str(KIT_ROOT)), *PROBE_CHECKS)
    limits = Limits(cell_timeout=30, notebook_timeout=120)
    isolated = run_notebook(source, "http://127.0.0.1:9", limits)
    assert isolated["isolated"] and not isolated["stopped"] and not isolated["error"], isolated
    status, detail = isolated["exercises"]["host_server"]
    assert status == "not right yet" and "ConnectionRefusedError" in detail, detail
    assert isolated["exercises"]["preview_server"] == ["done", ""]  # the kit's server answers inside
    assert isolated["exercises"]["files_hidden"] == ["done", ""]
    assert isolated["exercises"]["kit_read_only"] == ["done", ""]
    assert not (KIT_ROOT / "helpers" / "_tampered.py").exists()

    # The same notebook without the namespaces reaches all of it: the checks above can fail.
    from sdserver import serve_in_thread

    with serve_in_thread(engine="preview", step_delay=0.0) as server:
        plain = run_notebook(source, server.url, limits, isolate=False)
    assert plain["isolated"] is False
    assert plain["exercises"]["host_server"] == ["done", ""]
    assert plain["exercises"]["preview_server"] == ["done", ""]
    status, detail = plain["exercises"]["files_hidden"]
    assert status == "not right yet" and "'id_ed25519', '.env', 'README.md', 'pyproject.toml', 'x'" in detail
    assert SECRET not in json.dumps(isolated)


@pytest.mark.grading
def test_without_isolation_the_summary_says_so_once(tmp_path):
    download, worksheet, points = make_download(tmp_path, ids=["100001"])
    lines = []
    result = grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, log=lines.append,
                   isolate=False, kit_dir=kit_of(tmp_path))
    assert result.isolation and [line for line in lines if "without the sandbox" in line] == [
        f"The notebooks ran without the sandbox ({result.isolation}): with a clean environment, limits, and every "
        "process ended with its notebook, but they could reach the network and read your files. For a class you "
        "do not trust, grade in the sandbox (README, Instructor guide)."]
    summary = result.summary_html.read_text()
    assert summary.count("without the sandbox") == 1
    assert [row[4] for row in _rows(result.worksheet)[1:]] == ["3.00"]  # graded all the same
    assert result.students[0].notebooks["01_test"]["isolated"] is False
    if not WHY_NOT_ISOLATED:  # that result is not reused for an isolated run
        again = grade(download, worksheet, tmp_path / "out", points=points, limits=LIMITS, kit_dir=kit_of(tmp_path))
        assert again.executed == 1 and again.isolation == "" and again.students[0].notebooks["01_test"]["isolated"]


@pytest.mark.grading
@needs_namespaces
def test_graded_batch_ran_isolated(graded):
    _tmp, result = graded
    assert result.isolation == ""
    assert all(nb["isolated"] for s in result.students for nb in s.notebooks.values())
    assert "isolation" not in result.summary_html.read_text()


def test_ci_cannot_skip_the_isolation_tests():
    """Where user namespaces work (``unshare -rn true``), CI must run the tests above, not skip them."""
    unshare = shutil.which("unshare")
    if not os.environ.get("CI") or unshare is None:
        pytest.skip("only on CI (CI is set) with util-linux's unshare")
    if subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("unshare -rn true fails here: no user namespaces on this CI machine")
    assert WHY_NOT_ISOLATED == "", f"namespaces work, but the grader's isolation does not: {WHY_NOT_ISOLATED}"


def test_why_the_isolation_is_not_available(monkeypatch):
    import course.isolation as isolation

    monkeypatch.setattr(isolation.shutil, "which", lambda *_args, **_kwargs: None)
    assert isolation.available.__wrapped__() == "neither bubblewrap (bwrap) nor unshare (util-linux) is installed"
    monkeypatch.undo()
    monkeypatch.setenv("KIT_SANDBOX", "unshare")
    if isolation.prefix():  # an unshare that refuses (as AppArmor's restriction does): its own words come back
        monkeypatch.setattr(isolation, "UNSHARE", ["--not-an-option"])
        why = isolation.available.__wrapped__()
        assert why.startswith("unshare failed: ") and "not-an-option" in why, why

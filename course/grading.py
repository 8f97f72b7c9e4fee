"""Grade a class's Moodle submissions in one command: ``make grade SUBMISSIONS=... WORKSHEET=...``.

Moodle's assignment gives the two files: "Download all submissions" (one zip, a folder per student named
``<Full name>_<id>_assignsubmission_file_``) and the offline grading worksheet (a CSV). :func:`grade`

1. unpacks the download and finds each student's notebooks: the kit's submission zip
   (``<name>_notebooks.zip``) or loose ``.ipynb`` files, whatever their names;
2. matches each file to one of the kit's notebooks by its cell ids (a file that matches none earns nothing)
   and builds the notebook to run from the kit's own copy of it: the kit's setup, test and check cells, the
   student's solution cells and added cells, no saved outputs or tags; checks the student's cells statically
   (a step handed to the kit's own version does not pass; tampering with the grading needs a manual look)
   (:mod:`course.autograde`);
3. runs each notebook in a fresh kernel, in its own process (:mod:`course.grading_worker`) with a clean
   environment (PATH, LANG, the kit's SD_URL / LLM_BASE_URL / OUTPUT_DIR, KIT_GRADING=1, a temporary HOME and
   working folder), a per-cell and per-notebook time limit and a memory limit, against the kit's own server on
   127.0.0.1 (preview engine: no GPU, no LLM, no internet needed); where Linux namespaces allow it, also
   without network, with the instructor's files hidden and everything else read-only
   (:mod:`course.isolation`; the preview server then runs inside each notebook's namespace), and reads each
   exercise's result from how the kit's check cell ran (``check()`` raises under the grader), as the worker
   recorded the kernel's replies, never from what the notebook printed; only the kit's exercise names count,
   each once per student (the best result over the student's copies of a notebook);
4. writes into ``out_dir``: the filled worksheet for Moodle's "Upload grading worksheet" (the same columns,
   order and header; rows matched by ``Identifier``; ``Grade`` from the points table; ``Feedback comments``
   as short HTML, appended; read and written by Moodle's own rules, in any of its languages:
   :mod:`course.moodle`), a feedback page per student, and a class summary (``summary.html`` and
   ``summary.png``).

Results are cached per hash of the notebook that runs (the kit's cells with the student's) in ``out_dir/cache``:
a second run executes nothing new, identical copies run once, and an interrupted batch resumes where it
stopped. The worksheet is written atomically.

Example:
    >>> from course.grading import grade
    >>> result = grade("download.zip", "worksheet.csv", "outputs/grading")        # doctest: +SKIP
    >>> result.worksheet                                                           # doctest: +SKIP
    PosixPath('outputs/grading/worksheet_graded.csv')
"""

from __future__ import annotations

import hashlib
import html as html_module
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from course import autograde, moodle
from course.autograde import MANUAL, Kit
from course.isolation import INSIDE_PORT, _hf_home, available, kind, plan, prefix
from helpers.config import KIT_ROOT
from helpers.errors import KitError

GRADER_VERSION = 3  # part of the cache key: bump when the way results are read changes
DEFAULT_POINTS = KIT_ROOT / "data" / "grading" / "points.json"
MAX_DETAIL = 200  # characters of a student's "why" kept in the feedback
DONE, NOT_DONE, NOT_RIGHT, NOT_REACHED = "done", "not done yet", "not right yet", "not reached"


# --- Reading the results of the check cells --------------------------------------------------------

def _esc(text: str) -> str:
    """Text for an HTML text node (quotes stay as they are: nothing here goes into an attribute)."""
    return html_module.escape(text, quote=False)


def _cell_stdout(cell) -> list[str]:
    """The stdout lines one cell printed."""
    lines = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name", "stdout") == "stdout":
            text = output.get("text", "")
            lines += ("".join(text) if isinstance(text, list) else text).splitlines()
    return lines


def parse_line(line: str) -> tuple[str, str] | None:
    """(status, detail) of one line ``check()`` wrote (the message of its ExerciseNotPassed), or None.

    >>> parse_line("[ ] pick: not right yet: pick([]) should be None. The cells below use the kit's instead.")
    ('not right yet', 'pick([]) should be None.')
    >>> parse_line("[ ] load: not done yet."), parse_line("hello")
    (('not done yet', ''), None)
    """
    if not line.startswith(("[x] ", "[ ] ")) or ": " not in line:
        return None
    rest = line[4:].split(": ", 1)[1].split(" The cells below use ", 1)[0]
    if rest.startswith(DONE) and line.startswith("[x]"):
        return DONE, ""
    if rest.startswith(NOT_RIGHT):
        return NOT_RIGHT, rest[len(NOT_RIGHT):].lstrip(": ").strip()[:MAX_DETAIL]
    if rest.startswith(NOT_DONE):
        return NOT_DONE, ""
    return None


def read_results(prepared, executed) -> dict[str, tuple[str, str]]:
    """{exercise: (status, detail)} of every check cell of ``prepared`` (:func:`course.autograde.prepare`), from
    how that cell ran in ``executed`` (the worker's record of the kernel's replies; never a printed line).

    A check cell that raised ExerciseNotPassed gives its message's status; another error "not right yet" with
    the error; one that ran without an error "done", unless it printed its own not-done/not-right line (the
    grader's switch was turned off from inside); one that never ran "not reached".
    """
    record = executed.metadata.get("grading", {}).get("cells", {}) if executed is not None else {}
    found: dict[str, tuple[str, str]] = {}
    for index, cell in enumerate(prepared.cells):
        name = cell.get("metadata", {}).get("grading", {}).get("exercise")
        if not name or name in found and found[name][0] == DONE:
            continue
        ran = record.get(str(index), {})
        status = ran.get("status")
        if status == "ok":
            printed = _cell_stdout(executed.cells[index]) if index < len(executed.cells) else []
            failed = any(line.startswith(f"[ ] {name}: not ") for line in printed)
            found[name] = (NOT_RIGHT, "the check's result was changed from inside the notebook") if failed \
                else (DONE, "")
        elif status == "error" and ran.get("ename") == "ExerciseNotPassed":
            found[name] = parse_line(ran.get("evalue", "")) or (NOT_RIGHT, "")
        elif status == "error":
            found[name] = (NOT_RIGHT, f"the check cell raised {ran.get('ename')}: {ran.get('evalue', '')}"[:MAX_DETAIL])
        else:
            found.setdefault(name, (NOT_REACHED, ""))
    return found


def first_error(prepared, executed) -> str:
    """'code cell N: ErrorName' for the first cell that ended with an error other than a failed check, '' when none
    did (N: the student's own numbering, or "the kit's code cell N")."""
    record = executed.metadata.get("grading", {}).get("cells", {}) if executed is not None else {}
    for index, cell in enumerate(prepared.cells):
        ran = record.get(str(index), {})
        if ran.get("status") == "error" and ran.get("ename") not in ("ExerciseNotPassed", ""):
            return f"{_label(cell, index)}: {ran.get('ename')}"
    return ""


def _label(cell, index: int) -> str:
    return cell.get("metadata", {}).get("grading", {}).get("label") or f"code cell {index + 1}"


# --- Points table ----------------------------------------------------------------------------------

@dataclass
class Points:
    """Points per exercise: ``exercises[notebook][exercise]``; ``default`` for an exercise not listed."""
    exercises: dict[str, dict[str, float]] = field(default_factory=dict)
    default: float = 1.0

    @classmethod
    def load(cls, path: str | Path | None) -> Points:
        """Read a JSON (``.json``) or TOML (``.toml``) table: ``{"default": 1, "exercises": {nb: {ex: pts}}}``."""
        path = Path(path) if path else DEFAULT_POINTS
        if not path.is_file():
            return cls()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
        return cls({nb: {ex: float(p) for ex, p in table.items()} for nb, table in data.get("exercises", {}).items()},
                   float(data.get("default", 1)))

    def expected(self, notebook: str) -> list[str]:
        return list(self.exercises.get(notebook, {}))

    def of(self, notebook: str, exercise: str) -> float:
        return self.exercises.get(notebook, {}).get(exercise, self.default)


# --- Unpacking Moodle's download -------------------------------------------------------------------

def _safe_members(archive: zipfile.ZipFile):
    for info in archive.infolist():
        parts = Path(info.filename).parts
        if info.is_dir() or info.filename.startswith("/") or ".." in parts or "__MACOSX" in parts:
            continue
        yield info


MAX_FILES = 20  # notebooks read per student (copies past the first three of a kit notebook are not run anyway)
MAX_RESULT_MB = 64  # an executed notebook larger than this is not read (the worker cuts outputs well below it)


def _keep(files: dict[str, bytes], name: str, data: bytes) -> None:
    """files[name] = data, under a name of its own when two files have the same name."""
    unique, number = name, 1
    while unique in files:
        number += 1
        unique = f"{name} ({number})"
    files[unique] = data


def find_submissions(download: str | Path, max_mb: float = 20) -> dict[str, dict]:
    """{owner: {"name", "entry", "notebooks": {file name: bytes}, "skipped"}} from Moodle's "Download all
    submissions" (owners and layouts: :func:`course.moodle.parse_path`).

    Every notebook is kept under its own file name (a file inside the kit's submission zip as ``zip/member``):
    which kit notebook a file is comes from its content (:func:`course.autograde.match`), not its name.

    ``owner`` is the prefix Moodle gave the files (a participant's or a group's, see :mod:`course.moodle`,
    which reads every layout: with or without folders, up to 4.0 and from 4.1, blind marking, teams);
    :meth:`course.moodle.Worksheet.owners` says which rows it grades. Reads the zip in memory (no extraction,
    so no path in it can write outside); a nested ``.zip`` (the kit's submission) is opened the same way, one
    level deep. Nothing read is unbounded (a zip bomb costs nothing): a file over ``max_mb`` unpacked (ten times
    ``make submission``'s 2 MB budget), more than ``max_mb`` or ``MAX_FILES`` notebooks of one student, are
    skipped and said in the feedback; other plugins' files (online text) are not notebooks.
    """
    found: dict[str, dict] = {}
    limit = int(max_mb * 1_000_000)

    def take(student: dict, name: str, size: int, read) -> None:
        kept = sum(len(data) for data in student["notebooks"].values())
        if size > limit or kept + size > limit or len(student["notebooks"]) >= MAX_FILES:
            why = (f"{size / 1e6:.1f} MB, over the grader's {max_mb:g} MB" if size > limit else
                   f"past the grader's limit of {MAX_FILES} notebooks or {max_mb:g} MB per student")
            student["skipped"].append(f"{name}: not graded ({why})")
            return
        _keep(student["notebooks"], name, read())  # zipfile reads no more than the size it announced

    with zipfile.ZipFile(download) as archive:
        for info in _safe_members(archive):
            entry = moodle.parse_path(info.filename)
            if entry is None:
                continue
            student = found.setdefault(entry.owner, {"name": entry.prefix, "entry": entry, "notebooks": {},
                                                     "skipped": []})
            name = Path(entry.path).name  # the file's own name: a flat download's prefix is not part of it
            if entry.plugin != "file":
                continue
            if name.endswith(".ipynb"):
                take(student, name, info.file_size, lambda info=info: archive.read(info))
            elif name.endswith(".zip"):
                if info.file_size > limit:
                    student["skipped"].append(f"{name}: not graded ({info.file_size / 1e6:.1f} MB, over the "
                                              f"grader's {max_mb:g} MB)")
                    continue
                try:
                    with zipfile.ZipFile(io.BytesIO(archive.read(info))) as inner:
                        for member in _safe_members(inner):
                            if member.filename.endswith(".ipynb"):
                                take(student, f"{name}/{member.filename}", member.file_size,
                                     lambda member=member, inner=inner: inner.read(member))
                except zipfile.BadZipFile:
                    student["skipped"].append(f"{name} is not a readable zip")
    return found


# --- Running one notebook under limits -------------------------------------------------------------

@dataclass
class Limits:
    cell_timeout: int = 120
    notebook_timeout: int = 600
    memory_mb: int = 4096
    file_mb: int = 200


def _dead_port() -> int:
    """A local port nothing listens on (bound, then closed): the LLM is never reachable while grading."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(sd_url: str, home: Path, work: Path) -> dict[str, str]:
    """The whole environment of a student's kernel: none of the instructor's variables, keys or passwords.

    Besides the kit's settings it names only paths: the instructor's Hugging Face cache (read for the CLIP
    weights, offline) and CLIP_MODEL / CLIP_PRETRAINED when set, so notebook 05 scores as in class.
    """
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(work),
        "SD_URL": sd_url,
        "SD_AUTH": "",
        "LLM_BASE_URL": f"http://127.0.0.1:{_dead_port()}/v1",
        "LLM_API_KEY": "not-needed",
        "OUTPUT_DIR": str(work / "outputs"),
        "MPLBACKEND": "Agg",
        "KIT_GRADING": "1",  # check() raises when an exercise is not passed: the check cell's status says it
        "PYTHONDONTWRITEBYTECODE": "1",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per thread otherwise (RLIMIT_AS)
        # CPU only, and the CLIP weights from the instructor's Hugging Face cache, never downloaded.
        "CUDA_VISIBLE_DEVICES": "",
        "CLIP_DEVICE": "cpu",
        "HF_HOME": _hf_home(),
        "HF_HUB_OFFLINE": "1",
        **{name: os.environ[name] for name in ("CLIP_MODEL", "CLIP_PRETRAINED") if os.environ.get(name)},
    }


def _my_processes() -> int:
    """How many processes this user runs now (Linux; 0 elsewhere): RLIMIT_NPROC counts them all, so a notebook's
    limit is this plus a margin."""
    uid = os.getuid() if hasattr(os, "getuid") else -1
    count = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            count += entry.stat().st_uid == uid
        except OSError:
            pass
    return count


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_notebook(source: bytes, sd_url: str, limits: Limits, isolate: bool | None = None) -> dict:
    """Execute one notebook in a worker process; return its result (exercises, stop reason, seconds, isolated).

    ``isolate``: run it in namespaces (:mod:`course.isolation`; ``None``: when available). An isolated notebook
    reaches only the preview server inside its namespace, not ``sd_url``.
    """
    import nbformat

    from course.autograde import prepare, read

    isolated = not available() if isolate is None else isolate

    started = time.monotonic()
    try:
        prepared = prepare(read(source))
    except ValueError:  # not UTF-8, not JSON, not a notebook: nothing to run
        return {"exercises": {}, "stopped": "the file is not a readable notebook", "error": "", "seconds": 0.0,
                "isolated": isolated}
    source = nbformat.writes(prepared).encode()
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        tmp = Path(tmp)
        home, work = tmp / "home", tmp / "work"
        home.mkdir()
        work.mkdir()
        # An empty .env here: helpers.config finds it first, so the kit's own .env (the instructor's keys)
        # is not read through the settings. (The files themselves are not hidden: see the README.)
        (work / ".env").write_text("")
        notebook, executed, pid_file = work / "submission.ipynb", tmp / "executed.ipynb", tmp / "kernel.pid"
        notebook.write_bytes(source)
        key = secrets.token_bytes(32)
        command = [sys.executable, "-m", "course.grading_worker", str(notebook), str(executed), "--sign",
                   "--cell-timeout", str(limits.cell_timeout), "--memory-mb", str(limits.memory_mb),
                   "--file-mb", str(limits.file_mb), "--cpu-s", str(limits.notebook_timeout + 30),
                   "--processes", str(_my_processes() + 256)]
        if isolated:
            # The worker runs in its own process namespace: killing it ends the kernel too, and a process id
            # it wrote would mean nothing out here, so no --pid-file. bubblewrap builds the sandbox from the
            # plan itself; with unshare the worker does (--isolate).
            sandbox = plan(tmp)
            (tmp / "plan.json").write_text(json.dumps(sandbox))
            command = [*prefix(sandbox), *command, "--serve-preview", str(INSIDE_PORT),
                       *(["--isolate", str(tmp / "plan.json")] if kind() == "unshare" else [])]
            sd_url = f"http://127.0.0.1:{INSIDE_PORT}"
        else:
            command += ["--pid-file", str(pid_file)]
        env = clean_env(sd_url, home, work)
        env["PYTHONPATH"] = str(KIT_ROOT)  # the kit's helpers and course packages, whatever the install
        process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        stopped, output = "", ""
        try:
            output = process.communicate(key, timeout=limits.notebook_timeout)[0].decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            stopped = f"the notebook ran longer than {limits.notebook_timeout} s and was stopped"
            process.terminate()  # the worker ends everything the notebook started, detached processes too
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        finally:
            _kill(process.pid)
            if pid_file.is_file():
                _kill(int(pid_file.read_text() or 0) or -1)
            process.wait()
        if executed.is_file() and executed.stat().st_size > MAX_RESULT_MB * 1_000_000:  # before reading it
            stopped = stopped or f"its results were over the grader's {MAX_RESULT_MB} MB and were not read"
            executed.unlink()
        if executed.is_file() and not _signed(executed, key, output):
            # Not the file the worker wrote (it was stopped, killed, or the student's code wrote one): not read.
            stopped = stopped or "the notebook's run ended before the grader could read its results"
            executed.unlink()
        result = {"exercises": {}, "stopped": stopped, "error": "", "seconds": 0.0, "isolated": isolated}
        if executed.is_file():
            try:
                nb = nbformat.reads(executed.read_text(encoding="utf-8"), as_version=4)
            except Exception:  # noqa: BLE001 - a notebook the worker could not write whole
                nb = None
            if nb is not None:
                result["exercises"] = {k: list(v) for k, v in read_results(prepared, nb).items()}
                result["stopped"] = stopped or nb.metadata.get("grading", {}).get("stopped", "")
                result["error"] = first_error(prepared, nb)
                marks = nb.metadata.get("grading", {})
                cut = [int(i) for i in marks.get("cut", []) if int(i) < len(prepared.cells)]
                if cut:  # the checks still count: the record of how each cell ran is kept whole
                    result["cut"] = (f"the output of {', '.join(_label(prepared.cells[i], i) for i in cut[:5])} was "
                                     f"cut at the grader's {int(marks.get('cut_at', 0)) // 1000} KB per cell")
                record = marks.get("cells", {})
                running = next((int(i) for i, ran in record.items() if ran.get("status") == "running"), None)
                if result["stopped"].startswith("a cell") and running is not None and running < len(prepared.cells):
                    # Name the timed-out cell in the stop line.
                    label = _label(prepared.cells[running], running)
                    result["stopped"] = label + result["stopped"][len("a cell"):]
                    if result["error"].startswith(label + ": KeyboardInterrupt"):
                        result["error"] = ""
        elif not stopped:
            why = next((line for line in output.splitlines() if line.startswith("isolation failed:")),
                       f"exit status {process.returncode}")
            result["stopped"] = f"the notebook could not be run ({why})"
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def _signed(path: Path, key: bytes, output: str) -> bool:
    """Whether the worker's last "signed:" line is the HMAC of ``path`` with this run's key."""
    import hmac

    lines = [line for line in output.splitlines() if line.startswith("signed: ")]
    expected = hmac.new(key, path.read_bytes(), hashlib.sha256).hexdigest()
    return bool(lines) and hmac.compare_digest(lines[-1][len("signed: "):].strip(), expected)


# --- Grading the batch -----------------------------------------------------------------------------

@dataclass
class StudentResult:
    identifier: str
    name: str
    submitted: bool
    notebooks: dict[str, dict] = field(default_factory=dict)  # kit notebook -> its files' combined result
    skipped: list[str] = field(default_factory=list)  # files that earn nothing, and why
    grade: float | None = None
    maximum: float = 0.0


@dataclass
class GradingResult:
    worksheet: Path
    students: list[StudentResult]
    executed: int  # notebooks run this time (the others came from the cache)
    summary_html: Path
    summary_png: Path | None
    isolation: str = ""  # why the notebooks ran without network and file isolation; "" when they had it


def _exercise_rows(student: StudentResult, points: Points):
    """(notebook, exercise, status, detail, points earned, points possible) for every exercise of a student."""
    for key, result in sorted(student.notebooks.items()):
        exercises = {name: tuple(value) for name, value in result["exercises"].items()}
        for name in points.expected(key):
            exercises.setdefault(name, (NOT_REACHED, ""))
        for name, (status, detail) in exercises.items():
            possible = points.of(key, name)
            yield key, name, status, detail, possible if status == DONE else 0.0, possible


def _feedback_comment(student: StudentResult, points: Points) -> str:
    """Short HTML for the worksheet's Feedback comments column."""
    if not student.submitted:
        return "<p>No notebook found in this submission.</p>"
    items = [f"<li>{_esc(text)}</li>" for text in student.skipped]
    for key, result in sorted(student.notebooks.items()):
        problems = [text for text in (result["stopped"], result["error"] and f"an error in {result['error']}",
                                      result.get("cut", "")) if text]
        if problems:
            items.append(f"<li>{_esc(key)}: {_esc('; '.join(problems))}</li>")
        if len(result.get("files", [])) > 1:
            items.append(f"<li>{_esc(key)}: {_esc(_files_note(result))}</li>")
    for key, name, status, detail, earned, _possible in _exercise_rows(student, points):
        mark = "passed" if status == DONE else status + (f": {detail}" if detail else "")
        items.append(f"<li>{_esc(key)} {_esc(name)}: {_esc(mark)} ({earned:g})</li>")
    grade = "" if student.grade is None else f"<p>Grade: {student.grade:g}</p>"
    return grade + "<ul>" + "".join(items) + "</ul>"


def _files_note(result: dict) -> str:
    counted = sorted(set(result.get("counted", {}).values()))
    return (f"graded from {len(result['files'])} files ({', '.join(result['files'])}); each exercise counts once, "
            f"its best result, from {', '.join(counted)}")


def _feedback_page(student: StudentResult, points: Points) -> str:
    rows = "".join(
        f"<tr><td>{_esc(key)}</td><td>{_esc(name)}</td><td>{_esc(status)}</td>"
        f"<td>{_esc(detail)}</td><td>{earned:g} / {possible:g}</td></tr>"
        for key, name, status, detail, earned, possible in _exercise_rows(student, points))
    notes = "".join(f"<li>{_esc(text)}</li>" for text in student.skipped)
    notes += "".join(f"<li>{_esc(key)}: {_esc(text)}</li>" for key, result in sorted(student.notebooks.items())
                     for text in (result["stopped"], result["error"], result.get("cut", ""),
                                  _files_note(result) if len(result.get("files", [])) > 1 else "") if text)
    grade = "no grade (no submission)" if student.grade is None else f"{student.grade:g}"
    return (f"<!doctype html><meta charset='utf-8'><title>Feedback: {_esc(student.name)}</title>"
            f"<h1>{_esc(student.name)}</h1><p>Grade: {grade}</p>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "<table border=1><tr><th>Notebook</th><th>Exercise</th><th>Result</th><th>Why</th><th>Points</th></tr>"
            + rows + "</table>")


def _summary(students: list[StudentResult], points: Points, out_dir: Path, isolation: str = ""
             ) -> tuple[Path, Path | None]:
    counts: dict[tuple[str, str], list[int]] = {}
    for student in students:
        for key, name, status, *_rest in _exercise_rows(student, points):
            counts.setdefault((key, name), [0, 0])
            counts[(key, name)][0] += status == DONE
            counts[(key, name)][1] += 1
    submitted = sum(s.submitted for s in students)
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(n)}</td><td>{p}</td><td>{t}</td></tr>"
                   for (k, n), (p, t) in sorted(counts.items()))
    png = out_dir / "summary.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # A "$" would start matplotlib's mathtext (and an unbalanced one fails the whole plot): escaped.
        labels = [f"{k[:2]} {n}".replace("$", r"\$") for k, n in sorted(counts)]
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(labels) + 2), 4))
        ax.bar(labels, [counts[key][0] for key in sorted(counts)], color="tab:green")
        ax.set_ylabel("students who passed")
        ax.set_title(f"Exercises passed ({submitted} submissions)")
        ax.set_ylim(0, max(1, submitted))
        ax.tick_params(axis="x", labelrotation=60)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
    except ImportError:
        png = None
    page = out_dir / "summary.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>Class summary</title><h1>Class summary</h1>"
        f"<p>{submitted} of {len(students)} students submitted.</p>"
        + (f"<p><b>{_esc(not_isolated(isolation))}</b></p>" if isolation else "")
        + "<table border=1><tr><th>Notebook</th><th>Exercise</th><th>Passed</th><th>Ran</th></tr>" + rows + "</table>"
        + ("<p><img src='summary.png' alt='students who passed each exercise'></p>" if png else ""),
        encoding="utf-8")
    return page, png


def _write_atomic(path: Path, text: str, encoding: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _safe_file_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "student"


class NoSandbox(KitError, RuntimeError):
    """``make grade`` without a sandbox and without ``--no-isolation``: it refuses, naming both ways on."""


def not_isolated(why: str) -> str:
    """The one line an instructor reads when the notebooks ran without the sandbox."""
    return (f"The notebooks ran without the sandbox ({why}): with a clean environment, limits, and every process "
            "ended with its notebook, but they could reach the network and read your files. For a class you do "
            "not trust, grade in the sandbox (README, Instructor guide).")


MAX_COPIES = 3  # files run per kit notebook and student; more copies are listed, not run


def _grade_file(filename: str, source: bytes, kit: Kit, runs: dict, limits: Limits, isolate: bool, out_dir: Path,
                log, student: str, server_url) -> tuple[str | None, dict | str]:
    """(kit notebook key, result) of one file, or (None, why it earns nothing)."""
    import nbformat

    try:
        nb = autograde.read(source)
    except ValueError as err:
        return None, str(err)
    key = autograde.match(nb, kit)
    if key is None:
        return None, "it matches none of the kit's notebooks (too few of their cells), so it earns nothing"
    names = kit.exercises(key)
    if len(runs.get(key, [])) >= MAX_COPIES:
        return None, f"a copy of {key} beyond the first {MAX_COPIES}: not run"
    reference = kit.notebooks[key]
    built = autograde.build(reference, nb)
    findings = autograde.static_checks(built, reference, kit.steps)
    if findings.tampering:
        why = "; ".join(findings.tampering)
        log(f"{student}: {filename} ({key}) needs a manual look: {why}")
        return key, {"exercises": {n: [MANUAL, why[:MAX_DETAIL]] for n in names}, "seconds": 0.0, "error": "",
                     "stopped": f"not run, it needs a manual look: {why}", "isolated": isolate}
    payload = nbformat.writes(built).encode()
    # An isolated run is cached apart: a result from a run without the isolation is not reused for one.
    mode = f"|{GRADER_VERSION}|{limits}" + ("|isolated" if isolate else "")
    cached = out_dir / "cache" / f"{hashlib.sha256(payload + mode.encode()).hexdigest()}.json"
    if cached.is_file():
        result = json.loads(cached.read_text(encoding="utf-8"))
        log(f"{student}: {key} (cached)")
    else:
        result = run_notebook(payload, server_url(), limits, isolate)
        _write_atomic(cached, json.dumps(result), "utf-8")
        log(f"{student}: {key} ran in {result['seconds']:.1f} s" + (f" ({result['stopped']})" if result["stopped"]
                                                                        else ""))
        result["_executed"] = 1
    # Only the kit's exercise names count; a step handed to the kit's own version does not pass.
    exercises = {n: list(result["exercises"].get(n, [NOT_REACHED, ""])) for n in names}
    for name, used in findings.handoffs.items():
        exercises[name] = [NOT_RIGHT, f"it hands its work to the kit's {used}: write this step yourself"]
    return key, {**result, "exercises": exercises}


RANK = {DONE: 4, MANUAL: 3, NOT_RIGHT: 2, NOT_DONE: 1, NOT_REACHED: 0}


def _combine(files: list[tuple[str, dict]], names: list[str]) -> dict:
    """One result per kit notebook from the student's files of it: each exercise once, its best result."""
    combined = {"exercises": {}, "files": [f for f, _ in files], "counted": {}, "stopped": "", "error": "",
                "seconds": round(sum(r["seconds"] for _f, r in files), 2),
                "isolated": all(r.get("isolated") for _f, r in files)}
    for name in names:
        filename, result = max(files, key=lambda item: RANK.get(item[1]["exercises"][name][0], 0))
        combined["exercises"][name] = result["exercises"][name]
        combined["counted"][name] = filename
    notes = [(f, r) for f, r in files if r["stopped"] or r["error"]]
    prefix = len(files) > 1
    combined["stopped"] = "; ".join(f"{f}: {r['stopped']}" if prefix else r["stopped"] for f, r in notes
                                    if r["stopped"])
    combined["error"] = "; ".join(f"{f}: {r['error']}" if prefix else r["error"] for f, r in notes if r["error"])
    combined["cut"] = "; ".join(f"{f}: {r['cut']}" if prefix else r["cut"] for f, r in files if r.get("cut"))
    return combined


def grade(submissions_zip: str | Path, worksheet_csv: str | Path, out_dir: str | Path, points: str | Path | None
          = None, limits: Limits | None = None, sd_url: str | None = None, log=lambda message: None,
          isolate: bool | None = None, columns: dict[str, str] | None = None, teams: str | Path | None = None,
          kit_dir: str | Path | None = None, kit_steps: str | Path | None = None
          ) -> GradingResult:
    """Grade every submission of the download into ``out_dir`` (see the module doc); returns what was written.

    ``sd_url``: an A1111-compatible server to use instead of starting the kit's preview server (tests); the
    notebooks must reach it, so it turns the isolation off unless ``isolate=True``.
    ``columns``: {role: header} for a worksheet in a language :mod:`course.moodle` does not know (``--columns``);
    ``teams``: a JSON file {group id: [identifiers]} where the worksheet cannot tell a group's members (``--teams``).
    ``isolate``: run each notebook in the sandbox (:mod:`course.isolation`); ``None``: in the sandbox, and
    :class:`NoSandbox` when there is none here; ``False`` on purpose: without it (a clean environment, limits, and
    every process ended with its notebook). ``log`` is called with one line per notebook, and once when the
    sandbox is off.
    ``kit_dir``: the folder of the kit's reference notebooks (the solution versions; default ``notebooks/``):
    each file is matched to one of them by its cell ids and run as that notebook (:mod:`course.autograde`).
    ``kit_steps``: the table of the kit functions each exercise may not hand its work to (default
    ``data/grading/kit_steps.json``).
    """
    limits = limits or Limits()
    if isolate is None:
        if sd_url is None and available():
            raise NoSandbox(f"No sandbox for the students' notebooks on this machine: {available()}.",
                            fix="grade on Linux with bubblewrap (apt install bubblewrap) or user namespaces, or in "
                                "the container of the README's Instructor guide; or, for code you trust, run "
                                "again with --no-isolation (make grade ... NO_ISOLATION=1)")
        isolate = sd_url is None
    isolation = "" if isolate else ("turned off: --no-isolation" if sd_url is None
                                     else "turned off: the notebooks must reach the server given as sd_url")
    if isolation:
        log(not_isolated(isolation))
    table = Points.load(points)
    out_dir = Path(out_dir)
    (out_dir / "cache").mkdir(parents=True, exist_ok=True)
    (out_dir / "feedback").mkdir(exist_ok=True)
    sheet = moodle.Worksheet.read(worksheet_csv, columns, moodle.load_teams(teams))
    found = find_submissions(submissions_zip)
    owners = sheet.owners(found)  # {participant number: the download's folder its row is graded from}

    kit = Kit.load(kit_dir, kit_steps)
    server = None
    executed = 0
    students: list[StudentResult] = []

    def start_server() -> str:
        nonlocal server
        if sd_url is not None or isolate:
            return sd_url or ""
        if server is None:
            from sdserver import serve_in_thread

            server = serve_in_thread(engine="preview", step_delay=0.0)
        return server.url

    try:
        for row in sheet.rows:
            number = sheet.identifier(row)
            submission = found.get(owners.get(number, ""))
            identifier, name = row[sheet.roles["identifier"]], sheet.name(row)
            student = StudentResult(identifier, name, bool(submission and submission["notebooks"]))
            runs: dict[str, list[tuple[str, dict]]] = {}
            for filename, source in sorted((submission or {}).get("notebooks", {}).items()):
                key, result = _grade_file(filename, source, kit, runs, limits, isolate, out_dir, log, name,
                                          lambda: start_server())
                if key is None:
                    student.skipped.append(f"{filename}: {result}")
                    continue
                executed += result.pop("_executed", 0)
                runs.setdefault(key, []).append((filename, result))
            for key, files in runs.items():
                student.notebooks[key] = _combine(files, kit.exercises(key))
            if student.submitted:
                student.grade = sum(row_[4] for row_ in _exercise_rows(student, table))
                student.maximum = sum(row_[5] for row_ in _exercise_rows(student, table))
                maximum = sheet.maximum(row)
                student.grade = student.grade if maximum is None else min(student.grade, maximum)
                sheet.set_grade(row, student.grade)
            comment = _feedback_comment(student, table)
            if student.submitted and not sheet.changeable(row):
                # Moodle keeps a locked grade (process_import_grades skips it): the feedback says so, not a grade.
                kept = sheet.current_grade(row)
                comment = comment.replace(
                    f"<p>Grade: {student.grade:g}</p>",
                    f"<p>Points from the checks: {student.grade:g}. Your grade is set in Moodle and stays"
                    + (f" {kept}" if kept else "") + ".</p>", 1)
            sheet.add_feedback(row, comment)
            page = out_dir / "feedback" / f"{_safe_file_name(name)}_{number}.html"
            page.write_text(_feedback_page(student, table), encoding="utf-8")
            students.append(student)
    finally:
        if server is not None:
            server.stop()

    graded = set(owners.values())
    for key, submission in sorted(found.items()):
        if key not in graded:
            log(f"{key}: submitted, but no row of the worksheet is theirs; not graded")

    worksheet = out_dir / f"{Path(worksheet_csv).stem}_graded.csv"
    _write_atomic(worksheet, sheet.text(), sheet.encoding)
    summary_html, summary_png = _summary(students, table, out_dir, isolation)
    return GradingResult(worksheet, students, executed, summary_html, summary_png, isolation)


def clear_cache(out_dir: str | Path) -> None:
    """Forget every cached result (the next run executes every notebook again)."""
    shutil.rmtree(Path(out_dir) / "cache", ignore_errors=True)

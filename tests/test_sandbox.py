"""The grader's sandbox, attacked as a student would (course.isolation, course.grading_worker).

A graded notebook tries what a student who wants more than points would: a Unix socket of the host (a file
socket, as Docker's and PostgreSQL's are, and an abstract one), files outside the allow-list (/srv, /opt,
the Hugging Face token next to the CLIP weights, /etc/passwd, the kit's own files), writing into the kit,
and a detached process that outlives its notebook. Each sandbox the kit builds (bubblewrap, and its own
unshare path) must stop all of it; without a sandbox (--no-isolation) the detached process must still die
with its notebook, and `make grade` must refuse to run without a sandbox unless told to.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import nbformat
import pytest

import course.grading as grading
import course.isolation as isolation
from course.grading import Limits, run_notebook
from helpers.config import KIT_ROOT

pytestmark = [pytest.mark.grading, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]

PROBE = """import json, os, socket, subprocess, sys
found = {{}}
for name, address in (("file socket", {sock!r}), ("abstract socket", {abstract!r})):
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(3)
            client.connect(address)
            found[name] = client.recv(16).decode()
    except OSError as err:
        found[name] = type(err).__name__
found["visible"] = [path for path in {paths!r} if os.path.exists(path)]
found["weights"] = os.path.isfile({weights!r})
try:
    open(os.path.join({kit!r}, "helpers", "_tampered.py"), "w").write("x = 1")
    found["kit"] = "written"
except OSError as err:
    found["kit"] = type(err).__name__
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)  # {marker}"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
raise RuntimeError("PROBE" + json.dumps(found))
"""


def processes_with(marker: str) -> list[int]:
    """Processes on the host whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "cmdline").read_bytes().decode("utf-8", "replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@pytest.fixture
def host(tmp_path, monkeypatch):
    """What a student would like to reach: Unix sockets, secrets in /srv and /opt, a Hugging Face token."""
    tag = uuid.uuid4().hex[:8]
    sock_dir = Path("/run") if os.access("/run", os.W_OK) else tmp_path
    sock_path, abstract = str(sock_dir / f"kit-test-{tag}.sock"), f"\0kit-test-{tag}"
    listeners = [socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)]
    listeners[0].bind(sock_path)
    listeners[1].bind(abstract)
    for listener in listeners:
        listener.listen()

        def serve(listener=listener):
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"host secret")

        threading.Thread(target=serve, daemon=True).start()
    secrets = []
    for folder in ("/srv", "/opt"):
        if os.access(folder, os.W_OK):
            secrets.append(Path(folder) / f"kit-test-{tag}")
            secrets[-1].write_text("instructor's file")
    hf_home = tmp_path / "hf"
    (hf_home / "hub" / "models--tiny").mkdir(parents=True)
    (hf_home / "hub" / "models--tiny" / "weights.bin").write_text("weights")
    (hf_home / "token").write_text("hf_secret_token")
    for module in (grading, isolation):
        monkeypatch.setattr(module, "_hf_home", lambda: str(hf_home))
    home_file = Path.home() / f".kit-test-{tag}"  # the grader's home (the Python installation may live in it)
    home_file.write_text("instructor's home")
    secrets.append(home_file)
    paths = [*map(str, secrets), str(hf_home / "token"), "/etc/passwd", str(KIT_ROOT / "pyproject.toml"),
             str(tmp_path / "x")]
    (tmp_path / "x").write_text("another file in /tmp")
    probe = PROBE.format(sock=sock_path, abstract=abstract, paths=paths, kit=str(KIT_ROOT), marker=f"kit-{tag}",
                         weights=str(hf_home / "hub" / "models--tiny" / "weights.bin"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(probe)]
    try:
        yield nbformat.writes(nb).encode(), f"kit-{tag}", paths
    finally:
        for listener in listeners:
            listener.close()
        Path(sock_path).unlink(missing_ok=True)
        for path in secrets:
            path.unlink(missing_ok=True)
        (KIT_ROOT / "helpers" / "_tampered.py").unlink(missing_ok=True)
        for pid in processes_with(f"kit-{tag}"):
            os.kill(pid, 9)


def probe(source: bytes, monkeypatch, **kwargs) -> tuple[dict, dict]:
    """Run the probe notebook with run_notebook; (what it found, run_notebook's result)."""
    seen = {}
    first_error = grading.first_error

    def keep(prepared, nb):
        seen["text"] = "".join("".join(out.get("traceback", [])) + out.get("evalue", "")
                               for cell in nb.cells for out in cell.get("outputs", []))
        return first_error(prepared, nb)

    monkeypatch.setattr(grading, "first_error", keep)
    result = run_notebook(source, "http://127.0.0.1:9", Limits(cell_timeout=60, notebook_timeout=120), **kwargs)
    text = seen.get("text", "")
    assert "PROBE{" in text, (result, text[-2000:])
    return json.JSONDecoder().raw_decode(text[text.index("PROBE{") + 5:])[0], result


SANDBOXES = ["bubblewrap", "unshare"]


@pytest.fixture(params=SANDBOXES)
def sandbox(request, monkeypatch):
    """Each way the kit builds the sandbox, forced (KIT_SANDBOX=unshare skips bubblewrap)."""
    monkeypatch.setenv("KIT_SANDBOX", request.param)
    isolation.available.cache_clear()
    if isolation.kind() != request.param or isolation.available():
        if os.environ.get("CI"):  # .ci/run installs bubblewrap, and CI runs as root: both must work there
            pytest.fail(f"the {request.param} sandbox does not work on CI: {isolation.available() or 'missing'}")
        pytest.skip(f"no {request.param} sandbox here: {isolation.available() or 'not installed'}")
    yield request.param
    isolation.available.cache_clear()


def test_sandbox_hides_the_host_and_ends_every_process(host, sandbox, monkeypatch):
    source, marker, paths = host
    found, result = probe(source, monkeypatch)
    assert result["isolated"], result
    assert found["file socket"] in ("FileNotFoundError", "ConnectionRefusedError"), found
    assert found["abstract socket"] == "ConnectionRefusedError", found  # another network namespace
    assert found["visible"] == [], found  # nothing outside the allow-list, not even /etc/passwd or /root
    assert found["weights"] is True  # the CLIP weights the checks need are there, the token beside them is not
    assert found["kit"] in ("OSError", "PermissionError", "FileNotFoundError"), found
    assert not (KIT_ROOT / "helpers" / "_tampered.py").exists()
    assert processes_with(marker) == []  # the detached process died with its notebook


def test_without_a_sandbox_the_probe_reaches_it_all_but_no_process_outlives_the_notebook(host, monkeypatch):
    """The same probe with --no-isolation: the checks above can fail; the detached process still dies."""
    source, marker, paths = host
    found, result = probe(source, monkeypatch, isolate=False)
    assert result["isolated"] is False
    assert found["file socket"] == "host secret" and found["abstract socket"] == "host secret"
    assert "/etc/passwd" in found["visible"] and str(Path(paths[0])) in found["visible"]
    assert processes_with(marker) == []  # adopted by the worker (child subreaper) and ended before the result


def test_a_notebook_past_its_time_takes_its_detached_processes_along(tmp_path):
    tag = f"kit-{uuid.uuid4().hex[:8]}"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)  # {tag}'], start_new_session=True)\n"
        "time.sleep(600)")]
    try:
        result = run_notebook(nbformat.writes(nb).encode(), "http://127.0.0.1:9",
                              Limits(cell_timeout=300, notebook_timeout=15), isolate=False)
        assert "longer than 15 s" in result["stopped"], result
        assert processes_with(tag) == []
    finally:
        for pid in processes_with(tag):
            os.kill(pid, 9)


def test_the_process_limit_is_set_from_the_users_own_count():
    count = grading._my_processes()
    assert count >= 1  # this test's own process at least
    code = ("import resource, sys; from course.grading_worker import set_limits; set_limits(0, 0, 0, 4000); "
            "print(resource.getrlimit(resource.RLIMIT_NPROC)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(KIT_ROOT)}).stdout
    assert int(out) <= 4000


def test_grade_refuses_without_a_sandbox_and_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "available", lambda: "neither bubblewrap (bwrap) nor unshare (util-linux) is "
                                                       "installed")
    (tmp_path / "w.csv").write_text("x")
    with pytest.raises(grading.NoSandbox) as caught:
        grading.grade(tmp_path / "none.zip", tmp_path / "w.csv", tmp_path / "out")
    assert "No sandbox" in caught.value.message and "bubblewrap" in caught.value.message
    assert "--no-isolation" in caught.value.fix and "container" in caught.value.fix
    assert not (tmp_path / "out").exists()  # nothing written


def test_bubblewrap_and_unshare_take_the_same_allow_list(tmp_path):
    plan = isolation.plan(tmp_path)
    arguments = isolation.bwrap_arguments(plan)
    bound = [arguments[i + 1] for i, word in enumerate(arguments) if word == "--ro-bind"]
    assert bound == plan["read_only"] and "/usr" in bound
    assert not [path for path in bound if path.startswith(("/home", "/root/.ssh", "/etc/passwd", "/srv", "/opt"))]
    assert not [path for path in bound if path.endswith("token")]
    assert arguments[arguments.index("--bind") + 1] == plan["writable"] == os.path.realpath(tmp_path)
    for word in ("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop"):
        assert word in arguments

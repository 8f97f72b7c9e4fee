"""The Inspector end to end: a real JupyterLab, driven by Playwright in headless Chromium.

One test. It makes a real scored run (the kit's server, a tiny CLIP model), writes a one-cell
notebook that shows ``Inspector(run)``, starts JupyterLab on a free port of 127.0.0.1 with a
temporary HOME and Jupyter folders, opens the notebook in Chromium, runs it, then clicks like a
student: rating "4", "Save rating", "Next". It checks the ratings file on disk, and that the
picture in the browser is the candidate's PNG file byte for byte, before and after "Next".

Needs Debian's Chromium (``apt-get install -y chromium``: /usr/bin/chromium) and the Python
package ``playwright`` (its own browser download is not used). Without them the test is skipped,
except under CI (``CI`` set), where it fails: CI must never skip it silently.

Screenshots go to pytest's tmp folder, and also to ``$KIT_SCREENSHOT_DIR`` when that is set.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 60_000  # the longest any single wait in the browser may take
NOTEBOOK = "inspector_e2e.ipynb"
BLOB = re.compile(r"^blob:")  # how ipywidgets' Image shows its bytes


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def _missing(what: str) -> None:
    """Skip on a developer machine; fail under CI, which must install what the test needs."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI is set: .ci/run should install chromium "
                    "(apt-get install -y chromium) and make setup the playwright package (the course extra), "
                    "so that this test runs instead of being skipped.", pytrace=False)
    pytest.skip(f"{what} is missing: to run the browser test, install Debian's chromium "
                "(apt-get install -y chromium) and playwright (pip install -e '.[course]').")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, run_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        f"from course.inspector import Inspector\ninsp = Inspector({str(run_path)!r})\ninsp")]
    nbformat.write(nb, path)


def _lab_env(root: Path, output_dir: Path) -> dict[str, str]:
    """A clean Jupyter: temporary HOME, config, data and runtime folders; the venv's own
    sys.prefix/share/jupyter (its python3 kernel, the widgets extension) is still searched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    folders = {"HOME": root / "home", "JUPYTER_CONFIG_DIR": root / "jupyter-config",
               "JUPYTER_DATA_DIR": root / "jupyter-data", "JUPYTER_RUNTIME_DIR": root / "jupyter-runtime",
               "IPYTHONDIR": root / "ipython"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in folders.items()})
    env.update(OUTPUT_DIR=str(output_dir), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    # No news, no update checks and no toasts: nothing may reach outside 127.0.0.1 or cover the page.
    settings = folders["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}), encoding="utf-8")
    return env


def _start_lab(root: Path, notebooks: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    # The jupyter of the Python running the tests (the kit's venv), so its python3 kernel is the venv's.
    jupyter = Path(sys.executable).with_name("jupyter")
    launcher = [str(jupyter)] if jupyter.is_file() else [sys.executable, "-m", "jupyter"]
    command = [*launcher, "lab", "--no-browser", "--ServerApp.open_browser=False",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--allow-root",
               "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
               f"--ServerApp.root_dir={notebooks}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]
    with open(log_path, "wb") as log:  # the child keeps its own copy of the file descriptor
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as answer:
                if answer.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.3)
    _stop(server)
    raise AssertionError(f"JupyterLab did not answer on {url} within 60 s (exit code {server.poll()}); "
                         f"the end of its log:\n{_tail(log_path)}")


def _tail(path: Path, size: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-size:] if path.exists() else "(no log)"


def _stop(server: subprocess.Popen) -> None:
    """Stop JupyterLab and every process it started (its kernels run in their own sessions)."""
    try:
        import psutil

        children = psutil.Process(server.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - already gone, or no psutil: the server still gets stopped
        children = []
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # jupyter_server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    for child in children:  # a kernel that outlived the server (it normally ends with it)
        with contextlib.suppress(Exception):  # psutil.NoSuchProcess: it ended by itself
            child.kill()
            child.wait(timeout=5)


def _shown_png(page) -> bytes:
    """The bytes of the large picture as the browser has them (the <img> shows a blob: URL)."""
    src = page.locator("img.widget-image").first.get_attribute("src")
    if not src or not src.startswith("blob:"):
        return b""
    data = page.evaluate("""async (src) => {
        const bytes = new Uint8Array(await (await fetch(src)).arrayBuffer());
        let text = ''; for (const b of bytes) text += String.fromCharCode(b); return btoa(text); }""", src)
    return base64.b64decode(data)


def _wait_for_png(page, expected: bytes, what: str, timeout: float = WAIT_MS / 1000) -> None:
    """Wait until the large picture in the browser is exactly ``expected`` (a file's bytes)."""
    deadline, shown = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        shown = _shown_png(page)
        if shown == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"the large picture is not {what}'s PNG file (the browser shows {len(shown)} bytes)")


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("KIT_SCREENSHOT_DIR"):
        target = Path(os.environ["KIT_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_inspector_in_jupyterlab(request, tmp_path):
    chromium = _chromium()
    if chromium is None:
        _missing("Chromium (/usr/bin/chromium)")
    if importlib.util.find_spec("playwright") is None:
        _missing("The Python package playwright")
    from playwright.sync_api import expect, sync_playwright

    from helpers.a1111 import A1111Client
    from helpers.clipqa import ClipScorer, make_tiny_checkpoint
    from helpers.llm import LLM
    from helpers.pipeline import run_pipeline

    timings, console = {}, []
    started = time.monotonic()

    # ----- a real scored run, in a temporary OUTPUT_DIR ---------------------------------------
    sd_server = request.getfixturevalue("sd_server")
    output_dir = tmp_path / "outputs"
    scorer = ClipScorer("tiny-clip-test", str(make_tiny_checkpoint(tmp_path / "tiny.safetensors")), "cpu")
    run = run_pipeline("fox, snow", n=3, client=A1111Client(sd_server.url, auth=""),
                       llm=LLM("http://127.0.0.1:9/v1"), scorer=scorer, out_dir=output_dir / "runs",
                       progress=False, steps=2, width=64, height=64)
    assert len(run.candidates) == 3 and run.best is not None
    files = [c.path.read_bytes() for c in run.candidates]
    assert files[0] != files[1]
    timings["run"] = time.monotonic() - started

    # ----- the notebook and JupyterLab ----------------------------------------------------------
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebook(notebooks / NOTEBOOK, run.path)
    ratings = output_dir / "ratings.jsonl"
    log_path = tmp_path / "jupyterlab.log"
    server, url = _start_lab(tmp_path, notebooks, _lab_env(tmp_path, output_dir), log_path)
    timings["lab up"] = time.monotonic() - started
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            try:
                page.goto(f"{url}/lab/tree/{NOTEBOOK}", timeout=WAIT_MS)

                # The notebook is open and its kernel is connected and idle. The status bar says so;
                # the toolbar's execution indicator does not (it reads "idle" while there is no kernel
                # yet, and Run All Cells then does nothing at all).
                cell = page.locator(".jp-Notebook .jp-CodeCell").first
                expect(cell).to_contain_text("Inspector(")
                expect(page.get_by_text("Python 3 (ipykernel) | Idle", exact=True)).to_be_visible()
                timings["notebook open"] = time.monotonic() - started

                # Run > Run All Cells, as a student would; the prompt turns to [*] or [1] at once.
                # Once more if it did not (a click that JupyterLab ignored), never more.
                prompt = cell.locator(".jp-InputPrompt")
                for attempt in (1, 2):
                    page.get_by_role("menuitem", name="Run", exact=True).click()
                    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                    try:
                        expect(prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=15_000)
                        break
                    except AssertionError:
                        if attempt == 2:
                            raise
                save = page.get_by_role("button", name="Save rating")
                failed = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                expect(save.or_(failed).first).to_be_visible(timeout=WAIT_MS)
                assert failed.count() == 0, f"the cell failed: {failed.all_inner_texts()}"
                expect(save).to_be_visible()
                caption = page.locator(".widget-html").filter(has_text="Candidate #")
                expect(caption).to_contain_text(re.compile(rf"Candidate #0\b.* · seed {run.candidates[0].seed}\b"))
                expect(page.get_by_text("1 / 3", exact=True)).to_be_visible()
                expect(page.locator("img.widget-image")).to_have_count(4)  # the large one, 3 thumbnails
                expect(page.locator("img.widget-image").first).to_have_attribute("src", BLOB)
                timings["widget shown"] = time.monotonic() - started
                first_src = page.locator("img.widget-image").first.get_attribute("src")
                _wait_for_png(page, files[0], "candidate #0")
                _screenshot(page, tmp_path, "inspector.png")

                # Rate 4, save, next.
                four = page.locator(".widget-toggle-buttons").get_by_role("button", name="4", exact=True)
                four.click()
                expect(four).to_have_class(re.compile(r"\bmod-active\b"))  # shown as chosen
                save.click()
                expect(page.get_by_text("Saved rating 4 for #0")).to_be_visible()
                page.get_by_role("button", name="Next ▶").click()
                expect(caption).to_contain_text(re.compile(rf"Candidate #1\b.* · seed {run.candidates[1].seed}\b"))
                expect(page.get_by_text("2 / 3", exact=True)).to_be_visible()
                large = page.locator("img.widget-image").first
                expect(large).not_to_have_attribute("src", first_src)
                expect(large).to_have_attribute("src", BLOB)
                _wait_for_png(page, files[1], "candidate #1")
                expect(page.get_by_role("button", name="rated 4")).to_be_visible()  # thumbnail #0's label
                page.get_by_role("button", name="Which rater agrees with me?").click()
                expect(page.get_by_text("Rate at least 3 images first")).to_be_visible()  # one rated so far
                _screenshot(page, tmp_path, "inspector-after-next.png")
                # Two more ratings (2 for #1, 5 for #2): now the button compares them with the run's scores.
                for number, rating in ((1, "2"), (2, "5")):
                    if number == 2:
                        page.get_by_role("button", name="Next ▶").click()
                        expect(page.get_by_text("3 / 3", exact=True)).to_be_visible()
                    page.locator(".widget-toggle-buttons").get_by_role("button", name=rating, exact=True).click()
                    save.click()
                    expect(page.get_by_text(f"Saved rating {rating} for #{number}")).to_be_visible()
                page.get_by_role("button", name="Which rater agrees with me?").click()
                table = page.locator(".widget-html").filter(has_text="Which rater agrees with you?")
                expect(table).to_contain_text("(in the runs)")
                expect(table).to_contain_text("n=3")
                expect(table).to_contain_text("MEANINGLESS")  # the tiny test model scored this run
                _screenshot(page, tmp_path, "inspector-agreement.png")
                errors = page.locator(".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']")
                assert errors.count() == 0, f"the notebook or the widget's error box shows: {errors.all_inner_texts()}"
                timings["clicked through"] = time.monotonic() - started
            except BaseException:
                with contextlib.suppress(Exception):  # what the page showed when it failed, if it can
                    _screenshot(page, tmp_path, "inspector-failure.png")
                raise
            finally:
                browser.close()
    except BaseException:
        print(f"JupyterLab's log ends with:\n{_tail(log_path)}", file=sys.stderr)
        print("The browser's console:", *console[-40:], sep="\n", file=sys.stderr)
        raise
    finally:
        _stop(server)

    # ----- what reached the disk ------------------------------------------------------------
    assert ratings.is_file(), f"no {ratings} after 'Save rating'"
    written = ratings.read_text(encoding="utf-8").splitlines()
    assert len(written) == 3, written
    record = json.loads(written[0])
    assert record["rating"] == "4" and record["candidate"] == 0
    assert record["run"] == run.path.name and record["seed"] == run.candidates[0].seed
    timings["total"] = time.monotonic() - started
    print("browser test timings (s since start):", {k: round(v, 1) for k, v in timings.items()})

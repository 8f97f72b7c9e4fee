"""The web UI at the server's root (sdserver/webui.py, sdserver/webui/): over HTTP, then in Chromium.

The HTTP tests check what is served: the page at ``/``, its three files, the same with ``--api-auth``
(the page is public, like A1111's UI page; the API behind it is not), ``/docs``, that the files ship
with the package and that the page loads nothing from outside (it must work offline).

The browser tests drive Debian's Chromium through Playwright like a student: type a prompt, change
steps, Generate, read the image's infotext, interrupt a slow job, log in on a server with --api-auth,
see the server's own message for a request it refuses; with the diffusers extra, switch between two
tiny real models in the model picker. They are skipped without Chromium or Playwright on a developer
machine and fail under CI (``CI`` set), as tests/test_browser.py does (its helpers are reused).
Screenshots go to pytest's tmp folder, and also to ``$KIT_SCREENSHOT_DIR`` when that is set.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import importlib.util
import io
import re
import time
from pathlib import Path

import pytest
import requests
import tomllib
from conftest import AUTH, HAS_DIFFUSERS
from test_browser import CHROMIUM_ARGS, _chromium, _missing, _screenshot

ROOT = Path(__file__).resolve().parent.parent
WEBUI = ROOT / "sdserver" / "webui"
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
WAIT_MS = 20_000  # the longest one wait in the browser may take


# ----- over HTTP ----------------------------------------------------------------------------------------


def test_root_serves_the_page_and_its_files(sd_server):
    page = requests.get(sd_server.url, timeout=10, allow_redirects=False)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == (WEBUI / "index.html").read_text(encoding="utf-8")
    for name in ("/webui/app.js", "/webui/style.css", 'href="/docs"'):
        assert name in page.text
    for name, kind in PAGE_FILES.items():
        answer = requests.get(f"{sd_server.url}/webui/{name}", timeout=10)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), name
        assert answer.content == (WEBUI / name).read_bytes()
        assert answer.headers["cache-control"] == "no-cache"  # an updated kit shows its new page at once
    for wrong in ("nope.js", "..%2Fwebui.py", "%2E%2E%2F__init__.py"):
        assert requests.get(f"{sd_server.url}/webui/{wrong}", timeout=10).status_code == 404, wrong
    assert requests.get(f"{sd_server.url}/docs", timeout=10).status_code == 200
    paths = requests.get(f"{sd_server.url}/openapi.json", timeout=10).json()["paths"]
    assert "/" not in paths and not any(path.startswith("/webui") for path in paths)  # the API's docs stay the API's


def test_with_api_auth_the_page_is_public_and_the_api_is_not(sd_server_auth):
    url = sd_server_auth.url
    for path in ("/", "/webui/app.js", "/webui/style.css", "/webui/index.html", "/docs"):
        assert requests.get(url + path, timeout=10).status_code == 200, path
    refused = requests.get(f"{url}/sdapi/v1/samplers", timeout=10)
    assert refused.status_code == 401 and refused.json()["detail"] == "Not authenticated"
    assert "www-authenticate" not in refused.headers  # no browser password box: the page asks itself
    assert requests.get(f"{url}/sdapi/v1/samplers", auth=AUTH, timeout=10).status_code == 200


def test_the_page_works_offline_and_keeps_no_password():
    """Nothing from outside (no CDN, no web font); credentials only in memory, never in storage or the URL."""
    for name in PAGE_FILES:
        text = (WEBUI / name).read_text(encoding="utf-8")
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text), name
        assert not re.search(r"url\(\s*[\"']?(https?:)?//|@import", text), name
        assert not re.search(r"\bfetch\(\s*[\"'`]https?:", text), name
    script = (WEBUI / "app.js").read_text(encoding="utf-8")
    code = "\n".join(line.split("//")[0] for line in script.splitlines())  # the comments say where they are not
    for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB", "location.search"):
        assert storage not in code
    assert sorted(path.name for path in WEBUI.iterdir()) == sorted(PAGE_FILES)  # webui.py serves exactly these


def test_the_page_files_ship_with_the_package():
    """pyproject's package-data names every file of sdserver/webui/ (an installed kit must show the page)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sdserver"]
    for name in PAGE_FILES:
        assert any(fnmatch.fnmatch(f"webui/{name}", pattern) for pattern in patterns), name


# ----- in Chromium ----------------------------------------------------------------------------------------


def _playwright():
    chromium = _chromium()
    if chromium is None:
        _missing("Chromium (/usr/bin/chromium)")
    if importlib.util.find_spec("playwright") is None:
        _missing("The Python package playwright")
    from playwright.sync_api import sync_playwright

    return chromium, sync_playwright


@contextlib.contextmanager
def _browser_page(tmp_path: Path, name: str):
    """A Chromium page (a desktop-sized window); on failure, a screenshot and the browser's console."""
    chromium, sync_playwright = _playwright()
    console = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        try:
            yield page, console
        except BaseException:
            with contextlib.suppress(Exception):
                _screenshot(page, tmp_path, f"{name}-failure.png")
            print("The browser's console:", *console[-40:], sep="\n")
            raise
        finally:
            browser.close()


def _image_size(page, selector: str) -> tuple[int, int]:
    """The size of a shown image as the browser decoded it (0, 0 while not loaded)."""
    return tuple(page.locator(selector).evaluate("(img) => [img.complete ? img.naturalWidth : 0, img.naturalHeight]"))


def _shown_png(page, selector: str) -> bytes:
    """The bytes behind an <img> of the gallery (a blob: URL of the PNG the server sent)."""
    data = page.locator(selector).evaluate("""async (img) => {
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let text = ''; for (const b of bytes) text += String.fromCharCode(b); return btoa(text); }""")
    return base64.b64decode(data)


def _read_infotext(png: bytes) -> str:
    from PIL import Image

    return Image.open(io.BytesIO(png)).info.get("parameters", "")


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_generate_and_interrupt_in_chromium(servers, tmp_path):
    from playwright.sync_api import expect

    chromium_ready = _playwright()  # skip (or fail under CI) before any server starts
    assert chromium_ready
    started = time.monotonic()
    timings = {}
    server = servers("preview", step_delay=0.2)
    with _browser_page(tmp_path, "webui") as (page, console):
        page.goto(server.url)
        expect(page.locator("#ui")).to_be_visible()
        expect(page.locator("#login")).to_be_hidden()
        banner = page.locator("#placeholder-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("PLACEHOLDER images")
        expect(page.locator("#engine")).to_have_text("engine: preview (placeholders)")
        expect(page.locator("#model")).to_have_value("offline-preview.safetensors [0000000000]")
        samplers = [item["name"] for item in requests.get(f"{server.url}/sdapi/v1/samplers", timeout=10).json()]
        assert page.locator("#sampler option").all_inner_texts() == samplers
        schedulers = [item["label"] for item in requests.get(f"{server.url}/sdapi/v1/schedulers", timeout=10).json()]
        assert page.locator("#scheduler option").all_inner_texts() == schedulers
        expect(page.get_by_role("link", name="API docs (/docs)")).to_have_attribute("href", "/docs")

        # ----- a prompt, 7 steps, Generate: the image and its infotext -------------------------------
        page.locator("#prompt").fill("a red fox in the snow, watercolor")
        page.locator("#negative-prompt").fill("blurry")
        page.locator("#steps").fill("7")
        expect(page.get_by_label("Sampling steps slider")).to_have_value("7")  # the slider follows the box
        page.locator("#sampler").select_option("Euler a")
        page.locator("#scheduler").select_option("Karras")
        page.locator("#width").fill("320")
        page.locator("#height").fill("256")
        page.locator("#batch-size").fill("2")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_role("button", name="Interrupt")).to_be_visible()
        cards = page.locator("#gallery .card")
        expect(cards).to_have_count(2, timeout=WAIT_MS)
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()
        expect(page.get_by_role("button", name="Interrupt")).to_be_hidden()
        summary = page.locator("#result-summary").inner_text()
        seed = int(re.search(r"seeds (\d+)–(\d+)", summary).group(1))
        first = cards.nth(0).locator(".infotext")
        expect(first).to_contain_text("a red fox in the snow, watercolor\nNegative prompt: blurry\n")
        expect(first).to_contain_text(
            re.compile(rf"Steps: 7, Sampler: Euler a, Schedule type: Karras, .*Seed: {seed}, Size: 320x256"))
        expect(cards.nth(1).locator(".infotext")).to_contain_text(f"Seed: {seed + 1},")  # A1111: seed + index
        expect(cards.nth(0).locator(".badge")).to_have_text("PLACEHOLDER")
        assert "placeholders from the preview engine" in summary
        assert _image_size(page, "#gallery .card >> nth=0 >> img") == (320, 256)
        png = _shown_png(page, "#gallery .card >> nth=0 >> img")
        assert _read_infotext(png) == first.inner_text()  # the PNG as the server sent it, infotext inside
        _screenshot(page, tmp_path, "webui-generated.png")
        page.get_by_role("button", name="Reuse the last seed").click()
        expect(page.locator("#seed")).to_have_value(str(seed))
        page.get_by_role("button", name="Random seed").click()
        expect(page.locator("#seed")).to_have_value("-1")
        timings["generated"] = time.monotonic() - started

        # ----- a slow job: the progress bar moves, the live preview shows, Interrupt ends it early ------
        page.locator("#steps").fill("60")  # 12 s at 0.2 s per step
        page.locator("#batch-size").fill("1")
        page.get_by_role("button", name="Generate").click()
        clicked = time.monotonic()
        bar = page.get_by_role("progressbar")
        expect(page.locator("#progress-text")).to_contain_text(re.compile(r"step [1-9]\d*/60"))
        expect(page.locator("#live")).to_be_visible()
        expect(page.locator("#live-image")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        before = int(bar.get_attribute("aria-valuenow"))
        deadline = time.monotonic() + 10
        while int(bar.get_attribute("aria-valuenow")) <= before + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        moved = int(bar.get_attribute("aria-valuenow"))
        assert moved > before + 2, f"the progress bar did not move: {before}% then {moved}%"
        _screenshot(page, tmp_path, "webui-progress.png")
        page.get_by_role("button", name="Interrupt").click()
        expect(page.locator("#result-summary")).to_contain_text("Interrupted at about step", timeout=WAIT_MS)
        elapsed = time.monotonic() - clicked
        assert elapsed < 9, f"the interrupted job took {elapsed:.1f} s (60 steps take 12 s)"
        expect(cards).to_have_count(1)
        expect(cards.nth(0).locator(".infotext")).to_contain_text("Steps: 60,")
        expect(page.locator("#progress")).to_be_hidden()
        expect(page.locator("#live")).to_be_hidden()
        _screenshot(page, tmp_path, "webui-interrupted.png")
        timings["interrupted"] = time.monotonic() - started

        # ----- refused requests show the server's own message -----------------------------------------
        page.locator("#steps").fill("5")
        page.locator("#batch-size").fill("8")
        page.locator("#n-iter").fill("100")  # 800 images: over --max-images
        page.get_by_role("button", name="Generate").click()
        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("POST /sdapi/v1/txt2img answered 422")
        expect(error).to_contain_text("--max-images")
        expect(cards).to_have_count(1)  # the last results stay
        page.locator("#n-iter").fill("1")
        page.locator("#batch-size").fill("1")
        page.locator("#steps").fill("0")
        page.get_by_role("button", name="Generate").click()
        expect(error).to_contain_text(re.compile(r"• steps: Input should be greater than or equal to 1 \(sent: 0\)"))
        _screenshot(page, tmp_path, "webui-error.png")
        # The model picker sends POST /options; a model the server cannot load is its 500, and the
        # picker goes back to the loaded model.
        page.locator("#model").evaluate("(select) => select.add(new Option('no-such-model', 'no-such-model'))")
        page.locator("#model").select_option("no-such-model")
        expect(error).to_contain_text("POST /sdapi/v1/options answered 500")
        expect(error).to_contain_text("RuntimeError: model 'no-such-model' not found")
        expect(page.locator("#model")).to_have_value("offline-preview.safetensors [0000000000]")
        expect(page.locator("#model")).to_be_enabled()
        timings["errors"] = time.monotonic() - started
        assert not [line for line in console if line.startswith("pageerror")], console

    # ----- with --api-auth: the login form, a wrong password, then a generation --------------------------
    auth_server = servers("preview", auth=True)
    with _browser_page(tmp_path, "webui-auth") as (page, console):
        requests_seen = []
        page.on("request", lambda req: requests_seen.append(req.url))
        page.goto(auth_server.url)
        login = page.locator("#login")
        expect(login).to_be_visible()
        expect(login).to_contain_text("--api-auth")
        expect(page.locator("#ui")).to_be_hidden()
        _screenshot(page, tmp_path, "webui-login.png")
        page.get_by_label("User").fill(AUTH[0])
        page.get_by_label("Password").fill("wrong-password")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#login-error")).to_have_text(
            "The server refused this login: Incorrect username or password. Check the user and password.")
        expect(page.get_by_label("Password")).to_have_value("")
        _screenshot(page, tmp_path, "webui-login-refused.png")
        page.get_by_label("Password").fill(AUTH[1])
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#ui")).to_be_visible()
        expect(login).to_be_hidden()
        page.locator("#prompt").fill("a lighthouse at night")
        page.locator("#steps").fill("3")
        page.locator("#width").fill("256")
        page.locator("#height").fill("256")
        page.keyboard.press("Control+Enter")  # as in A1111
        card = page.locator("#gallery .card")
        expect(card).to_have_count(1)
        expect(card.locator(".infotext")).to_contain_text(re.compile(r"a lighthouse at night\nSteps: 3, .*Seed: \d+"))
        _screenshot(page, tmp_path, "webui-auth-generated.png")
        stored = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie]")
        assert stored == [0, 0, ""]
        assert not any(AUTH[1] in url or "@" in url for url in requests_seen), requests_seen
        assert not [line for line in console if line.startswith("pageerror")], console
    timings["total"] = time.monotonic() - started
    print("web UI browser test timings (s since start):", {k: round(v, 1) for k, v in timings.items()})


@pytest.mark.browser
@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs the diffusers extra (pip install -e '.[diffusers]')")
def test_model_picker_switches_real_models_in_chromium(tiny_models, tmp_path):
    """Real images (two tiny random-weight models): no placeholder banner, the picker loads the other model."""
    from playwright.sync_api import expect

    from sdserver import serve_in_thread

    _playwright()
    with serve_in_thread(engine="diffusers", model=str(tiny_models["a"]), decoder="full", dtype="float32",
                         ckpt_dir=str(tiny_models["b"].parent)) as server, \
            _browser_page(tmp_path, "webui-diffusers") as (page, console):
        titles = [model["title"] for model in requests.get(f"{server.url}/sdapi/v1/sd-models", timeout=10).json()]
        other = next(title for title in titles if title.startswith("tiny-sd-b ["))
        page.goto(server.url)
        expect(page.locator("#ui")).to_be_visible()
        expect(page.locator("#engine")).to_have_text("engine: diffusers")
        expect(page.locator("#placeholder-banner")).to_be_hidden()
        assert sorted(page.locator("#model option").all_inner_texts()) == sorted(titles)
        page.locator("#model").select_option(other)
        expect(page.locator("#notice")).to_contain_text(f"Model loaded: {other}")
        expect(page.locator("#model")).to_have_value(other)
        options = requests.get(f"{server.url}/sdapi/v1/options", timeout=10).json()
        assert options["sd_model_checkpoint"] == other
        for field, value in (("#prompt", "a tram"), ("#steps", "2"), ("#width", "64"), ("#height", "64")):
            page.locator(field).fill(value)
        page.get_by_role("button", name="Generate").click()
        card = page.locator("#gallery .card")
        expect(card).to_have_count(1, timeout=60_000)
        expect(card.locator(".infotext")).to_contain_text("Model: tiny-sd-b")
        expect(card.locator(".badge")).to_have_count(0)
        assert "placeholder" not in page.locator("#result-summary").inner_text()
        _screenshot(page, tmp_path, "webui-diffusers.png")
        assert not [line for line in console if line.startswith("pageerror")], console


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_lora_list_edits_the_prompt_and_refreshes_in_chromium(tmp_path):
    """As A1111's Lora tab: a click adds <lora:name:1> to the prompt (again: takes it out), the refresh
    button rescans the folder, and an unknown name is said under the results."""
    import shutil

    from playwright.sync_api import expect

    from sdserver import serve_in_thread
    from sdserver.loras import DEFAULT_LORA_DIR

    assert _playwright()
    folder = tmp_path / "loras"
    folder.mkdir()
    shutil.copy(Path(DEFAULT_LORA_DIR) / "kit-demo.safetensors", folder)
    with serve_in_thread(engine="preview", lora_dir=str(folder)) as server, \
            _browser_page(tmp_path, "webui-lora") as (page, console):
        page.goto(server.url)
        loras = page.locator("#lora-list .lora")
        expect(loras).to_have_text(["kit-demo"])
        expect(page.locator("#lora-preview-note")).to_be_visible()  # the preview engine only tints
        prompt = page.locator("#prompt")
        prompt.fill("a red fox")
        loras.first.click()
        expect(prompt).to_have_value("a red fox <lora:kit-demo:1>")
        for name, value in (("#width", "64"), ("#height", "64"), ("#steps", "2")):
            page.locator(name).fill(value)
        page.get_by_role("button", name="Generate").click()
        card = page.locator("#gallery .card").first
        expect(card.locator(".infotext")).to_contain_text('Lora hashes: "kit-demo: ')
        loras.first.click()
        expect(prompt).to_have_value("a red fox")

        shutil.copy(folder / "kit-demo.safetensors", folder / "late.safetensors")
        expect(loras).to_have_count(1)
        page.get_by_role("button", name="Refresh the list of LoRAs").click()
        expect(loras).to_have_text(["kit-demo", "late"])

        prompt.fill("a red fox <lora:nowhere:1>")
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#result-summary")).to_contain_text("Lora not found: nowhere (made without it)")
        _screenshot(page, tmp_path, "webui-lora.png")
        assert not [line for line in console if line.startswith("pageerror")]  # (a 404 for /favicon.ico is fine)

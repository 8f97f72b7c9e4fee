"""Moodle submissions: clean runs only, no secrets, within the size budget, with an HTML export."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile

import nbformat
import numpy as np
import pytest
from PIL import Image

from course.secret_scan import find_secrets
from course.submission import SubmissionError, submit


def _png_b64(side=900, seed=0) -> str:
    noise = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for count, (source, outputs) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)
        cell.outputs = outputs
        nb.cells.append(cell)
    return nb


def _write(tmp_path, nb, name="06_full_pipeline.ipynb"):
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _stream(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def test_clean_notebook_gives_ipynb_html_and_zip(tmp_path):
    path = _write(tmp_path, _notebook([("print('hi')", [_stream("hi\n")])]))
    result = submit(path, name="Ann Lee", out_dir=tmp_path / "out")
    assert result.notebook_path.name == "Ann-Lee_06_full_pipeline.ipynb"
    assert "hi" in result.html_path.read_text()
    assert set(zipfile.ZipFile(result.zip_path).namelist()) == {result.notebook_path.name, result.html_path.name}
    assert "within the budget" in result.report()


def test_planted_key_is_refused_naming_the_cell_without_printing_the_key(tmp_path):
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    nb = _notebook([("x = 1", []), (f"client = OpenAI(api_key='{key}')", [])])
    with pytest.raises(SubmissionError) as err:
        submit(_write(tmp_path, nb), name="a", out_dir=tmp_path / "out")
    assert "cell 2" in str(err.value) and "OpenAI-style API key" in str(err.value)
    assert key not in str(err.value) and ".env" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_configured_password_and_key_in_outputs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_AUTH", "ann:tr0ub4dor")
    monkeypatch.setenv("LLM_API_KEY", "lmstudio-token-123")
    nb = _notebook([("print(auth)", [_stream("('ann', 'tr0ub4dor')\n")]),
                    ("headers", [_stream("{'Authorization': 'Bearer abcdefghijklmnop'}\n")]),
                    ("print(key)", [_stream("lmstudio-token-123\n")])])
    found = "\n".join(find_secrets(nb))
    assert "cell 1" in found and "A1111 password" in found
    assert "cell 2" in found and "bearer token" in found
    assert "cell 3" in found and "LLM_API_KEY" in found
    with pytest.raises(SubmissionError):
        submit(_write(tmp_path, nb), name="a", out_dir=tmp_path / "out")


def test_large_images_are_shrunk_under_the_budget_and_still_open(tmp_path):
    outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png_b64(seed=i), "text/plain": "<img>"})
               for i in range(6)]
    nb = _notebook([("show()", outputs)])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = _write(tmp_path, nb)
    assert path.stat().st_size > 10_000_000
    result = submit(path, name="b", max_mb=2, out_dir=tmp_path / "out")
    assert result.zip_path.stat().st_size <= 2_000_000
    shrunk = nbformat.read(result.notebook_path, as_version=4)
    nbformat.validate(shrunk)
    assert "widgets" not in shrunk.metadata
    images = [o["data"]["image/jpeg"] for o in shrunk.cells[0].outputs]
    assert len(images) == 6 and Image.open(io.BytesIO(base64.b64decode(images[0]))).format == "JPEG"
    assert result.html_path.read_text().count("data:image/jpeg;base64") == 6
    assert any("JPEG thumbnails" in change for change in result.changes)


@pytest.mark.parametrize("cells, words", [
    ([("1/0", [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="", traceback=[])])],
     "ends with an error: ZeroDivisionError"),
    ([("x = 1", []), ("y = 2", [])], "ran out of order"),
])
def test_error_or_out_of_order_cells_are_refused(tmp_path, cells, words):
    nb = _notebook(cells)
    if "order" in words:
        nb.cells[1].execution_count = 1
    with pytest.raises(SubmissionError, match=words):
        submit(_write(tmp_path, nb), name="c", out_dir=tmp_path / "out")


@pytest.mark.notebook
def test_unrun_notebook_is_refused_and_execute_runs_it(tmp_path):
    nb = _notebook([("print(6 * 7)", [])])
    nb.cells[0].execution_count = None
    path = _write(tmp_path, nb)
    with pytest.raises(SubmissionError, match="was not run"):
        submit(path, name="d", out_dir=tmp_path / "out")
    result = submit(path, name="d", execute=True, out_dir=tmp_path / "out")
    assert "42" in result.html_path.read_text()


@pytest.mark.subprocess
def test_command_line(tmp_path):
    path = _write(tmp_path, _notebook([("print('ok')", [_stream("ok\n")])]))
    out = subprocess.run([sys.executable, "-m", "course", "submit", str(path), "--name", "eve", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "eve_06_full_pipeline.zip" in out.stdout and "MB" in out.stdout


# --- Hardening (issue 11): secrets are never shown, every place is scanned, images lose their metadata.

KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234"  # the tester's key: 35 characters


@pytest.fixture
def no_configured_secrets(monkeypatch):
    """No SD_AUTH and the local dummy LLM key, whatever the machine's .env says (the environment wins)."""
    monkeypatch.setenv("SD_AUTH", "")
    monkeypatch.setenv("LLM_API_KEY", "not-needed")


def _assert_no_piece_of(secret: str, text: str, size: int = 8) -> None:
    assert secret not in text
    for start in range(len(secret) - size + 1):
        assert secret[start:start + size] not in text, f"a piece of the secret is shown: {secret[start:start + size]!r}"


def _image_b64(fmt="PNG", text=None, zipped=False, exif_comment=None, comment=None, side=32) -> str:
    """A small image, optionally carrying a PNG text chunk, an EXIF UserComment or a JPEG comment."""
    from PIL import PngImagePlugin

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8))
    options = {}
    if text is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text, zip=zipped)
        options["pnginfo"] = info
    if exif_comment is not None:
        exif = Image.Exif()
        exif[0x010E] = "a photo"                                             # ImageDescription, in IFD0
        exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + exif_comment.encode()  # UserComment, in the Exif IFD
        options["exif"] = exif.tobytes()
    if comment is not None:
        options["comment"] = comment
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def _refused(tmp_path, nb, **kwargs) -> str:
    with pytest.raises(SubmissionError) as err:
        submit(_write(tmp_path, nb), name="a", out_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists(), "nothing may be written when the notebook is refused"
    return str(err.value)


def test_secret_is_never_shown_even_in_part(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_AUTH", "ann:tr0ub4dor-long")
    monkeypatch.setenv("LLM_API_KEY", "not-needed")
    nb = _notebook([(f'openai.api_key = "{KEY}"', []), ("print(auth)", [_stream("ann tr0ub4dor-long\n")])])
    nb.cells.append(nbformat.v4.new_raw_cell(f"{KEY}\nmore text"))
    message = _refused(tmp_path, nb)
    assert "cell 1: an OpenAI-style API key" in message
    assert "cell 2 output 1: the configured A1111 password (SD_AUTH)" in message
    assert "cell 3: an OpenAI-style API key" in message
    assert "openai.api_key" not in message, "no piece of a cell that holds a secret is quoted"
    _assert_no_piece_of(KEY, message)
    _assert_no_piece_of("tr0ub4dor-long", message)


def test_a_cell_that_did_not_run_and_holds_a_key_is_not_quoted(tmp_path, no_configured_secrets):
    from course.submission import check_ran_cleanly

    nb = _notebook([(f'key = "{KEY}"', [])])
    nb.cells[0].execution_count = None
    with pytest.raises(SubmissionError) as err:
        check_ran_cleanly(nb)
    assert "cell 1" in str(err.value) and "was not run" in str(err.value)
    _assert_no_piece_of(KEY, str(err.value))
    _assert_no_piece_of(KEY, _refused(tmp_path, nb))


def _output_with(mime, value, metadata=None):
    return nbformat.v4.new_output("display_data", data={mime: value, "text/plain": "<object>"}, metadata=metadata or {})


def _place_notebook(place: str) -> nbformat.NotebookNode:
    """A notebook with KEY planted in one place (a cell's text elsewhere is harmless)."""
    nb = _notebook([("show()", [])])
    cell = nb.cells[0]
    if place == "notebook metadata":
        nb.metadata["colab"] = {"note": f"token {KEY}"}
    elif place == "cell metadata":
        cell.metadata["tags"] = [f"key={KEY}"]
    elif place == "output metadata":
        cell.outputs = [_output_with("text/plain", "ok", metadata={"source": KEY})]
    elif place == "svg output":
        cell.outputs = [_output_with("image/svg+xml", f"<svg xmlns='http://www.w3.org/2000/svg'><!-- {KEY} --></svg>")]
    elif place == "json output":
        cell.outputs = [_output_with("application/json", {"config": {"openai": KEY}})]
    elif place == "javascript output":
        cell.outputs = [_output_with("application/javascript", f"window.k = '{KEY}';")]
    elif place == "markdown attachment":
        md = nbformat.v4.new_markdown_cell("![a](attachment:a.png)")
        md.attachments = {"a.png": {"image/png": _image_b64(text=f"made with {KEY}")}}
        nb.cells.insert(0, md)
    elif place == "glued to a word":
        cell.outputs = [_stream(f"apikey_{KEY}\n")]
    else:
        raise AssertionError(place)
    return nb


@pytest.mark.parametrize("place, where", [
    ("notebook metadata", "notebook metadata"),
    ("cell metadata", "cell 1 metadata"),
    ("output metadata", "cell 1 output 1 metadata"),
    ("svg output", "cell 1 output 1"),
    ("json output", "cell 1 output 1"),
    ("javascript output", "cell 1 output 1"),
    ("markdown attachment", "cell 1 attachment"),
    ("glued to a word", "cell 1 output 1"),
])
def test_keys_are_found_in_every_place_a_notebook_holds_text(tmp_path, no_configured_secrets, place, where):
    message = _refused(tmp_path, _place_notebook(place))
    assert f"{where}" in message and "OpenAI-style API key" in message
    _assert_no_piece_of(KEY, message)


def test_glued_key_is_found_by_find_secrets(no_configured_secrets):
    nb = _notebook([("x", [_stream(f"apikey_{KEY}\n")]), ("y", [_stream(f"mykeysk-{KEY[3:]}\n")])])
    assert find_secrets(nb) == ["cell 1 output 1: an OpenAI-style API key", "cell 2 output 1: an OpenAI-style API key"]


@pytest.mark.parametrize("image", [
    pytest.param(lambda: ("image/png", _image_b64(text=f"seed 1, key {KEY}")), id="png-text-chunk"),
    pytest.param(lambda: ("image/png", _image_b64(text=f"seed 1, key {KEY}", zipped=True)), id="png-compressed-chunk"),
    pytest.param(lambda: ("image/jpeg", _image_b64("JPEG", exif_comment=f"key {KEY}")), id="jpeg-exif"),
    pytest.param(lambda: ("image/jpeg", _image_b64("JPEG", comment=f"key {KEY}")), id="jpeg-comment"),
])
def test_a_key_inside_an_image_is_refused(tmp_path, no_configured_secrets, image):
    mime, data = image()
    nb = _notebook([("show()", [_output_with(mime, data)])])
    message = _refused(tmp_path, nb)      # under budget too: the image's metadata is scanned, not only shrunk ones
    assert "cell 1 output 1 image metadata: an OpenAI-style API key" in message
    assert "clear that output" in message
    _assert_no_piece_of(KEY, message)


def test_configured_key_inside_metadata_and_short_password_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_AUTH", "ann:q7")
    monkeypatch.setenv("LLM_API_KEY", "lmstudio-token-123")
    nb = _notebook([('auth = ("ann", "q7")', []), ("print(user, pw)", [_stream("ann q7\n")]), ("x = 1", [])])
    nb.cells[2].metadata["secret"] = {"llm": "lmstudio-token-123"}
    found = find_secrets(nb)
    assert "cell 1: the configured A1111 password (SD_AUTH)" in found
    assert "cell 2 output 1: the configured A1111 password (SD_AUTH)" in found
    assert "cell 3 metadata: the configured LLM_API_KEY" in found
    message = _refused(tmp_path, nb)
    _assert_no_piece_of("lmstudio-token-123", message)


def test_a_short_password_does_not_flag_ordinary_words(monkeypatch):
    monkeypatch.setenv("SD_AUTH", "ann:ab")
    monkeypatch.setenv("LLM_API_KEY", "not-needed")
    nb = _notebook([("about = 'a table'  # abc", [_stream("tab about ab-test\n")])])
    assert find_secrets(nb) == []


@pytest.mark.parametrize("text, kind", [
    ("token = 'ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5'", "GitHub Token"),
    ("aws_access_key_id = AKIAZ5XQ7ABCD2EFGH3J", "AWS Access Key"),
    ("-----BEGIN RSA PRIVATE KEY-----", "Private Key"),
    ("requests.get('https://ann:Zq9vLx2Tr4@example.org/')", "Basic Auth Credentials"),
    ('db_password = "Zq9vLx2Tr4wP"', "Secret Keyword"),
    ('db_password = "Zq9vLx2Tr4wP"  # pragma: allowlist secret', "Secret Keyword"),  # no opting out in a cell
    ('client = Client("a8Fk3Lq9Zx2Vb7Nm4Pw1Rt6Yu0Ie5Oo3")', "Base64 High Entropy String"),
    ("headers = {'Authorization': 'Bearer abcdefghijklmnop'}", "a bearer token"),
    ("HF_TOKEN = 'hf_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7'", "a Hugging Face token"),
])
def test_detect_secrets_and_kit_patterns_find_other_secrets(no_configured_secrets, text, kind):
    found = "\n".join(find_secrets(_notebook([(text, [])])))
    assert kind in found and "cell 1" in found, found
    assert text.split("=")[-1].strip(" '\"")[:8] not in found


def _parameters_png_b64() -> str:
    from helpers.infotext import format_infotext, png_bytes

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    infotext = format_infotext("a red fox in the snow, golden hour", "blurry",
                               {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1234567890,
                                "Size": "64x64", "Model hash": "6ce0161689", "Model": "offline-preview"})
    return base64.b64encode(png_bytes(image, infotext)).decode()


def test_the_kit_notebooks_and_normal_outputs_are_not_flagged(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("SD_AUTH", "student:classpass")
    monkeypatch.setenv("LLM_API_KEY", "not-needed")
    from helpers.config import load_settings

    for path in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")):
        assert find_secrets(nbformat.read(path, as_version=4)) == [], path.name
    html = f"<img src='data:image/png;base64,{_png_b64(side=64)}'><table><tr><td>0.31</td></tr></table>"
    nb = _notebook([
        ("settings = load_settings(); settings", [nbformat.v4.new_output(
            "execute_result", data={"text/plain": repr(load_settings())}, execution_count=1)]),
        ('client = OpenAI(base_url="http://127.0.0.1:1234/v1", api_key="lm-studio")', []),
        ("show(gen)", [_output_with("image/png", _parameters_png_b64()), _output_with("text/html", html)]),
        ("run", [_stream("outputs/runs/20250101-101010-a-dusk-landscape-with-mountains-and-fog/run.json\n"
                         "seed 1234567890, model hash 6ce0161689, id 0f8e7d6c-5b4a-3210-9876-543210fedcba\n")]),
    ])
    assert find_secrets(nb) == []


@pytest.mark.notebook
def test_an_ordinary_executed_notebook_is_submitted(tmp_path, monkeypatch):
    monkeypatch.setenv("SD_AUTH", "student:classpass")
    monkeypatch.setenv("LLM_API_KEY", KEY)  # configured, and printed only masked
    cells = ["from helpers.config import load_settings\nsettings = load_settings()\nsettings",
             "print(settings.llm_api_key, settings.sd_auth)",
             ("import base64\nfrom IPython.display import Image, display\n"
              f"display(Image(data=base64.b64decode('{_parameters_png_b64()}')))"),
             ("import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n"
              "%matplotlib inline\nplt.plot([1, 2, 3], [0.2, 0.3, 0.25]); plt.title('CLIP score'); plt.show()")]
    nb = _notebook([(source, []) for source in cells])
    for cell in nb.cells:
        cell.execution_count = None
    result = submit(_write(tmp_path, nb), name="ok", execute=True, out_dir=tmp_path / "out")
    assert "********" in result.html_path.read_text()


def test_image_metadata_is_stripped_even_under_budget_and_pixels_kept(tmp_path, no_configured_secrets):
    png, jpeg = _parameters_png_b64(), _image_b64("JPEG", exif_comment="shot on a phone", comment="hello", side=64)
    nb = _notebook([("show()", [_output_with("image/png", png), _output_with("image/jpeg", jpeg)])])
    md = nbformat.v4.new_markdown_cell("![a](attachment:a.png)")
    md.attachments = {"a.png": {"image/png": _image_b64(text="drawn by hand")}}
    nb.cells.append(md)
    result = submit(_write(tmp_path, nb), name="m", out_dir=tmp_path / "out")
    assert any("metadata" in change and "3 image" in change for change in result.changes), result.changes
    out = nbformat.read(result.notebook_path, as_version=4)
    new_png = Image.open(io.BytesIO(base64.b64decode(out.cells[0].outputs[0].data["image/png"])))
    old_png = Image.open(io.BytesIO(base64.b64decode(png)))
    assert new_png.format == "PNG" and not new_png.text and "parameters" in old_png.text
    assert new_png.tobytes() == old_png.convert(new_png.mode).tobytes(), "the pixels are kept"
    new_jpeg = Image.open(io.BytesIO(base64.b64decode(out.cells[0].outputs[1].data["image/jpeg"])))
    assert new_jpeg.format == "JPEG" and not new_jpeg.getexif() and "comment" not in new_jpeg.info
    assert b"shot on a phone" not in base64.b64decode(out.cells[0].outputs[1].data["image/jpeg"])
    attachment = Image.open(io.BytesIO(base64.b64decode(out.cells[1].attachments["a.png"]["image/png"])))
    assert not attachment.text
    assert b"drawn by hand" not in zipfile.ZipFile(result.zip_path).read(result.notebook_path.name)


def _broken_image_notebook():
    broken = base64.b64encode(b"this is not an image at all" * 5000).decode()
    return _notebook([("x = 1", []), ("show()", [_output_with("image/png", broken)])])


def test_broken_image_output_gives_a_clear_error(tmp_path, no_configured_secrets):
    message = _refused(tmp_path, _broken_image_notebook(), max_mb=0.1)
    assert "cell 2 output 1" in message and "image/png" in message
    assert "clear" in message.lower() and "run" in message.lower()


@pytest.mark.subprocess
def test_broken_image_on_the_command_line_prints_no_traceback(tmp_path):
    path = _write(tmp_path, _broken_image_notebook())
    env = {**__import__("os").environ, "SD_AUTH": "", "LLM_API_KEY": "not-needed"}
    command = [sys.executable, "-m", "helpers", "submit", str(path), "--name", "eve", "--max-mb", "0.1",
               "--out", str(tmp_path / "out")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert "Not submitted" in out.stdout and "cell 2 output 1" in out.stdout


def test_high_entropy_strings_count_in_code_only(no_configured_secrets):
    token = "a8Fk3Lq9Zx2Vb7Nm4Pw1Rt6Yu0Ie5Oo3"
    nb = _notebook([(f'client = Client("{token}")', [_stream(f"'{token}'\n")])])
    assert find_secrets(nb) == ["cell 1: a possible secret (detect-secrets: Base64 High Entropy String)"]


def test_long_lines_are_scanned_in_bounded_time(no_configured_secrets):
    import time

    # 500,000 letters and digits in one line (a pasted blob), then a key; and a long line of words
    blob = base64.b64encode(np.random.default_rng(5).bytes(375_000)).decode().translate(str.maketrans("+/=", "xyz"))
    nb = _notebook([("show()", [_stream(blob + f" then {KEY}\n"), _output_with("text/html", "word " * 100_000)])])
    started = time.perf_counter()
    found = find_secrets(nb)
    assert time.perf_counter() - started < 5, "the keyword regex is quadratic in a run of word characters"
    assert found == ["cell 1 output 1: an OpenAI-style API key"]


# --- All notebooks in one zip (issue 13): the student's whole work goes to Moodle.

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # what course/student.py leaves in place of a solution


def _exercise(source, cell_type="code"):
    cell = (nbformat.v4.new_code_cell(source) if cell_type == "code" else nbformat.v4.new_markdown_cell(source))
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "schema_version": 3}
    return cell


def _ran(nb):
    """Number the code cells as a Run All would."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
    return nb


def _work(tmp_path, notebooks: dict):
    """A student's folder holding ``notebooks`` ({file name: notebook})."""
    folder = tmp_path / "work"
    folder.mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / name)
    return folder


def _solved():
    nb = _notebook([("x = 2", [])])
    nb.cells += [_exercise("def double(v):\n    return 2 * v"), _exercise("**Your answer:** the seed.", "markdown")]
    nb = _ran(nb)
    # The last cell's report() as course.exercises prints it: the checks passed, not just stubs removed.
    nb.cells += _notebook([("report()", [nbformat.v4.new_output("stream", text="Exercises: 1 of 1 done\n")])]).cells
    return _ran(nb)


def _stubbed():
    nb = _notebook([("x = 2", [])])
    nb.cells += [_exercise("def double(v):\n    # YOUR CODE HERE\n    raise NotImplementedError()"),
                 _exercise("def halve(v):\n    return v / 2"),
                 _exercise("**Your answer:**\n\nYOUR ANSWER HERE", "markdown")]
    return _ran(nb)


def test_all_notebooks_go_into_one_zip_with_a_summary(tmp_path, no_configured_secrets):
    from course.submission import submit_all

    folder = _work(tmp_path, {"01_first.ipynb": _solved(), "02_second.ipynb": _stubbed(),
                              "scratch.ipynb": _notebook([("not part of the course", [])])})
    result = submit_all(folder, name="Ann Lee", out_dir=tmp_path / "out")
    assert result.zip_path == tmp_path / "out" / "Ann-Lee_notebooks.zip"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [result.zip_path.name], "one file to upload"
    archive = zipfile.ZipFile(result.zip_path)
    assert set(archive.namelist()) == {"SUMMARY.md", "Ann-Lee_01_first.ipynb", "Ann-Lee_01_first.html",
                                       "Ann-Lee_02_second.ipynb", "Ann-Lee_02_second.html"}
    summary = archive.read("SUMMARY.md").decode()
    assert "| exercises written | checks passed | written answers done |" in summary
    assert "| 01_first | yes | 1/1 | 1/1 | 1/1 |" in summary
    assert "| 02_second | yes | 1/2 | not run | 0/1 |" in summary
    assert "kB" in summary and summary in result.report() and "within the budget" in result.report()
    assert [(r.name, r.exercises, r.checks, r.answers) for r in result.notebooks] == [
        ("01_first", (1, 1), (1, 1), (1, 1)), ("02_second", (1, 2), None, (0, 1))]
    assert "double" in archive.read("Ann-Lee_02_second.html").decode()


def test_exercises_are_counted_on_a_solution_and_a_stubbed_notebook():
    from course.student import student_version
    from course.submission import count_progress

    solution = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION"),
        nbformat.v4.new_markdown_cell("**Your answer:**\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
        nbformat.v4.new_code_cell("assert f() == 1"), nbformat.v4.new_markdown_cell("# Title")])
    assert count_progress(solution) == ((2, 2), (1, 1))
    student = student_version(solution)
    assert count_progress(student) == ((0, 2), (0, 1))
    # A copy that lost nbgrader's metadata, with one exercise and the answer done: the solution gives the totals.
    for cell in student.cells:
        cell.metadata.pop("nbgrader", None)
    student.cells[1].source = "a = 1\nb = 2"
    student.cells[2].source = "**Your answer:** the seed fixes the noise."
    assert count_progress(student) == ((0, 1), (0, 0))
    assert count_progress(student, reference=solution) == ((1, 2), (1, 1))


def test_the_kit_notebooks_count_all_done_and_their_student_versions_none(tmp_path):
    from pathlib import Path

    from course.student import make_student_versions
    from course.submission import count_progress

    kit = Path(__file__).resolve().parent.parent / "notebooks"
    for path in make_student_versions(kit, tmp_path):
        solution = nbformat.read(kit / path.name, as_version=4)
        (done, exercises), (answered, answers) = count_progress(solution)
        assert exercises >= 1 and (done, answered) == (exercises, answers), path.name
        assert count_progress(nbformat.read(path, as_version=4), solution) == ((0, exercises), (0, answers))


def test_a_secret_in_any_notebook_refuses_the_whole_submission(tmp_path, no_configured_secrets):
    from course.submission import submit_all

    leaky = _ran(_notebook([("x = 1", []), ("print(key)", [_stream(f"{KEY}\n")])]))
    folder = _work(tmp_path, {"01_first.ipynb": _solved(), "02_second.ipynb": leaky, "03_third.ipynb": _solved()})
    with pytest.raises(SubmissionError) as err:
        submit_all(folder, name="a", out_dir=tmp_path / "out")
    message = str(err.value)
    assert "nothing was submitted" in message and ".env" in message
    assert "02_second.ipynb, cell 2 output 1: an OpenAI-style API key" in message
    assert "01_first" not in message and "03_third" not in message
    _assert_no_piece_of(KEY, message)
    assert not (tmp_path / "out").exists(), "nothing is written"


@pytest.mark.notebook
def test_unrun_notebooks_are_refused_by_name_and_execute_submits_them_as_they_ran(tmp_path, no_configured_secrets):
    from course.submission import submit_all

    unrun = _notebook([("print(6 * 7)", []), ("y = 1", [])])
    for cell in unrun.cells:
        cell.execution_count = None
    failing = _notebook([("x = 1", []), (STUB, [nbformat.v4.new_output(
        "error", ename="NotImplementedError", evalue="", traceback=[])]), ("print('after')", [])])
    folder = _work(tmp_path, {"01_first.ipynb": _solved(), "02_unrun.ipynb": unrun, "03_failing.ipynb": failing})
    with pytest.raises(SubmissionError) as err:
        submit_all(folder, name="b", out_dir=tmp_path / "out")
    message = str(err.value)
    assert "02_unrun.ipynb: not run (none of its 2 code cells ran)" in message
    assert "03_failing.ipynb: cell 2 ('# YOUR CODE HERE') ends with an error: NotImplementedError" in message
    assert "01_first" not in message and "Run All" in message and "--execute" in message
    assert not (tmp_path / "out").exists()

    result = submit_all(folder, name="b", execute=True, out_dir=tmp_path / "out")
    rows = {r.name: r for r in result.notebooks}
    assert rows["02_unrun"].ran_cleanly and not rows["03_failing"].ran_cleanly
    assert rows["03_failing"].exercises == (0, 1)
    summary = zipfile.ZipFile(result.zip_path).read("SUMMARY.md").decode()
    assert "| 03_failing | no | 0/1 |" in summary and "ends with an error: NotImplementedError" in summary
    assert "42" in zipfile.ZipFile(result.zip_path).read("b_02_unrun.html").decode()


def test_the_budget_holds_across_all_notebooks(tmp_path, no_configured_secrets):
    from course.submission import submit_all

    def pictures(seed):
        outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png_b64(side=700, seed=seed + i),
                                                                "text/plain": "<img>"}) for i in range(2)]
        return _notebook([("show()", outputs)])

    folder = _work(tmp_path, {f"0{n}_pictures.ipynb": pictures(10 * n) for n in (1, 2, 3)})
    assert sum(p.stat().st_size for p in folder.iterdir()) > 8_000_000
    result = submit_all(folder, name="c", max_mb=1.5, out_dir=tmp_path / "out")
    assert result.zip_path.stat().st_size <= 1_500_000
    assert "JPEG thumbnails" in result.summary and "within the budget" in result.report()
    archive = zipfile.ZipFile(result.zip_path)
    for n in (1, 2, 3):
        nb = nbformat.reads(archive.read(f"c_0{n}_pictures.ipynb").decode(), as_version=4)
        nbformat.validate(nb)
        assert [sorted(o.data) for o in nb.cells[0].outputs] == [["image/jpeg", "text/plain"]] * 2
        assert archive.read(f"c_0{n}_pictures.html").decode().count("data:image/jpeg;base64") == 2


@pytest.mark.subprocess
def test_the_command_line_without_a_notebook_submits_the_folder(tmp_path, capsys, no_configured_secrets):
    from course.__main__ import main

    folder = _work(tmp_path, {"01_first.ipynb": _solved(), "02_second.ipynb": _stubbed()})
    env = {**__import__("os").environ, "SD_AUTH": "", "LLM_API_KEY": "not-needed"}
    base = [sys.executable, "-m", "course", "submit", "--name", "eve", "--out", str(tmp_path / "out")]
    out = subprocess.run(base + ["--dir", str(folder)], capture_output=True, text=True, timeout=120, env=env,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| 02_second | yes | 1/2 | not run | 0/1 |" in out.stdout and "eve_notebooks.zip" in out.stdout
    assert "within the budget" in out.stdout
    assert main(base[3:] + ["--dir", str(tmp_path / "nowhere")]) == 1
    printed = capsys.readouterr().out
    assert "Not submitted. No notebooks named NN_*.ipynb" in printed and "--dir" in printed


@pytest.mark.subprocess
def test_naming_one_notebook_still_makes_its_own_files(tmp_path, capsys):
    from course.__main__ import main

    folder = _work(tmp_path, {"01_first.ipynb": _solved(), "02_second.ipynb": _stubbed()})
    command = [sys.executable, "-m", "course", "submit", str(folder / "02_second.ipynb"), "--name", "eve",
               "--out", str(tmp_path / "out")]
    env = {**__import__("os").environ, "SD_AUTH": "", "LLM_API_KEY": "not-needed"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "eve_02_second.html", "eve_02_second.ipynb", "eve_02_second.zip"]
    assert main(command[3:] + ["--dir", str(folder)]) == 2
    assert "not both" in capsys.readouterr().out

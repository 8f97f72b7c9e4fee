"""Notebook 04's check of generate_image: it passes the solution and names the usual mistakes.

The notebook's setup cell, exercise cell and check cell run here in one namespace against the kit's preview
server (no kernel); then a few wrong versions of generate_image go through the same check.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from course import exercises

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "04_image_generation.ipynb"

# A student's generate_image with one thing wrong (formatted with the raise line, the seeds, the result).
TEMPLATE = '''
def generate_image(prompt, **settings):
    response = requests.post(f"{{URL}}/sdapi/v1/txt2img", json={{"prompt": prompt, **settings}}, auth=AUTH,
                             timeout=TIMEOUT)
    {check}
    answer = response.json()
    images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in answer["images"]]
    seeds = {seeds}
    return {result}
'''
RIGHT = dict(check="response.raise_for_status()", seeds="json.loads(answer['info'])['all_seeds']",
             result="images, seeds")
MISTAKES = [
    (dict(seeds="[answer['parameters']['seed']] * len(images)"), "should give seeds [1234, 1235]"),
    (dict(seeds="[json.loads(answer['info'])['seed']]"), "should give seeds [1234, 1235]"),
    (dict(check="pass"), "raise_for_status"),
    (dict(result="answer['images'], seeds"), "base64"),
    (dict(result="{'images': images, 'seeds': seeds}"), "tuple"),
]


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    from sdserver import serve_in_thread

    mp = pytest.MonkeyPatch()
    server = serve_in_thread(host="127.0.0.1", port=0, engine="preview", step_delay=0.0)
    try:
        mp.setenv("SD_URL", server.url)
        mp.setenv("SD_AUTH", "")
        mp.setenv("OUTPUT_DIR", str(tmp_path_factory.mktemp("outputs")))
        mp.setenv("MPLBACKEND", "Agg")
        cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
        exercise = next(i for i, source in enumerate(cells) if source.startswith("def generate_image("))
        names: dict = {}
        for source in cells[:exercise + 1]:
            exec(source, names)  # noqa: S102 - the notebook's own cells, as Jupyter would run them
        # The check cell, with its result kept apart so each run starts from the function under test.
        names["CHECK"] = cells[exercise + 1].replace("generate_image = check(", "checked = check(")
        yield names
    finally:
        server.stop()
        mp.undo()
        exercises.reset()


def _check(names, source, capsys):
    exec(source, names)  # noqa: S102
    exec(names["CHECK"], names)  # noqa: S102
    return capsys.readouterr().out


def test_the_solution_passes_its_check(namespace, capsys):
    out = _check(namespace, TEMPLATE.format(**RIGHT), capsys)
    assert "[x] generate_image: done" in out, out
    assert namespace["checked"] is namespace["generate_image"]


@pytest.mark.parametrize("change, words", MISTAKES, ids=[m[1][:24] for m in MISTAKES])
def test_a_mistake_is_named_and_the_kit_takes_over(namespace, capsys, change, words):
    out = _check(namespace, TEMPLATE.format(**{**RIGHT, **change}), capsys)
    assert "not right yet" in out and words in out, out
    assert namespace["checked"] is namespace["kit_generate_image"]
    images, seeds = namespace["checked"]("a fox", seed=5, batch_size=2, width=64, height=64, steps=1)
    assert seeds == [5, 6] and [image.size for image in images] == [(64, 64)] * 2


def test_the_stub_is_not_done_yet(namespace, capsys):
    stub = "def generate_image(prompt, **settings):\n    raise NotImplementedError()\n"
    out = _check(namespace, stub, capsys)
    assert "not done yet" in out and "client.txt2img" in out, out

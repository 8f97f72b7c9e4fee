"""The full pipeline over real HTTP: the kit's A1111-compatible server, the test LLM server, a tiny CLIP."""

from __future__ import annotations

import _thread
import json
import subprocess
import sys
import threading

import pytest
from conftest import free_url
from fault_server import FaultServer
from PIL import ImageChops

from helpers.a1111 import A1111Client
from helpers.clipqa import TINY_MODEL, ClipScorer, make_tiny_checkpoint
from helpers.infotext import read_infotext
from helpers.llm import LLM
from helpers.pipeline import run_pipeline
from helpers.records import RUN_FILE, PipelineError, list_runs, load_run

SMALL = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    return ClipScorer(TINY_MODEL, str(make_tiny_checkpoint(tmp_path_factory.mktemp("clip") / "t.safetensors")), "cpu")


@pytest.fixture
def no_llm():
    return LLM(free_url() + "/v1", timeout=2)


@pytest.fixture
def client(sd_server):
    return A1111Client(sd_server.url, auth="")


def _run(tmp_path, client, llm, scorer, **kw):
    return run_pipeline("lighthouse, storm", client=client, llm=llm, scorer=scorer, out_dir=tmp_path,
                        progress=False, **{**SMALL, **kw})


def test_best_of_n_in_one_call_saves_scores_and_picks_the_argmax(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, n=4, seed=50)
    assert run.status == "done"
    assert [c.seed for c in run.candidates] == [50, 51, 52, 53]  # one call with batch_size=4
    assert run.best.score == max(c.score for c in run.candidates)
    for c in run.candidates:
        assert c.path.exists() and read_infotext(c.path) == c.infotext and f"Seed: {c.seed}" in c.infotext
        assert c.score == pytest.approx(tiny_scorer.similarity(run.text["text"], [c.image], long_text="chunks")[0],
                                        abs=1e-3)
    record = json.loads((run.path / "run.json").read_text())
    assert record["best"] == run.best.index and record["status"] == "done"
    assert record["text"]["source"] == "corpus" and record["prompt"]["source"] == "baseline"
    assert "no LLM" in record["message"]
    assert set(record["timings"]) >= {"text", "prompt", "clip_load", "generate", "score", "total"}
    assert record["server"]["placeholder"] is True and record["scorer"]["meaningful"] is False


def test_batch_size_splits_best_of_n_into_calls(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, n=5, seed=10, batch_size=2)
    assert [c.seed for c in run.candidates] == [10, 11, 12, 13, 14]
    assert run.generation["batch_size"] == 2


def test_threshold_met_stops_early(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, mode="threshold", threshold=-1.0, max_images=10)
    assert run.status == "threshold met" and len(run.candidates) == 2


def test_threshold_never_met_spends_the_budget(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, mode="threshold", threshold=1.5, max_images=5)
    assert run.status == "max_images reached" and len(run.candidates) == 5


def test_llm_text_prompt_and_refine_rounds(tmp_path, client, llm, llm_server, tiny_scorer):
    run = _run(tmp_path, client, llm, tiny_scorer, mode="threshold", threshold=1.5, max_images=6, refine=True)
    assert run.text["source"] == "llm" and run.prompt.source == "llm-refined"
    assert len(run.rounds) == 3 and [c.round for c in run.candidates] == [0, 0, 1, 1, 2, 2]
    refine_request = llm_server.requests[-1]["messages"][-1]["content"]
    assert "CLIP scores of its images" in refine_request
    caption = refine_request.split("A captioner describes the best of those images as: ", 1)[1].split("\n")[0]
    assert "placeholder" in caption.lower()  # the caption route's caption, from the kit's server
    # The caption route compares the caption with the ORIGINAL TEXT, not with the image prompt.
    fit = float(refine_request.split("CLIP cosine of that caption with the text: ", 1)[1].split()[0])
    assert fit == pytest.approx(tiny_scorer.text_similarity(run.text["text"], caption, long_text="chunks"), abs=6e-4)
    assert json.loads((run.path / "run.json").read_text())["rounds"][2]["source"] == "llm-refined"


def test_unscored_without_clip_weights(tmp_path, client, no_llm):
    run = _run(tmp_path, client, no_llm, None, n=2)
    assert run.best is None and all(c.score is None for c in run.candidates)
    assert "make models" in run.message and run.scorer is None


class FailingClient(A1111Client):
    """A client whose k-th txt2img call goes to a port where nothing listens (a real HTTP failure)."""

    def __init__(self, url, fail_at):
        super().__init__(url, auth="")
        self.calls, self.fail_at, self.real_url = 0, fail_at, url

    def txt2img(self, prompt, **fields):
        self.calls += 1
        self.base_url = free_url() if self.calls == self.fail_at else self.real_url
        return super().txt2img(prompt, **fields)


def test_failure_at_candidate_k_keeps_the_first_k_minus_1(tmp_path, sd_server, no_llm, tiny_scorer):
    with pytest.raises(PipelineError) as err:
        _run(tmp_path, FailingClient(sd_server.url, fail_at=3), no_llm, tiny_scorer, n=5, batch_size=1)
    run = load_run(err.value.run.path)
    assert run.status == "failed" and "Cannot connect" in run.message
    assert len(run.candidates) == 2 and all(c.path.exists() and c.score is not None for c in run.candidates)
    assert str(run.path) in str(err.value)


def _ctrl_c_once_an_image_is_made(url, limit=60.0):
    """Press Ctrl-C (in the main thread) once the server is past its first image's steps, not at a guessed time."""
    import time

    import requests

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = requests.get(f"{url}/sdapi/v1/progress", timeout=5).json()["state"]
        if state["job_count"] and state["sampling_step"] >= 5:
            break
        time.sleep(0.05)
    _thread.interrupt_main()


def test_ctrl_c_keeps_a_valid_record_and_the_partial_image(tmp_path, slow_server, no_llm, tiny_scorer, ctrl_c_works):
    client = A1111Client(slow_server.url, auth="")
    threading.Thread(target=_ctrl_c_once_an_image_is_made, args=(slow_server.url,), daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, client, no_llm, tiny_scorer, n=2, **{"steps": 60})
    (folder,) = list_runs(tmp_path)
    run = load_run(folder)
    assert run.status == "interrupted"
    assert len(run.candidates) >= 1 and run.candidates[0].path.exists()


def test_a1111_interrupt_ends_the_run_with_what_was_made(tmp_path, slow_server, no_llm, tiny_scorer):
    client = A1111Client(slow_server.url, auth="")
    threading.Timer(0.5, client.interrupt).start()
    run = _run(tmp_path, client, no_llm, tiny_scorer, mode="threshold", threshold=1.5, max_images=10,
               **{"steps": 30})
    assert run.status == "interrupted" and 1 <= len(run.candidates) < 10
    assert "interrupted" in run.message


def test_reload_and_regenerate_the_same_images(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, n=3)
    again = load_run(run.path)
    assert [c.seed for c in again.candidates] == [c.seed for c in run.candidates]
    assert again.best.index == run.best.index and again.text == run.text
    fields = again.candidates[1].fields()
    image = client.txt2img(fields.pop("prompt"), **fields).image
    assert ImageChops.difference(image, again.candidates[1].image).getbbox() is None


def test_no_password_in_the_run_record(tmp_path, sd_server_auth, no_llm):
    url = sd_server_auth.url.replace("http://", "http://student:s3cret-pass@")
    client = A1111Client(url, auth=("student", "s3cret-pass"))
    run = _run(tmp_path, client, no_llm, None, n=1)
    assert "s3cret" not in (run.path / "run.json").read_text()


def test_report_is_self_contained_html(tmp_path, client, no_llm, tiny_scorer):
    run = _run(tmp_path, client, no_llm, tiny_scorer, n=2)
    html = run.report().read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "PLACEHOLDER images" in html and "MEANINGLESS" in html and run.text["text"][:40] in html


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "fastest"}, "best' or 'threshold"),
    ({"mode": "threshold"}, "needs a threshold"),
    ({"n": 0}, "at least 1"),
    ({"prompt": "x"}, "written by the pipeline"),
])
def test_bad_arguments(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        run_pipeline("owl", out_dir=tmp_path, **kwargs)


@pytest.mark.subprocess
def test_cli_prints_a_table_and_the_run_folder(tmp_path, sd_server, monkeypatch):
    env = {"SD_URL": sd_server.url, "SD_AUTH": "", "LLM_BASE_URL": free_url() + "/v1", "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "helpers", "pipeline", "owl, dusk", "--n", "2", "--steps", "2",
                          "--size", "64", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cand-01.png" in out.stdout and "run folder:" in out.stdout and "PLACEHOLDERS" in out.stdout
    assert len(list_runs(tmp_path)) == 1


@pytest.mark.subprocess
def test_demo_works_with_no_servers_and_names_the_stand_ins(tmp_path):
    env = {"SD_URL": free_url(), "SD_AUTH": "", "LLM_BASE_URL": free_url() + "/v1", "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "helpers", "demo", "--out", str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "started its own A1111-compatible server" in out.stdout
    assert "Stand-ins used: images (kit's offline preview engine); no LLM" in out.stdout
    (folder,) = list_runs(tmp_path)
    assert (folder / "report.html").exists() and len(load_run(folder).candidates) == 4


# ----- hardening (issue 11) ----------------------------------------------------------------------


class GuardedClient(A1111Client):
    """Counts txt2img calls and stops a loop that never ends (so a failing test fails, not hangs)."""

    def __init__(self, url, most=5):
        super().__init__(url, auth="")
        self.calls, self.most = 0, most

    def txt2img(self, prompt, **fields):
        self.calls += 1
        if self.calls > self.most:
            raise RuntimeError(f"test guard: {self.calls} txt2img calls, the loop does not stop")
        return super().txt2img(prompt, **fields)


@pytest.mark.parametrize("body", [
    {"images": [], "parameters": {}, "info": "{}"},  # 200 with zero images
    {"images": [], "parameters": {}, "info": json.dumps({"all_seeds": [1, 2], "infotexts": []})},
])
@pytest.mark.parametrize("kw", [{"n": 3}, {"n": 2, "batch_size": 1},
                                {"mode": "threshold", "threshold": 1.5, "max_images": 6},
                                {"mode": "threshold", "threshold": 1.5, "max_images": 6, "refine": True}],
                         ids=["best", "best-batches", "threshold", "threshold-refine"])
def test_a_server_that_sends_no_images_stops_the_run(tmp_path, no_llm, tiny_scorer, body, kw):
    with FaultServer() as server:
        server.routes[("POST", "/sdapi/v1/txt2img")] = (200, body, 0)
        client = GuardedClient(server.url)
        with pytest.raises(PipelineError) as err:
            _run(tmp_path, client, no_llm, tiny_scorer, **kw)
    assert client.calls == 1  # it did not ask again
    assert "image" in str(err.value) and "test guard" not in str(err.value)
    run = load_run(err.value.run.path)
    assert run.status == "failed" and run.candidates == [] and "image" in run.message


@pytest.mark.parametrize("keywords", ["\ud83d lighthouse", "lighthouse\udcff, storm\x00"])
def test_lone_surrogates_in_the_keywords_are_replaced_and_said(tmp_path, client, no_llm, keywords):
    run = run_pipeline(keywords, client=client, llm=no_llm, scorer=None, out_dir=tmp_path, progress=False, n=1, **SMALL)
    assert run.status == "done" and "\ufffd" in run.user_input and "lighthouse" in run.user_input
    assert "U+FFFD" in run.message and "\x00" not in run.user_input
    assert load_run(run.path).user_input == run.user_input
    assert sorted(p.name for p in run.path.iterdir()) == ["cand-00.png", RUN_FILE]


@pytest.mark.parametrize("keywords", ["", "  ", "\x00\n"])
def test_keywords_without_text_are_refused(tmp_path, keywords):
    with pytest.raises(ValueError, match="keywords"):
        run_pipeline(keywords, out_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


class RaisingClient(A1111Client):
    """A client whose txt2img raises the given exception (text that no writer should choke on)."""

    def __init__(self, url, error):
        super().__init__(url, auth="")
        self.error = error

    def txt2img(self, prompt, **fields):
        raise self.error


@pytest.mark.parametrize("error", [ValueError("bad \ud800 text"), ValueError(), ValueError("\n"),
                                   OSError(28, "No space left \udcff on device")],
                         ids=["lone-surrogate", "no-message", "blank-message", "os-error"])
def test_any_error_mid_run_ends_the_record_as_failed(tmp_path, sd_server, no_llm, error):
    with pytest.raises(PipelineError) as err:
        _run(tmp_path, RaisingClient(sd_server.url, error), no_llm, None, n=1)
    record = json.loads((err.value.run.path / RUN_FILE).read_bytes().decode("utf-8"))
    assert record["status"] == "failed" and type(error).__name__ in record["message"]
    assert load_run(err.value.run.path).status == "failed"
    assert [p.name for p in err.value.run.path.iterdir()] == [RUN_FILE]  # no run.json.tmp left


def test_system_exit_mid_run_still_ends_the_record(tmp_path, sd_server, no_llm):
    with pytest.raises(SystemExit):
        _run(tmp_path, RaisingClient(sd_server.url, SystemExit(3)), no_llm, None, n=1)
    (folder,) = list_runs(tmp_path)
    assert load_run(folder).status == "failed"


def test_a_chinese_answering_llm_makes_a_run(tmp_path, client, llm, llm_server, tiny_scorer):
    long_prompt = "灯塔在暴风雨中闪耀着光芒" * 20  # over the limit, no spaces, no commas
    llm_server.reply = lambda messages, body: (json.dumps({"prompt": long_prompt, "negative_prompt": "模糊"})
                                               if body.get("response_format") else "一座白色的灯塔矗立在暴风雨中。")
    with pytest.warns(UserWarning, match="cut:"):
        run = _run(tmp_path, client, llm, tiny_scorer, n=1)
    assert run.status == "done" and run.prompt.source == "llm" and long_prompt.startswith(run.prompt.prompt)
    assert run.prompt.prompt and "灯塔" in run.candidates[0].infotext



class SurrogateLLM(LLM):
    """The real test LLM over HTTP, whose texts come back with a lone surrogate in them, as an
    escaped ``\\ud83d`` in a server's JSON decodes to."""

    def chat(self, *args, **kwargs):
        reply = super().chat(*args, **kwargs)
        return reply if kwargs.get("json_schema") else reply.replace("A short", "\ud83d A short")


def test_an_llm_text_with_a_lone_surrogate_is_scored_and_recorded(tmp_path, client, llm_server, tiny_scorer):
    llm = SurrogateLLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0)
    run = _run(tmp_path, client, llm, tiny_scorer, n=1)
    assert run.status == "done" and run.text["text"].startswith("\ufffd A short") and run.best is not None
    assert "U+FFFD" in run.message and load_run(run.path).text == run.text


# ----- files named in run.json stay inside the run folder ----------------------------------------

def _edit_record(folder, change):
    record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    change(record)
    (folder / RUN_FILE).write_text(json.dumps(record), encoding="utf-8")


@pytest.mark.parametrize("outside", ["../private-photo.png", "{private}", "sub/../../private-photo.png",
                                     "link.png", "cand-00.png", "loop.png", "cand-00.png\x00", ""],
                         ids=["dotdot", "absolute", "dotdot-inside", "symlink-out", "candidate-is-a-symlink",
                              "symlink-loop", "nul-byte", "empty"])
def test_a_file_outside_the_run_folder_is_never_read(tmp_path, client, no_llm, outside):
    run = _run(tmp_path / "runs", client, no_llm, None, n=2)
    private = tmp_path / "runs" / "private-photo.png"
    secret_image = run.candidates[1].image.transpose(0)  # a different picture than both candidates
    secret_image.save(private)
    if outside == "link.png":
        (run.path / "link.png").symlink_to(private)
    if outside == "loop.png":
        (run.path / "loop.png").symlink_to(run.path / "loop.png")
    if outside == "cand-00.png":
        run.candidates[0].path.unlink()
        run.candidates[0].path.symlink_to(private)
    name = str(private) if outside == "{private}" else outside
    _edit_record(run.path, lambda record: record["candidates"][0].update(file=name))

    with pytest.warns(UserWarning, match="outside the run folder"):
        again = load_run(run.path)
    assert [c.seed for c in again.candidates] == [c.seed for c in run.candidates]  # the record is kept
    with pytest.raises(PipelineError, match="outside the run folder"):
        _ = again.candidates[0].path
    with pytest.raises(PipelineError, match="outside the run folder"):
        _ = again.candidates[0].image
    html = again.report().read_text(encoding="utf-8")
    from helpers.images import image_data_uri

    assert image_data_uri(private, 256) not in html and html.count("data:image/png;base64,") == 1
    assert "outside the run folder" in html


# ----- a damaged run.json is an error that names the file ----------------------------------------

@pytest.mark.parametrize("content, cause", [
    (b"{not json", "not valid JSON"),
    (b'{"user_input": "owl", "status": "do\xffne"}', "not valid JSON"),
    (b"[1, 2, 3]", "not an object"),
    (b'"a text"', "not an object"),
    (b"{}", "no field 'user_input'"),
    (b'{"user_input": "owl", "candidates": "cand-00.png"}', "'candidates'"),
    (b'{"user_input": "owl", "candidates": [5]}', "candidates[0]"),
    (b'{"user_input": "owl", "candidates": [{"index": 0, "seed": "abc", "file": "cand-00.png"}]}', "'seed'"),
    (b'{"user_input": "owl", "candidates": [{"index": 0, "seed": 1}]}', "no field 'file'"),
    (b'{"user_input": "owl", "candidates": [{"index": 0, "seed": 1, "file": ["a"]}]}', "'file'"),
    (b'{"user_input": "owl", "n": "five"}', "'n'"),
    (b'{"user_input": "owl", "n": true}', "'n'"),
    (b'{"user_input": "owl", "prompt": {"prompt": 5}}', "'prompt'"),
    (b'{"user_input": "owl", "prompt": "a fox"}', "'prompt'"),
    (b'{"user_input": "owl", "text": {"text": ["a"]}}', "'text'"),
    (b'{"user_input": "owl", "timings": {"total": "1 s"}}', "'timings'"),
    (b'{"user_input": 7}', "'user_input'"),
])
def test_a_damaged_run_json_names_the_file_and_the_fix(tmp_path, content, cause):
    (tmp_path / RUN_FILE).write_bytes(content)
    with pytest.raises(PipelineError) as err:
        load_run(tmp_path)
    message = str(err.value)
    assert str(tmp_path / RUN_FILE) in message and cause in message and "Fix:" in message
    assert err.value.run is None


def test_a_hand_written_minimal_run_json_still_loads(tmp_path):
    (tmp_path / RUN_FILE).write_text(json.dumps({"user_input": "owl", "future_field": 1, "candidates": [
        {"index": 0, "seed": 3, "file": "cand-00.png", "score": 0.25, "new_key": "x"}]}), encoding="utf-8")
    run = load_run(tmp_path)
    assert run.user_input == "owl" and run.candidates[0].path == tmp_path / "cand-00.png"


def test_the_type_tables_name_every_field_of_the_records():
    """load_run keeps a candidate's keys that CANDIDATE_TYPES names, so a new field must be added there too."""
    from dataclasses import fields

    from helpers.records import CANDIDATE_TYPES, RUN_TYPES, Candidate, PipelineRun

    assert set(CANDIDATE_TYPES) == {f.name for f in fields(Candidate)} - {"run_path"}
    assert set(RUN_TYPES) == {f.name for f in fields(PipelineRun)}


def test_images_that_arrived_before_a_broken_one_are_kept_in_the_run(tmp_path, no_llm, tiny_scorer):
    import base64
    import io

    from PIL import Image

    def png(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    info = json.dumps({"seed": 5, "all_seeds": [5, 6, 7], "infotexts": ["a\nSeed: 5", "b", "c\nSeed: 7"]})
    body = {"images": [png("red"), 123, png("blue")], "parameters": {}, "info": info}
    with FaultServer() as server:
        server.routes[("POST", "/sdapi/v1/txt2img")] = (200, body, 0)
        with pytest.raises(PipelineError) as err:
            _run(tmp_path, A1111Client(server.url, auth=""), no_llm, tiny_scorer, n=3)
    run = load_run(err.value.run.path)
    assert run.status == "failed" and "kept 2 image(s)" in run.message
    assert [c.seed for c in run.candidates] == [5, 7]
    assert [c.image.getpixel((0, 0)) for c in run.candidates] == [(255, 0, 0), (0, 0, 255)]


# ----- any rater (issue 15) --------------------------------------------------------------------------------------

def _brightness(text, image):
    """A student's own rater: the mean brightness of the image (0 to 1)."""
    from PIL import ImageStat
    return ImageStat.Stat(image.convert("L")).mean[0] / 255


def test_best_of_n_with_a_custom_rater(tmp_path, client, no_llm):
    from helpers.raters import as_rater
    run = _run(tmp_path, client, no_llm, None, n=3, seed=5, rater=as_rater(_brightness, "brightness"))
    assert run.status == "done" and run.scorer == {"rater": "brightness", "meaningful": True}
    for c in run.candidates:
        assert c.score == pytest.approx(_brightness("", c.image), abs=1e-4)
    assert run.best.score == max(c.score for c in run.candidates)
    assert load_run(run.path).scorer["rater"] == "brightness"


def test_threshold_mode_with_a_custom_rater(tmp_path, client, no_llm):
    from helpers.raters import as_rater
    calls = []
    rater = as_rater(lambda text, image: calls.append(text) or (1.0 if len(calls) >= 3 else 0.0), "third")
    run = _run(tmp_path, client, no_llm, None, mode="threshold", threshold=0.5, max_images=10, rater=rater)
    assert run.status == "threshold met" and len(run.candidates) == 4  # two batches of two
    assert [c.score for c in run.candidates] == [0.0, 0.0, 1.0, 1.0] and calls[0] == run.text["text"]


def test_question_rater_in_the_pipeline_feeds_the_missing_parts_to_refine(tmp_path, client, llm, llm_server):
    from llm_server import images_in

    from helpers.raters import QUESTIONS_SYSTEM, question_rater

    def reply(messages, body):
        if messages[0].get("content") == QUESTIONS_SYSTEM:
            return json.dumps({"questions": ["Is there a lighthouse?", "Is there a storm?"]})
        if images_in(messages):  # the placeholder images show no storm
            return "No." if "storm" in messages[-1]["content"][-1]["text"] else "Yes, there is."
        return None  # text, prompt and refinement: the server's default answers

    llm_server.reply = reply
    run = _run(tmp_path, client, llm, None, mode="threshold", threshold=1.0, max_images=4, refine=True,
               rater=question_rater(llm))
    assert run.status == "max_images reached"
    assert run.scorer == {"rater": "questions", "meaningful": True, "threshold_from": "given"}
    assert [c.score for c in run.candidates] == [0.5] * 4
    assert load_run(run.path).candidates[0].rating["missing"] == ["Is there a storm?"]
    refine = [r for r in llm_server.requests if "Previous prompt" in str(r["messages"][-1]["content"])]
    assert len(refine) == 1 and "questions scores of its images: 0.500, 0.500" in refine[0]["messages"][-1]["content"]
    assert "The best image fails these checks: Is there a storm?" in refine[0]["messages"][-1]["content"]


def test_a_rater_that_loses_its_server_leaves_the_images_unscored_and_says_so(tmp_path, client, no_llm):
    from helpers.raters import vqa_rater
    run = _run(tmp_path, client, no_llm, None, n=2, rater=vqa_rater(LLM(free_url() + "/v1", model="m", timeout=2)))
    assert run.status == "done" and len(run.candidates) == 2 and run.best is None
    assert "unscored from candidate #0 on: vqa failed (Cannot connect" in run.message

"""The Inspector driven as widgets: set ``.value``, call ``.click()``, then check the view and the file.

Two real runs are made once for the module with the real pipeline against the kit's server
(preview engine, so the images are placeholders): one unscored, one scored by a tiny CLIP model.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime

import ipywidgets
import pytest

from course.inspector import Inspector
from helpers.records import PipelineError, load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(sd_server, tmp_path_factory):
    """{"unscored": PipelineRun, "scored": PipelineRun}, made once for this file."""
    from helpers.a1111 import A1111Client
    from helpers.clipqa import ClipScorer, make_tiny_checkpoint
    from helpers.llm import LLM
    from helpers.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("inspector")
    client = A1111Client(sd_server.url, auth="")
    no_llm = LLM("http://127.0.0.1:9/v1")  # nothing listens there: text from the corpus, baseline prompt
    scorer = ClipScorer("tiny-clip-test", str(make_tiny_checkpoint(root / "tiny.safetensors")), "cpu")
    common = dict(n=3, client=client, llm=no_llm, out_dir=root / "runs", progress=False, steps=2, width=64, height=64)
    unscored = run_pipeline("lighthouse, storm", scorer=None, **common)  # no CLIP weights offline: unscored
    scored = run_pipeline("fox, snow", scorer=scorer, **common)
    assert unscored.best is None and unscored.placeholder
    assert scored.best is not None and scored.scorer["meaningful"] is False
    return {"unscored": unscored, "scored": scored}


@pytest.fixture
def ratings(tmp_path):
    return tmp_path / "ratings.jsonl"


def lines(path):
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def copy_run(run, tmp_path):
    """A private copy of a run folder, for tests that damage it."""
    return load_run(shutil.copytree(run.path, tmp_path / run.path.name))


# ----- what it shows ---------------------------------------------------------------------------

def test_shows_text_prompt_and_labels(runs, ratings):
    run = runs["unscored"]
    inspector = Inspector(run, ratings_path=ratings)
    left = inspector.text_html.value
    assert isinstance(inspector.widget, ipywidgets.Box)
    for part in (run.user_input, run.text["text"][:40], run.text["source"], run.prompt.prompt[:40],
                 run.prompt.negative_prompt[:20], run.prompt.source, run.status):
        assert part in left.replace("&#x27;", "'")
    assert "PLACEHOLDER" in left and "Unscored" in left
    assert inspector.current.index == 0
    assert inspector.image.value == run.candidates[0].path.read_bytes()
    assert bytes(inspector.image.value).startswith(PNG_MAGIC)
    assert f"seed {run.candidates[0].seed}" in inspector.caption.value
    assert [b.description for b in inspector.thumbnails] == [f"#{i} · unscored" for i in range(3)]
    assert inspector.run_selector is None
    assert inspector.output.outputs == ()


def test_displays_as_its_root_widget(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)
    bundle = inspector._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == inspector.widget.model_id
    assert not hasattr(inspector, "_repr_html_")


def test_accepts_a_folder_or_run_json(runs, ratings):
    run = runs["unscored"]
    for source in (run.path, str(run.path), run.path / "run.json", [run.path]):
        inspector = Inspector(source, ratings_path=ratings)
        assert inspector.run.path == run.path and len(inspector.thumbnails) == 3
    with pytest.raises(ValueError, match="at least one run"):
        Inspector([], ratings_path=ratings)


def test_next_and_previous_wrap_within_the_run(runs, ratings):
    run = runs["unscored"]
    inspector = Inspector(run, ratings_path=ratings)
    files = [c.path.read_bytes() for c in run.candidates]
    assert len(set(files)) == 3  # different seeds, different pictures
    shown = []
    for _ in range(3):
        inspector.next_button.click()
        shown.append((inspector.current.index, inspector.image.value))
    assert shown == [(1, files[1]), (2, files[2]), (0, files[0])]  # wraps to the first
    inspector.prev_button.click()
    assert inspector.current.index == 2 and inspector.image.value == files[2]  # wraps to the last
    assert inspector.position.value == "3 / 3"
    assert inspector.thumbnails[2].button_style == "info" and inspector.thumbnails[0].button_style == ""


def test_clicking_a_thumbnail_selects_it(runs, ratings):
    run = runs["scored"]
    inspector = Inspector(run, ratings_path=ratings)
    inspector.thumbnails[2].click()
    assert inspector.current.index == 2
    assert inspector.image.value == run.candidates[2].path.read_bytes()
    assert f"{run.candidates[2].score:.3f}" in inspector.caption.value


def test_best_is_marked_and_meaningless_scores_are_labelled(runs, ratings):
    run = runs["scored"]
    inspector = Inspector(run, ratings_path=ratings)
    marked = [i for i, b in enumerate(inspector.thumbnails) if "★ best" in b.description]
    assert marked == [run.best.index]
    for button, candidate in zip(inspector.thumbnails, run.candidates):
        assert f"{candidate.score:.3f}" in button.description
    assert "MEANINGLESS" in inspector.text_html.value and "PLACEHOLDER" in inspector.text_html.value
    inspector.select(run.best.index)
    assert "★ best" in inspector.caption.value and "MEANINGLESS" in inspector.caption.value


def test_unscored_run_says_unscored(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)
    assert "unscored" in inspector.caption.value
    assert not any("best" in b.description for b in inspector.thumbnails)


# ----- ratings ----------------------------------------------------------------------------------

def test_a_rating_click_appends_one_line_at_once(runs, ratings):
    run = runs["scored"]
    inspector = Inspector(run, ratings_path=ratings)
    inspector.thumbnails[1].click()
    inspector.rating_buttons.value = "4"
    inspector.note_box.value = "good light, wrong animal"
    inspector.save_button.click()

    written = lines(ratings)  # read right after the click
    assert len(written) == 1
    record = json.loads(written[0])
    candidate = run.candidates[1]
    assert record == {"time": record["time"], "run": run.path.name, "candidate": 1, "seed": candidate.seed,
                      "rating": "4", "note": "good light, wrong animal", "score": candidate.score}
    datetime.fromisoformat(record["time"])
    assert inspector.ratings[(run.path.name, 1)] == record
    assert "rated 4" in inspector.thumbnails[1].description
    assert "good light" in inspector.caption.value

    inspector.rating_buttons.value = "2"  # a second click is a second line; the latest counts
    inspector.save_button.click()
    assert len(lines(ratings)) == 2
    assert "rated 2" in inspector.thumbnails[1].description
    assert inspector.output.outputs == ()


def test_rate_method_and_a_rating_outside_the_scale(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings, scale=("bad", "ok", "good"))
    assert inspector.rating_buttons.options == ("bad", "ok", "good")
    inspector.rate("good", note="sharp")
    assert json.loads(lines(ratings)[0])["rating"] == "good"
    with pytest.raises(ValueError, match="Choose a rating"):
        inspector.rate(4)
    assert len(lines(ratings)) == 1


def test_save_without_a_choice_shows_the_reason(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)
    inspector.save_button.click()  # nothing chosen on the scale
    assert not ratings.exists()
    assert "Choose a rating" in inspector.output.outputs[0]["text"]


def test_a_new_inspector_resumes_the_ratings(runs, ratings):
    run = runs["scored"]
    first = Inspector(run, ratings_path=ratings)
    first.select(2)
    first.rate(5, note="the one")
    first.select(0)
    first.rate(3)

    again = Inspector(run, ratings_path=ratings)
    assert again.current.index == 0 and again.rating_buttons.value == "3"
    assert "rated 5" in again.thumbnails[2].description and "rated 3" in again.thumbnails[0].description
    again.next_button.click()
    assert again.rating_buttons.value is None and again.note_box.value == ""  # not rated
    again.next_button.click()
    assert again.rating_buttons.value == "5" and again.note_box.value == "the one"
    assert again.ratings[(run.path.name, 2)]["rating"] == "5"


def test_undo_removes_the_last_line_of_this_inspector(runs, ratings):
    run = runs["scored"]
    other = Inspector(run, ratings_path=ratings)  # an earlier session
    other.rate(1, note="earlier")
    inspector = Inspector(run, ratings_path=ratings)
    inspector.rate(4)  # re-rates #0
    inspector.select(1)
    inspector.rate(2)
    assert len(lines(ratings)) == 3

    inspector.select(2)
    inspector.undo_button.click()
    assert [json.loads(x)["rating"] for x in lines(ratings)] == ["1", "4"]
    assert inspector.current.index == 1  # shows the candidate whose rating was undone
    assert inspector.rating_buttons.value is None and "rated" not in inspector.thumbnails[1].description

    inspector.undo_button.click()
    assert [json.loads(x)["note"] for x in lines(ratings)] == ["earlier"]  # the other session's line stays
    assert inspector.current.index == 0
    assert inspector.rating_buttons.value == "1" and "rated 1" in inspector.thumbnails[0].description

    inspector.undo_button.click()  # nothing of this session left: the file stays, no error
    assert len(lines(ratings)) == 1 and "Nothing to undo" in inspector.message.value
    assert inspector.output.outputs == ()
    assert sorted(p.name for p in ratings.parent.iterdir()) == ["ratings.jsonl"]  # no temporary file left


def test_unreadable_lines_are_skipped_and_kept(runs, ratings):
    run = runs["unscored"]
    good = {"run": run.path.name, "candidate": 1, "rating": "3", "note": ""}
    ratings.write_text("not json\n" + json.dumps(good), encoding="utf-8")  # and no final newline
    inspector = Inspector(run, ratings_path=ratings)
    assert "Skipped 1 unreadable line" in inspector.message.value
    assert inspector.ratings[(run.path.name, 1)]["rating"] == "3"
    inspector.rate(5)
    written = lines(ratings)
    assert written[0] == "not json" and json.loads(written[1]) == good and json.loads(written[2])["rating"] == "5"


def test_ratings_go_to_the_output_dir_by_default(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    inspector = Inspector(runs["unscored"])
    assert inspector.ratings_path == tmp_path / "out" / "ratings.jsonl"
    inspector.rating_buttons.value = "2"
    inspector.save_button.click()
    assert len(lines(tmp_path / "out" / "ratings.jsonl")) == 1


# ----- several runs -----------------------------------------------------------------------------

def test_the_selector_switches_runs(runs, ratings):
    scored, unscored = runs["scored"], runs["unscored"]
    inspector = Inspector([scored, unscored.path], ratings_path=ratings)
    selector = inspector.run_selector
    assert isinstance(selector, ipywidgets.Dropdown) and len(selector.options) == 2
    inspector.next()
    selector.value = 1
    assert inspector.run.path == unscored.path and inspector.current.index == 0
    assert unscored.user_input in inspector.text_html.value
    assert inspector.image.value == unscored.candidates[0].path.read_bytes()
    assert all("unscored" in b.description for b in inspector.thumbnails)
    inspector.next_button.click()
    inspector.next_button.click()
    inspector.next_button.click()  # wraps within the run, does not move to the other run
    assert inspector.run.path == unscored.path and inspector.current.index == 0

    inspector.select(2, run=scored.path.name)
    assert selector.value == 0 and inspector.current.index == 2  # the drop-down follows
    inspector.rate(4)
    selector.value = 1
    inspector.rate(1)
    assert set(inspector.ratings) == {(scored.path.name, 2), (unscored.path.name, 0)}
    assert inspector.output.outputs == ()


# ----- errors in callbacks ---------------------------------------------------------------------

def test_a_deleted_image_is_reported_in_the_widget(runs, ratings, tmp_path):
    run = copy_run(runs["unscored"], tmp_path)
    run.candidates[1].path.unlink()
    inspector = Inspector(run, ratings_path=ratings)  # building it does not fail
    inspector.next_button.click()  # does not raise
    text = "".join(o["text"] for o in inspector.output.outputs)
    assert "FileNotFoundError" in text and "cand-01.png" in text
    assert inspector.image.value == b""  # not the previous image under the new caption
    assert "failed" in inspector.message.value
    inspector.next_button.click()  # the next action works and clears the error box
    assert inspector.current.index == 2 and inspector.output.outputs == ()
    html = inspector.export_html(tmp_path / "export.html").read_text(encoding="utf-8")
    assert "image file missing: cand-01.png" in html and html.count("data:image/png;base64,") == 2


def test_a_raising_method_is_shown_not_lost(runs, ratings, monkeypatch):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full (test)")

    monkeypatch.setattr(inspector, "rate", broken)
    inspector.rating_buttons.value = "3"
    inspector.save_button.click()
    text = inspector.output.outputs[0]["text"]
    assert "Save rating failed: RuntimeError: disk full (test)" in text and "Traceback" in text
    assert inspector.output.outputs[0]["name"] == "stderr"


def test_a_run_without_images(runs, ratings, tmp_path):
    run = copy_run(runs["unscored"], tmp_path)
    run.candidates, run.status = [], "failed"
    inspector = Inspector(run, ratings_path=ratings)
    assert inspector.current is None and inspector.thumbnails == []
    assert "no images" in inspector.position.value
    inspector.next_button.click()
    inspector.rating_buttons.value = "3"
    inspector.save_button.click()
    assert "no images to rate" in inspector.output.outputs[0]["text"]
    assert "No images in this run" in inspector.export_html(tmp_path / "empty.html").read_text(encoding="utf-8")


# ----- static export ---------------------------------------------------------------------------

def test_export_html_is_self_contained(runs, ratings, tmp_path):
    scored, unscored = runs["scored"], runs["unscored"]
    inspector = Inspector([scored, unscored], ratings_path=ratings)
    inspector.select(1)
    inspector.rate(4, note="moody <sky>")
    path = inspector.export_html(tmp_path / "export" / "inspector.html")
    html = path.read_text(encoding="utf-8")
    assert path.is_file()
    assert html.count("src='data:image/png;base64,") == len(scored.candidates) + len(unscored.candidates)
    for run in (scored, unscored):
        assert run.user_input in html and run.path.name in html
        assert run.prompt.prompt[:30] in html
        for candidate in run.candidates:
            assert f"seed {candidate.seed}" in html
    assert "rating <b>4</b> moody &lt;sky&gt;" in html  # escaped, so a note cannot break the page
    assert "★ best" in html and f"{scored.best.score:.3f}" in html
    assert "PLACEHOLDER" in html and "MEANINGLESS" in html and "Unscored" in html
    assert "<script" not in html and "widget-view" not in html  # no kernel, no widget state needed


# ----- hardening (issue 11) ----------------------------------------------------------------------


def test_an_invalid_utf8_byte_and_bad_records_are_skipped_and_kept(runs, ratings):
    run = runs["unscored"]
    name = run.path.name
    good = [{"run": name, "candidate": 1, "rating": "3", "note": "ok"},
            {"run": name, "candidate": 2, "rating": 4}]  # a number, as a hand-edited file may have
    bad = [b"\xff\xfe not utf-8 \x80",
           json.dumps({"run": name, "candidate": 0, "note": "no rating"}).encode(),
           json.dumps({"run": name, "candidate": 0, "rating": "5", "note": ["not", "text"]}).encode(),
           json.dumps({"run": name, "candidate": 0, "rating": "5", "note": 7}).encode(),
           json.dumps({"run": name, "candidate": True, "rating": "5"}).encode(),
           json.dumps({"run": 5, "candidate": 0, "rating": "5"}).encode(),
           json.dumps([name, 0, "5"]).encode(),
           json.dumps({"run": name, "candidate": 0, "rating": None}).encode()]
    content = b"\n".join(bad[:4] + [json.dumps(good[0]).encode()] + bad[4:] + [json.dumps(good[1]).encode()]) + b"\n"
    ratings.write_bytes(content)

    inspector = Inspector(run, ratings_path=ratings)
    assert inspector.output.outputs == ()  # opened and showed candidate 0: no "Show failed"
    assert f"Skipped {len(bad)} unreadable line(s)" in inspector.message.value
    assert set(inspector.ratings) == {(name, 1), (name, 2)}
    assert inspector.ratings[(name, 2)]["rating"] == "4" and inspector.ratings[(name, 2)]["note"] == ""
    inspector.select(2)
    assert inspector.rating_buttons.value == "4" and "rated 4" in inspector.thumbnails[2].description
    inspector.select(0)
    assert inspector.rating_buttons.value is None

    inspector.rate(2, note="fine")
    inspector.undo()
    assert ratings.read_bytes() == content  # the other lines stay byte for byte


def test_undo_is_done_even_when_showing_the_candidate_fails(runs, ratings, tmp_path):
    run = copy_run(runs["unscored"], tmp_path)
    inspector = Inspector(run, ratings_path=ratings)
    inspector.select(1)
    inspector.rate(3)
    run.candidates[1].path.unlink()  # deleted while the Inspector is open
    inspector.select(0)
    inspector.undo_button.click()
    assert lines(ratings) == []  # the undo happened
    assert (run.path.name, 1) not in inspector.ratings and inspector._written == []
    assert "Undid rating 3" in inspector.message.value
    assert "FileNotFoundError" in "".join(o["text"] for o in inspector.output.outputs)
    assert "Undo failed" not in inspector.message.value
    assert sorted(p.name for p in ratings.parent.iterdir() if p.suffix == ".tmp") == []


def test_undo_keeps_lines_written_by_others_meanwhile(runs, ratings):
    run = runs["unscored"]
    inspector = Inspector(run, ratings_path=ratings)
    inspector.rate(3, note="mine \u2028 with a line separator")
    with open(ratings, "ab") as file:  # another process appends a broken line and a good one
        good = json.dumps({"run": run.path.name, "candidate": 2, "rating": "1"}).encode()
        file.write(b"\xff broken\n" + good + b"\n")
    record = inspector.undo()
    assert record["rating"] == "3"
    assert ratings.read_bytes().startswith(b"\xff broken\n") and len(lines_bytes(ratings)) == 2
    assert inspector.ratings[(run.path.name, 2)]["rating"] == "1"


def test_undo_of_a_line_removed_by_hand_changes_nothing(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)
    inspector.rate(3)
    ratings.write_bytes(b"\xff kept\n")
    with pytest.raises(RuntimeError, match="no longer in"):
        inspector.undo()
    assert ratings.read_bytes() == b"\xff kept\n"
    assert "Nothing to undo" in (inspector.undo() or inspector.message.value)


def lines_bytes(path):
    return path.read_bytes().splitlines()


def test_a_note_with_a_lone_surrogate_is_saved(runs, ratings):
    inspector = Inspector(runs["unscored"], ratings_path=ratings)
    inspector.rate(3, note="half an emoji \ud83d")
    assert json.loads(lines(ratings)[0])["note"] == "half an emoji \ud83d"
    again = Inspector(runs["unscored"], ratings_path=ratings)
    assert again.note_box.value == "half an emoji \ud83d" and again.output.outputs == ()


@pytest.mark.parametrize("outside", ["../secret.png", "absolute", "symlink"])
def test_an_image_outside_the_run_folder_is_never_shown(runs, ratings, tmp_path, outside):
    run = copy_run(runs["scored"], tmp_path)
    secret = tmp_path / "secret.png"
    secret_bytes = run.candidates[2].path.read_bytes()
    secret.write_bytes(secret_bytes)
    run.candidates[2].path.unlink()  # now only outside the folder
    name = {"../secret.png": "../secret.png", "absolute": str(secret), "symlink": "cand-02.png"}[outside]
    if outside == "symlink":
        (run.path / "cand-02.png").symlink_to(secret)
    record = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
    record["candidates"][0]["file"] = name
    (run.path / "run.json").write_text(json.dumps(record), encoding="utf-8")

    with pytest.warns(UserWarning, match="outside the run folder"):
        inspector = Inspector(run.path, ratings_path=ratings)
    shown = "".join(o["text"] for o in inspector.output.outputs)
    assert "outside the run folder" in shown and "PipelineError" in shown
    assert inspector.image.value == b"" and inspector.current.index == 0
    assert inspector.strip.children[0].children[0].value == b""  # no thumbnail of it either
    inspector.next_button.click()  # the next candidate shows normally
    assert inspector.output.outputs == () and bytes(inspector.image.value).startswith(PNG_MAGIC)
    html = inspector.export_html(tmp_path / "export.html").read_text(encoding="utf-8")
    from helpers.images import image_data_uri

    assert image_data_uri(secret, 256) not in html and "outside the run folder" in html


def test_a_damaged_run_json_is_a_clear_error(runs, ratings, tmp_path):
    run = copy_run(runs["unscored"], tmp_path)
    (run.path / "run.json").write_text("[]", encoding="utf-8")
    with pytest.raises(PipelineError, match="run.json: the record is a JSON list, not an object"):
        Inspector(run.path, ratings_path=ratings)


# ----- which rater agrees with you (issue 15) -----------------------------------------------------

def test_spearman_against_hand_computed_values():
    from course.ratings import spearman

    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3], [9, 5, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0, 1.5, 1.5, 3) and (0, 1, 2, 3): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman(["1", "3", "2"], [0.1, 0.3, 0.2]) == pytest.approx(1.0)  # ratings read from the file are text
    assert spearman([1, 2, 3, 4], [1, math.nan, 2, 3]) == pytest.approx(1.0)  # the unjudged image is left out
    for a, b in (([3, 3, 3], [1, 2, 3]), ([1, 2, 3], [5, 5, 5]), ([1, 2], [1, 2]), ([1, 2, 3], [1, math.nan, 2]),
                 ([], [])):  # a constant side, fewer than 3 pairs
        assert math.isnan(spearman(a, b)), (a, b)
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def pixel_rater(values, texts=None):
    """A deterministic rater: the score of each image is ``values[its pixels]``; it records the texts it got."""
    from helpers.raters import as_rater

    def score(text, image):
        if texts is not None:
            texts.append(text)
        return values[image.tobytes()]
    return as_rater(score, "pixels")


def pixels(candidate):
    from PIL import Image

    with Image.open(candidate.path) as image:
        return image.convert("RGB").tobytes()


def rate_all(inspector, run, ratings):
    """Rate candidates of ``run`` as ``ratings`` ({index: label}) through the Inspector."""
    for index, value in ratings.items():
        inspector.select(index, run=run.path.name)
        inspector.rate(value)


def test_agreement_with_a_rater_and_the_runs_own_scores(runs, ratings):
    from course.ratings import spearman

    scored, unscored = runs["scored"], runs["unscored"]
    # (run, candidate, your rating, the rater's score): one swapped pair, so rho = 1 - 6 * 2 / (5 * 24) = 0.9
    rated = [(scored, 0, "2", 0.2), (scored, 1, "5", 0.5), (scored, 2, "1", 0.1), (unscored, 0, "4", 0.3),
             (unscored, 1, "3", 0.4)]
    values = {pixels(run.candidates[index]): value for run, index, _, value in rated}
    assert len(values) == 5  # five different pictures
    texts = []
    rater = pixel_rater(values, texts)
    inspector = Inspector([scored, unscored], ratings_path=ratings, raters=[rater])
    for run, index, rating, _ in rated:
        inspector.select(index, run=run.path.name)
        inspector.rate(rating)

    result = Inspector([scored, unscored], ratings_path=ratings).agreement([rater])  # from the file
    assert result["pixels"] == {"rho": pytest.approx(0.9), "n": 5, "reason": ""}
    assert texts == [scored.text["text"]] * 3 + [unscored.text["text"]] * 2  # what each run scored against
    own = result[f"{scored.scorer['rater']} (in the runs)"]  # the unscored run has no own scores
    expected = spearman([1, 4, 0], [c.score for c in scored.candidates])
    assert own["n"] == 3 and own["rho"] == pytest.approx(expected) and set(result) == {"pixels", *[
        f"{scored.scorer['rater']} (in the runs)"]}
    assert inspector.agreement()["pixels"]["rho"] == pytest.approx(0.9)  # the raters given to the Inspector
    assert list(inspector.agreement(raters=())) == [f"{scored.scorer['rater']} (in the runs)"]


def test_agreement_on_a_word_scale_and_a_rater_that_fails(runs, ratings):
    from helpers.llm import LLMError
    from helpers.raters import as_rater

    run = runs["unscored"]
    values = {pixels(c): value for c, value in zip(run.candidates, [0.7, 0.1, 0.4])}

    def broken(text, image):
        raise LLMError("the vision model is not loaded (test)", "load it in LM Studio")

    class NoScore:  # any object with a name and score() is a rater; this one answers None
        name = "none"

        def score(self, text, images):
            return [None for _ in images]

    inspector = Inspector(run, ratings_path=ratings, scale=("bad", "ok", "good"),
                          raters=[as_rater(broken, "questions"), pixel_rater(values), NoScore()])
    rate_all(inspector, run, {0: "good", 1: "bad", 2: "ok"})  # positions 2, 0, 1: the rater's order

    result = inspector.agreement()
    assert list(result) == ["questions", "pixels", "none"]  # an unscored run has no own scores
    assert result["pixels"] == {"rho": pytest.approx(1.0), "n": 3, "reason": ""}  # the failure stops nothing
    assert math.isnan(result["questions"]["rho"]) and result["questions"]["n"] == 0
    assert "LLMError: the vision model is not loaded (test)" in result["questions"]["reason"]
    assert "load it in LM Studio" in result["questions"]["reason"]
    assert math.isnan(result["none"]["rho"]) and result["none"]["reason"].startswith("TypeError")

    with open(ratings, "a", encoding="utf-8") as file:  # ratings not on this scale are left out
        for candidate in (1, 7):
            file.write(json.dumps({"run": run.path.name, "candidate": candidate, "rating": "5"}) + "\n")
    again = Inspector(run, ratings_path=ratings, scale=("bad", "ok", "good")).agreement([pixel_rater(values)])
    assert math.isnan(again["pixels"]["rho"]) and again["pixels"]["n"] == 2
    assert again["pixels"]["reason"] == "rate 3 or more images"


def test_agreement_leaves_out_unjudged_images_and_says_when_there_is_no_order(runs, ratings):
    run = runs["unscored"]
    values = {pixels(c): value for c, value in zip(run.candidates, [0.7, math.nan, 0.4])}
    inspector = Inspector(run, ratings_path=ratings, raters=[pixel_rater(values)])
    rate_all(inspector, run, {0: "5", 1: "1", 2: "4"})
    result = inspector.agreement()["pixels"]
    assert math.isnan(result["rho"]) and result["n"] == 2 and result["reason"] == "rate 3 or more images"
    rate_all(inspector, run, {0: "3", 1: "3", 2: "3"})
    same = Inspector(run, ratings_path=ratings).agreement([pixel_rater({pixels(c): 1.0 for c in run.candidates})])
    assert same["pixels"]["n"] == 3 and "no order" in same["pixels"]["reason"]


def test_the_agreement_button(runs, ratings):
    scored = runs["scored"]
    calls = []
    values = {pixels(c): value for c, value in zip(scored.candidates, [0.1, 0.2, 0.3])}
    rater = pixel_rater(values, calls)
    inspector = Inspector(scored, ratings_path=ratings, raters=[rater])
    button = inspector.agreement_button
    assert button.description == "Which rater agrees with me?"
    assert button in inspector.widget.children[0].children[1].children  # under the rating buttons

    rate_all(inspector, scored, {0: "1", 1: "2"})
    button.click()
    assert "Rate at least 3 images first" in inspector.agreement_box.value
    assert "2 rated so far" in inspector.agreement_box.value
    assert calls == []  # the raters score nothing before 3 images are rated
    assert inspector.show_agreement() == {}

    inspector.select(2)
    inspector.rate("3")
    button.click()
    shown = inspector.agreement_box.value
    assert inspector.output.outputs == ()
    assert "<td>pixels</td>" in shown and "+1.00" in shown and "n=3" in shown and "█" * 20 in shown
    assert f"{scored.scorer['rater']} (in the runs)" in shown
    assert "PLACEHOLDER" in shown and "MEANINGLESS" in shown  # preview images, tiny test CLIP
    assert inspector.show_agreement()["pixels"]["rho"] == pytest.approx(1.0)


def test_the_agreement_button_shows_an_error_in_the_red_box(runs, ratings, monkeypatch):
    run = runs["unscored"]
    inspector = Inspector(run, ratings_path=ratings)
    rate_all(inspector, run, {0: "1", 1: "2", 2: "3"})

    def broken(raters=None):
        raise RuntimeError("agreement broke (test)")

    monkeypatch.setattr(inspector, "agreement", broken)
    inspector.agreement_button.click()  # does not raise
    assert "Agreement failed: RuntimeError: agreement broke (test)" in inspector.output.outputs[0]["text"]


def test_unscored_runs_and_no_raters_say_so(runs, ratings):
    run = runs["unscored"]
    inspector = Inspector(run, ratings_path=ratings)
    rate_all(inspector, run, {0: "1", 1: "2", 2: "3"})
    assert inspector.show_agreement() == {}
    assert "No scores to compare with" in inspector.agreement_box.value


def test_the_caption_names_the_rater(runs, ratings):
    scored = runs["scored"]
    inspector = Inspector(scored, ratings_path=ratings)
    assert f"{scored.scorer['rater']} {scored.candidates[0].score:.3f}" in inspector.caption.value
    html = inspector.export_html(ratings.parent / "export.html").read_text(encoding="utf-8")
    assert f"{scored.scorer['rater']} {scored.candidates[0].score:.3f}" in html


def test_a_run_scored_without_a_rater_name_is_named_by_its_clip_model(runs, ratings, tmp_path):
    # Notebook 06's own pipeline records {"model", "pretrained", "meaningful"}: CLIP, without "rater".
    run = copy_run(runs["scored"], tmp_path)
    record = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
    record["scorer"] = {"model": "ViT-B-32", "pretrained": "openai", "meaningful": True}
    (run.path / "run.json").write_text(json.dumps(record), encoding="utf-8")
    inspector = Inspector(run.path, ratings_path=ratings)
    assert f"clip:ViT-B-32 {run.candidates[0].score:.3f}" in inspector.caption.value
    rate_all(inspector, inspector.run, {0: "1", 1: "2", 2: "3"})
    assert list(inspector.agreement()) == ["clip:ViT-B-32 (in the runs)"]
    html = inspector.export_html(tmp_path / "export.html").read_text(encoding="utf-8")
    assert f"clip:ViT-B-32 {run.candidates[2].score:.3f}" in html

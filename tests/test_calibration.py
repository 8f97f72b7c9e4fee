"""Per-model thresholds (issue 15): calibrate_threshold from labelled pairs, stored by the rater's name in
<OUTPUT_DIR>/thresholds.json, and run_pipeline(mode="threshold") taking the stored one (over real HTTP)."""

from __future__ import annotations

import itertools
import json
import math
from datetime import date

import pytest
from conftest import free_url
from PIL import Image

from helpers.a1111 import A1111Client
from helpers.clipqa import TINY_MODEL, ClipScorer, make_tiny_checkpoint
from helpers.errors import KitError
from helpers.llm import LLM
from helpers.pipeline import run_pipeline
from helpers.raters import as_rater, calibrate_threshold, clip_rater, stored_threshold

COLOURS = ["red", "green", "blue", "yellow", "white", "black"]
IMAGES = {colour: Image.new("RGB", (32, 32), colour) for colour in COLOURS}
TODAY = date.today().isoformat()


@pytest.fixture(autouse=True)
def output_dir(tmp_path, monkeypatch):
    """thresholds.json goes to OUTPUT_DIR: a fresh one per test."""
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    return ClipScorer(TINY_MODEL, str(make_tiny_checkpoint(tmp_path_factory.mktemp("clip") / "t.safetensors")), "cpu")


class TableRater:
    """A rater with scores we choose: by (text, the image's colour); it records each call to score()."""

    meaningful = True

    def __init__(self, table: dict, name: str = "table"):
        self.name, self.table, self.calls = name, table, []

    def score(self, text, images):
        self.calls.append((text, len(images)))
        return [self.table[text, _colour(image)] for image in images]


def _colour(image) -> str:
    return next(name for name, known in IMAGES.items() if known.getpixel((0, 0)) == image.getpixel((0, 0)))


# good: 0.8, 0.6, 0.4; bad: 0.5, 0.2, 0.1
TABLE = {("a", "red"): 0.8, ("a", "green"): 0.5, ("b", "blue"): 0.6, ("b", "yellow"): 0.2,
         ("c", "white"): 0.4, ("c", "black"): 0.1}
GOOD = {("a", "red"), ("b", "blue"), ("c", "white")}
PAIRS = [(text, IMAGES[colour], (text, colour) in GOOD) for text, colour in TABLE]


def test_the_threshold_maximises_balanced_accuracy_and_is_placed_between_two_scores():
    rater = TableRater(TABLE)
    record = calibrate_threshold(rater, PAIRS, save=False)
    # Cuts 0.3 and 0.55 both reach (3/3 + 2/3) / 2 and (2/3 + 3/3) / 2 = 0.8333; of a tie the higher one.
    assert record == {"rater": "table", "threshold": pytest.approx(0.55), "pairs": 6, "good": 3, "bad": 3,
                      "dropped": 0, "balanced_accuracy": 0.8333, "false_accepts": 0, "false_rejects": 1,
                      "meaningful": True, "date": TODAY}
    assert sorted(rater.calls) == [("a", 2), ("b", 2), ("c", 2)]  # one call per text, its images together


def test_separable_scores_give_perfect_accuracy_halfway_between_the_groups():
    table = {**TABLE, ("c", "white"): 0.7}  # every good score above every bad one now
    pairs = [(text, IMAGES[colour], (text, colour) in GOOD) for text, colour in table]
    record = calibrate_threshold(TableRater(table), pairs, save=False)
    assert record["threshold"] == pytest.approx((0.6 + 0.5) / 2)
    assert (record["balanced_accuracy"], record["false_accepts"], record["false_rejects"]) == (1.0, 0, 0)


def test_unbalanced_groups_are_weighed_by_their_share_not_their_count():
    # 2 good (0.9, 0.3) and 6 bad (0.4 and five at 0.1). Plain accuracy would take 0.65 (7 of 8 right: one
    # false reject); balanced accuracy prefers 0.2 (both good accepted, 5 of 6 bad rejected: 0.9167 > 0.75).
    table = {("g", "red"): 0.9, ("g", "green"): 0.3, ("x", "blue"): 0.4, ("x", "yellow"): 0.1,
             ("y", "white"): 0.1, ("y", "black"): 0.1, ("z", "red"): 0.1, ("z", "green"): 0.1}
    pairs = [(text, IMAGES[colour], text == "g") for text, colour in table]
    record = calibrate_threshold(TableRater(table), pairs, save=False)
    assert record["threshold"] == pytest.approx(0.2) and record["balanced_accuracy"] == pytest.approx(0.9167)
    assert (record["false_accepts"], record["false_rejects"]) == (1, 0)


def test_nan_scores_are_dropped_and_counted():
    table = {**TABLE, ("d", "red"): math.nan, ("d", "blue"): math.nan}
    pairs = PAIRS + [("d", IMAGES["red"], True), ("d", IMAGES["blue"], False)]
    record = calibrate_threshold(TableRater(table), pairs, save=False)
    assert (record["pairs"], record["dropped"], record["good"], record["bad"]) == (6, 2, 3, 3)
    assert record["threshold"] == pytest.approx(0.55)


@pytest.mark.parametrize("pairs, got", [
    (PAIRS[:3], "2 good and 1 bad"),                                               # a, a, b: too few bad ones
    ([p for p in PAIRS if not p[2]] + [PAIRS[0]], "1 good and 3 bad"),
    ([], "0 good and 0 bad"),
])
def test_too_few_pairs_is_a_clear_error(pairs, got, output_dir):
    with pytest.raises(KitError, match="needs 2 good and 2 bad pairs") as err:
        calibrate_threshold(TableRater(TABLE), pairs)
    assert got in str(err.value) and "good=True" in err.value.fix
    assert not output_dir.exists()  # nothing stored


def test_nan_can_leave_too_few_and_equal_scores_cannot_be_separated():
    nan = {key: (math.nan if key[0] == "c" or key == ("a", "green") else value) for key, value in TABLE.items()}
    with pytest.raises(KitError, match="2 good and 1 bad with a score"):
        calibrate_threshold(TableRater(nan), PAIRS, save=False)
    flat = dict.fromkeys(TABLE, 0.3)
    with pytest.raises(KitError, match="1 distinct score"):
        calibrate_threshold(TableRater(flat), PAIRS, save=False)


def test_as_rater_and_image_files(tmp_path):
    """as_rater (a plain function) and pairs whose images are files on disk."""
    files = {}
    for colour in COLOURS:
        files[colour] = tmp_path / f"{colour}.png"
        IMAGES[colour].save(files[colour])
    rater = as_rater(lambda text, image: TABLE[text, _colour(image)], "mine")
    record = calibrate_threshold(rater, [(text, files[colour], good) for (text, colour), (_, _, good)
                                         in zip(TABLE, PAIRS)], save=False)
    assert record["rater"] == "mine" and record["threshold"] == pytest.approx(0.55)


def test_the_tiny_clip_model_by_brute_force(tiny_scorer):
    """Through the CLIP rater: the chosen cut is the best of every cut between two scores, checked here by a
    separate computation on the scorer's own cosines; and the record says the model is a test model."""
    texts = ["a red square", "a green square", "a blue square"]
    pairs = [(text, IMAGES[colour], colour in text) for text, colour in itertools.product(texts, COLOURS[:3])]
    rater = clip_rater(tiny_scorer)
    record = calibrate_threshold(rater, pairs)
    cosines = [(tiny_scorer.similarity(text, [image], long_text="chunks")[0], good) for text, image, good in pairs]
    values = sorted({score for score, _ in cosines})
    cuts = [(a + b) / 2 for a, b in zip(values, values[1:])]

    def balanced(cut):
        good = [score >= cut for score, is_good in cosines if is_good]
        bad = [score < cut for score, is_good in cosines if not is_good]
        return (sum(good) / len(good) + sum(bad) / len(bad)) / 2
    best = max(balanced(cut) for cut in cuts)
    assert record["balanced_accuracy"] == pytest.approx(best, abs=1e-4)
    assert record["threshold"] == pytest.approx(max(cut for cut in cuts if balanced(cut) == best), abs=1e-5)
    assert record["rater"] == rater.name == f"clip:{TINY_MODEL}/t.safetensors"
    assert record["meaningful"] is False and (record["good"], record["bad"]) == (3, 6)
    assert stored_threshold(rater) == record


def test_stored_by_name_with_other_raters_kept(output_dir):
    path = output_dir / "thresholds.json"
    output_dir.mkdir()
    path.write_text(json.dumps({"clip:other/weights": {"threshold": 0.27, "note": "by hand"}}))
    first = calibrate_threshold(TableRater(TABLE, "first"), PAIRS)
    second = calibrate_threshold(TableRater(TABLE, "second"), PAIRS[:4] + [("c", IMAGES["white"], True)] * 2)
    stored = json.loads(path.read_text())
    assert set(stored) == {"clip:other/weights", "first", "second"}
    assert stored["first"] == first and stored["second"] == second
    assert stored["clip:other/weights"] == {"threshold": 0.27, "note": "by hand"}
    assert stored_threshold(TableRater(TABLE, "first")) == first and stored_threshold("second") == second
    assert stored_threshold("clip:other/weights")["threshold"] == 0.27 and stored_threshold("nobody") is None
    assert sorted(p.name for p in output_dir.iterdir()) == ["thresholds.json"]  # no temporary file left


def test_a_damaged_file_is_kept_aside_and_said(output_dir):
    output_dir.mkdir()
    path = output_dir / "thresholds.json"
    path.write_text('{"clip:x": {"threshold": 0.3},')  # cut off by hand
    with pytest.warns(UserWarning, match="not a JSON object of thresholds: ignored"):
        assert stored_threshold("clip:x") is None
    with pytest.warns(UserWarning, match="moved to .*thresholds.json.damaged-"):
        record = calibrate_threshold(TableRater(TABLE), PAIRS)
    aside = [p for p in output_dir.iterdir() if p.name.startswith("thresholds.json.damaged-")]
    assert len(aside) == 1 and aside[0].read_text() == '{"clip:x": {"threshold": 0.3},'
    assert json.loads(path.read_text()) == {"table": record}


def test_hand_edited_entries_without_a_number_are_not_used(output_dir):
    output_dir.mkdir()
    (output_dir / "thresholds.json").write_text(json.dumps({"a": {"threshold": "0.3"}, "b": 0.3, "c": {}}))
    assert [stored_threshold(name) for name in "abc"] == [None, None, None]
    (output_dir / "thresholds.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="ignored"):
        assert stored_threshold("a") is None


def test_save_false_stores_nothing(output_dir):
    calibrate_threshold(TableRater(TABLE), PAIRS, save=False)
    assert not output_dir.exists()


# ----- the pipeline takes the stored threshold ------------------------------------------------------------------

TEXT_SCORES = {"good 1": 0.9, "good 2": 0.8, "bad 1": 0.2, "bad 2": 0.1}


def _text_rater():
    """Scores by the text: the calibration's texts as in TEXT_SCORES, the pipeline's text (a corpus text) 0.6."""
    return as_rater(lambda text, image: TEXT_SCORES.get(text, 0.6), "by text")


def _run(tmp_path, sd_server, **kw):
    kw = {"max_images": 4, **kw}
    return run_pipeline("lighthouse, storm", mode="threshold", client=A1111Client(sd_server.url, auth=""),
                        llm=LLM(free_url() + "/v1", timeout=2), out_dir=tmp_path / "runs", progress=False, steps=2,
                        width=64, height=64, **kw)


def test_the_pipeline_uses_the_stored_threshold_and_says_so(tmp_path, sd_server):
    calibrate_threshold(_text_rater(), [(text, IMAGES["red"], text.startswith("good")) for text in TEXT_SCORES])
    run = _run(tmp_path, sd_server, rater=_text_rater())
    assert run.threshold == pytest.approx(0.5)  # halfway between 0.2 and 0.8
    assert run.status == "threshold met" and len(run.candidates) == 2  # 0.6 >= 0.5
    assert run.scorer["threshold_from"] == f"calibrated on 4 pairs on {TODAY}"
    given = _run(tmp_path, sd_server, rater=_text_rater(), threshold=0.7)  # a given one wins over the stored one
    assert given.status == "max_images reached" and len(given.candidates) == 4
    assert given.threshold == 0.7 and given.scorer["threshold_from"] == "given"


def test_the_default_clip_rater_finds_its_calibration_by_model_and_weights(tmp_path, sd_server, tiny_scorer):
    pairs = [(text, IMAGES[colour], colour in text) for text in ("a red square", "a blue square")
             for colour in ("red", "blue")]
    record = calibrate_threshold(clip_rater(tiny_scorer), pairs)
    run = _run(tmp_path, sd_server, scorer=tiny_scorer, max_images=2)
    assert run.threshold == record["threshold"] and run.scorer["rater"] == record["rater"]
    assert run.scorer["threshold_from"].startswith("calibrated on 4 pairs")


def test_without_a_stored_threshold_the_error_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_MODEL", "ViT-B-32")
    monkeypatch.setenv("CLIP_PRETRAINED", "laion2b_s34b_b79k")
    # The configured CLIP's name, without loading it (the error comes before any work, and no run folder).
    with pytest.raises(ValueError, match="none is stored for clip:ViT-B-32/laion2b_s34b_b79k") as err:
        run_pipeline("owl", mode="threshold", out_dir=tmp_path / "runs")
    assert "threshold=" in str(err.value) and "calibrate_threshold(rater, pairs)" in str(err.value)
    with pytest.raises(ValueError, match="none is stored for by text"):
        run_pipeline("owl", mode="threshold", rater=_text_rater(), out_dir=tmp_path / "runs")
    with pytest.raises(ValueError, match="none is stored for None"):
        run_pipeline("owl", mode="threshold", scorer=False, out_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()

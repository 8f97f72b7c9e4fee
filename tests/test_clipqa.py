"""The CLIP rater on a tiny open_clip model that the test builds and saves to a checkpoint.

The checkpoint is loaded through CLIP_MODEL / CLIP_PRETRAINED=<file>, the path users take with
real weights. Scores of a random model mean nothing; the tests check the arithmetic and the plumbing.
"""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image

from helpers.clipqa import CONFIG_DIR, TINY_MODEL, ClipError, ClipScorer, load_clip, make_tiny_checkpoint
from helpers.display import side_by_side, side_by_side_html


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture
def scorer(checkpoint, monkeypatch):
    monkeypatch.setenv("CLIP_MODEL", TINY_MODEL)
    monkeypatch.setenv("CLIP_PRETRAINED", str(checkpoint))
    monkeypatch.setenv("CLIP_DEVICE", "cpu")
    return ClipScorer()


@pytest.fixture(scope="module")
def images():
    colours = ["red", "navy", "forestgreen", "gold", "white"]
    return [Image.new("RGB", (48 + 8 * i, 40), colour) for i, colour in enumerate(colours)]


def _manual_cosine(scorer, text, image):
    import open_clip

    loaded = load_clip(scorer.model_name, scorer.pretrained, "cpu")
    with torch.no_grad():
        img = loaded.model.encode_image(loaded.preprocess(image).unsqueeze(0))
        txt = loaded.model.encode_text(open_clip.get_tokenizer(TINY_MODEL)([text]))
    return torch.nn.functional.cosine_similarity(img, txt).item()


def test_loaded_from_the_checkpoint_in_eval_mode(scorer, checkpoint):
    assert scorer.model_name == TINY_MODEL and scorer.pretrained == str(checkpoint)
    assert not scorer._clip.model.training
    assert not scorer.meaningful and "meaningless" in repr(scorer)


def test_similarity_equals_the_cosine_from_the_models_own_encoders(scorer, images):
    scores = scorer.similarity("a red square", images)
    expected = [_manual_cosine(scorer, "a red square", image) for image in images]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(-1 <= s <= 1 for s in scores)


def test_one_batch_equals_one_at_a_time(scorer, images):
    batch = scorer.similarity("a golden field", images)
    single = [scorer.similarity("a golden field", [image])[0] for image in images]
    assert batch == pytest.approx(single, abs=1e-5)


def test_paths_and_single_images_are_accepted(scorer, images, tmp_path):
    path = tmp_path / "x.png"
    images[0].save(path)
    assert scorer.similarity("x", path) == pytest.approx(scorer.similarity("x", [images[0]]), abs=1e-6)


def test_best_is_the_argmax_and_passes_uses_the_threshold(scorer, images):
    scores = scorer.similarity("navy blue", images)
    index, score = scorer.best("navy blue", images)
    assert index == max(range(len(scores)), key=scores.__getitem__) and score == pytest.approx(max(scores))
    assert scorer.passes("navy blue", images[index], score - 1e-3)
    assert not scorer.passes("navy blue", images[index], score + 1e-3)


def test_clip_score_is_hessels_formula(scorer, images):
    cosines = scorer.similarity("forest", images)
    assert scorer.clip_score("forest", images) == pytest.approx([2.5 * max(c, 0) for c in cosines], abs=1e-6)


def test_long_text_warns_with_the_number_of_dropped_tokens(scorer, images):
    text = " ".join(["lighthouse"] * 60 + ["storm"] * 40)  # 100 tokens
    with pytest.warns(UserWarning, match="has 100, so the last 25 tokens are ignored"):
        truncated = scorer.similarity(text, images[:1])
    first_75 = " ".join(["lighthouse"] * 60 + ["storm"] * 15)
    assert truncated == pytest.approx(scorer.similarity(first_75, images[:1]), abs=1e-5)


def test_chunks_mode_averages_normalised_chunk_embeddings(scorer, images):
    text = " ".join(["lighthouse"] * 60 + ["storm"] * 40)
    a = scorer.encode_texts([" ".join(["lighthouse"] * 60 + ["storm"] * 15)])
    b = scorer.encode_texts([" ".join(["storm"] * 25)])
    mean = (a + b) / 2
    expected = (scorer.encode_images(images[:1]) @ (mean / mean.norm()).T).item()
    assert scorer.similarity(text, images[:1], long_text="chunks")[0] == pytest.approx(expected, abs=1e-5)


def test_a_second_scorer_reuses_the_loaded_model(scorer, checkpoint):
    started = time.perf_counter()
    again = ClipScorer(TINY_MODEL, str(checkpoint), "cpu")
    assert again._clip is scorer._clip
    assert time.perf_counter() - started < 0.1


def test_offline_without_weights_fails_fast_and_names_the_fix(monkeypatch):
    monkeypatch.delenv("CLIP_PRETRAINED", raising=False)
    monkeypatch.delenv("CLIP_MODEL", raising=False)
    started = time.perf_counter()
    with pytest.raises(ClipError) as err:
        ClipScorer(device="cpu")
    assert time.perf_counter() - started < 5
    assert "make models" in str(err.value) and "CLIP_PRETRAINED" in str(err.value)


@pytest.mark.parametrize("model, pretrained, words", [
    ("ViT-B-32", "/no/such/file.safetensors", "no such file"),
    ("ViT-B-32", "not_a_tag", "laion2b_s34b_b79k"),
    ("ViT-Z-99", "none", "CLIP_MODEL"),
])
def test_bad_settings_name_the_fix(model, pretrained, words):
    with pytest.raises(ClipError, match=words):
        ClipScorer(model, pretrained, "cpu")


def test_caption_route_with_the_kits_server(scorer, sd_server):
    from helpers.a1111 import A1111Client
    from helpers.raters import caption_rater

    client = A1111Client(sd_server.url, auth="")
    image = client.txt2img("a red fox in the snow", seed=1, width=64, height=64, steps=2).image
    rater = caption_rater(None, captioner=client.interrogate, scorer=scorer)
    score = rater.score("a red fox in the snow", [image])[0]
    caption = rater.details[0]["caption"]
    assert "placeholder" in caption.lower()
    assert score == pytest.approx(scorer.text_similarity("a red fox in the snow", caption))


def test_side_by_side_html_holds_text_image_and_score(images):
    html = side_by_side_html("A <red> fox.", images[0], score=0.3125, prompt="oil painting, fox", placeholder=True)
    assert "A &lt;red&gt; fox." in html and "data:image/png;base64," in html
    assert "0.312" in html and "oil painting, fox" in html and "Placeholder image" in html
    assert side_by_side("t", images[0])._repr_html_().startswith("<div")


def test_a_64_token_model_reads_62_tokens(tmp_path):
    """SigLIP-family text towers read 64 positions, not CLIP's 77: the limit comes from the model's tokenizer."""
    import json

    import open_clip
    config = json.loads((CONFIG_DIR / f"{TINY_MODEL}.json").read_text())
    config["text_cfg"]["context_length"] = 64
    (tmp_path / "tiny-64-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    scorer = ClipScorer("tiny-64-test", str(make_tiny_checkpoint(tmp_path / "t64.safetensors", model="tiny-64-test")),
                        "cpu")
    assert scorer.token_limit == 62
    text = " ".join(["lighthouse"] * 60 + ["storm"] * 10)  # 70 tokens
    with pytest.warns(UserWarning, match="tiny-64-test reads 62 tokens; this text has 70, so the last 8"):
        truncated = scorer.similarity(text, [Image.new("RGB", (32, 32), "red")])
    first_62 = " ".join(["lighthouse"] * 60 + ["storm"] * 2)
    assert truncated == pytest.approx(scorer.similarity(first_62, [Image.new("RGB", (32, 32), "red")]), abs=1e-5)

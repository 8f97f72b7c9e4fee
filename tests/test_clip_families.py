"""More CLIP-family raters through open_clip: SigLIP 2 (a Hugging Face tokenizer, 64 tokens) and DFN (CLIP's).

The tests build tiny models of both families offline: open_clip's own configs of ViT-B-16-SigLIP2 and
ViT-B-16-quickgelu (DFN2B's) with only the sizes made small, and for SigLIP a tiny word-level tokenizer shaped
like SigLIP 2's Gemma one (<pad>=0, <eos>=1, <bos>=2, <unk>=3, an <eos> after the text, padding on the right),
built with the `tokenizers` library. Checkpoints are saved and loaded through ``ClipScorer(model, file)``, the
path users take with real weights. Scores of random models mean nothing; the tests check the plumbing, and
that the token rows the kit builds are exactly open_clip's own.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import clipqa
from helpers.clipqa import TINY_MODEL, ClipError, ClipScorer, make_tiny_checkpoint
from helpers.config import KIT_ROOT
from helpers.raters import clip_rater

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")  # SigLIP's tokenizer is a Hugging Face one

SIGLIP = "tiny-siglip2-test"  # SigLIP 2's template: text <eos>
SIGLIP_BOS = "tiny-siglip-bos-test"  # the same with <bos> text <eos>: the kit must read markers, not assume them
DFN = "tiny-dfn-test"
TEMPLATES = {SIGLIP: "$A <eos>", SIGLIP_BOS: "<bos> $A <eos>"}


def _vocabulary(size: int = 400) -> list[str]:
    """The most common words of the kit's text corpus: a few hundred real words for the tiny tokenizer."""
    words = Counter()
    for path in sorted((KIT_ROOT / "data" / "corpus").glob("*.md")):
        words.update(re.findall(r"[a-z]+", path.read_text(encoding="utf-8").lower()))
    return [word for word, _ in words.most_common(size)]


def _save_tokenizer(folder, template: str) -> int:
    """A tiny word-level tokenizer with Gemma's special tokens, saved for AutoTokenizer; returns its vocab size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for word in _vocabulary() + ["lighthouse", "storm", "fox", "snow"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<bos>", 2), ("<eos>", 1)])
    tok.enable_padding(length=64, pad_id=0, pad_token="<pad>")  # SigLIP 2's tokenizer.json pads so, built in
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="right").save_pretrained(folder)
    return len(vocab)


def _siglip_config(tokenizer: str, vocab_size: int) -> dict:
    """ViT-B-16-SigLIP2's config (timm ViT with attention-pool 'map', no projection; text pooled at the 'last'
    token with no causal mask, 64 tokens, canonicalised text) with only the sizes made tiny: timm's 96-wide
    test_vit3 (also 'map'-pooled) for the image, a 64-wide 2-layer text tower."""
    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-16-SigLIP2"))
    cfg["embed_dim"] = 96  # no projection after the 'map' pool: the image width is the embedding size
    cfg["vision_cfg"].update(timm_model_name="test_vit3", image_size=160)  # test_vit3's own input size
    cfg["text_cfg"].update(vocab_size=vocab_size, width=64, heads=2, layers=2, hf_tokenizer_name=tokenizer)
    return cfg


def _dfn_config() -> dict:
    """ViT-B-16-quickgelu's config (what DFN2B was trained with: patch 16, QuickGELU, CLIP's 77 tokens), tiny."""
    cfg = copy.deepcopy(open_clip.get_model_config("ViT-B-16-quickgelu"))
    cfg["embed_dim"] = 32
    cfg["vision_cfg"].update(image_size=32, layers=2, width=64, head_width=32)
    cfg["text_cfg"].update(width=64, heads=2, layers=2)
    return cfg


def _register(folder, name: str, cfg: dict) -> None:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{model name: checkpoint file} for the tiny SigLIP, SigLIP-with-<bos>, DFN and CLIP test models."""
    root = tmp_path_factory.mktemp("clip-families")
    for name, template in TEMPLATES.items():
        vocab_size = _save_tokenizer(root / f"{name}-tokenizer", template)
        _register(root, name, _siglip_config(str(root / f"{name}-tokenizer"), vocab_size))
    _register(root, DFN, _dfn_config())
    return {name: make_tiny_checkpoint(root / f"{name}.safetensors", model=name)
            for name in (SIGLIP, SIGLIP_BOS, DFN, TINY_MODEL)}


@pytest.fixture(scope="module")
def scorers(checkpoints):
    return {name: ClipScorer(name, str(path), "cpu") for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (48 + 8 * i, 40), colour) for i, colour in enumerate(["red", "navy", "gold"])]


def _rows_sent(scorer, monkeypatch, texts, **kwargs):
    """The token rows the kit hands to the model's text encoder for ``texts``."""
    sent, encode = [], scorer._clip.model.encode_text
    monkeypatch.setattr(scorer._clip.model, "encode_text", lambda tokens: sent.append(tokens.cpu()) or encode(tokens))
    features = scorer.encode_texts(texts, **kwargs)
    monkeypatch.undo()
    return torch.cat(sent), features


@pytest.mark.parametrize("name", [SIGLIP, SIGLIP_BOS, DFN])
def test_scores_come_out_and_equal_the_cosine_of_the_models_own_encoders(scorers, images, name):
    scorer = scorers[name]
    scores = scorer.similarity("a red fox in the snow", images)
    model, preprocess = scorer._clip.model, scorer._clip.preprocess
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(image) for image in images]))
        text = model.encode_text(open_clip.get_tokenizer(name)(["a red fox in the snow"]))
    assert scores == pytest.approx(torch.nn.functional.cosine_similarity(image, text).tolist(), abs=1e-5)
    assert len(set(scores)) == len(images)  # three images, three different scores


def test_each_family_reads_its_own_number_of_tokens(scorers):
    # CLIP and DFN: 77 positions less <start> and <end>. SigLIP 2: 64 less the <eos> its tokenizer appends
    # (no <bos>), so 63; a tokenizer that also puts <bos> first leaves 62. The kit asks the tokenizer.
    assert {name: scorer.token_limit for name, scorer in scorers.items()} == {
        TINY_MODEL: 75, DFN: 75, SIGLIP: 63, SIGLIP_BOS: 62}


@pytest.mark.parametrize("name", [TINY_MODEL, DFN, SIGLIP, SIGLIP_BOS])
@pytest.mark.parametrize("text", ["A lighthouse in a storm", "The Fox, in SNOW!", "", "zzz unknown words"])
def test_the_kits_token_rows_are_open_clips_own(scorers, monkeypatch, name, text):
    rows, _ = _rows_sent(scorers[name], monkeypatch, [text])
    assert torch.equal(rows, open_clip.get_tokenizer(name)([text]))


@pytest.mark.parametrize("name", [TINY_MODEL, SIGLIP, SIGLIP_BOS])
def test_a_long_text_is_cut_as_open_clip_cuts_it_with_a_warning(scorers, monkeypatch, name):
    scorer = scorers[name]
    text = " ".join(["lighthouse"] * 60 + ["storm"] * 40)  # 100 tokens with either tokenizer
    with pytest.warns(UserWarning, match=f"reads {scorer.token_limit} tokens; this text has 100, so the last "
                                         f"{100 - scorer.token_limit} tokens are ignored"):
        rows, _ = _rows_sent(scorer, monkeypatch, [text])
    assert torch.equal(rows, open_clip.get_tokenizer(name)([text]))


def test_siglip_chunks_average_the_pieces_of_63_tokens(scorers, images):
    scorer = scorers[SIGLIP]
    text = " ".join(["lighthouse"] * 60 + ["storm"] * 40)
    first = scorer.encode_texts([" ".join(["lighthouse"] * 60 + ["storm"] * 3)])
    rest = scorer.encode_texts([" ".join(["storm"] * 37)])
    mean = (first + rest) / 2
    expected = (scorer.encode_images(images[:1]) @ (mean / mean.norm()).T).item()
    assert scorer.similarity(text, images[:1], long_text="chunks")[0] == pytest.approx(expected, abs=1e-5)
    with pytest.warns(UserWarning, match="the last 37 tokens are ignored"):
        truncated = scorer.similarity(text, images[:1])
    assert scorer.similarity(text, images[:1], long_text="chunks") != pytest.approx(truncated, abs=1e-6)


def test_clip_rater_takes_a_siglip_scorer_and_says_it_is_a_test_model(scorers, images):
    scorer = scorers[SIGLIP]
    rater = clip_rater(scorer)
    assert rater.score("a red fox", images) == pytest.approx(scorer.similarity("a red fox", images, "chunks"))
    # The name names the weights too (a calibrated threshold holds for those only): here the checkpoint file.
    assert rater.name == f"clip:{SIGLIP}/{Path(str(scorer.pretrained)).name}" and rater.name.endswith(".safetensors")
    assert rater.info()["meaningful"] is False
    assert "TEST MODEL" in repr(scorer)


def test_without_transformers_a_siglip_model_names_the_fix(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` meets when not installed
    monkeypatch.setattr(clipqa, "_LOADED", {})
    with pytest.raises(ClipError, match="pip install transformers") as err:
        ClipScorer(SIGLIP, str(checkpoints[SIGLIP]), "cpu")
    assert SIGLIP in str(err.value)
    assert ClipScorer(DFN, str(checkpoints[DFN]), "cpu").token_limit == 75  # CLIP's tokenizer needs nothing more


def test_siglip_weights_count_as_cached_only_with_their_tokenizer(monkeypatch):
    import huggingface_hub

    cached: set[tuple[str, str]] = set()
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: f"/cache/{repo}/{name}" if (repo, name) in cached else None)
    cached.add(("timm/ViT-B-16-SigLIP2", "open_clip_model.safetensors"))
    cached.add(("apple/DFN2B-CLIP-ViT-B-16", "open_clip_model.safetensors"))
    assert clipqa._cached("ViT-B-16-quickgelu", "dfn2b")  # CLIP's tokenizer ships with open_clip
    assert not clipqa._cached("ViT-B-16-SigLIP2", "webli")  # weights alone: offline, its tokenizer would fail
    cached.add(("timm/ViT-B-16-SigLIP2", "tokenizer_config.json"))
    assert clipqa._cached("ViT-B-16-SigLIP2", "webli")


def test_make_models_fetches_the_siglip_tokenizer(checkpoints, tmp_path, monkeypatch, capsys):
    """`make models` loads the configured model as a class will; for SigLIP that asks the Hub for the
    tokenizer too (it lands in the Hub's cache, for offline use). The Hub is faked by a tokenizer on disk."""
    from course.__main__ import main

    vocab_size = _save_tokenizer(tmp_path / "tokenizer", TEMPLATES[SIGLIP])
    _register(tmp_path, "tiny-siglip2-hub-test", _siglip_config("timm/ViT-B-16-SigLIP2", vocab_size))
    asked, from_pretrained = [], transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, **kwargs: asked.append(name) or from_pretrained(str(tmp_path / "tokenizer")))
    monkeypatch.setenv("CLIP_MODEL", "tiny-siglip2-hub-test")
    monkeypatch.setenv("CLIP_PRETRAINED", str(checkpoints[SIGLIP]))  # the same layout, so its weights fit
    monkeypatch.setenv("CLIP_DEVICE", "cpu")
    assert main(["models"]) == 0
    assert asked == ["timm/ViT-B-16-SigLIP2"]
    assert "reads 63 tokens" in capsys.readouterr().out

"""Image prompts: CLIP token counting, trimming, the LLM route with its fallbacks, the baseline."""

from __future__ import annotations

import json

import pytest
from open_clip import get_tokenizer
from open_clip.tokenizer import SimpleTokenizer

from helpers.prompts import (CLIP_TOKEN_LIMIT, DEFAULT_NEGATIVE, baseline_prompt, count_clip_tokens, trim_to_tokens,
                             write_image_prompt)


@pytest.mark.parametrize("text", ["a red fox", "a lone lighthouse on a rocky cliff at dusk, storm clouds, crashing waves",
                                  "(masterpiece:1.2), Zürich café, 4k", ""])
def test_count_matches_open_clip_tokenizer(text):
    ids = get_tokenizer("ViT-B-32")([text])[0].tolist()
    # open_clip pads to 77 with 0 after <start> ... <end>; the count excludes both markers.
    used = ids[: ids.index(0)] if 0 in ids else ids
    assert count_clip_tokens(text) == len(used) - 2


def test_reference_example_has_28_tokens():
    assert count_clip_tokens("a lone lighthouse on a rocky cliff at dusk, storm clouds, crashing waves, oil painting, "
                             "dramatic rim lighting, wide angle, highly detailed") == 28


def test_trim_cuts_at_the_last_comma_that_fits():
    prompt = ", ".join(f"phrase number {i}" for i in range(40))
    kept, cut = trim_to_tokens(prompt, limit=CLIP_TOKEN_LIMIT)
    assert count_clip_tokens(kept) <= CLIP_TOKEN_LIMIT
    assert count_clip_tokens(kept + ", " + cut.split(",")[0]) > CLIP_TOKEN_LIMIT
    assert prompt.startswith(kept) and kept + ", " + cut == prompt


def test_trim_a_single_long_phrase_by_words():
    kept, cut = trim_to_tokens("word " * 100, limit=10)
    assert count_clip_tokens(kept) == 10 and cut


def test_llm_prompt_in_json(llm, llm_server):
    prompt = write_image_prompt("A white lighthouse stands on black rocks in a storm.", llm=llm)
    assert prompt.source == "llm" and prompt.prompt and prompt.negative_prompt == "blurry, lowres, watermark"
    assert 0 < prompt.tokens <= CLIP_TOKEN_LIMIT and not prompt.note
    sent = llm_server.requests[-1]
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["prompt", "negative_prompt"]
    assert "medium" in sent["messages"][0]["content"] and "negation" in sent["messages"][0]["content"]
    assert prompt.fields() == {"prompt": prompt.prompt, "negative_prompt": prompt.negative_prompt}


def test_plain_text_fallback_when_the_model_ignores_the_schema(llm, llm_server):
    llm_server.mode = "not_json"
    prompt = write_image_prompt("A red fox in the snow.", llm=llm)
    assert prompt.prompt == "a red fox in snow, watercolor"  # "Sure! Here is a prompt:" dropped
    assert prompt.negative_prompt == DEFAULT_NEGATIVE and "did not answer in JSON" in prompt.note


def test_json_inside_a_code_block_is_found(llm, llm_server):
    llm_server.reply = lambda messages, body: 'Here you go:\n```json\n{"prompt": "oil painting, fox", "negative_prompt": "blurry"}\n```'
    prompt = write_image_prompt("A fox.", llm=llm)
    assert (prompt.prompt, prompt.negative_prompt, prompt.note) == ("oil painting, fox", "blurry", "")


def test_too_long_is_asked_again_once_with_the_count(llm, llm_server):
    long_prompt = ", ".join(f"detail {i}" for i in range(60))
    answers = iter([long_prompt, "oil painting, fox in snow"])
    llm_server.reply = lambda messages, body: json.dumps({"prompt": next(answers), "negative_prompt": "blurry"})
    prompt = write_image_prompt("A fox.", llm=llm)
    assert prompt.prompt == "oil painting, fox in snow"
    retry = llm_server.requests[-1]["messages"][-1]["content"]
    assert f"{count_clip_tokens(long_prompt)} CLIP tokens" in retry and "limit is 75" in retry
    assert "asked again" in prompt.note


def test_still_too_long_is_trimmed_with_a_warning(llm, llm_server):
    llm_server.mode = "too_long"
    with pytest.warns(UserWarning, match="CLIP tokens .limit 75.; cut:"):
        prompt = write_image_prompt("A fox.", llm=llm)
    assert prompt.tokens <= CLIP_TOKEN_LIMIT and "cut:" in prompt.note
    assert len(llm_server.requests) == 2  # asked once more, not more


def test_empty_text_is_refused(llm):
    with pytest.raises(ValueError, match="get_text"):
        write_image_prompt("  ", llm=llm)


def test_baseline_has_the_same_shape_and_keeps_the_keywords():
    text = ("A white lighthouse stands against a storm. Huge grey-green waves crash into the rocks below, "
            "and the lamp's beam sweeps across the water.")
    prompt = baseline_prompt(text, keywords=["lighthouse", "storm"])
    assert prompt.source == "baseline" and prompt.negative_prompt == DEFAULT_NEGATIVE
    assert prompt.prompt.startswith("digital painting of lighthouse, storm, ")
    assert "grey-green waves crash" in prompt.prompt
    assert prompt.tokens == count_clip_tokens(prompt.prompt) <= CLIP_TOKEN_LIMIT
    assert " no " not in f" {prompt.prompt} " and "not" not in prompt.prompt.split()


def test_baseline_is_deterministic_and_within_the_limit_for_every_corpus_text():
    from helpers.text import load_corpus

    for doc in load_corpus():
        first = baseline_prompt(doc.text, keywords=list(doc.keywords[:2]))
        assert first.prompt == baseline_prompt(doc.text, keywords=list(doc.keywords[:2])).prompt
        assert first.tokens <= CLIP_TOKEN_LIMIT


def test_simple_tokenizer_is_the_one_counted():
    assert count_clip_tokens("lighthouse") == len(SimpleTokenizer().encode("lighthouse"))


def test_trim_never_splits_a_weighted_group():
    kept, cut = trim_to_tokens("(red fox, snow:1.2), winter sun, pale light", limit=11)
    assert kept == "(red fox, snow:1.2)" and cut == "winter sun, pale light"

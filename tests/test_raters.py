"""Raters through the real openai client against the test LLM server (tests/llm_server.py) over HTTP.

The "vision model" is a reply function that looks at the image it was sent (its colour); the LLM's
answers are untrusted, so chatty and malformed ones are part of the tests.
"""

from __future__ import annotations

import json
import math

import pytest
from llm_server import colour_name, embed_text, images_in
from PIL import Image

from helpers.clipqa import TINY_MODEL, ClipScorer, make_tiny_checkpoint
from helpers.errors import KitError
from helpers.llm import LLM, LLMError
from helpers.raters import (
    QUESTIONS_SYSTEM,
    as_rater,
    caption_rater,
    clip_rater,
    parse_yes_no,
    question_rater,
    vqa_rater,
)

RED, WHITE = Image.new("RGB", (64, 64), (220, 30, 30)), Image.new("RGB", (64, 64), (245, 245, 245))
TEXT = "A red fox sleeps in the snow."
QUESTIONS = ["Is there a fox?", "Is the fox red?", "Is there snow?"]


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    return ClipScorer(TINY_MODEL, str(make_tiny_checkpoint(tmp_path_factory.mktemp("clip") / "t.safetensors")), "cpu")


@pytest.fixture
def vision_llm(llm_server):
    return LLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0, embed_model="test-embed")


def fox_model(questions_reply=None, chatty=False):
    """A reply function: questions for the text; for an image, 'red' questions answered by its colour."""
    def reply(messages, body):
        if messages[0].get("content") == QUESTIONS_SYSTEM:
            return questions_reply or json.dumps({"questions": QUESTIONS})
        question = messages[-1]["content"][-1]["text"]
        if "snow" in question and chatty:
            return "Hmm, hard to say from this picture."
        colour = colour_name(images_in(messages)[0])
        if "red" in question.lower():
            return "Yes, it is." if colour == "red" else "**No.** The fox is white."
        return "Yes"
    return reply


def _cos(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(embed_text(a), embed_text(b)))


@pytest.mark.parametrize("answer, expected", [
    ("Yes", "yes"), ("no.", "no"), ("**Yes**, it does.", "yes"), ("<think>yes or no?</think>No", "no"),
    ("The answer is no", "no"), ("Yes and no", "yes"), ("I cannot tell", None), ("", None),
    ("maybe yes, maybe no", None)])
def test_parse_yes_no(answer, expected):
    assert parse_yes_no(answer) == expected


def test_question_rater_scores_the_share_of_yes_and_says_what_is_missing(llm_server, vision_llm):
    llm_server.reply = fox_model()
    rater = question_rater(vision_llm)
    assert rater.score(TEXT, [RED, WHITE]) == pytest.approx([1.0, 2 / 3])
    assert rater.details[1]["missing"] == ["Is the fox red?"] and rater.details[0]["missing"] == []
    assert rater.details[1]["answers"] == {"Is there a fox?": "yes", "Is the fox red?": "no", "Is there snow?": "yes"}
    asked = [r for r in llm_server.requests if r["messages"][0].get("content") == QUESTIONS_SYSTEM]
    assert len(asked) == 1 and asked[0]["messages"][1]["content"] == TEXT  # questions once per text, from it
    assert len(llm_server.requests) == 1 + 2 * 3


def test_an_unclear_answer_is_left_out_not_counted_as_no(llm_server, vision_llm):
    llm_server.reply = fox_model(chatty=True)
    rater = question_rater(vision_llm)
    assert rater.score(TEXT, [WHITE]) == [pytest.approx(0.5)]  # fox yes, red no, snow unclear
    assert rater.details[0]["answers"]["Is there snow?"] is None


def test_a_chatty_question_list_is_still_read(llm_server, vision_llm):
    llm_server.reply = fox_model("Sure! Here are questions:\n1. Is there a fox?\n2. Is the fox red?\nHope it helps.")
    rater = question_rater(vision_llm)
    assert rater.score(TEXT, [RED]) == [1.0]
    assert list(rater.details[0]["answers"]) == ["Is there a fox?", "Is the fox red?"]


def test_no_questions_at_all_is_a_clear_error(llm_server, vision_llm):
    llm_server.reply = fox_model("I'd rather not.")
    with pytest.raises(LLMError, match="wrote no questions"):
        question_rater(vision_llm).score(TEXT, [RED])


def test_only_unclear_answers_give_nan_with_a_reason(llm_server, vision_llm):
    llm_server.reply = lambda messages, body: (json.dumps({"questions": QUESTIONS})
                                               if messages[0].get("content") == QUESTIONS_SYSTEM else "It depends.")
    rater = question_rater(vision_llm)
    assert math.isnan(rater.score(TEXT, [RED])[0]) and "no answer" in rater.details[0]["reason"]


def test_vqa_rater_is_p_yes_from_logprobs(llm_server, vision_llm):
    llm_server.reply = lambda messages, body: "Yes" if colour_name(images_in(messages)[0]) == "red" else "No"
    llm_server.yes_probability = 0.9
    rater = vqa_rater(vision_llm)
    assert rater.score(TEXT, [RED, WHITE]) == pytest.approx([0.9, 0.1])
    question = llm_server.requests[-1]["messages"][0]["content"][1]["text"]
    assert question == f'Does this figure show "{TEXT}"? Please answer yes or no.'


def test_vqa_rater_without_logprobs_says_which_servers_send_them(llm_server, vision_llm):
    llm_server.logprobs = False
    with pytest.raises(LLMError) as err:
        vqa_rater(vision_llm).score(TEXT, [RED])
    assert "no log-probabilities" in err.value.message and "LM Studio does not" in err.value.fix


def test_vqa_rater_a_chatty_answer_is_nan_with_a_reason(llm_server, vision_llm):
    llm_server.reply = lambda messages, body: "Well, the picture shows a lot of things."
    rater = vqa_rater(vision_llm)
    assert math.isnan(rater.score(TEXT, [RED])[0]) and "did not start with yes or no" in rater.details[0]["reason"]


def test_caption_rater_vision_caption_and_server_embeddings(llm_server, vision_llm):
    rater = caption_rater(vision_llm)
    scores = rater.score(TEXT, [RED])
    caption = rater.details[0]["caption"]
    assert caption == "A red square, 64x64 pixels."  # the test server's vision answer
    assert scores == [pytest.approx(_cos(TEXT, caption))]  # compared with the ORIGINAL text
    assert rater.details[0]["captioned_by"] == "vision model (test-model)"
    assert rater.details[0]["compared_by"] == "embeddings (test-embed)"
    assert llm_server.embed_requests[-1]["input"] == [TEXT, caption]


def test_caption_rater_falls_back_to_interrogate_and_clip(llm_server, tiny_scorer):
    llm_server.vision = False  # a text-only model: the caption comes from the captioner
    llm = LLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0)  # no embedding model
    rater = caption_rater(llm, captioner=lambda image: "Placeholder: no captioning model", scorer=tiny_scorer)
    score = rater.score(TEXT, [RED])[0]
    assert score == pytest.approx(tiny_scorer.text_similarity(TEXT, "Placeholder: no captioning model",
                                                              long_text="chunks"))
    detail = rater.details[0]
    assert detail["captioned_by"] == "A1111 interrogate" and detail["placeholder"] is True
    assert detail["compared_by"] == f"CLIP text encoder ({TINY_MODEL})"
    assert "not a vision model" in rater.vision_error


def test_caption_rater_leaves_an_image_no_captioner_could_caption_unjudged(tiny_scorer):
    from helpers.a1111 import A1111Error

    def failing(image):
        raise A1111Error("A1111 could not caption the image (it answered '<error>').", fix="see its console")

    rater = caption_rater(None, captioner=failing, scorer=tiny_scorer)
    assert math.isnan(rater.score(TEXT, [RED])[0])
    assert rater.details[0]["caption_error"].startswith("A1111 could not caption")


def test_caption_rater_embedding_error_falls_back_to_clip_and_says_why(llm_server, tiny_scorer):
    llm = LLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0, embed_model="test-model")
    rater = caption_rater(llm, scorer=tiny_scorer)
    rater.score(TEXT, [RED])
    assert "Model is not embedding" in rater.details[0]["embed_error"]
    assert rater.details[0]["compared_by"].startswith("CLIP text encoder")


def test_clip_rater_is_the_clip_cosine(tiny_scorer):
    rater = clip_rater(tiny_scorer)
    assert rater.score(TEXT, [RED, WHITE]) == pytest.approx(tiny_scorer.similarity(TEXT, [RED, WHITE], "chunks"))
    assert rater.name == f"clip:{TINY_MODEL}/t.safetensors" and rater.info()["meaningful"] is False


def test_as_rater_wraps_a_function(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (80, 20)).save(path)
    rater = as_rater(lambda text, image: len(text) / image.width, "length per width")
    assert rater.name == "length per width" and rater.score("abcd", [path, WHITE]) == [4 / 80, 4 / 64]
    with pytest.raises(KitError, match="without calling it"):
        as_rater(0.5, "not a function")


def test_a_rater_that_gives_no_number_is_a_clear_error():
    forgot_return = as_rater(lambda text, image: None, "mine")
    with pytest.raises(KitError, match=r"The rater 'mine' gave None for image 0, not a number") as caught:
        forgot_return.score("a red fox", [WHITE])
    assert "float('nan')" in caught.value.fix
    assert as_rater(lambda text, image: "0.5", "text").score("a", [WHITE]) == [0.5]  # a number as text is fine


def test_a_dead_server_is_a_clear_error(tiny_scorer):
    from conftest import free_url
    dead = LLM(free_url() + "/v1", model="m", timeout=2, max_retries=0)
    with pytest.raises(LLMError, match="no LLM server is listening"):
        question_rater(dead).score(TEXT, [RED])

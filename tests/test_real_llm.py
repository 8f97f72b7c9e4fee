"""The kit's LLM wrapper against a real llama.cpp server (the conformance lane: ``make test-real``).

Everything else in tests/ talks to the kit's own OpenAI-compatible server (tests/llm_server.py). Here the same
calls go to llama-cpp-python's server (tests/real_llama.py) on tiny random models: the text is gibberish, so
the tests check shapes, repeatability and the errors a student sees, not content. The official ``openai``
client sends the same raw requests as a reference, so that a difference is shown to be the kit's, not the
server's.

The lane runs as tests/test_real_a1111.py says: the first run builds the server's venv (llama.cpp compiles in about 3.5
minutes; with pip's cached wheel, about 15 s), later ones start the server in about a second.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import REAL_LANE

from helpers.llm import CONTEXT_FIX, EMBED_FIX, LLM, VISION_FIX, LLMError

pytestmark = [pytest.mark.real, pytest.mark.timeout(900),
              REAL_LANE]

KEY = "sk-no-key-required"
SCHEMA = {"type": "object", "required": ["prompt", "negative_prompt"],
          "properties": {"prompt": {"type": "string", "maxLength": 80}, "negative_prompt": {"type": "string",
                                                                                            "maxLength": 40}}}


@pytest.fixture
def llm(llama):
    from real_llama import CHAT

    return LLM(llama.base_url, model=CHAT, api_key=KEY, timeout=60)


@pytest.fixture
def openai_client(llama):
    from openai import OpenAI

    return OpenAI(base_url=llama.base_url, api_key=KEY, max_retries=0, timeout=60)


def _image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (200, 30, 30))


def test_models_and_a_chat_that_repeats_at_temperature_0(llm):
    from real_llama import CHAT, CHATML, EMBED

    assert llm.models() == [CHAT, CHATML, EMBED]
    first = llm.chat("a lighthouse in a storm", system="Be brief.", temperature=0, max_tokens=20)
    assert first and first.isprintable()  # the model's output layer favours printable tokens
    assert llm.chat("a lighthouse in a storm", system="Be brief.", temperature=0, max_tokens=20) == first


def test_streaming_gives_the_same_text(llm, capsys):
    plain = llm.chat("an owl at dusk", temperature=0, max_tokens=20)
    assert llm.chat("an owl at dusk", temperature=0, max_tokens=20, stream=True) == plain
    assert capsys.readouterr().out.strip() == plain.strip()


def test_json_schema_falls_back_to_json_object(llm, openai_client):
    """llama-cpp-python refuses response_format json_schema with a 500; the kit asks again with json_object and
    the schema, which its grammar enforces (strings may hold raw control characters: read leniently)."""
    from helpers.prompts import _json_objects

    reply = llm.chat("a red fox", temperature=0, max_tokens=200, json_schema=SCHEMA, schema_name="image_prompt")
    data = _json_objects(reply, 1)[0]
    assert set(data) == {"prompt", "negative_prompt"} and all(isinstance(v, str) for v in data.values())
    assert llm._json_object  # remembered: later calls go straight to json_object
    again = llm.chat("a red fox", temperature=0, max_tokens=200, json_schema=SCHEMA, schema_name="image_prompt")
    assert again == reply
    import openai
    with pytest.raises(openai.InternalServerError) as err:  # the reference: the server's own answer
        openai_client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": "a red fox"}], max_tokens=5,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}})
    assert "json_object" in str(err.value.body)


@pytest.mark.filterwarnings("ignore:The prompt had more than")  # noise outruns 75 CLIP tokens: the kit cuts it
def test_write_image_prompt_gives_a_usable_prompt(llm):
    from helpers.prompts import write_image_prompt

    prompt = write_image_prompt("A white lighthouse stands on black rocks while a storm breaks.", llm)
    assert prompt.prompt and prompt.prompt.isprintable() and prompt.source == "llm"
    assert prompt.negative_prompt


def test_get_text_and_the_question_raters_questions(llm):
    from helpers.raters import question_rater
    from helpers.text import get_text

    text = get_text("lighthouse storm", source="auto", llm=llm, max_tokens=40, temperature=0)
    assert text.source == "llm" and text.text and text.model == llm.model
    try:
        questions = question_rater(llm).questions_for("A red fox sleeps in the snow.")
    except LLMError as err:  # gibberish may hold no question: then the kit says so, with a fix
        assert "wrote no questions" in err.message and err.fix
    else:
        assert 1 <= len(questions) <= 6 and all(isinstance(q, str) and q for q in questions)


def test_embeddings_and_the_caption_raters_embedding_route(llama):
    from real_llama import CHAT, EMBED

    from helpers.raters import caption_rater

    llm = LLM(llama.base_url, model=CHAT, api_key=KEY, embed_model=EMBED)
    vectors = llm.embed(["a red fox", "a blue car", "a red fox"])
    # The same text at another place in a batch may differ in the last float bits.
    assert [len(v) for v in vectors] == [64] * 3 and vectors[0] == pytest.approx(vectors[2], rel=1e-4)
    assert vectors[0] != pytest.approx(vectors[1], rel=1e-2)
    assert all(isinstance(x, float) and math.isfinite(x) for x in vectors[1])
    rater = caption_rater(llm, captioner=lambda image: "a red square")  # the chat model cannot caption
    [score] = rater.score("a red fox", [_image()])
    assert -1 <= score <= 1 and rater.details[0]["compared_by"] == f"embeddings ({EMBED})"
    assert "vision" in rater.vision_error and rater.details[0]["captioned_by"] == "A1111 interrogate"


def test_embeddings_of_a_model_started_without_them_name_the_fix(llama, openai_client):
    from real_llama import CHAT

    with pytest.raises(LLMError) as err:
        LLM(llama.base_url, model=CHAT, api_key=KEY, embed_model=CHAT).embed(["a fox"])
    assert err.value.status == 500 and err.value.fix == EMBED_FIX and "not an embedding model" in err.value.message
    import openai
    with pytest.raises(openai.InternalServerError, match="embedding=True"):
        openai_client.embeddings.create(model=CHAT, input=["a fox"], encoding_format="float")


def test_an_image_to_a_text_model_names_the_vision_fix(llm, openai_client):
    with pytest.raises(LLMError) as err:
        llm.describe(_image())
    assert err.value.status == 500 and err.value.fix == VISION_FIX
    assert err.value.message.startswith("The server failed on the image") and "vision model" in err.value.message
    import openai
    with pytest.raises(openai.InternalServerError, match="concatenate"):
        openai_client.chat.completions.create(model=llm.model, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "text", "text": "What is it?"}]}])


def test_ask_yes_no_and_vqa_with_logprobs(llama):
    """The ChatML formatter drops the image silently (no error to catch): the answer is the text model's, but
    the log-probabilities arrive in OpenAI's shape, and P("yes") is a float or None, never a crash."""
    from real_llama import CHAT, CHATML

    from helpers.raters import vqa_rater

    llm = LLM(llama.base_url, model=CHAT, api_key=KEY, vision_model=CHATML)
    answer, p_yes = llm.ask_yes_no(_image(), "Is it red?")
    assert answer and (p_yes is None or 0.0 <= p_yes <= 1.0)
    [score] = vqa_rater(llm).score("a red square", [_image()])
    assert math.isnan(score) or 0.0 <= score <= 1.0


def test_logprobs_arrive_in_openais_shape(llm):
    text, logprobs = llm._complete({"model": llm.model, "messages": [{"role": "user", "content": "Yes or no?"}],
                                    "max_tokens": 3, "temperature": 0, "logprobs": True, "top_logprobs": 5})
    assert text and len(logprobs.content) >= 1
    first = logprobs.content[0]
    assert isinstance(first.token, str) and first.logprob <= 0 and len(first.top_logprobs) == 5


def test_an_over_long_prompt_says_to_shorten_it_or_raise_the_context(llm, openai_client):
    from real_llama import CONTEXT

    with pytest.raises(LLMError) as err:
        llm.chat("word " * (2 * CONTEXT), max_tokens=5)
    assert err.value.status == 400 and err.value.fix == CONTEXT_FIX
    assert f"maximum context length is {CONTEXT} tokens" in err.value.message
    import openai
    with pytest.raises(openai.BadRequestError) as raw:
        openai_client.chat.completions.create(model=llm.model,
                                              messages=[{"role": "user", "content": "word " * (2 * CONTEXT)}])
    assert raw.value.body["code"] == "context_length_exceeded"


def test_a_wrong_model_name_lists_the_servers_models(llama, openai_client):
    """llama-cpp-python answers any model name with its default model and echoes the name: the kit checks the
    name against /v1/models before the first call."""
    from real_llama import CHAT

    with pytest.raises(LLMError) as err:
        LLM(llama.base_url, model="qwen2.5-7b-instruct", api_key=KEY).chat("hi", max_tokens=5)
    assert "has no model 'qwen2.5-7b-instruct' (LLM_MODEL)" in err.value.message
    assert f"Set LLM_MODEL to one the server has: {CHAT}," in err.value.fix
    raw = openai_client.chat.completions.create(model="qwen2.5-7b-instruct", max_tokens=3,
                                                messages=[{"role": "user", "content": "hi"}])
    assert raw.model == "qwen2.5-7b-instruct" and raw.choices[0].message.content  # 200: no error to translate


def test_the_openai_client_gets_the_same_chat_as_the_kit(llm, openai_client):
    messages = [{"role": "user", "content": "a quiet harbour"}]
    raw = openai_client.chat.completions.create(model=llm.model, messages=messages, max_tokens=20, temperature=0)
    assert llm.chat(messages, max_tokens=20, temperature=0) == raw.choices[0].message.content
    assert raw.choices[0].finish_reason in ("length", "stop") and raw.usage.completion_tokens <= 20
    chunks = list(openai_client.chat.completions.create(model=llm.model, messages=messages, max_tokens=20,
                                                        temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == raw.choices[0].message.content
    assert json.loads(raw.model_dump_json())["object"] == "chat.completion"

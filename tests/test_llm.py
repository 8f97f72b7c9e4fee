"""The LLM wrapper through the real openai client against a real OpenAI-compatible server.

Each error a student can meet gives an LLMError that names the cause and the fix.
"""

from __future__ import annotations

import json

import pytest
from conftest import free_port

from helpers.config import load_settings
from helpers.llm import LLM, LLMError


def test_models_and_default_model(llm):
    assert llm.models() == ["test-model", "other-model", "test-embed"]  # embedding models listed last
    assert llm.model == "test-model"  # LLM_MODEL unset: the first model the server lists


def test_the_default_model_is_not_an_embedding_model():
    from llm_server import LLMTestServer

    with LLMTestServer(models=["text-embedding-nomic-embed-text-v1.5", "qwen2.5-7b-instruct"]) as server:
        assert LLM(server.base_url, timeout=5, max_retries=0).model == "qwen2.5-7b-instruct"
        assert LLM(server.base_url, timeout=5, max_retries=0, embed_model="qwen2.5-7b-instruct").model == \
            "text-embedding-nomic-embed-text-v1.5"  # nothing else is left: the server will say what it can do


def test_chat_with_system_prompt_and_options(llm, llm_server):
    reply = llm.chat("a lighthouse in a storm", system="Be brief.", temperature=0.2, max_tokens=50)
    assert "lighthouse" in reply
    sent = llm_server.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"] == "a lighthouse in a storm"
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["model"] == "test-model"


def test_streaming_prints_as_it_arrives_and_returns_the_same_text(llm, capsys):
    plain = llm.chat("an owl at dusk", temperature=0)
    streamed = llm.chat("an owl at dusk", temperature=0, stream=True)
    assert streamed == plain
    assert capsys.readouterr().out.strip() == plain.strip()


def test_json_schema_uses_the_nested_form(llm, llm_server):
    schema = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
    data = json.loads(llm.chat("a red fox", json_schema=schema, schema_name="image_prompt"))
    assert data["prompt"]
    fmt = llm_server.requests[-1]["response_format"]
    assert fmt == {"type": "json_schema", "json_schema": {"name": "image_prompt", "schema": schema}}


def test_settings_are_read_from_the_environment(llm_server, monkeypatch):
    monkeypatch.setenv("LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("LLM_MODEL", "other-model")
    monkeypatch.setenv("LLM_API_KEY", "sk-test-123456")
    llm = LLM(max_retries=0)
    llm.chat("hello")
    assert llm_server.requests[-1]["model"] == "other-model"
    assert "sk-test" not in repr(llm) and "sk-test" not in repr(load_settings())


def test_openai_api_key_is_honoured(monkeypatch):
    monkeypatch.delenv("LLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-var")
    assert load_settings(dotenv=False).llm_api_key.reveal() == "sk-from-openai-var"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert load_settings(dotenv=False).llm_api_key.reveal() == "not-needed"  # never empty: openai refuses that


def test_available_is_a_quick_probe(llm, llm_server):
    assert llm.available()
    assert not LLM(f"http://127.0.0.1:{free_port()}/v1").available(timeout=1)
    llm_server.models = []
    assert not llm.available()


# ----- errors a student can act on ---------------------------------------------------------


def test_server_not_running_or_wrong_port():
    llm = LLM(f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "Cannot connect" in str(err.value)
    assert "Start server" in str(err.value) and "LLM_BASE_URL" in str(err.value)


def test_base_url_without_v1(llm_server):
    llm = LLM(llm_server.url, model="test-model", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert f"LLM_BASE_URL={llm_server.url}/v1" in str(err.value)


def test_ipv6_localhost_while_the_server_listens_on_ipv4(llm_server):
    port = llm_server.base_url.split(":")[2].split("/")[0]
    llm = LLM(f"http://[::1]:{port}/v1", model="test-model", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "IPv6" in str(err.value)
    assert f"LLM_BASE_URL=http://127.0.0.1:{port}/v1" in str(err.value)


def test_lm_studio_no_models_loaded(llm, llm_server):
    llm_server.mode = "no_models_loaded"
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert err.value.status == 400
    assert "no model loaded" in str(err.value) and "lms load" in str(err.value)


def test_unknown_model_lists_the_ones_the_server_has(llm_server):
    """Checked against /v1/models before the first call: llama.cpp's servers answer any name with their model."""
    llm = LLM(llm_server.base_url, model="llama-9000", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "llama-9000" in str(err.value) and "LLM_MODEL" in str(err.value)
    assert "test-model, other-model" in str(err.value)
    assert llm_server.requests == []  # no chat was sent
    llm_server.models = ["llama3.2:latest"]
    assert LLM(llm_server.base_url, model="llama3.2", max_retries=0).model == "llama3.2"  # Ollama's tag


def test_a_model_gone_after_the_check_gets_the_servers_404(llm, llm_server):
    llm.model
    llm_server.models = ["other-model"]
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert err.value.status == 404 and "other-model" in str(err.value)


def test_server_still_loading_503(llm, llm_server):
    llm.model  # resolve the model before the server starts "loading"
    llm_server.mode = "loading"
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert err.value.status == 503 and "still loading" in str(err.value)


def test_wrong_key_401_never_shows_the_key(llm_server):
    llm_server.api_key = "right-key"
    llm = LLM(llm_server.base_url, model="test-model", api_key="sk-wrong-key-987654", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert err.value.status == 401 and "LLM_API_KEY" in str(err.value)
    assert "987654" not in str(err.value)


def test_timeout(llm_server):
    llm_server.mode, llm_server.delay = "slow", 5
    llm = LLM(llm_server.base_url, model="test-model", timeout=0.5, max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert "within 0.5 s" in str(err.value) and "LLM_TIMEOUT" in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_empty_reply(llm, llm_server, stream):
    llm_server.mode = "empty"
    with pytest.raises(LLMError, match="empty reply"):
        llm.chat("hi", stream=stream)


def test_base_url_pointing_at_a_web_page(llm, llm_server):
    llm.model
    llm_server.mode = "html"
    with pytest.raises(LLMError, match="web page"):
        llm.chat("hi")
    with pytest.raises(LLMError, match="web page"):
        llm.models()


def test_bad_messages_argument(llm):
    with pytest.raises(TypeError, match="string or a list"):
        llm.chat(42)


def test_available_is_false_when_the_configured_model_is_missing(llm_server):
    assert not LLM(llm_server.base_url, model="no-such-model").available()
    assert LLM(llm_server.base_url, model="other-model").available()


# ----- vision, embeddings, log-probabilities (issue 15) ----------------------------------------------------------

def _vision_llm(llm_server, **kw):
    return LLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0, **kw)


def test_describe_sends_the_image_as_a_data_uri_and_returns_the_reply(llm_server):
    from PIL import Image
    llm = _vision_llm(llm_server, vision_model="other-model")
    caption = llm.describe(Image.new("RGB", (900, 300), "red"))
    assert "red" in caption and "512x171" in caption  # shrunk to 512 px a side before sending
    sent = llm_server.requests[-1]
    assert sent["model"] == "other-model"
    part = sent["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


def test_an_image_sent_to_a_text_only_model_names_the_fix(llm_server):
    from PIL import Image
    llm_server.vision = False
    with pytest.raises(LLMError) as err:
        _vision_llm(llm_server).describe(Image.new("RGB", (32, 32)))
    assert "not a vision model" in err.value.message and "Model does not support images" in err.value.message
    assert "Qwen2.5-VL" in err.value.fix and "LLM_VISION_MODEL" in err.value.fix


@pytest.mark.parametrize("answer, p_yes, expected", [
    ("Yes", 0.8, 0.8), ("No", 0.8, 0.2), ("yes, it does.", 0.9, 0.9), ("I cannot tell.", 0.8, None)])
def test_ask_yes_no_reads_p_yes_from_the_logprobs(llm_server, answer, p_yes, expected):
    from PIL import Image
    llm_server.reply = lambda messages, body: answer
    llm_server.yes_probability = p_yes
    text, p = _vision_llm(llm_server).ask_yes_no(Image.new("RGB", (16, 16)), "Is it red?")
    assert text == answer
    assert p == (pytest.approx(expected) if expected is not None else None)
    sent = llm_server.requests[-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5
    assert sent["messages"][0]["content"][1]["text"] == "Is it red? Please answer yes or no."


def test_ask_yes_no_without_logprobs_gives_none(llm_server):
    from PIL import Image
    llm_server.logprobs = False  # LM Studio accepts the flag and sends nothing
    assert _vision_llm(llm_server).ask_yes_no(Image.new("RGB", (16, 16)), "Is it red?") == ("Yes", None)


def test_embed_returns_one_vector_per_text_in_order(llm_server):
    import math

    from llm_server import embed_text
    vectors = _vision_llm(llm_server, embed_model="test-embed").embed(["a red fox", "Fox, a red!", "a blue car"])
    assert len(vectors) == 3 and vectors[0] == pytest.approx(embed_text("a red fox"))
    cos = [sum(a * b for a, b in zip(vectors[0], v)) for v in vectors]
    assert cos[1] == pytest.approx(1.0) and cos[2] < 0.99 and math.isclose(cos[0], 1.0, rel_tol=1e-6)
    assert llm_server.embed_requests[-1]["encoding_format"] == "float"


@pytest.mark.parametrize("mode, model, words", [
    ("ok", "test-model", "Model is not embedding"),             # LM Studio: a chat model named
    ("no_embeddings", "test-embed", "does not support embeddings")])  # llama-server without --embeddings
def test_embedding_errors_name_the_fix(llm_server, mode, model, words):
    llm_server.mode = mode
    with pytest.raises(LLMError) as err:
        _vision_llm(llm_server, embed_model=model).embed(["a fox"])
    assert "not an embedding model" in err.value.message and words in err.value.message
    assert "LLM_EMBED_MODEL" in err.value.fix


def test_embed_without_an_embedding_model_says_how_to_set_one(llm_server):
    with pytest.raises(LLMError, match="No embedding model"):
        _vision_llm(llm_server).embed(["a fox"])


# ----- what llama-cpp-python's server answers (tests/test_real_llm.py meets the real one) --------------------


def test_a_refused_json_schema_is_asked_again_as_json_object(llm, llm_server):
    llm_server.imitate = "llama-cpp-python"  # a 500 for json_schema, json_object with a "schema" taken
    schema = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
    assert json.loads(llm.chat("a red fox", json_schema=schema))["prompt"]
    formats = [sent["response_format"] for sent in llm_server.requests]
    assert [f["type"] for f in formats] == ["json_schema", "json_object"] and formats[1]["schema"] == schema
    assert json.loads(llm.chat("a grey owl", json_schema=schema))["prompt"]
    assert llm_server.requests[-1]["response_format"]["type"] == "json_object"  # remembered: one request
    assert len(llm_server.requests) == 3


def test_llama_cpp_pythons_500s_name_the_fix(llm_server):
    from PIL import Image

    from helpers.llm import EMBED_FIX, VISION_FIX
    llm_server.imitate, llm_server.vision = "llama-cpp-python", False
    with pytest.raises(LLMError) as err:
        _vision_llm(llm_server).describe(Image.new("RGB", (16, 16)))
    assert err.value.status == 500 and err.value.fix == VISION_FIX and "not a vision model" in err.value.message
    with pytest.raises(LLMError) as err:
        _vision_llm(llm_server, embed_model="test-model").embed(["a fox"])
    assert err.value.status == 500 and err.value.fix == EMBED_FIX


def test_an_over_long_request_says_to_shorten_it_or_raise_the_context(llm, llm_server):
    from helpers.llm import CONTEXT_FIX
    llm_server.context = 50
    with pytest.raises(LLMError) as err:
        llm.chat("word " * 40, max_tokens=20)
    assert err.value.status == 400 and err.value.fix == CONTEXT_FIX
    assert "maximum context length is 50 tokens" in err.value.message

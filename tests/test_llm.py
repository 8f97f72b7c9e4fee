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
    assert llm.models() == ["test-model", "other-model"]
    assert llm.model == "test-model"  # LLM_MODEL unset: the first model the server lists


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
    llm = LLM(llm_server.base_url, model="llama-9000", max_retries=0)
    with pytest.raises(LLMError) as err:
        llm.chat("hi")
    assert err.value.status == 404
    assert "llama-9000" in str(err.value)
    assert "test-model, other-model" in str(err.value)


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

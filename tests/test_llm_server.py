"""The LLM test server behaves like the real OpenAI-compatible servers, seen through the real client.

Every test goes through ``openai.OpenAI`` (3.x, httpx2) over real HTTP, except where the raw wire
format itself is the point (SSE framing, the HTML page, FastAPI's 404 body).
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from llm_server import LLMTestServer

openai = pytest.importorskip("openai", minversion="3", reason="the kit's LLM client needs openai>=3,<4")
OpenAI = openai.OpenAI

MODEL = "test-model"
USER = [{"role": "user", "content": "Write about a red fox in the snow at night"}]
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "sd_prompt", "strict": True,
    "schema": {"type": "object", "additionalProperties": False, "required": ["prompt", "negative_prompt"],
               "properties": {"prompt": {"type": "string", "maxLength": 300},
                              "negative_prompt": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def shared_server():
    with LLMTestServer(models=[MODEL]) as server:
        yield server


@pytest.fixture
def server(shared_server):
    shared_server.reset()        # each test starts from mode "ok", no key, empty logs
    return shared_server


@pytest.fixture
def client(server):
    return OpenAI(base_url=server.base_url, api_key="lm-studio", max_retries=0)


def chat(client, **kwargs):
    return client.chat.completions.create(model=kwargs.pop("model", MODEL), messages=kwargs.pop("messages", USER),
                                          **kwargs)


def test_urls_and_models_list(server, client):
    assert server.base_url == server.url + "/v1" and server.url.startswith("http://127.0.0.1:")
    assert [m.id for m in client.models.list()] == [MODEL, "test-embed"]
    server.models = []
    assert list(client.models.list()) == []


def test_plain_chat_is_a_full_deterministic_completion(client):
    first, second = chat(client), chat(client)
    text = first.choices[0].message.content
    assert text == second.choices[0].message.content
    assert "red fox" in text and text.count(".") >= 2
    assert first.object == "chat.completion" and first.model == MODEL
    assert first.choices[0].finish_reason == "stop" and first.choices[0].message.role == "assistant"
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens > 0


def test_streaming_joins_to_the_non_streaming_text(client):
    expected = chat(client).choices[0].message.content
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_sse_wire_format(server):
    body = {"model": MODEL, "messages": USER, "stream": True}
    response = requests.post(server.base_url + "/chat/completions", json=body, timeout=5)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_json_schema_nested_form_gives_parseable_json(server, client):
    answer = json.loads(chat(client, response_format=SCHEMA_FORMAT).choices[0].message.content)
    assert set(answer) == {"prompt", "negative_prompt"}
    assert "fox" in answer["prompt"] and "blurry" in answer["negative_prompt"]
    assert server.schemas == [SCHEMA_FORMAT["json_schema"]["schema"]]


def test_json_schema_flat_form_is_ignored_like_llama_cpp(server, client):
    flat = {"type": "json_schema", "schema": SCHEMA_FORMAT["json_schema"]["schema"]}
    content = chat(client, response_format=flat).choices[0].message.content
    with pytest.raises(ValueError):
        json.loads(content)
    assert server.schemas == []


@pytest.mark.parametrize("how", ["mode", "empty models list"])
def test_no_models_loaded_is_a_400_and_not_retried(server, how):
    if how == "mode":
        server.mode = "no_models_loaded"
    else:
        server.models = []
    retrying = OpenAI(base_url=server.base_url, api_key="lm-studio", max_retries=2)
    with pytest.raises(openai.BadRequestError) as info:
        chat(retrying)
    assert info.value.status_code == 400
    assert info.value.body["message"].startswith("No models loaded.")
    assert server.hits["/v1/chat/completions"] == 1


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        chat(client, model="llama-9000")
    assert "llama-9000" in info.value.body["message"]


def test_loading_is_a_503_that_the_client_retries(server):
    server.mode = "loading"
    assert requests.get(server.url + "/health", timeout=5).status_code == 503
    retrying = OpenAI(base_url=server.base_url, api_key="lm-studio", max_retries=1)
    with pytest.raises(openai.InternalServerError) as info:
        chat(retrying)
    assert info.value.status_code == 503 and info.value.body["message"] == "Loading model"
    assert server.hits["/v1/chat/completions"] == 2          # first try + one retry
    server.mode = "ok"
    assert requests.get(server.url + "/health", timeout=5).json() == {"status": "ok"}


def test_api_key(server):
    server.api_key = "sk-right-key-123456"
    wrong = OpenAI(base_url=server.base_url, api_key="sk-wrong-key-987654", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.models.list()
    assert info.value.code == "invalid_api_key"
    assert "Incorrect API key provided" in info.value.message and "sk-wrong-key-987654" not in info.value.message
    right = OpenAI(base_url=server.base_url, api_key="sk-right-key-123456", max_retries=0)
    assert chat(right).choices[0].message.content
    assert requests.get(server.url + "/health", timeout=5).status_code == 200   # public, as in llama.cpp


def test_slow_mode_times_out_and_does_not_hold_up_shutdown():
    with LLMTestServer(models=[MODEL], mode="slow", delay=5) as server:
        client = OpenAI(base_url=server.base_url, api_key="lm-studio", max_retries=0)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(client, timeout=0.5)
        assert time.monotonic() - started < 2
        server.delay = 0.2
        assert chat(client, timeout=5).choices[0].message.content
        impatient = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        server.delay = 5
        with pytest.raises(openai.APITimeoutError):
            chat(impatient, timeout=0.3)   # leaves a handler sleeping while we stop
        started = time.monotonic()
    assert time.monotonic() - started < 3


def test_base_url_without_v1_is_not_found(server):
    no_v1 = OpenAI(base_url=server.url, api_key="lm-studio", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        chat(no_v1)
    with pytest.raises(openai.NotFoundError):
        no_v1.models.list()
    assert requests.get(server.url + "/models", timeout=5).json() == {"detail": "Not Found"}
    assert server.hits["/chat/completions"] == 1 and server.requests == []


def test_empty_mode(server, client):
    server.mode = "empty"
    assert chat(client).choices[0].message.content == ""
    chunks = list(chat(client, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_not_json_mode_answers_prose_to_schema_requests(server, client):
    server.mode = "not_json"
    content = chat(client, response_format=SCHEMA_FORMAT).choices[0].message.content
    assert content.startswith("Sure!")
    with pytest.raises(ValueError):
        json.loads(content)


def test_too_long_mode(server, client):
    server.mode = "too_long"
    answer = json.loads(chat(client, response_format=SCHEMA_FORMAT).choices[0].message.content)
    assert len(answer["prompt"].split()) >= 120 and answer["prompt"].count(",") >= 30
    assert len(chat(client).choices[0].message.content.split()) >= 120


def test_html_mode(server, client):
    server.mode = "html"
    response = requests.get(server.base_url + "/models", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    # openai returns the raw text instead of a ChatCompletion when the body is not JSON.
    assert "<html>" in chat(client)


def test_reply_hook_and_max_tokens(server, client):
    server.reply = lambda messages, body: f"Echo: {messages[-1]['content']} ({body['temperature']})"
    assert chat(client, temperature=0.3).choices[0].message.content == f"Echo: {USER[0]['content']} (0.3)"
    cut = chat(client, max_tokens=3, temperature=0)
    assert cut.choices[0].message.content == "Echo: Write about" and cut.choices[0].finish_reason == "length"


def test_request_log_and_hits(server, client):
    client.models.list()
    chat(client, response_format=SCHEMA_FORMAT, temperature=0.2)
    chat(client, messages=[{"role": "system", "content": "Be brief."}, *USER])
    assert server.hits == {"/v1/models": 1, "/v1/chat/completions": 2}
    assert server.requests[0]["response_format"] == SCHEMA_FORMAT and server.requests[0]["temperature"] == 0.2
    assert server.requests[1]["messages"][0] == {"role": "system", "content": "Be brief."}

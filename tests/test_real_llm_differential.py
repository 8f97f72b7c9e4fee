"""The kit's test LLM server (tests/llm_server.py) against llama-cpp-python's: the same raw requests to both.

The kit's fast tests trust LLMTestServer to answer as real servers do. Here it runs with
``imitate="llama-cpp-python"`` and llama.cpp's context beside the real server (tests/real_llama.py), and each
test sends both the same request and compares status codes, content types, the JSON's keys and value types
(its *shape*: the texts differ, since one is noise and the other made up) and error bodies. The differences
that remain are asserted as they are, so a change on either side shows; the README lists each with its reason
("Differences between the test LLM server and llama.cpp's").

Runs in the real lane, like tests/test_real_llm.py.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import REAL_LANE

pytestmark = [pytest.mark.real, pytest.mark.timeout(900),
              REAL_LANE]

USER = [{"role": "user", "content": "a red fox in snow"}]
SCHEMA = {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string", "maxLength": 60}}}
IMAGE = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                              "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1Pe"
                                                                              "AAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"}},
                                      {"type": "text", "text": "Is it red?"}]}]


@pytest.fixture(scope="module")
def servers(llama):
    """(real, imitation): llama-cpp-python's server and the kit's, with the same models and context."""
    from llm_server import LLMTestServer
    from real_llama import CHAT, CHATML, CONTEXT, EMBED

    fake = LLMTestServer([CHAT, CHATML], embedding_models=[EMBED], vision=False, imitate="llama-cpp-python",
                         context=CONTEXT).start()
    yield llama, fake
    fake.stop()


def both(servers, method: str, path: str, **kwargs):
    """The same request to each server: (real answer, imitation's answer), as ``requests`` responses."""
    import requests

    return tuple(requests.request(method, server.base_url + path, timeout=60, **kwargs) for server in servers)


def shape(value):
    """The keys and value types of a JSON value, not its contents (a list by its first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def chat(**fields) -> dict:
    from real_llama import CHAT

    return {"model": CHAT, "messages": USER, "max_tokens": 10, "temperature": 0, **fields}


def test_models_list(servers):
    real, fake = both(servers, "GET", "/models")
    assert real.status_code == fake.status_code == 200
    assert [m["id"] for m in real.json()["data"]] == [m["id"] for m in fake.json()["data"]]  # embedding ones too
    real_keys, fake_keys = set(real.json()["data"][0]), set(fake.json()["data"][0])
    assert real_keys - fake_keys == {"permissions"} and fake_keys - real_keys == {"created"}  # the kit reads "id"


def test_chat_completion(servers):
    real, fake = both(servers, "POST", "/chat/completions", json=chat())
    assert real.status_code == fake.status_code == 200
    assert shape(real.json()) == shape(fake.json())
    assert real.json()["object"] == fake.json()["object"] == "chat.completion"


def _events(response) -> list:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_streaming_chunks(servers):
    real, fake = both(servers, "POST", "/chat/completions", json=chat(stream=True), stream=True)
    assert real.status_code == fake.status_code == 200
    assert real.headers["content-type"].startswith("text/event-stream")
    assert fake.headers["content-type"].startswith("text/event-stream")
    real_events, fake_events = _events(real), _events(fake)
    assert real_events[-1] == fake_events[-1] == "[DONE]"
    # The first chunk names the role; llama-cpp-python's has no "content" there, OpenAI's and the imitation's
    # an empty one (the kit skips chunks without content either way).
    assert real_events[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert fake_events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert shape(real_events[1]) == shape(fake_events[1])  # a content chunk
    assert real_events[-2]["choices"][0]["finish_reason"] and fake_events[-2]["choices"][0]["finish_reason"]


def test_json_object_with_a_schema(servers):
    fmt = {"type": "json_object", "schema": SCHEMA}
    for answer in both(servers, "POST", "/chat/completions", json=chat(max_tokens=60, response_format=fmt)):
        assert answer.status_code == 200
        # strict=False: llama.cpp's grammar lets raw control characters into strings (the kit reads them so)
        data = json.loads(answer.json()["choices"][0]["message"]["content"], strict=False)
        assert set(data) == {"prompt"} and isinstance(data["prompt"], str)


def _error_of(answer) -> dict:
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_json_schema_is_refused_with_the_same_500(servers):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    real, fake = both(servers, "POST", "/chat/completions", json=chat(response_format=fmt))
    assert real.status_code == fake.status_code == 500
    real_error, fake_error = _error_of(real), _error_of(fake)
    assert real_error["type"] == fake_error["type"] == "internal_server_error"
    # The real message goes on with a traceback of the server's own files; the imitation keeps the first lines.
    assert real_error["message"].startswith(fake_error["message"])


def test_logprobs(servers):
    real, fake = both(servers, "POST", "/chat/completions", json=chat(max_tokens=3, logprobs=True, top_logprobs=5))
    assert real.status_code == fake.status_code == 200
    real_first, fake_first = (a.json()["choices"][0]["logprobs"]["content"][0] for a in (real, fake))
    assert set(real_first) == set(fake_first) == {"token", "logprob", "bytes", "top_logprobs"}
    assert real_first["bytes"] is None and isinstance(fake_first["bytes"], list)  # the kit reads "token" only
    assert len(real_first["top_logprobs"]) == len(fake_first["top_logprobs"]) == 5


def test_embeddings(servers):
    from llm_server import EMBED_DIM
    from real_llama import EMBED

    real, fake = both(servers, "POST", "/embeddings",
                      json={"model": EMBED, "input": ["a red fox", "a car"], "encoding_format": "float"})
    assert real.status_code == fake.status_code == 200
    assert shape(real.json()) == shape(fake.json())
    vectors = [[item["embedding"] for item in answer.json()["data"]] for answer in (real, fake)]
    assert [len(v) for v in vectors[0]] == [len(v) for v in vectors[1]] == [EMBED_DIM] * 2
    norms = [math.hypot(*v[0]) for v in vectors]
    assert abs(norms[0] - 1) > 0.1 and norms[1] == pytest.approx(1.0)  # llama-cpp-python does not normalise


@pytest.mark.parametrize("path, body", [
    ("/embeddings", {"model": "kit-tiny-chat", "input": ["a fox"]}),          # a model started without them
    ("/chat/completions", {"model": "kit-tiny-chat", "messages": IMAGE, "max_tokens": 3}),  # no vision
], ids=["embeddings-of-a-chat-model", "image-to-a-text-model"])
def test_the_same_500s(servers, path, body):
    real, fake = both(servers, "POST", path, json=body)
    assert real.status_code == fake.status_code == 500
    assert _error_of(real) == _error_of(fake)


def test_an_over_long_prompt(servers):
    from real_llama import CONTEXT

    real, fake = both(servers, "POST", "/chat/completions",
                      json=chat(messages=[{"role": "user", "content": "word " * (2 * CONTEXT)}]))
    assert real.status_code == fake.status_code == 400
    real_error, fake_error = _error_of(real), _error_of(fake)
    assert [real_error[k] for k in ("type", "param", "code")] == [fake_error[k] for k in ("type", "param", "code")]
    prefix = f"This model's maximum context length is {CONTEXT} tokens. However, you requested "
    assert real_error["message"].startswith(prefix) and fake_error["message"].startswith(prefix)  # token counts differ


def test_an_unknown_model_name_is_answered_and_echoed(servers):
    real, fake = both(servers, "POST", "/chat/completions", json=chat(model="no-such-model"))
    assert real.status_code == fake.status_code == 200
    assert real.json()["model"] == fake.json()["model"] == "no-such-model"


def test_remaining_differences_the_kit_never_meets(servers):
    """Requests the kit never sends (the openai client writes the JSON and always sends messages; the kit never
    asks for one model's details): the imitation answers as OpenAI does, not as llama-cpp-python."""
    real, fake = both(servers, "POST", "/chat/completions", data="{not json",
                      headers={"content-type": "application/json"})
    assert (real.status_code, real.text) == (500, "Internal Server Error") and fake.status_code == 400
    real, fake = both(servers, "POST", "/chat/completions", json={"model": "kit-tiny-chat", "max_tokens": 3})
    assert real.status_code == 200 and fake.status_code == 400  # llama-cpp-python: no messages is an empty chat
    real, fake = both(servers, "GET", "/models/kit-tiny-chat")
    assert (real.status_code, real.json()) == (404, {"detail": "Not Found"}) and fake.status_code == 200

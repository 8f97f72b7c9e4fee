"""Shared fixtures: the kit's A1111-compatible server on free ports of 127.0.0.1."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may wait on a model hub: there is none on CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

AUTH = ("student", "s3cret-pass")


def _serve(**kwargs):
    from helpers.sdserver import serve_in_thread

    # KIT_TEST_ENGINE=diffusers KIT_TEST_MODEL=<diffusers folder> runs the shared server fixtures on the
    # diffusers engine (e.g. the tiny model of tests/tiny_sd.py); the default is the preview engine.
    engine = os.environ.get("KIT_TEST_ENGINE", "preview")
    if engine == "diffusers":
        kwargs.update(model=os.environ.get("KIT_TEST_MODEL"), decoder=os.environ.get("KIT_TEST_DECODER", "auto"))
    return serve_in_thread(host="127.0.0.1", port=0, engine=engine, **kwargs)


@pytest.fixture(scope="session")
def sd_server():
    """The kit's server without auth, no step delay."""
    server = _serve()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sd_server_auth():
    """The kit's server started with --api-auth student:s3cret-pass."""
    server = _serve(api_auth=f"{AUTH[0]}:{AUTH[1]}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slow_server():
    """The kit's server with 0.05 s per step, for progress and interrupt tests."""
    server = _serve(step_delay=0.05)
    yield server
    server.stop()


@pytest.fixture(params=["no-auth", "api-auth"])
def client(request):
    """An A1111Client against the kit's server, once without and once with --api-auth."""
    from helpers.a1111 import A1111Client

    if request.param == "no-auth":
        server = request.getfixturevalue("sd_server")
        return A1111Client(server.url, auth="")
    server = request.getfixturevalue("sd_server_auth")
    return A1111Client(server.url, auth=AUTH)


@pytest.fixture(scope="session")
def _llm_server_session():
    from llm_server import LLMTestServer

    server = LLMTestServer(models=["test-model", "other-model"]).start()
    yield server
    server.stop()


@pytest.fixture
def llm_server(_llm_server_session):
    """The OpenAI-compatible test server (tests/llm_server.py), reset to "ok" for each test."""
    _llm_server_session.reset()
    return _llm_server_session


@pytest.fixture
def llm(llm_server):
    """An LLM wrapper pointed at the test server, without retries (so failures are quick)."""
    from helpers.llm import LLM

    return LLM(llm_server.base_url, api_key="lm-studio", timeout=10, max_retries=0)

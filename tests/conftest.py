"""Shared fixtures: the kit's A1111-compatible server on free ports of 127.0.0.1, and an LLM server.

The A1111 protocol tests (tests/test_client.py) run against every engine installed here: the
preview engine always, and the diffusers engine on a tiny random-weight model (tests/tiny_sd.py)
when the ``diffusers`` extra is installed, as it is in CI.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest

# Nothing in the tests may wait on a model hub: there is none on CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# When no A1111 answers, the kit's server starts with the preview engine, even on a machine that
# has sd-turbo downloaded (SD_ENGINE=auto would take it); tests that want "auto" set it themselves.
os.environ["SD_ENGINE"] = "preview"

AUTH = ("student", "s3cret-pass")
HAS_DIFFUSERS = all(importlib.util.find_spec(name) for name in ("diffusers", "transformers"))
ENGINES = ["preview"] + (["diffusers"] if HAS_DIFFUSERS else [])


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens: the OS picks a free one, and it is released again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_url() -> str:
    """``http://127.0.0.1:<free port>``: a local address where no server answers."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Two tiny SD models (different random weights) and a tiny TAESD decoder, saved to folders
    once per test session: ``{"a": folder, "b": folder, "taesd": folder}``."""
    pytest.importorskip("diffusers")
    from tiny_sd import build_tiny_sd, build_tiny_taesd

    root = tmp_path_factory.mktemp("tiny-models")
    return {"a": build_tiny_sd(root / "tiny-sd"), "b": build_tiny_sd(root / "tiny-sd-b", seed=1),
            "taesd": build_tiny_taesd(root / "tiny-taesd")}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: tiny models run fastest so, and a busy 2-core CI machine
    slows down a lot with two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """``servers(engine, auth=False, step_delay=0.0)``: the kit's server with that engine, started
    on first use and shared by the whole session (``auth=True`` turns on --api-auth student:s3cret-pass;
    a string is used as the --api-auth text).
    The diffusers engine serves tiny_sd's model with its tiny decoder."""
    from sdserver import serve_in_thread

    started = {}
    models = {}

    def get(engine: str = "preview", auth: bool | str = False, step_delay: float = 0.0):
        key = (engine, auth, step_delay)
        if key not in started:
            options = {}
            if engine == "diffusers":
                if not models:  # the same folders as the tiny_models fixture would build
                    from tiny_sd import build_tiny_sd, build_tiny_taesd

                    root = tmp_path_factory.mktemp("served-tiny-model")
                    models.update(a=build_tiny_sd(root / "tiny-sd"), taesd=build_tiny_taesd(root / "tiny-taesd"))
                options = {"model": str(models["a"]), "decoder": str(models["taesd"])}
            started[key] = serve_in_thread(host="127.0.0.1", port=0, engine=engine, step_delay=step_delay,
                                           api_auth=auth if isinstance(auth, str) else
                                           f"{AUTH[0]}:{AUTH[1]}" if auth else None, **options)
        return started[key]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(scope="session")
def sd_server(servers):
    """The kit's server (preview engine) without auth, no step delay."""
    return servers("preview")


@pytest.fixture(scope="session")
def sd_server_auth(servers):
    """The kit's server (preview engine) started with --api-auth student:s3cret-pass."""
    return servers("preview", auth=True)


@pytest.fixture(scope="session")
def slow_server(servers):
    """The kit's server (preview engine) with 0.05 s per step, for progress and interrupt tests."""
    return servers("preview", step_delay=0.05)


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

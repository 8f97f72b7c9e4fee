"""A real llama.cpp server (llama-cpp-python 0.3.36) for the conformance lane: its environment, tiny models, a server.

Everything else in tests/ talks to the kit's own OpenAI-compatible server (tests/llm_server.py), which imitates
what LM Studio, Ollama and llama.cpp answer as far as their documents and bug reports tell. Here the kit meets
llama.cpp itself, through llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``):

* the environment (:func:`llama_env`): a venv with ``llama-cpp-python[server]`` (an sdist that compiles
  llama.cpp: minutes the first time, then pip's cached wheel installs in seconds) and ``gguf``, built once in
  ``KIT_REAL_CACHE`` (default ``~/.cache/kit-real``) with a stamp of its requirements;
* two tiny random models (:func:`write_models`), written by tests/llama_models.py with ``gguf.GGUFWriter`` in
  that venv (the kit's venv does without gguf): a chat model with a ChatML template, and an embedding model
  that pools by the mean; seeded, and cached beside the venv;
* the server (:func:`start_llama`): one process serving both models from a ``--config_file`` on a free port
  of 127.0.0.1 (it loads one model at a time and swaps on demand; at this size a swap takes milliseconds),
  stopped by its own process id. Aliases: ``kit-tiny-chat`` (the model's own Jinja template; an image in a
  message makes it fail with a 500), ``kit-tiny-chatml`` (the built-in ChatML formatter, which drops images
  silently) and ``kit-tiny-embed`` (embeddings on), each with a context of 2048 tokens.

    >>> server = start_llama(tmp_path)        # doctest: +SKIP
    >>> server.base_url                       # doctest: +SKIP
    'http://127.0.0.1:40123/v1'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from real_a1111 import stop_process

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KIT_REAL_CACHE", Path.home() / ".cache" / "kit-real"))
REQUIREMENTS = ["llama-cpp-python[server]==0.3.36", "gguf==0.19.0"]
CHAT, CHATML, EMBED = "kit-tiny-chat", "kit-tiny-chatml", "kit-tiny-embed"
CONTEXT = 2048  # the kit's prompt-writing request needs about 1,200 tokens of this byte-level tokenizer


def llama_env() -> Path:
    """The python of the llama venv, built when missing or when its requirements changed (compiling llama.cpp
    takes about 3.5 minutes on 2 cores; with pip's cached wheel, seconds)."""
    venv = CACHE / "llama-venv"
    stamp = venv / "kit-stamp.json"
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()
    python = venv / "bin" / "python"
    if stamp.is_file() and json.loads(stamp.read_text()).get("requirements") == digest and python.is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
                   check=True)
    stamp.write_text(json.dumps({"requirements": digest}))
    return python


def write_models(python: Path) -> Path:
    """The folder holding ``kit-tiny-chat.gguf`` and ``kit-tiny-embed.gguf``, written once per version of the
    script (its digest names the folder, so a changed script writes new models)."""
    script = HERE / "llama_models.py"
    folder = CACHE / "llama-models" / hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    if not all((folder / f"{name}.gguf").is_file() for name in (CHAT, EMBED)):
        subprocess.run([str(python), str(script), str(folder)], check=True)
    return folder


@dataclass
class LlamaServer:
    base_url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_process(self.process, grace=10)  # uvicorn shuts down cleanly on SIGTERM


def server_config(models: Path, port: int) -> dict:
    """llama_cpp.server's ``--config_file``: the server's settings and one entry per model alias."""
    common = {"n_ctx": CONTEXT, "n_threads": 1, "n_batch": CONTEXT, "verbose": False}
    return {"host": "127.0.0.1", "port": port, "models": [
        {"model": str(models / f"{CHAT}.gguf"), "model_alias": CHAT, **common},
        {"model": str(models / f"{CHAT}.gguf"), "model_alias": CHATML, "chat_format": "chatml", **common},
        {"model": str(models / f"{EMBED}.gguf"), "model_alias": EMBED, "embedding": True, **common}]}


def start_llama(work: Path, timeout: float = 60) -> LlamaServer:
    """llama-cpp-python's server on a free port of 127.0.0.1 with the tiny models; returns once ``GET /v1/models``
    answers (RuntimeError with the end of its log when it does not)."""
    python = llama_env()
    models = write_models(python)
    work.mkdir(parents=True, exist_ok=True)
    config = work / "llama-config.json"
    from conftest import free_port

    port = free_port()
    config.write_text(json.dumps(server_config(models, port), indent=1))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    log = work / "llama.log"
    with open(log, "wb") as out:  # the server's own process (no shell), so stop() ends the server itself
        process = subprocess.Popen([str(python), "-m", "llama_cpp.server", "--config_file", str(config)],
                                   cwd=work, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as answer:
                if answer.status == 200:
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    server.stop()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"llama_cpp.server did not answer on {server.base_url} within {timeout:g} s:\n{tail}")

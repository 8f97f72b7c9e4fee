"""Shared fixtures: the kit's A1111-compatible server on free ports of 127.0.0.1, and an LLM server.

The A1111 protocol tests (tests/test_client.py) run against every engine installed here: the
preview engine always, and the diffusers engine on a tiny random-weight model (tests/tiny_sd.py)
when the ``diffusers`` extra is installed, as it is in CI.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import signal
import socket
import struct
import zlib

import pytest

# Nothing in the tests may wait on a model hub: there is none on CI machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# When no A1111 answers, the kit's server starts with the preview engine, even on a machine that
# has sd-turbo downloaded (SD_ENGINE=auto would take it); tests that want "auto" set it themselves.
os.environ["SD_ENGINE"] = "preview"

# A script run with the llama venv's python (tests/real_llama.py): it imports gguf, which the kit's venv lacks,
# so pytest's --doctest-modules must not import it.
collect_ignore = ["llama_models.py"]

AUTH = ("student", "s3cret-pass")
HAS_DIFFUSERS = all(importlib.util.find_spec(name) for name in ("diffusers", "transformers"))
try:  # the diffusers engine's OpenVINO backend (the openvino extra; CI installs it)
    HAS_OPENVINO = HAS_DIFFUSERS and all(importlib.util.find_spec(name) for name in ("openvino", "optimum.intel"))
except ModuleNotFoundError:
    HAS_OPENVINO = False
# "openvino": the diffusers engine with --backend openvino, on tiny_sd's model converted (ov_models).
ENGINES = ["preview"] + (["diffusers"] if HAS_DIFFUSERS else []) + (["openvino"] if HAS_OPENVINO else [])


# The test lanes (`make test-fast` leaves these markers out; `make test` runs everything). Marked here, in one
# place, where a whole file is one kind or a fixture tells; tests that start the kit's programs as processes carry
# @pytest.mark.subprocess themselves.
MODULE_LANES = {
    "test_notebooks.py": "notebook", "test_student.py": "notebook", "test_browser.py": "browser",
    "test_grading.py": "grading", "test_diffusers_engine.py": "diffusers", "test_hires.py": "diffusers",
    "test_openvino.py": "diffusers", "test_single_file.py": "diffusers", "test_dtypes.py": "diffusers",
}
FIXTURE_LANES = {"tiny_models": "diffusers", "ov_models": "diffusers"}
MODEL_ENGINES = {"diffusers", "openvino"}  # a test parametrized with one of these runs a model


def _param_values(item) -> set[str]:
    """The text values a test is parametrized with (tuples opened: the client fixture's (engine, auth))."""
    values = set()
    for value in getattr(getattr(item, "callspec", None), "params", {}).values():
        values.update(v for v in (value if isinstance(value, (tuple, list)) else [value]) if isinstance(v, str))
    return values


def pytest_collection_modifyitems(config, items):
    for item in items:
        lanes = {MODULE_LANES.get(item.path.name)} | {FIXTURE_LANES.get(name) for name in item.fixturenames}
        if _param_values(item) & MODEL_ENGINES:
            lanes.add("diffusers")
        for lane in sorted(lanes - {None}):
            item.add_marker(getattr(pytest.mark, lane))


# --- the real lane: the real AUTOMATIC1111 and llama.cpp (tests/real_a1111.py, tests/real_llama.py) ---------


def real_lane_skip_reason() -> str | None:
    """Why the ``real`` lane does not run here, or None when it does. ``KIT_REAL=1`` runs it (CI sets it, so
    a missing A1111 fails there instead of skipping), ``KIT_REAL=0`` leaves it out, and unset it runs when its
    input is here: A1111's source in ``A1111_DIR`` or the tarball in ``../shared/a1111/``. llama.cpp comes
    from PyPI, which the set-up reaches anyway."""
    wanted = os.environ.get("KIT_REAL", "")
    if wanted == "1":
        return None
    if wanted == "0":
        return "KIT_REAL=0 leaves out the real lane"
    from real_a1111 import SHARED

    if os.environ.get("A1111_DIR") or SHARED.is_file():
        return None
    return f"no A1111 source: set A1111_DIR, or put its tarball at {SHARED} (make test-real sets KIT_REAL=1)"


REAL_LANE = pytest.mark.skipif(real_lane_skip_reason() is not None, reason=str(real_lane_skip_reason()))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """llama.cpp's own OpenAI-compatible server (tests/real_llama.py) with the tiny models, one per module."""
    from real_llama import start_llama

    server = start_llama(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens: the OS picks a free one, and it is released again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_url() -> str:
    """``http://127.0.0.1:<free port>``: a local address where no server answers."""
    return f"http://127.0.0.1:{free_port()}"


# --- txt2img over HTTP, and comparing the images ---------------------------------------------------


def txt2img_reply(server, payload: dict) -> dict:
    """POST ``payload`` to /sdapi/v1/txt2img of a server (a ServerHandle or its URL); the reply must be a 200."""
    import requests

    url = server if isinstance(server, str) else server.url
    reply = requests.post(f"{url}/sdapi/v1/txt2img", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def decode_b64(encoded: str):
    """A base64 image from a reply, decoded (with the plain PIL calls, not the kit's own decoder)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def pixel_array(image):
    """The RGB pixels of a PIL image or a base64 image, as int16 (so that differences may be negative)."""
    import numpy as np

    image = decode_b64(image) if isinstance(image, str) else image
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def same_pixels(a, b, tolerance: int = 1) -> bool:
    """Equal images (PIL, base64 or pixel arrays), give or take ``tolerance`` in uint8 (0: identical): a
    real model's float maths may round differently in a batch than alone (A1111 itself guarantees no more)."""
    a, b = (image if hasattr(image, "shape") else pixel_array(image) for image in (a, b))
    return a.shape == b.shape and int(abs(a - b).max()) <= tolerance


# --- images as a server sends them, good and hostile --------------------------------------------------


def png_b64(image) -> str:
    """Base64 of a PIL image as a PNG, as A1111 sends images."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that *declares* width x height RGBA pixels but holds almost no data.

    A reader that decodes before it checks the size fails on the missing data (or, with a real
    file, allocates width*height*4 bytes); one that reads the declared size first refuses it.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def bomb_png_b64(size: int = 20000) -> str:
    """A real PNG of ``size`` x ``size`` black 1-bit pixels: about 60 KB that would decode to 400 MB (at 20000)."""
    row = b"\x00" * (1 + (size + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(row) for _ in range(size)) + packer.flush()
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
           + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Two tiny SD models (different random weights) and a tiny TAESD decoder, saved to folders
    once per test session: ``{"a": folder, "b": folder, "taesd": folder}``."""
    pytest.importorskip("diffusers")
    from tiny_sd import build_tiny_sd, build_tiny_taesd

    root = tmp_path_factory.mktemp("tiny-models")
    return {"a": build_tiny_sd(root / "tiny-sd"), "b": build_tiny_sd(root / "tiny-sd-b", seed=1),
            "taesd": build_tiny_taesd(root / "tiny-taesd")}


@pytest.fixture(scope="session")
def ov_models(tiny_models, tmp_path_factory):
    """tiny_models' model "a" converted to OpenVINO (float32), once per session: ``{"a": folder, "taesd": ...}``."""
    pytest.importorskip("optimum.intel", reason="the openvino extra is not installed (pip install -e "
                                                "'.[diffusers,openvino]'; CI installs it)")
    from sdserver.engines.openvino_backend import convert

    folder = convert(str(tiny_models["a"]), out=tmp_path_factory.mktemp("tiny-openvino") / "tiny-sd-ov")
    return {"a": folder, "taesd": tiny_models["taesd"]}


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
def servers(tmp_path_factory, request):
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
            if engine == "openvino":  # the diffusers engine's OpenVINO backend (see ov_models)
                converted = request.getfixturevalue("ov_models")
                engine, options = "diffusers", {"model": str(converted["a"]), "decoder": str(converted["taesd"]),
                                                "backend": "openvino"}
            elif engine == "diffusers":
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


@pytest.fixture
def ctrl_c_works():
    """Python's own Ctrl-C handler for the test: a process started in the background by a non-interactive
    shell (nohup ... &) inherits SIGINT as ignored, and then _thread.interrupt_main() does nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)

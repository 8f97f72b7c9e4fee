"""The kit's own AUTOMATIC1111-compatible server: ``python -m sdserver``.

It answers the same ``/sdapi/v1/*`` requests as A1111 started with ``--api`` (txt2img, progress,
interrupt, options, models, samplers, png-info, ...), so notebooks can be written, run and
tested without a GPU and then pointed at a real A1111 unchanged. Its ``preview`` engine draws
clearly labelled placeholder images; ``engines/base.py`` shows how a real engine plugs in.

Package layout (each file reads in one sitting):

    __main__.py   command line: python -m sdserver --port 7860
    autostart.py  the engine and the start when helpers.backends.connect_a1111() finds no A1111
    app.py        FastAPI app: A1111's error bodies, X-Process-Time, HTTP Basic auth, body size limit
    limits.py     what one request may cost (images, pixels, steps, prompt length), valid text
    routes.py     the /sdapi/v1/* endpoints
    generation.py txt2img: seeds, sampler, infotext, info, batches, interrupt/skip
    models.py     request and response models (A1111 1.10's fields and defaults)
    catalog.py    samplers, schedulers, upscalers, default options
    options.py    GET/POST /options and override_settings
    state.py      job state behind GET /progress
    images.py     base64 PNG in and out (client images: size checked before decoding, one at a time)
    engines/      base.py (the Engine interface), preview.py (placeholders), diffusers_engine.py (real images)

Example, in a notebook or a test:
    >>> import requests
    >>> with serve_in_thread() as server:                                # doctest: +SKIP
    ...     reply = requests.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 4})
    ...     reply.json()["info"][:40]
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

__all__ = ["create_app", "serve_in_thread", "ServerHandle"]


def create_app(engine: str = "preview", api_auth: Any = None, step_delay: float = 0.0, limits=None,
               webui: bool = True, lora_dir: Optional[str] = None, **kwargs):
    """Build the server's FastAPI app.

    ``api_auth`` is A1111's ``--api-auth`` text (``"user:pass,user2:pass2"``) or a dict
    ``{user: password}``; None leaves the API open. ``step_delay`` is the time the preview
    engine spends on each sampling step (seconds, 0 to 10), so that progress can be watched.
    ``limits`` is a ``limits.Limits`` (what one request may cost); None: the defaults. ``webui=False``
    serves the API alone, as A1111's ``--nowebui`` (``/`` then redirects to ``/docs``). ``lora_dir``
    is the folder of LoRA files for ``<lora:name:weight>`` (A1111's ``--lora-dir``; None: the kit's ``data/loras``).

    Other keyword arguments go to the engine, e.g. ``create_app(engine="diffusers", model="/path/to/folder",
    decoder="tiny")``; ``engine`` may also be a ready ``Engine`` instance.

    >>> app = create_app(step_delay=0.1)
    >>> app.title
    'Course kit: A1111-compatible server'
    """
    from .app import build_app, check_step_delay  # FastAPI is imported only when a server is built

    step_delay = check_step_delay(step_delay)  # before a slow engine is loaded
    cmd_flags = kwargs.pop("cmd_flags", None)
    if kwargs:  # engine options (model, decoder, dtype, device, ...): build the engine here
        from .engines import get_engine

        engine = get_engine(engine, step_delay=step_delay, **kwargs)
    return build_app(engine=engine, api_auth=api_auth, step_delay=step_delay, cmd_flags=cmd_flags, limits=limits,
                     webui=webui, lora_dir=lora_dir)


class ServerHandle:
    """A server running in a background thread: ``.url``, ``.port``, ``.app``, ``.stop()``.

    Use it as a context manager so that it stops even when a test fails.
    """

    def __init__(self, server, thread: threading.Thread, host: str, port: int, app) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.app = app
        self.url = f"http://{host}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish and wait for the thread (a running generation is interrupted)."""
        api = getattr(self.app.state, "api", None)
        if api is not None:
            api.state.interrupt()
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle(url={self.url!r})"


def serve_in_thread(host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                    ready_timeout: float = 20.0, **app_kwargs) -> ServerHandle:
    """Start the server in a background thread and return once it answers HTTP.

    ``port=0`` picks a free port (see ``.port``/``.url``); other keyword arguments go to
    :func:`create_app` (``engine``, ``api_auth``, ``step_delay``, and engine options such as ``model``).

    >>> with serve_in_thread(step_delay=0.05) as server:                 # doctest: +SKIP
    ...     print(server.url)
    http://127.0.0.1:54321
    """
    import urllib.request

    import uvicorn

    app = create_app(**app_kwargs)
    # Bind the socket ourselves: with port 0 the OS picks a free port and we know which one
    # before uvicorn starts (no race with another process grabbing it).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Send small writes at once (uvicorn writes headers and body separately): without it, every answer on a
    # kept-alive connection waited for the client's delayed ACK, 40 ms a request on Linux. uvicorn sets this
    # on the sockets it makes itself, not on one handed to it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"sdserver-{port}")
    thread.start()
    handle = ServerHandle(server, thread, host, port, app)

    deadline = time.monotonic() + ready_timeout
    last_error: Optional[Exception] = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the server thread on {handle.url} stopped during start-up")
        try:
            # /openapi.json is open even with --api-auth, so it works as a readiness probe.
            with urllib.request.urlopen(f"{handle.url}/openapi.json", timeout=2):
                return handle
        except OSError as error:
            last_error = error
            time.sleep(0.05)
    handle.stop()
    raise RuntimeError(f"the server on {handle.url} did not answer within {ready_timeout} s: {last_error}")

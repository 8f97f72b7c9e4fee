"""The web UI at ``/``: a static page (HTML, CSS, plain JavaScript in ``webui/``) that calls ``/sdapi/v1/*``.

It does what A1111's txt2img tab does for the course's first tasks (prompt, sampler, steps, CFG, size,
seed, batch, Generate, progress with a live preview, Interrupt, a gallery with each image's infotext,
the model picker). The page is only a client of the server's own API: every action it takes, a
notebook can take with ``requests``, and the browser's network tab shows the requests and answers.

No build step, no Node, no CDN: the three files are served as they are, so the page works offline.
The page and its files are public, like A1111's UI page with ``--api-auth``; they hold no data. The API
stays protected: with ``--api-auth`` the page asks for a user and password once and sends them as
HTTP Basic auth on its requests (kept in the page's memory only).

Example:
    >>> from fastapi import FastAPI
    >>> app = FastAPI()
    >>> add_webui(app)
    >>> [route.path for route in app.routes][-2:]
    ['/', '/webui/{name}']
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

WEBUI_DIR = Path(__file__).with_name("webui")
# The only files served (no directory listing, no path from the URL reaches the disk).
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
# Check for a newer file on each load (the ETag-less page is small): an updated kit shows its new page at once.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def page_file(name: str) -> Response:
    """One of the page's files, or a 404 for any other name."""
    if name not in FILES:
        raise HTTPException(status_code=404, detail=f"no such file of the web UI: {name!r}")
    return Response((WEBUI_DIR / name).read_bytes(), media_type=FILES[name], headers=HEADERS)


def add_webui(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files at ``/webui/<name>``, outside the API (no auth, not in /docs)."""

    @app.get("/", include_in_schema=False)
    def root():
        return page_file("index.html")

    @app.get("/webui/{name}", include_in_schema=False)
    def webui_file(name: str):
        return page_file(name)

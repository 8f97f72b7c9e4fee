"""A tiny HTTP server on 127.0.0.1 that answers what a test tells it to: for fault tests.

It stands in for a misconfigured or failing A1111 (API not enabled, wrong password, a 500, a
slow answer, a broken image), which the kit's own server is too well-behaved to produce.

``routes[(method, path)] = (status, body, delay_seconds)`` where body is

* a dict or list: sent as JSON;
* a str: sent as text/html;
* ``RawReply(b"...")``: these bytes are written to the socket as they are (status line and
  headers included), then the connection is closed: for replies that break HTTP itself, such
  as a body shorter than its Content-Length or broken chunked encoding;
* a list of any of these wrapped in ``Sequence([...])``: one per request, the last one repeated.

Example:
    >>> with FaultServer() as server:                                       # doctest: +SKIP
    ...     server.routes[("GET", "/sdapi/v1/progress")] = (200, "not json", 0)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RawReply:
    """Bytes written verbatim as the whole HTTP reply; the connection is closed afterwards."""

    data: bytes


class Sequence:
    """Answers in turn: the first request gets ``bodies[0]``, ..., later ones the last body."""

    def __init__(self, bodies: list):
        self.bodies = list(bodies)
        self.count = 0
        self._lock = threading.Lock()

    def next(self):
        with self._lock:
            body = self.bodies[min(self.count, len(self.bodies) - 1)]
            self.count += 1
            return body


def truncated_json_reply(body: object, missing: int = 100) -> RawReply:
    """A 200 JSON reply whose Content-Length promises ``missing`` bytes more than are sent."""
    data = json.dumps(body).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data) + missing}\r\n"
            "Connection: close\r\n\r\n").encode()
    return RawReply(head + data)


class FaultServer:
    """``routes[(method, path)] = (status, body, delay_seconds)``; body a dict/list (sent as JSON) or str."""

    def __init__(self):
        self.routes: dict[tuple[str, str], tuple[int, object, float]] = {}
        self.requests: list[tuple[str, str, dict | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = None
                path = self.path.split("?")[0]
                owner.requests.append((method, path, payload))
                status, body, delay = owner.routes.get((method, path), (404, {"detail": "Not Found"}, 0))
                if isinstance(body, Sequence):
                    body = body.next()
                time.sleep(delay)
                try:
                    if isinstance(body, RawReply):
                        self.wfile.write(body.data)
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

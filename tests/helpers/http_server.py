"""A scriptable HTTP server on 127.0.0.1 for the acquisition tests (no tests of its own).

Each route answers with a status, body and headers; it can fail its first N
requests with a status, cut its first N bodies part-way, stall before answering,
and it logs every request with a server-side timestamp, so tests can measure
crawl delays and resumes from what the server saw.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    fail_status: int = 0
    """Answer the first `fail_times` requests with this status instead."""
    fail_times: int = 0
    cut_times: int = 0
    """Cut the first `cut_times` bodies after half the bytes (Content-Length stays full)."""
    stall_s: float = 0.0
    ranges: bool = True
    hits: int = 0


@dataclass
class Hit:
    t: float
    path: str
    headers: dict[str, str]


class FixtureServer:
    def __init__(self, routes: dict[str, Route] | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.log: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0] if self.path.split("?", 1)[0] in server.routes else self.path
                with server._lock:
                    server.log.append(Hit(time.monotonic(), self.path, dict(self.headers)))
                    route = server.routes.get(path)
                    if route is not None:
                        route.hits += 1
                        n = route.hits
                if route is None:
                    return self._send(404, b"not found", "text/plain")
                if route.stall_s:
                    time.sleep(route.stall_s)
                if n <= route.fail_times:
                    return self._send(route.fail_status, b"try again", "text/plain")
                body, status, extra = route.body, route.status, dict(route.headers)
                rng = self.headers.get("Range", "")
                if route.ranges and rng.startswith("bytes=") and status == 200:
                    start = int(rng[6:].split("-")[0])
                    extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    body, status = body[start:], 206
                cut = n - route.fail_times <= route.cut_times
                self._send(status, body, route.content_type, extra, cut=cut)

            def _send(self, status, body, ctype, extra=None, cut=False):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                if cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(body[: len(body) // 2] if cut else body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if cut:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def hits(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.log if h.path == path]

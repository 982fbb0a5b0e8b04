"""The redirecting hop ``webhook_301_rate`` puts in front of a prediction's webhook URL.

A plain-HTTP server on a free loopback port of this process that answers every request
``301 Moved Permanently`` with ``Location:`` the webhook URL it stands in front of (carried in
its own query string), as a receiver that moved (http to https, a missing trailing slash) does.
The webhook sender posts to it and, as Replicate's does, does not follow the redirect, so the
delivery never reaches the receiver: every attempt is a real 301 answer, logged and counted.
Started on first use, so a service that never needs it has no extra socket.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

log = logging.getLogger(__name__)
# Webhook bodies are small; read at most this much so the answer goes on a clean connection.
MAX_BODY_BYTES = 64 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "offline-cloud-301/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("301 hop: " + format, *args)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        target = parse_qs(urlsplit(self.path).query).get("to", [""])[0]
        self.send_response(301)
        if target:
            self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET = do_PUT = _answer


class RedirectHop:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _started(self) -> ThreadingHTTPServer:
        with self._lock:
            if self._server is None:
                server = ThreadingHTTPServer((self.host, 0), _Handler)
                server.daemon_threads = True
                threading.Thread(target=server.serve_forever, name="redirect-hop", daemon=True).start()
                log.info("301 hop listening on http://%s:%d", self.host, server.server_port)
                self._server = server
            return self._server

    def url_for(self, target: str) -> str:
        """The hop's URL that answers 301 to ``target``."""
        server = self._started()
        return f"http://{self.host}:{server.server_port}/301?to={quote(target, safe='')}"

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

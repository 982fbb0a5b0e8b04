"""A tiny HTTPS file server on 127.0.0.1 (reached as https://localhost), standing in for the
predictions API's output host: `python -m bench.output_server --dir D --cert C --key K`.

It serves the files of one directory with Content-Length over HTTP/1.1 keep-alive, as a CDN would,
and prints the port it bound on its first line of output. It runs as its own process so its work
never competes with the bench's clients for one interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SMALL = 1024 * 1024  # files up to this size are kept in memory


def serve(directory: Path, cert: Path, key: Path, port: int = 0) -> ThreadingHTTPServer:
    cache: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes: with Nagle's algorithm on, the body would wait
        # for the client's delayed ACK of the headers (40 ms a response on Linux).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            self.request.do_handshake()

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            path = directory / name
            if not name or "/" in name or name.startswith(".") or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if size <= SMALL:
                if name not in cache:
                    cache[name] = path.read_bytes()
                self.wfile.write(cache[name])
                return
            with path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile, 1024 * 1024)

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    # The handshake runs in the handler's thread (setup), never in the accept loop.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.output_server")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = serve(args.dir, args.cert, args.key, args.port)
    print(server.server_port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()

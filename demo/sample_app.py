"""Tiny HTTP apps for the demo and the tests: each answers every request with 200 and a
JSON line naming itself, so you can see which instance a request reached.

    python -m demo.sample_app --app frontend.shop-0=127.0.0.1:10101 --app cart.shop-0=...

One process serves any number of apps (one thread per listener). SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            body = json.dumps({"app": name, "method": self.command, "path": self.path,
                               "host": self.headers.get("host")}).encode() + b"\n"
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def parse_app(text: str) -> tuple[str, str, int]:
    name, eq, addr = text.partition("=")
    host, colon, port = addr.rpartition(":")
    if not eq or not colon or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return name, host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", action="append", type=parse_app, required=True,
                        help="NAME=HOST:PORT (repeat)")
    args = parser.parse_args(argv)
    servers = []
    for name, host, port in args.app:
        server = ThreadingHTTPServer((host, port), make_handler(name))
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"sample apps listening: {', '.join(f'{n}={h}:{p}' for n, h, p in args.app)}",
          flush=True)
    stop.wait()
    for s in servers:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

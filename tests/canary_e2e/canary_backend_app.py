"""The backend apps of the canary end-to-end tests and bench: one asyncio process serving any
number of tiny HTTP/1.1 apps (keep-alive), with a little realistic noise, plus "squatter"
sockets that hold ports the way an unrelated process on the host would.

    python canary_backend_app.py --app backend.shop-0=127.0.0.1:41000 ... [--squat 41001 ...]

Answers, by path:
- `/missing...`  -> 404 (legitimate client errors in the traffic mix);
- `/flaky...`    -> 503 with `x-backend-flaky: 1` on FLAKY_PERCENT % of requests, else 200
                    (a baseline error rate both canaries and baseline see);
- anything else  -> 200 with a JSON line naming the app.
A fifth of the requests wait 2-20 ms before answering, so latencies have a spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sys

FLAKY_PERCENT = 10.0
SLOW_SHARE = 0.2


class AppProtocol(asyncio.Protocol):
    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # one request at a time per connection (no pipelining needed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            low = name.strip().lower()
            if low == "content-length":
                length = int(value.strip() or 0)
            elif low == "connection" and value.strip().lower() == "close":
                close = True
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length:]
        self.busy = True
        delay = self.rng.uniform(0.002, 0.02) if self.rng.random() < SLOW_SHARE else 0.0
        asyncio.get_running_loop().call_later(delay, self._answer, method, path, close)

    def _answer(self, method: str, path: str, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        extra = ""
        if path.startswith("/missing"):
            status, reason = 404, "Not Found"
        elif path.startswith("/flaky") and self.rng.random() * 100 < FLAKY_PERCENT:
            status, reason, extra = 503, "Service Unavailable", "x-backend-flaky: 1\r\n"
        else:
            status, reason = 200, "OK"
        body = json.dumps({"app": self.name, "method": method, "path": path}).encode() + b"\n"
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n")
        if close:
            head += "connection: close\r\n"
        self.transport.write(head.encode() + b"\r\n" + (b"" if method == "HEAD" else body))
        self.busy = False
        if close:
            self.transport.close()
        elif self.buf:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def parse_app(text: str) -> tuple[str, str, int]:
    name, _, addr = text.partition("=")
    host, _, port = addr.rpartition(":")
    return name, host, int(port)


async def serve(apps: list[tuple[str, str, int]], squat: list[int]) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    servers = [await loop.create_server(lambda n=name: AppProtocol(n, rng), host, port,  # type: ignore[misc]
                                        reuse_address=True, backlog=512)
               for name, host, port in apps]
    held = []
    for port in squat:
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen(1)  # bound and listening: nobody else can bind it (SO_REUSEADDR or not)
        held.append(s)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"canary backend apps listening: {len(servers)} apps, {len(held)} squatted ports",
          flush=True)
    await stop.wait()
    for srv in servers:
        srv.close()
    for s in held:
        s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", action="append", type=parse_app, default=[])
    parser.add_argument("--squat", action="append", type=int, default=[])
    args = parser.parse_args(argv)
    asyncio.run(serve(args.app, args.squat))
    return 0


if __name__ == "__main__":
    sys.exit(main())

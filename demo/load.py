"""A steady background load for the demo: requests through the proxies' outbound listeners,
as the apps behind them would send them, so a canary has traffic to be judged on.

One thread per client (a proxy's outbound port and the calls its app makes), each on one
keep-alive connection at a fixed rate. Every answer is recorded (wall-clock time, proxy,
status; 0 for a connection error), so the demo can count what failed during a rollout.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    method: str
    host: str  # the Host header: the mesh service the app calls
    path: str
    body: bytes = b""


@dataclass(frozen=True)
class Client:
    proxy_id: str  # whose outbound listener the calls go through
    port: int
    calls: tuple[Call, ...]
    rate: float  # requests per second


@dataclass(frozen=True)
class Result:
    at: float  # time.time() when the answer came
    proxy_id: str
    status: int  # 0: no answer (connection refused, reset, timeout)


class LoadGenerator:
    def __init__(self, clients: list[Client], *, keep: int = 500_000) -> None:
        self.clients = clients
        self.results: deque[Result] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for c in self.clients:
            t = threading.Thread(target=self._run, args=(c,), name=f"load-{c.proxy_id}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    @property
    def rate(self) -> float:
        return sum(c.rate for c in self.clients)

    def window(self, start: float, end: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if start <= r.at <= end]

    def _run(self, client: Client) -> None:
        interval = 1.0 / client.rate
        conn: http.client.HTTPConnection | None = None
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            c = client.calls[i % len(client.calls)]
            i += 1
            path = c.path.replace("{n}", str(i % 97))
            status = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
                headers = {"Host": c.host}
                if c.body:
                    headers["Content-Type"] = "application/json"
                conn.request(c.method, path, body=c.body or None, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.results.append(Result(time.time(), client.proxy_id, status))
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell behind (a slow answer): do not burst
        if conn is not None:
            conn.close()


def count(results: list[Result]) -> tuple[int, int]:
    """(requests, failed): failed = 5xx or no answer."""
    return len(results), sum(1 for r in results if r.status == 0 or r.status >= 500)

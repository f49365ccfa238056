"""Issue #17 finding 7: held or slow connections must not take the controller down.

Real `meshcd serve` processes with a lowered descriptor limit (RLIMIT_NOFILE set before exec,
hard = soft, so the controller cannot raise it), flooded with bare TCP connections (fleet) and
slowloris request heads (API)."""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import ssl
import sys
import time
from pathlib import Path

from controller_helpers import MESHCD, ConfigRepo, Processes, Serve, mesh_files, until

LIMIT_EXEC = ("import os, resource, sys; n = int(sys.argv[1]); "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
              "os.execv(sys.argv[2], sys.argv[2:])")


def _raise_own_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _start_limited(serve: Serve, nofile: int) -> None:
    path = serve.write_settings()
    serve.proc = serve.procs.start([sys.executable, "-c", LIMIT_EXEC, str(nofile), MESHCD,
                                    "serve", "--config", str(path)])
    serve.proc.wait_for(r"meshcd serve: epoch \d+", 60)


def _serve(procs: Processes, tmp_path: Path, **extra: object) -> Serve:
    repo = ConfigRepo(tmp_path / "config.git")
    repo.commit(mesh_files({"api": [1]}), "first")
    return Serve(procs, tmp_path / "data", repo.url, poll_interval=30,
                 extra={"trust_domain": "ctl.test", **extra})


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _tls_handshake(port: int, timeout: float = 3.0) -> bool:
    """Does the fleet listener take a connection and answer a TLS ClientHello?"""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost"):
            return True
    except (OSError, ssl.SSLError):
        return False


def _healthz(conn: http.client.HTTPConnection) -> dict[str, object]:
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    body: dict[str, object] = json.loads(resp.read())
    assert resp.status == 200
    return body


def test_fleet_listener_accepts_again_after_descriptors_run_out(tmp_path: Path,
                                                                procs: Processes) -> None:
    serve = _serve(procs, tmp_path)
    _start_limited(serve, 256)
    assert serve.proc is not None
    assert _tls_handshake(serve.fleet_port)
    # a keep-alive API connection opened before the flood: healthz still answers on it
    api = http.client.HTTPConnection("127.0.0.1", serve.api_port, timeout=5)
    assert _healthz(api)["status"] == "ok"
    _raise_own_limit(2000)
    flood: list[socket.socket] = []
    try:
        free = 256 - _open_fds(serve.proc.pid)
        for _ in range(free + 100):  # more than the controller has descriptors left
            flood.append(socket.create_connection(("127.0.0.1", serve.fleet_port), timeout=5))
        serve.proc.wait_for(r"fleet listener NOT ACCEPTING", 15)
        health = _healthz(api)
        assert health["status"] == "degraded" and health["ok"] is False, health
        assert any("fleet" in str(p) for p in health["problems"])  # type: ignore[attr-defined]
    finally:
        for s in flood:
            s.close()
    # the flood is over: the listener must take connections again, without a restart
    until(lambda: _tls_handshake(serve.fleet_port, 2.0), 30, "the fleet listener accepting")
    serve.proc.wait_for(r"fleet listener accepting again", 15)
    api.close()
    until(lambda: serve.get("/healthz")["status"] == "ok", 15, "healthz ok again")
    metrics = _metrics(serve)
    assert 'meshcd_listener_accepting{listener="fleet"} 1.0' in metrics
    assert 'meshcd_listener_accept_errors_total{error="EMFILE",listener="fleet"}' in metrics, \
        [m for m in metrics.splitlines() if "listener" in m]


def _metrics(serve: Serve) -> str:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", serve.api_port,
                                                       timeout=5)) as c:
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()


def _slow_head(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    return s


def _closed_by_server(s: socket.socket, wait: float) -> bool:
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False


def test_api_answers_during_slowloris_and_slow_heads_time_out(tmp_path: Path,
                                                              procs: Processes) -> None:
    # 1,024 descriptors, as in the report: 1,100 held request heads from one address
    serve = _serve(procs, tmp_path)
    _start_limited(serve, 1024)
    _raise_own_limit(3000)
    held: list[socket.socket] = []
    opened = time.monotonic()
    try:
        for _ in range(1100):
            try:
                held.append(_slow_head(serve.api_port))
            except OSError:
                break
        # another client (another address) is still served
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.settimeout(5)
        other.connect(("127.0.0.1", serve.api_port))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := other.recv(65536):
                answer += chunk
        other.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # a head dribbled a line at a time is closed after header_timeout_s (10 s default)
        dribbler = held[0]
        closed = False
        while time.monotonic() - opened < 20:
            with contextlib.suppress(OSError):
                dribbler.sendall(b"X-Slow: 1\r\n")
            if _closed_by_server(dribbler, 1.0):
                closed = True
                break
        assert closed, "a slowloris connection was never closed"
        assert time.monotonic() - opened >= 9
    finally:
        for s in held:
            s.close()
    metrics = _metrics(serve)
    assert 'meshcd_listener_refused_total{listener="api",reason="max_per_address"}' in metrics

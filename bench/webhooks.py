"""Webhook receiver benchmark (issue #7).

    python bench/webhooks.py [--valid 20000] [--seconds 20] [--flood 10000] [--json PATH]

Starts ONE uvicorn process (uvloop + httptools) on 127.0.0.1 serving the receiver router
(on_update appends to a list; the audit callback bumps a bounded counter), then:

1. valid: sends up to --valid correctly signed GitHub push deliveries (each with its own
   delivery id, so none is deduplicated) over keep-alive connections from an asyncio
   client, bounded by --seconds; reports accepted deliveries per second;
2. flood: sends --flood invalid deliveries (bad signatures, declared-oversized bodies,
   chunked oversized bodies, garbage, deep JSON, unknown forges, missing headers) and
   reports the server's RSS (VmRSS from /proc/<pid>/status) before and after.

Targets: >= 2,000 valid deliveries/s; RSS growth under the flood < 20 MB.
`--json PATH` writes {"valid_per_s", "flood_rss_growth_mb", ...}. Only 127.0.0.1 traffic.
The client shares the machine's cores with the server (and with anything else running).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
# This file is itself named "webhooks": take bench/ off the path so the package is found.
sys.path[:] = [str(ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")
]

from webhooks.sample import build_sample, push_payload, signature_headers  # noqa: E402

REPO = "https://github.com/acme/mesh-config"
SECRET = b"bench-secret-0123456789abcdef"
CAP = 1024 * 1024
CONNECTIONS = 16


# --- server side (runs in the child process) --------------------------------------------


def serve(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from webhooks.model import DeliveryRecord, RefUpdate
    from webhooks.receiver import make_router
    from webhooks.settings import ReceiverSettings

    updates: list[RefUpdate] = []
    audit: collections.Counter[tuple[str, str]] = collections.Counter()

    def on_audit(record: DeliveryRecord) -> None:
        audit[(record.result, record.reason)] += 1  # keys: a small fixed set of reasons

    settings = ReceiverSettings(
        watched_repo=REPO, watched_branch="main", secrets={"github": SECRET}, max_body_bytes=CAP
    )
    app = FastAPI()
    app.include_router(make_router(settings, updates.append, on_audit))

    @app.get("/bench/stats")
    async def stats() -> dict[str, object]:
        return {
            "updates": len(updates),
            "audit": {f"{r}:{why}": n for (r, why), n in sorted(audit.items())},
        }

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


# --- client side ------------------------------------------------------------------------


def _request(
    path: str, headers: dict[str, str], body: bytes, *, declared: int | None = None
) -> bytes:
    length = len(body) if declared is None else declared
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def _chunked_request(path: str, headers: dict[str, str], total: int) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    piece = b"x" * 65536
    chunks = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(total // 65536))
    return head.encode("latin-1") + b"\r\n" + chunks + b"0\r\n\r\n"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    await reader.readexactly(int(fields.get("content-length", "0")))
    return status, fields.get("connection", "").lower() == "close"


async def _worker(
    port: int, queue: collections.deque[bytes], deadline: float, statuses: collections.Counter[int]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while queue and time.monotonic() < deadline:
        request = queue.popleft()
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert reader is not None
        try:
            writer.write(request)
            await writer.drain()
            status, close = await _read_response(reader)
            statuses[status] += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            statuses[0] += 1  # the server hung up mid-request (e.g. after a 413)
            close = True
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _run(
    port: int, requests: list[bytes], seconds: float, connections: int = CONNECTIONS
) -> tuple[collections.Counter[int], float]:
    queue = collections.deque(requests)
    statuses: collections.Counter[int] = collections.Counter()
    start = time.monotonic()
    deadline = start + seconds
    await asyncio.gather(*(_worker(port, queue, deadline, statuses) for _ in range(connections)))
    return statuses, time.monotonic() - start


def github_push_body(i: int) -> bytes:
    """A push shaped like GitHub's, with three commits (a typical delivery is a few KB)."""
    after = hashlib.sha1(b"%d" % i).hexdigest()
    payload = push_payload(
        "github",
        repo_url=REPO,
        ref="refs/heads/main",
        before=hashlib.sha1(b"b%d" % i).hexdigest(),
        after=after,
    )
    payload["commits"] = [
        {
            "id": after,
            "tree_id": after,
            "distinct": True,
            "message": f"routes: shift {n}% of checkout to v2\n\nReviewed-by: someone",
            "timestamp": "2026-11-25T18:01:12+01:00",
            "url": f"{REPO}/commit/{after}",
            "author": {"name": "Ada Platform", "email": "ada@acme.example", "username": "ada"},
            "committer": {"name": "Ada Platform", "email": "ada@acme.example", "username": "ada"},
            "added": [],
            "removed": [],
            "modified": [f"routes/checkout-{n}.yaml"],
        }
        for n in range(3)
    ]
    payload["head_commit"] = payload["commits"][-1]
    return json.dumps(payload).encode()


def valid_requests(count: int, tag: str) -> list[bytes]:
    out = []
    for i in range(count):
        body = github_push_body(i)
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": f"{tag}-{i:08d}",
            **signature_headers("github", body, SECRET),
        }
        out.append(_request("/webhooks/github", headers, body))
    return out


def flood_requests(count: int) -> list[bytes]:
    good = build_sample("github", SECRET, repo_url=REPO, delivery_id="flood")
    events = {k: v for k, v in good.headers.items() if not k.startswith("X-Hub")}
    deep = b"[" * 100_000
    garbage = os.urandom(4096)
    kinds = [
        lambda i: _request(
            "/webhooks/github",
            {
                **events,
                "X-Hub-Signature-256": "sha256=" + "0" * 64,
                "X-GitHub-Delivery": f"bad-{i}",
            },
            good.body,
        ),
        lambda i: _request(
            "/webhooks/github",
            {**events, "X-GitHub-Delivery": f"big-{i}", **signature_headers("github", b"", SECRET)},
            b"",
            declared=20 * CAP,
        ),
        lambda i: _request(
            "/webhooks/github",
            {
                **events,
                "X-GitHub-Delivery": f"junk-{i}",
                **signature_headers("github", garbage, SECRET),
            },
            garbage,
        ),
        lambda i: _request(
            "/webhooks/github",
            {
                **events,
                "X-GitHub-Delivery": f"deep-{i}",
                **signature_headers("github", deep, SECRET),
            },
            deep,
        ),
        lambda i: _request("/webhooks/gitlab", {"X-Gitlab-Event": "Push Hook"}, good.body),
        lambda i: _request("/webhooks/nosuchforge", {}, garbage),
        lambda i: _request("/webhooks/github", {"Content-Type": "application/json"}, garbage),
    ]
    out = []
    for i in range(count):
        if i % 100 == 99:  # 1%: a chunked body with no length that runs past the cap
            out.append(
                _chunked_request(
                    "/webhooks/github",
                    {
                        **events,
                        "X-GitHub-Delivery": f"chunk-{i}",
                        **signature_headers("github", b"", SECRET),
                    },
                    CAP + 128 * 1024,
                )
            )
        else:
            out.append(kinds[i % len(kinds)](i))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_stats(port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /bench/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    parsed: dict[str, object] = json.loads(data.partition(b"\r\n\r\n")[2])
    return parsed


def measure(args: argparse.Namespace, log: IO[bytes]) -> dict[str, Any] | None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=log, stderr=log, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    sys.stderr.write(log.read().decode(errors="replace"))
                    return None
                time.sleep(0.1)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        body_size = len(github_push_body(0))
        asyncio.run(_run(port, valid_requests(1000, "warm"), args.seconds))
        rss_start = rss_mb(server.pid)
        cpu_start = cpu_seconds(server.pid)
        requests = valid_requests(args.valid, "v")
        statuses, elapsed = asyncio.run(_run(port, requests, args.seconds, args.connections))
        server_cpu = cpu_seconds(server.pid) - cpu_start
        accepted = statuses[202]
        valid_per_s = accepted / elapsed if elapsed else 0.0
        rss_before = rss_mb(server.pid)
        flood_statuses, flood_s = asyncio.run(
            _run(port, flood_requests(args.flood), args.seconds * 6)
        )
        time.sleep(0.5)
        rss_after = rss_mb(server.pid)
        stats = _get_stats(port)
    finally:
        server.terminate()
        server.wait(timeout=15)

    growth = rss_after - rss_before
    return {
        "valid_per_s": round(valid_per_s, 1),
        "flood_rss_growth_mb": round(growth, 2),
        "valid_sent": sum(statuses.values()),
        "valid_accepted": accepted,
        "valid_seconds": round(elapsed, 3),
        "valid_body_bytes": body_size,
        # What one fully available core would sustain: the client and other processes share
        # the machine, so wall-clock throughput understates the server on a busy box.
        "server_cpu_us_per_valid": round(server_cpu / accepted * 1e6, 1) if accepted else None,
        "valid_per_server_cpu_s": round(accepted / server_cpu, 1) if server_cpu else None,
        "flood_sent": sum(flood_statuses.values()),
        "flood_statuses": {str(k): v for k, v in sorted(flood_statuses.items())},
        "flood_seconds": round(flood_s, 3),
        "rss_mb": {
            "after_warmup": round(rss_start, 1),
            "before_flood": round(rss_before, 1),
            "after_flood": round(rss_after, 1),
        },
        "server_updates": stats["updates"],
        "server_audit": stats["audit"],
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "connections": args.connections,
        "load_average_at_end": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valid", type=int, default=20_000, help="valid deliveries (max)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time bound per phase")
    parser.add_argument("--flood", type=int, default=10_000, help="invalid deliveries")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="keep-alive conns")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    with tempfile.TemporaryFile() as log:
        results = measure(args, log)
    if results is None:
        return 1
    growth = results["flood_rss_growth_mb"]
    valid_per_s = results["valid_per_s"]
    rss = results["rss_mb"]
    rows = [
        (
            "machine",
            f"{results['machine']['cpu']} x {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
        ),
        (
            "valid deliveries",
            f"{results['valid_accepted']} accepted of "
            f"{results['valid_sent']} in {results['valid_seconds']:.2f} s "
            f"({results['valid_body_bytes']} B bodies, {args.connections} conns)",
        ),
        ("valid deliveries/s", f"{valid_per_s:,.0f}   (target >= 2,000)"),
        (
            "server CPU/delivery",
            f"{results['server_cpu_us_per_valid']} us  "
            f"(= {results['valid_per_server_cpu_s']:,.0f} deliveries per server CPU-second)",
        ),
        (
            "flood",
            f"{results['flood_sent']} invalid in {results['flood_seconds']:.2f} s, "
            f"statuses {results['flood_statuses']}",
        ),
        (
            "server RSS",
            f"{rss['after_warmup']:.1f} MB after warm-up, "
            f"{rss['before_flood']:.1f} MB before flood, "
            f"{rss['after_flood']:.1f} MB after",
        ),
        ("flood RSS growth", f"{growth:+.2f} MB   (target < 20 MB)"),
        ("server saw", f"{results['server_updates']} on_update calls (incl. 1,000 warm-up)"),
        ("load average", f"{results['load_average_at_end']:.2f} (other processes share the cores)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = valid_per_s >= 2000 and growth < 20
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
